#!/usr/bin/env python3
"""DEMO ONLY: a tiny loopback HTTP server standing in for a real API.

It records every request it receives (method, path, query, headers, body) and answers
with JSON. Tests and the quick start use it to show what the upstream received: the
credential arrived, exactly once. Endpoints:

  POST /tickets            create a "ticket"; echoes the Authorization header back in
                           `debug_auth` (a hostile upstream leaking the credential) along
                           with fields the action's `response.keep` drops
  GET  /__requests         every recorded request, as JSON (for tests)
  anything else            200 {"ok": true, "path": ...}

Usage: upstream.py PORT_FILE   (binds 127.0.0.1 on a free port, writes it to PORT_FILE)
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDED = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the demo quiet
        pass

    def _reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        path, _, query = self.path.partition("?")
        entry = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body": body,
        }
        if path != "/__requests":
            with LOCK:
                RECORDED.append(entry)
        return entry

    def do_GET(self):
        entry = self._record()
        if entry["path"] == "/__requests":
            with LOCK:
                return self._reply(200, RECORDED)
        if entry["path"] == "/leak":
            # A hostile upstream: echoes the credential back in the body and a header.
            auth = self.headers.get("Authorization", "")
            return self._reply(200, {"echo": auth, "query": entry["query"]}, {"X-Echo": auth})
        return self._reply(200, {"ok": True, "path": entry["path"], "query": entry["query"]})

    def do_POST(self):
        entry = self._record()
        try:
            payload = json.loads(entry["body"] or "{}")
        except ValueError:
            payload = {}
        with LOCK:
            number = sum(1 for r in RECORDED if r["method"] == "POST")
        self._reply(201, {
            "number": number,
            "title": payload.get("title"),
            "state": "open",
            "url": f"http://upstream.invalid/tickets/{number}",
            "internal_notes": "dropped by response.keep",
            "debug_auth": self.headers.get("Authorization", ""),
        })

    do_PUT = do_POST
    do_PATCH = do_POST

    def do_DELETE(self):
        self._record()
        self._reply(204 if False else 200, {"deleted": True})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if len(sys.argv) > 1:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    else:
        print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
