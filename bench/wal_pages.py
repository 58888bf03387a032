#!/usr/bin/env python3
"""WAL pages an intent writes on SQLite, for two schema versions side by side.

    bench/wal_pages.py [OLD_VERSION NEW_VERSION]     (default: the two newest)

Builds a store with the real migrations up to each version (Python's sqlite3 module, a
temporary directory), then replays what the audit writer commits for each of 2,000 intents
when its batches hold one intent (a low request rate): `BEGIN IMMEDIATE`, the intent's row
and its `decided` event, `COMMIT`; then the `outcome` event and the final state, `COMMIT`.
Prints the WAL frames (pages) written per intent. Frames are counted, not timed, so the
figure doesn't depend on how busy the machine is.
"""
import glob
import json
import os
import sqlite3
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = sorted(glob.glob(os.path.join(HERE, "..", "crates", "portcullis-store", "migrations", "sqlite", "*.sql")))
INTENTS = 2000


def pages_per_intent(version: int, directory: str) -> float:
    path = os.path.join(directory, f"v{version}.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    for migration in MIGRATIONS[:version]:
        with open(migration, encoding="utf-8") as f:
            db.executescript(f.read())
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    response = json.dumps({"status": "executed", "result": {"body": "x" * 900}})
    for i in range(INTENTS):
        # Time-ordered ids, as the gateway makes them: 48 bits of milliseconds first.
        intent = f"int_{1_700_000_000_000 + i:012x}{i:020x}"
        ts = f"2026-11-25T00:00:{i // 1000:02d}.{i % 1000:03d}Z"
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO intents (id, agent, action, payload_sha256, idempotency_key, status, response, "
            "created_at, updated_at) VALUES (?, 'triage-bot', 'github.create_issue', ?, NULL, 'executing', "
            "'null', ?, ?) ON CONFLICT (agent, idempotency_key) DO NOTHING",
            (intent, "a" * 64, ts, ts),
        )
        db.execute(
            "INSERT INTO audit_events (seq, ts, event, prev_hash, hash, intent_id) VALUES (?, ?, ?, ?, ?, ?)",
            (2 * i + 1, ts, "d" * 500, "p" * 64, "h" * 64, intent),
        )
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO audit_events (seq, ts, event, prev_hash, hash, intent_id) VALUES (?, ?, ?, ?, ?, ?)",
            (2 * i + 2, ts, "o" * 600, "p" * 64, "h" * 64, intent),
        )
        db.execute(
            "UPDATE intents SET status = 'executed', response = ?, updated_at = ? WHERE id = ?",
            (response, ts, intent),
        )
        db.execute("COMMIT")
    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    db.close()
    return frames / INTENTS


def main() -> None:
    newest = len(MIGRATIONS)
    old, new = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) == 3 else (newest - 1, newest)
    # The replay writes `audit_events.intent_id`, which version 7 added.
    if not 7 <= old <= newest or not 7 <= new <= newest:
        sys.exit(f"versions from 7 to {newest} can be compared")
    with tempfile.TemporaryDirectory() as directory:
        for version in (old, new):
            print(f"schema version {version}: {pages_per_intent(version, directory):.2f} WAL pages per intent")


if __name__ == "__main__":
    main()
