#!/usr/bin/env python3
"""`audit verify` time and peak memory as the audit log grows to MAX events.

    audit_scale.py PORTCULLIS_BIN WORKDIR MAX

Grows one SQLite audit log through the store's real append path (the `audit_fill` example of
portcullis-store) to 10,000, 100,000, 1,000,000 and 10,000,000 events (up to MAX), and at
each size runs `portcullis audit verify` as its own process, timing it and reading its peak
resident memory from the kernel (wait4). Prints one JSON line per size.
"""
import json
import os
import subprocess
import sys
import time


def main():
    portcullis, work, most = sys.argv[1], sys.argv[2], int(sys.argv[3])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(work, exist_ok=True)
    db = os.path.join(work, "audit.db")
    config = os.path.join(work, "portcullis.yaml")
    with open(config, "w") as f:
        f.write(f"store: sqlite://{db}\n")
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "portcullis-store", "--example", "audit_fill",
                    "--manifest-path", os.path.join(root, "Cargo.toml")], check=True)
    fill = os.path.join(root, "target", "release", "examples", "audit_fill")
    sizes = [n for n in (10_000, 100_000, 1_000_000, 10_000_000) if n <= most] or [most]
    for n in sizes:
        filled = json.loads(subprocess.run([fill, f"sqlite://{db}", str(n)], check=True,
                                           capture_output=True, text=True).stdout)
        started = time.monotonic()
        verify = subprocess.Popen([portcullis, "-c", config, "audit", "verify"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(verify.pid, 0)
        seconds = time.monotonic() - started
        output = verify.stdout.read().decode() + verify.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"audit verify failed at {n} events: {output}")
        point = {"kind": "scale", "curve": "audit", "x": n, "verify_seconds": round(seconds, 3),
                 "verify_max_rss_kib": usage.ru_maxrss, "fill_per_second": filled["per_second"],
                 "db_bytes": os.path.getsize(db)}
        print(json.dumps(point), flush=True)
        print(f"audit={n}: {point}", file=sys.stderr)


if __name__ == "__main__":
    main()
