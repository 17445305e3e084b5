#!/usr/bin/env bash
# The TypeScript SDK client tests (tests/ts/test/*.test.mjs): installs the pinned
# @modelcontextprotocol/sdk from package-lock.json with `npm ci` (bounded in time) when
# node_modules is missing or older than the lockfile, then runs node's test runner.
#
# Env: SYSOM_MCP_BIN (default target/debug/sysom-mcp), PYTHON (for the mock, default python3),
#      SYSOM_TEST_NPM_TIMEOUT (seconds for npm ci, default 300).
# To move to a newer SDK: `npm install @modelcontextprotocol/sdk@1` here and commit the lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -d node_modules/@modelcontextprotocol/sdk || package-lock.json -nt node_modules/.package-lock.json ]]; then
    timeout "${SYSOM_TEST_NPM_TIMEOUT:-300}" npm ci --no-audit --no-fund --loglevel=error >&2
fi
# The OpenID provider of test/oauth.test.mjs (shared with tests/py/test_http_oauth.py).
if [[ ! -d ../oauth/node_modules/oidc-provider ]]; then
    timeout "${SYSOM_TEST_NPM_TIMEOUT:-300}" npm ci --prefix ../oauth --no-audit --no-fund --loglevel=error >&2 \
        || echo "tests/ts/run.sh: tests/oauth install failed; the OAuth test will skip" >&2
fi
exec node --test --test-concurrency=1 --test-timeout=120000 test/
