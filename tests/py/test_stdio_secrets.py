"""No secret ever appears in what the binary prints, even at RUST_LOG=trace, and stdout in stdio
mode carries nothing but JSON-RPC messages (the original leaked the AccessKey secret to stdout).
"""

from __future__ import annotations

import json

import pytest

import support
from support import INSTANCE, UID, RawStdio, raw_payload
from control import MockSysom

CANARY_AKID = "LTAI5tCanaryAccessKeyId"
CANARY_SECRET = "sk-SECRET-canary-7f3a9c61d2"
CANARY_TOKEN = "tok-canary-5b8e2d40aa"
CANARY_BEARER = "bearer-canary-91c4e7b3"
CANARY_DASHSCOPE = "sk-dashscope-canary-3e7d"
CANARIES = [CANARY_SECRET, CANARY_TOKEN, CANARY_BEARER, CANARY_DASHSCOPE]

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


@pytest.fixture
def canary_mock():
    with MockSysom(access_key_id=CANARY_AKID, access_key_secret=CANARY_SECRET,
                   security_token=CANARY_TOKEN) as m:
        yield m


def canary_env(mock, tmp_path, secret=CANARY_SECRET) -> dict[str, str]:
    token_file = tmp_path / "mcp-tokens"
    token_file.write_text(f"# client tokens\n{CANARY_BEARER}\n")
    return support.server_env(mock, OPENAPI_TYPE="sts", ACCESS_KEY_ID=CANARY_AKID, ACCESS_KEY_SECRET=secret,
                              SECURITY_TOKEN=CANARY_TOKEN, SYSOM_MCP_TOKEN_FILE=str(token_file),
                              DASHSCOPE_API_KEY=CANARY_DASHSCOPE, RUST_LOG="trace")


def exercise(srv: RawStdio, mock) -> None:
    srv.initialize()
    srv.request("tools/list")
    srv.call_tool("list_history_tasks", {"days": 2})
    mock.scenario(faults={"ListClusters": [{"status": 403, "code": "Forbidden.NoPermission", "message": "denied"}],
                          "ListInstances": [{"malformed": True}]})
    srv.call_tool("list_clusters", {"uid": UID})
    srv.call_tool("list_instances", {"uid": UID})
    srv.call_tool("list_history_tasks", {"days": 99})  # invalid argument
    srv.call_tool("memgraph", DIAG_ARGS)
    srv.call_tool("check_sysom_initialed", {"uid": UID})


def assert_clean(srv: RawStdio, stderr_path):
    stdout = b"".join(srv.stdout_lines)
    stderr = stderr_path.read_bytes()
    for canary in CANARIES:
        assert canary.encode() not in stdout, f"{canary} leaked to stdout"
        assert canary.encode() not in stderr, f"{canary} leaked to stderr"
    for line in srv.stdout_lines:
        msg = json.loads(line)  # raises on any non-JSON line
        assert msg.get("jsonrpc") == "2.0", line
    return stdout, stderr


def test_no_secrets_in_output_at_trace_level(canary_mock, config_file, tmp_path, sysom_bin):
    stderr_path = tmp_path / "stderr.log"
    with RawStdio(canary_env(canary_mock, tmp_path), ["--config", str(config_file)], stderr_path) as srv:
        exercise(srv, canary_mock)
        ok = srv.call_tool("list_history_tasks", {"days": 1})
    assert raw_payload(ok)["code"] == "Success", "STS credentials were not used"
    _, stderr = assert_clean(srv, stderr_path)
    assert stderr.strip(), "RUST_LOG=trace produced no log at all; the leak check would be vacuous"
    # The upstream really got the token (so it was in the process and still not printed).
    assert all(r["headers"].get("x-acs-security-token") == CANARY_TOKEN for r in canary_mock.requests())


def test_no_secrets_in_output_on_signature_failure(canary_mock, config_file, tmp_path, sysom_bin):
    stderr_path = tmp_path / "stderr.log"
    wrong = CANARY_SECRET + "-wrong"
    env = canary_env(canary_mock, tmp_path, secret=wrong)
    with RawStdio(env, ["--config", str(config_file)], stderr_path) as srv:
        srv.initialize()
        resp = srv.call_tool("list_history_tasks", {"days": 2})
    assert "IncompleteSignature" in json.dumps(resp)
    stdout, stderr = assert_clean(srv, stderr_path)
    assert wrong.encode() not in stdout + stderr
