#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time on its saved corpus (fuzz/corpus/<target>),
# keeping what it finds there. Needs a nightly toolchain; without one it says so and exits 0:
# `cargo test --test fuzz_replay` (part of `make unit`) replays the corpora on stable.
#
#   fuzz/run.sh [seconds per target, default $FUZZ_SECONDS or 20] [targets…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-${FUZZ_SECONDS:-20}}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(jsonrpc_message legacy_sse proxy_sse config_file signing)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz/run.sh: no nightly toolchain; fuzzing skipped (the corpora are replayed by cargo test --test fuzz_replay)" >&2
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    timeout 900 cargo install --locked cargo-fuzz >&2
fi
cargo +nightly fuzz build >&2
status=0
for t in "${targets[@]}"; do
    echo "=== fuzz $t for ${seconds}s" >&2
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 \
        -rss_limit_mb=2048 -print_final_stats=1 >&2 || { echo "fuzz/run.sh: $t FOUND A CRASH (fuzz/artifacts/$t)" >&2; status=1; }
done
exit "$status"
