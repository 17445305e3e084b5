#!/usr/bin/env bash
# A/B of two release builds of the same commit (e.g. opt-level 3 vs "s"): binary size, idle RSS
# after one in-session tools/list, and in-session tools/list req/s at c=1 and c=32 (wrk, 5 s
# each), two rounds alternating the builds so that load on the machine hits both alike.
#   bench/ab-opt-level.sh BUILD_A BUILD_B
# Build B with e.g.: CARGO_TARGET_DIR=target-s CARGO_PROFILE_RELEASE_OPT_LEVEL=3 cargo build --release
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_A BUILD_B" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
port=7401
url=http://127.0.0.1:$port/mcp/unified
post() { curl -s -X POST -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' "$@" "$url"; }
for round in 1 2; do
    for bin in "$1" "$2"; do
        env -i PATH=/usr/bin:/bin "$bin" --sse --host 127.0.0.1 --port $port --log stderr 2>/dev/null &
        pid=$!
        for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
        sid=$(post -D - -o /dev/null -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"ab","version":"1"}}}' \
              | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}' | tr -d '\r')
        post -o /dev/null -H "mcp-session-id: $sid" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
        post -o /dev/null -H "mcp-session-id: $sid" -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
        sleep 0.3
        rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
        cat > "$work/s.lua" <<LUA
counter = 10
request = function()
  counter = counter + 1
  return wrk.format("POST", "/mcp/unified", {["content-type"]="application/json",
    ["accept"]="application/json, text/event-stream", ["mcp-session-id"]="$sid"},
    '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/list"}')
end
LUA
        c1=$(wrk -t1 -c1 -d5s -s "$work/s.lua" "http://127.0.0.1:$port/" | awk '/Requests\/sec/{print $2}')
        c32=$(wrk -t2 -c32 -d5s -s "$work/s.lua" "http://127.0.0.1:$port/" | awk '/Requests\/sec/{print $2}')
        echo "round $round  $bin  size $(stat -c %s "$bin") B  idle RSS ${rss} kB  c=1 ${c1} req/s  c=32 ${c32} req/s"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done
