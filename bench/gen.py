#!/usr/bin/env python3
"""Writes a Portcullis workspace for the benchmarks: config, actions and policies.

    gen.py DIR --upstream-port PORT [--actions N] [--policies M]

The hot action is `github.create_issue`, shaped like examples/github: a JSON Schema with
patterns, an array of labels and a length-limited body; a Cedar resource; a bearer credential
injected into a POST to the upstream; no `response.keep`, so the whole response body goes
through every builtin redaction rule. Its policies are the example's (a permit over trusted
entity data, a forbid on a label, a forbid on secrets found in the input) plus a hold.

`--actions N` adds N-1 other actions and `--policies M` brings the policy set to M policies,
spread over all actions, each with a `when` condition on the input, so that Cedar has M
policies to consider, as a large deployment would. `payments.refund` is always held, for the
held-intent measurements.
"""
import argparse
import os

CONFIG = """\
listen: 127.0.0.1:0
store: sqlite://portcullis.db
master_key: file:master.key
agents:
  triage-bot:
    attributes: {{team: support}}
    groups: [triage]
credentials:
  github:
    kind: bearer
    secret: github_token
admins:
  lena: {{role: approver, groups: [leads]}}
approvals:
  expiry_seconds: 86400
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
egress:
  allow: ["127.0.0.1/32"]
  timeout_ms: 5000
logging: {{level: error}}
entities:
  - {{type: RepoList, id: allowed}}
  - {{type: Repo, id: "acme/widgets", parents: [{{type: RepoList, id: allowed}}]}}
  - {{type: Repo, id: "acme/docs", parents: [{{type: RepoList, id: allowed}}]}}
"""

HOT_ACTION = """\
name: github.create_issue
description: Create an issue in a repository
input:
  type: object
  required: [owner, repo, title]
  properties:
    owner: {{type: string, pattern: "^[A-Za-z0-9-]{{1,39}}$"}}
    repo:  {{type: string, pattern: "^[A-Za-z0-9._-]{{1,100}}$"}}
    title: {{type: string, minLength: 1, maxLength: 256}}
    body:  {{type: string, maxLength: 65536}}
    labels:
      type: array
      maxItems: 10
      uniqueItems: true
      items: {{type: string, pattern: "^[a-z0-9][a-z0-9._-]{{0,49}}$"}}
resource: {{type: Repo, id: "{{owner}}/{{repo}}"}}
request:
  method: POST
  url: http://127.0.0.1:{port}/repos/{{owner}}/{{repo}}/issues
  headers:
    Accept: application/vnd.github+json
    X-GitHub-Api-Version: "2022-11-28"
  body: {{title: "{{title}}", body: "{{body}}", labels: "{{labels}}"}}
credential: github
---
name: payments.refund
description: Refund a charge (always held for a lead)
input:
  type: object
  required: [charge, amount]
  properties:
    charge: {{type: string, pattern: "^ch_[A-Za-z0-9]{{1,40}}$"}}
    amount: {{type: integer, minimum: 1, maximum: 100000}}
resource: {{type: Charge, id: "{{charge}}"}}
request:
  method: POST
  url: http://127.0.0.1:{port}/refunds
  body: {{charge: "{{charge}}", amount: "{{amount}}"}}
credential: github
"""

FILLER_ACTION = """\
---
name: svc{i}.update
description: Update a record in service {i}
input:
  type: object
  required: [id, state]
  properties:
    id: {{type: string, pattern: "^[a-z0-9-]{{1,40}}$"}}
    state: {{type: string, enum: [open, closed, pending]}}
    note: {{type: string, maxLength: 1000}}
    priority: {{type: integer, minimum: 0, maximum: 5}}
resource: {{type: Record, id: "{{id}}"}}
request:
  method: PATCH
  url: http://127.0.0.1:{port}/svc{i}/records/{{id}}
  body: {{state: "{{state}}", note: "{{note}}", priority: "{{priority}}"}}
credential: github
"""

HOT_POLICIES = """\
@id("triage-opens-issues-in-allowed-repos")
@reason("triage agents may open issues in the allowed repositories")
permit (principal in AgentGroup::"triage", action == Action::"github.create_issue", resource in RepoList::"allowed");

@id("no-prod-label")
@reason("agents may not label an issue `prod`")
forbid (principal, action == Action::"github.create_issue", resource)
when { context.input has labels && context.input.labels.contains("prod") };

@id("no-secrets-in-issues")
@reason("the issue would publish a credential")
forbid (principal, action == Action::"github.create_issue", resource)
when { context.findings.categories.contains("secret") };

@id("security-issues-need-a-lead")
@hold("security issues need a lead")
@approvers("leads")
permit (principal in AgentGroup::"triage", action == Action::"github.create_issue", resource)
when { context.input has labels && context.input.labels.contains("security") };

@id("refunds-are-held")
@hold("every refund needs a lead")
@approvers("leads")
permit (principal in AgentGroup::"triage", action == Action::"payments.refund", resource);
"""

# Filler policies: realistic shapes, each conditioned on the input so none is trivially
# skipped. `{a}` is the filler action, `{k}` a number making each policy distinct.
FILLER_POLICIES = [
    '@id("f{k}-permit")\npermit (principal in AgentGroup::"triage", action == Action::"{a}", resource)\n'
    'when {{ context.input.state == "open" && context.input has priority && context.input.priority < {p} }};\n',
    '@id("f{k}-forbid-closed")\nforbid (principal, action == Action::"{a}", resource)\n'
    'when {{ context.input.state == "closed" && context.input has note && context.input.note like "*freeze-{k}*" }};\n',
    '@id("f{k}-forbid-record")\nforbid (principal, action == Action::"{a}", resource == Record::"locked-{k}");\n',
    '@id("f{k}-hold")\n@hold("priority changes need a lead")\n@approvers("leads")\n'
    'permit (principal in AgentGroup::"triage", action == Action::"{a}", resource)\n'
    'when {{ context.input has priority && context.input.priority == {p} }};\n',
]


PER_FILE = 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--upstream-port", required=True, type=int)
    ap.add_argument("--actions", type=int, default=20)
    ap.add_argument("--policies", type=int, default=100)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.dir, "actions"), exist_ok=True)
    os.makedirs(os.path.join(args.dir, "policies"), exist_ok=True)
    with open(os.path.join(args.dir, "portcullis.yaml"), "w") as f:
        f.write(CONFIG.format())
    fillers = max(args.actions - 1, 1)
    with open(os.path.join(args.dir, "actions", "bench.yaml"), "w") as f:
        f.write(HOT_ACTION.format(port=args.upstream_port))
    # Files of at most PER_FILE actions or policies, as an operator would split them (an
    # action file holds at most 1,024 documents).
    for start in range(0, fillers, PER_FILE):
        with open(os.path.join(args.dir, "actions", f"svc-{start:05}.yaml"), "w") as f:
            for i in range(start, min(start + PER_FILE, fillers)):
                f.write(FILLER_ACTION.format(i=i, port=args.upstream_port).removeprefix("---\n" if i == start else ""))
    with open(os.path.join(args.dir, "policies", "bench.cedar"), "w") as f:
        f.write(HOT_POLICIES)
    fill = max(args.policies - HOT_POLICIES.count("@id("), 0)
    for start in range(0, fill, PER_FILE):
        with open(os.path.join(args.dir, "policies", f"svc-{start:05}.cedar"), "w") as f:
            for k in range(start, min(start + PER_FILE, fill)):
                shape = FILLER_POLICIES[k % len(FILLER_POLICIES)]
                f.write("\n" + shape.format(k=k, a=f"svc{k % fillers}.update", p=k % 5 + 1))


if __name__ == "__main__":
    main()
