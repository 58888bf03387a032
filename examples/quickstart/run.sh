#!/usr/bin/env bash
# Portcullis quick start: builds the gateway, starts a DEMO upstream on loopback, and walks
# five intents through the pipeline (allowed, denied, dry run, held, redacted). Needs only cargo, python3 and curl; no network, no
# pre-existing secrets. Everything it creates lives in a temporary directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# PORTCULLIS_BIN names an already-built binary (CI reuses the one its tests built).
if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$(cd "$(dirname "$PORTCULLIS_BIN")" && pwd)/$(basename "$PORTCULLIS_BIN")
else
  cargo build --quiet --release -p portcullis --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/portcullis"
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cp -r "$here/actions" "$here/policies" "$here/portcullis.yaml" "$work/"
cd "$work"
export PORTCULLIS_CONFIG="$work/portcullis.yaml"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start the DEMO upstream (a stand-in for a real API, on 127.0.0.1)"
python3 "$root/examples/demo-upstream/upstream.py" "$work/upstream.port" & pids+=($!)
for _ in $(seq 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
port=$(cat "$work/upstream.port")
sed -i "s/UPSTREAM_PORT/$port/g" actions/*.yaml
echo "demo upstream on 127.0.0.1:$port"

step "create a master key, store the upstream's API token encrypted, create an agent"
"$bin" secret keygen > master.key
upstream_token="demo-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$upstream_token" | "$bin" secret set tracker_token
"$bin" secret list
agent_token=$("$bin" agent add support-bot)
lead_token=$("$bin" approvals token lena)

step "portcullis check"
"$bin" check

step "portcullis serve"
"$bin" serve --listen 127.0.0.1:0 2> serve.log & pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' serve.log 2>/dev/null && break; sleep 0.1; done
gw=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' serve.log | head -1)
echo "gateway at $gw"

intent() {
  curl -s -w '\nHTTP %{http_code}\n' -H "Authorization: Bearer $agent_token" -H 'Content-Type: application/json' \
    -X POST "$gw/v1/intents" -d "$1"
}

step "1. allowed: the agent creates a ticket; Portcullis injects the credential"
intent '{"action": "tickets.create", "input": {"project": "website", "title": "Login page is slow"}}'

step "2. denied by policy, with the reason"
intent '{"action": "tickets.create", "input": {"project": "website", "title": "Everything is down", "priority": "urgent"}}'

step "3. dry run: the request that would be sent, credential shown as <redacted>"
intent '{"action": "tickets.create", "input": {"project": "docs", "title": "Typo"}, "dry_run": true}'

step "4. held for a person: a high-priority ticket waits for a support lead"
held=$(curl -s -H "Authorization: Bearer $agent_token" -H 'Content-Type: application/json' -X POST "$gw/v1/intents" \
  -d '{"action": "tickets.create", "input": {"project": "website", "title": "Checkout fails", "priority": "high"}}')
echo "$held"
held_id=$(printf '%s' "$held" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# The agent long-polls for the outcome while the lead reviews and approves from the CLI.
curl -s -H "Authorization: Bearer $agent_token" "$gw/v1/intents/$held_id?wait=30" > held.result &
poll=$!
PORTCULLIS_URL="$gw" PORTCULLIS_TOKEN="$lead_token" "$bin" approvals approve "$held_id" --reason "customer-facing outage" > /dev/null
wait "$poll"
echo "the agent's long-poll returned:"
cat held.result; echo

step "5. redacted: a customer record comes back with personal data and a pasted key masked"
intent '{"action": "customers.get", "input": {}}'

step "what the upstream received (the credential arrived; the agent never saw it)"
curl -s "http://127.0.0.1:$port/__requests" | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    auth = [v for k, v in r["headers"] if k == "authorization"]
    print(r["method"], r["path"], "authorization:", auth)'
echo "the token stored with 'secret set' was: $upstream_token"

step "portcullis audit verify"
"$bin" audit verify
"$bin" audit tail -n 3
