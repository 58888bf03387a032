#!/usr/bin/env python3
"""DEMO ONLY: a tiny loopback HTTP server standing in for a real API.

It records every request it receives (method, path, query, headers, body) and answers
with JSON. Tests and the quick start use it to show what the upstream received: the
credential arrived, exactly once. Endpoints:

  POST /tickets            create a "ticket"; echoes the Authorization header back in
                           `debug_auth` (a hostile upstream leaking the credential) along
                           with fields the action's `response.keep` drops
  GET  /customer           a customer record full of personal data and a pasted
                           access key, with the email also in an `X-Contact` header
  POST /echo               answers with the JSON body it received
  POST …?delay=N           any POST answers after N seconds (at most 10), once recorded
  GET  /slow?seconds=N     answers after N seconds (at most 10)
  GET  /leak               echoes the Authorization header in the body and `X-Echo`
  GET  /redirect?to=URL&status=N
                           answers N (default 302, any 3xx) with `Location: URL`, for
                           tests of redirect following
  GET  /__requests         every recorded request, as JSON (for tests)
  anything else            200 {"ok": true, "path": ...}

Usage: upstream.py PORT_FILE   (binds 127.0.0.1 on a free port, writes it to PORT_FILE)
"""
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CUSTOMER = {
    "id": 42,
    "name": "Jane Doe",
    "email": "jane.doe@example.com",
    "phone": "+14155550123",
    "card": {"number": "4111 1111 1111 1111", "brand": "visa"},
    "ssn": "123-45-6789",
    "employee": "EMP-123456",
    "notes": "rotated key AKIAZ7Q3XKJ5VW2MLP4N yesterday",
    "password": "correct horse battery staple",
    "plan": "pro",
}

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
        if entry["path"] == "/redirect":
            # Redirects to `to` with `status` (default 302): where a redirect leads, and with
            # what, is the next request's record (on this upstream or another one).
            params = urllib.parse.parse_qs(entry["query"])
            to = params.get("to", [""])[0]
            try:
                status = int(params.get("status", ["302"])[0])
            except ValueError:
                status = 0
            if not to or not 300 <= status <= 399:
                return self._reply(400, {"error": "need `to` and a 3xx `status`"})
            return self._reply(status, {"redirect": to}, {"Location": to})
        if entry["path"] == "/slow":
            # Answers after `seconds` (at most 10): a call still in flight when a test kills
            # the gateway.
            try:
                seconds = min(float(entry["query"].partition("seconds=")[2] or 0), 10.0)
            except ValueError:
                seconds = 0.0
            time.sleep(max(seconds, 0.0))
            return self._reply(200, {"slow": True})
        if entry["path"] == "/customer":
            # A customer record full of personal data and a pasted credential, as real APIs
            # return them (all values synthetic).
            return self._reply(200, CUSTOMER, {"X-Contact": CUSTOMER["email"]})
        return self._reply(200, {"ok": True, "path": entry["path"], "query": entry["query"]})

    def do_POST(self):
        entry = self._record()
        # `?delay=N`: answers after N seconds (at most 10), so that a test can kill the
        # gateway while calls it made are still in flight.
        delay = urllib.parse.parse_qs(entry["query"]).get("delay", ["0"])[0]
        try:
            time.sleep(min(max(float(delay), 0.0), 10.0))
        except ValueError:
            pass
        if entry["path"] == "/echo":
            # Sends back whatever JSON it received.
            try:
                return self._reply(200, json.loads(entry["body"] or "null"))
            except ValueError:
                return self._reply(400, {"error": "not JSON"})
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
    # A listen backlog for bursts: the default of 5 makes connections beyond it wait for
    # SYN retries (a second or more) while slow answers hold the handler threads.
    ThreadingHTTPServer.request_queue_size = 128
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
