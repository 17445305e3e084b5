#!/usr/bin/env bash
# Integration tests: the mock SysOM server's own tests, then the sysom-mcp suite (tests/py) once
# with the Python MCP client 2.x and once with 1.x, then the TypeScript SDK clients (tests/ts) and
# the official MCP conformance suite (tests/conformance).
#
#   tests/run.sh [extra pytest args for tests/py]      e.g. tests/run.sh -k diagnosis -x
#
# Env: SYSOM_MCP_BIN (default target/debug/sysom-mcp, built with `cargo build` if missing),
#      PYTHON (default python3, >= 3.11), SYSOM_TEST_VENVS (default "test-mcp2 test-mcp1"),
#      SYSOM_TEST_TIMEOUT (per-test seconds, default 120), SYSOM_TEST_SKIP_TS=1 (skip tests/ts and tests/conformance).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
python=${PYTHON:-python3}
timeout=${SYSOM_TEST_TIMEOUT:-120}
venvs=${SYSOM_TEST_VENVS:-"test-mcp2 test-mcp1"}

export SYSOM_MCP_BIN=${SYSOM_MCP_BIN:-$root/target/debug/sysom-mcp}
if [[ ! -x $SYSOM_MCP_BIN ]]; then
    echo "run.sh: $SYSOM_MCP_BIN missing, running cargo build" >&2
    cargo build
fi

# The client versions under test; mcp 1.10 is the first with call_tool(progress_callback=).
requirement() {
    case $1 in
        test-mcp2) echo "mcp>=2,<3" ;;
        test-mcp1) echo "mcp>=1.10,<2" ;;
        *) echo "run.sh: unknown venv $1" >&2; return 2 ;;
    esac
}

ensure_venv() {
    local name=$1 dir=$root/.venv/$1 req
    req=$(requirement "$name")
    if "$dir/bin/python" - "$req" 2>/dev/null <<'EOF'
import sys, importlib.metadata as md
from packaging.requirements import Requirement
import pytest, pytest_timeout  # noqa: F401
sys.exit(0 if Requirement(sys.argv[1]).specifier.contains(md.version("mcp")) else 1)
EOF
    then
        return 0
    fi
    echo "run.sh: creating .venv/$name ($req)" >&2
    "$python" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$req" pytest pytest-timeout packaging
}

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
run_pytest() {
    local label=$1; shift
    local rc=0
    echo "=== $label" >&2
    "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "run.sh: $label collected no tests" >&2
    fi
    return "$rc"
}

status=0
first=1
# Qwen Code (npm) for the client test in tests/py/test_http_clients.py; the test skips only if
# npm cannot install it.
qwen_version=${SYSOM_TEST_QWEN_VERSION:-0.24.4}
if command -v npm >/dev/null && [[ ! -x .venv/qwen/node_modules/.bin/qwen ]]; then
    npm install --prefix .venv/qwen --no-audit --no-fund "@qwen-code/qwen-code@$qwen_version" >&2 \
        || echo "run.sh: @qwen-code/qwen-code install failed; its test will skip" >&2
fi

# The OpenID provider (oidc-provider, npm) for tests/py/test_http_oauth.py; the test skips only if
# npm cannot install it. Pinned by tests/oauth/package-lock.json.
if command -v npm >/dev/null && [[ ! -d tests/oauth/node_modules/oidc-provider ]]; then
    timeout 300 npm ci --prefix tests/oauth --no-audit --no-fund >&2 \
        || echo "run.sh: tests/oauth (oidc-provider) install failed; the OAuth tests will skip" >&2
fi

for name in $venvs; do
    ensure_venv "$name"
    py=$root/.venv/$name/bin/python
    common=(-p no:cacheprovider --timeout="$timeout" -ra)
    if [[ $first -eq 1 ]]; then
        # The mock does not depend on the MCP client version: test it once.
        run_pytest "mock server ($name)" "$py" -m pytest "${common[@]}" tests/mock_sysom || status=1
        first=0
    fi
    run_pytest "sysom-mcp stdio suite ($name)" "$py" -m pytest "${common[@]}" tests/py "$@" || status=1
done
# Extra pytest args select Python tests; the TypeScript suite runs on full runs only.
if [[ $# -eq 0 && ${SYSOM_TEST_SKIP_TS:-0} != 1 ]]; then
    echo "=== TypeScript SDK clients (tests/ts)" >&2
    tests/ts/run.sh || status=1
    echo "=== MCP conformance suite (tests/conformance)" >&2
    tests/conformance/run.sh || status=1
fi
exit "$status"
