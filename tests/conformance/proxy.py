#!/usr/bin/env python3
"""TEST ONLY: a loopback proxy that adds the agent's bearer token.

The MCP conformance suite cannot send an `Authorization` header, and `/mcp` requires one.
This proxy forwards every request to the gateway unchanged (method, path, body, and the
`Host` and `Origin` headers, so the gateway's DNS-rebinding check sees what the suite sent)
and adds `Authorization: Bearer $PORTCULLIS_AGENT_TOKEN`.

Usage: proxy.py GATEWAY_PORT_FILE PORT_FILE   (the gateway port is read on each request,
so the proxy can start first and the gateway can be told the proxy's address)
"""
import http.client
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET_PORT_FILE = sys.argv[1]
TOKEN = os.environ["PORTCULLIS_AGENT_TOKEN"]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"authorization"}}
        headers["Authorization"] = f"Bearer {TOKEN}"
        with open(TARGET_PORT_FILE) as f:
            target = int(f.read().strip())
        conn = http.client.HTTPConnection("127.0.0.1", target, timeout=60)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_DELETE = do_PUT = do_OPTIONS = _forward


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
