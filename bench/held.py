#!/usr/bin/env python3
"""Memory of the gateway under N concurrent held intents, each long-polled by its agent.

    held.py GATEWAY_URL AGENT_TOKEN N PID

Submits N `payments.refund` intents (every one is held by policy), then opens N connections
at once, each waiting on one intent with `GET /v1/intents/ID?wait=60`, and reads the
gateway's resident memory (VmRSS of PID) while all of them wait. Prints one JSON line.
Only loopback is used.
"""
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def request(host, port, method, path, token, body=None):
    """One request on its own connection; the status and the JSON body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + payload)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(rest) if rest else None


async def submit(host, port, token, n, start=0, parallel=32):
    """Submits n held refunds; their ids."""
    ids = [None] * n
    queue = iter(range(n))

    async def worker():
        for i in queue:
            body = {"action": "payments.refund", "input": {"charge": f"ch_bench{start + i}", "amount": 100 + i % 900}}
            status, answer = await request(host, port, "POST", "/v1/intents", token, body)
            if status != 202 or answer.get("status") != "pending_approval":
                raise RuntimeError(f"expected a hold, got {status} {answer}")
            ids[i] = answer["id"]

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return ids


async def long_poll_all(host, port, token, ids, pid):
    """Opens one long-poll per id, waits until all are sent, reads RSS, then hangs up."""
    writers = []
    for intent in ids:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write((f"GET /v1/intents/{intent}?wait=60 HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n").encode())
        writers.append((reader, writer))
    await asyncio.gather(*(w.drain() for _, w in writers))
    await asyncio.sleep(2)  # let the gateway read and park every request
    rss = rss_kib(pid)

    async def was_answered(reader):
        try:
            return bool(await asyncio.wait_for(reader.read(1), 0.5))
        except TimeoutError:
            return False

    answered = sum(await asyncio.gather(*(was_answered(r) for r, _ in writers)))
    for _, w in writers:
        w.close()
    return rss, answered


def main():
    url, token, n, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    parts = urlsplit(url)
    started = time.monotonic()
    ids = asyncio.run(submit(parts.hostname, parts.port, token, n))
    submitted = time.monotonic() - started
    rss, answered = asyncio.run(long_poll_all(parts.hostname, parts.port, token, ids, pid))
    if answered:
        sys.exit(f"held.py: {answered} long-polls were answered early: the intents were not held")
    print(json.dumps({"kind": "memory", "what": f"{n} held, long-polled", "held": n, "connections": n,
                      "rss_kib": rss, "submit_seconds": round(submitted, 2)}))


if __name__ == "__main__":
    main()
