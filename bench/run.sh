#!/usr/bin/env bash
# sysom-mcp benchmarks (issues 3 and 4): builds the release binary and bench/bare-hyper, then
# runs bench/bench.py, which prints a Markdown table and writes bench/results.md.
#
#   bench/run.sh            full run (a few minutes on 2 cores, bounded at 14)
#   bench/run.sh --sysom-before OLD_BINARY   also measures an older build in the in-session runs
#   bench/run.sh --quick    small counts, a smoke test of the script itself
#
# Needs: cargo, python3 (stdlib only), wrk (installed with apt-get if missing and possible).
# Loopback only. Every process it starts is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRIVER_PID=""
cleanup() {
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
        wait "$DRIVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: wrk not found; trying apt-get install -y wrk" >&2
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; } || true
    fi
    command -v wrk >/dev/null 2>&1 || echo "bench: no wrk; requests/second figures will be skipped" >&2
fi

echo "bench: building target/release/sysom-mcp and bench/bare-hyper (release)" >&2
timeout 900 cargo build --release --quiet --bin sysom-mcp
CARGO_TARGET_DIR="$ROOT/target/bench" timeout 600 cargo build --release --quiet \
    --manifest-path bench/bare-hyper/Cargo.toml

# 10,000 SSE sessions need ~10k descriptors in the server and as many in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ $(ulimit -n) -lt 20400 ]]; then ulimit -n 20400 2>/dev/null || true; fi

timeout --signal=TERM --kill-after=10 840 python3 bench/bench.py \
    --sysom "$ROOT/target/release/sysom-mcp" \
    --bare "$ROOT/target/bench/release/bare-hyper" \
    --mock "$ROOT/tests/mock_sysom/mock_sysom.py" \
    --out "$ROOT/bench/results.md" "$@" &
DRIVER_PID=$!
wait "$DRIVER_PID"
