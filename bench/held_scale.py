#!/usr/bin/env python3
"""Latency of a new intent and the gateway's memory as held intents pile up.

    held_scale.py GATEWAY_URL AGENT_TOKEN MAX PID WRK_LUA INTENT_BODY RATE SECONDS

At 1,000, 10,000 and 100,000 held intents (up to MAX), measures the benchmark intent at a
fixed rate with wrk and reads VmRSS of PID. Prints one JSON line per point.
"""
import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

from held import rss_kib, submit


def main():
    url, token, most, pid, lua, body, rate, seconds = sys.argv[1:9]
    most, pid = int(most), int(pid)
    parts = urlsplit(url)
    held = 0
    points = [n for n in (1_000, 10_000, 100_000) if n <= most] or [most]
    for n in points:
        added = n - held
        started = time.monotonic()
        asyncio.run(submit(parts.hostname, parts.port, token, added, start=held))
        submit_seconds = time.monotonic() - started
        held = n
        env = dict(os.environ, BENCH_METHOD="POST", BENCH_BODY=body, BENCH_AUTH=f"Bearer {token}",
                   BENCH_RATE=rate, BENCH_CONNECTIONS="10")
        run = subprocess.run(["wrk", "-t1", "-c10", f"-d{seconds}s", "--timeout", "5s", "-s", lua,
                              f"{url}/v1/intents"], env=env, capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if result["errors"] or result["non2xx"]:
            sys.exit(f"held_scale.py: {result}")
        result.update(kind="scale", curve="held", x=n, rss_kib=rss_kib(pid),
                      rps=result["requests"] / (result["duration_us"] / 1e6),
                      submit_per_second=round(added / submit_seconds))
        print(json.dumps(result), flush=True)
        print(f"held={n}: {result}", file=sys.stderr)


if __name__ == "__main__":
    main()
