#!/usr/bin/env python3
"""Prints the upstream's answer: a GitHub-like issue, about 1 KB of JSON on one line.

It has what real API responses carry (URLs, ids, timestamps, a user, labels, an email in a
text field) so that the redaction rules have something to look at and one thing to mask.
It has no single quote and no `$`, so that nginx can `return` it verbatim.
"""
import json

issue = {
    "id": 2846513377,
    "node_id": "I_kwDOBq3Zc86pqW9h",
    "number": 4821,
    "url": "https://api.example.com/repos/acme/widgets/issues/4821",
    "html_url": "https://example.com/acme/widgets/issues/4821",
    "state": "open",
    "title": "Checkout page returns 500 after the last deploy",
    "body": "Steps: open /checkout with a saved card and press Pay. Reported by jane.doe@example.com; "
            "three customers since 14:02 UTC. Trace id 4bf92f3577b34da6a3ce929d0e0e4736.",
    "user": {"login": "triage-bot", "id": 90210, "type": "Bot", "site_admin": False},
    "labels": [
        {"id": 208045946, "name": "bug", "color": "d73a4a", "default": True},
        {"id": 208045947, "name": "checkout", "color": "0e8a16", "default": False},
    ],
    "assignees": [],
    "milestone": None,
    "comments": 0,
    "created_at": "2026-11-24T14:05:11Z",
    "updated_at": "2026-11-24T14:05:11Z",
    "closed_at": None,
    "author_association": "NONE",
    "reactions": {"total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0},
    "timeline_url": "https://api.example.com/repos/acme/widgets/issues/4821/timeline",
    "state_reason": None,
}
text = json.dumps(issue, separators=(",", ":"))
text += " " * max(0, 1024 - len(text))
assert "'" not in text and "$" not in text
print(text)
