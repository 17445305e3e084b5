"""Failure modes over stdio: bad arguments, upstream errors, retries, diagnosis outcomes,
malformed or slow upstream answers, missing or wrong credentials.
"""

from __future__ import annotations

import re
import time

import pytest

import support
from support import INSTANCE, MINIMAL_ARGS, UID, payload, result_text

pytestmark = pytest.mark.anyio

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


def business_error(res: dict, *, diagnosis: bool = False) -> dict:
    """A failure reported in the envelope (code != Success) as the original does; a failed
    diagnosis is also marked isError true (issue 11), with the same envelope in
    structuredContent and the text, so clients treat it as a failed call."""
    assert res["isError"] is diagnosis, result_text(res)
    assert "structuredContent" in res, res
    out = payload(res)
    assert out["code"] != "Success", out
    assert isinstance(out.get("message"), str) and out["message"], out
    return out


# ------------------------------------------------------------------ argument validation


@pytest.mark.parametrize("tool,args,field", [
    ("list_history_tasks", {}, "days"),
    ("list_history_tasks", {"days": 0}, "days"),
    ("list_history_tasks", {"days": 31}, "days"),
    ("list_history_tasks", {"days": "seven"}, "days"),
    ("memgraph", {"uid": UID, "channel": "ecs"}, "region"),
    ("iofsstat", {"uid": UID, "region": "cn-hangzhou", "channel": "ecs"}, "instance"),
    ("query_diagnosis_task", {"task_id": 12345}, "task_id"),
    ("list_instances", {"uid": UID, "current": "first"}, "current"),
    ("create_dmesg_diagnosis_task", {}, "dmesg_url"),
])
async def test_invalid_arguments(mcp_client, mock, tool, args, field):
    res = await mcp_client.call(tool, args)
    assert res["isError"] is True, res
    assert field in result_text(res)
    assert mock.requests(kind=None) == [], "invalid arguments must not reach the upstream"


async def test_unknown_tool(mcp_client):
    """An unknown tool is the JSON-RPC error -32602 (Invalid params) the spec lists for it."""
    from mcp.shared import exceptions
    McpError = getattr(exceptions, "MCPError", None) or exceptions.McpError  # renamed in mcp 2.x
    with pytest.raises(McpError) as info:
        await mcp_client.call("no_such_tool", {})
    error = getattr(info.value, "error", None)
    code = getattr(error, "code", None) if error is not None else getattr(info.value, "code", None)
    assert code == -32602, info.value
    assert "no_such_tool" in str(info.value)


# ------------------------------------------------------------------ upstream HTTP errors


FORBIDDEN = {"status": 403, "code": "Forbidden.NoPermission", "request_id": "RID-403-abc",
             "message": "You are not authorized to operate this resource."}


def assert_permission_message(message: str):
    assert "Forbidden.NoPermission" in message
    assert "You are not authorized to operate this resource." in message
    assert "RID-403-abc" in message
    assert "initial_sysom" in message or "alinux.console.aliyun.com" in message, "permission hint missing"


async def test_forbidden_on_query_tool(mcp_client, mock):
    mock.scenario(faults={"ListVmcoreDiagnosisTask": [FORBIDDEN]})
    out = business_error(await mcp_client.call("list_history_tasks", {"days": 3}))
    assert_permission_message(out["message"])
    assert len(mock.requests(action="ListVmcoreDiagnosisTask")) == 1, "a 403 must not be retried"


async def test_forbidden_on_diagnosis(mcp_client, mock):
    mock.scenario(faults={"InvokeDiagnosis": [FORBIDDEN]})
    out = business_error(await mcp_client.call("memgraph", DIAG_ARGS), diagnosis=True)
    assert out["code"] == "TaskCreateFailed"
    assert_permission_message(out["message"])
    assert mock.requests(action="GetDiagnosisResult") == []


@pytest.mark.parametrize("fault", [
    {"status": 500, "code": "InternalError", "message": "The request processing has failed."},
    {"status": 503, "code": "ServiceUnavailable", "message": "The request has failed due to a temporary failure."},
    # The gateway answers throttling with HTTP 400 and a Throttling* code.
    {"status": 400, "code": "Throttling.User", "message": "Request was denied due to user flow control."},
], ids=["500", "503", "throttling"])
async def test_get_is_retried_after_transient_error(mcp_client, mock, fault):
    mock.scenario(faults={"ListClusters": [fault]})
    out = payload(await mcp_client.call("list_clusters", {"uid": UID}))
    assert out["code"] == "Success", out
    recs = mock.requests(action="ListClusters")
    assert [r["status"] for r in recs] == [fault["status"], 200]
    # Each attempt is signed anew (the mock rejects a reused nonce).
    assert len({r["headers"]["x-acs-signature-nonce"] for r in recs}) == 2


async def test_get_retries_are_bounded(mcp_client, mock):
    mock.scenario(faults={"ListClusters": [{"status": 503, "code": "ServiceUnavailable", "times": -1}]})
    out = business_error(await mcp_client.call("list_clusters", {"uid": UID}))
    assert "ServiceUnavailable" in out["message"]
    assert len(mock.requests(action="ListClusters")) == 3, "SYSOM_MCP_MAX_RETRIES defaults to 2"


async def test_post_invoke_diagnosis_not_retried(mcp_client, mock):
    mock.scenario(faults={"InvokeDiagnosis": [{"status": 500, "code": "InternalError", "message": "boom"}]})
    out = business_error(await mcp_client.call("memgraph", DIAG_ARGS), diagnosis=True)
    assert out["code"] == "TaskCreateFailed"
    assert "InternalError" in out["message"]
    assert len(mock.requests(action="InvokeDiagnosis")) == 1, "a non-idempotent POST must not be retried"
    assert mock.requests(action="GetDiagnosisResult") == []


# ------------------------------------------------------------------ diagnosis outcomes


async def test_diagnosis_fail(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 1, "final": "Fail", "err_msg": "sysak agent is not installed"})
    out = business_error(await mcp_client.call("oomcheck", DIAG_ARGS), diagnosis=True)
    assert out["code"] == "TaskExecuteFailed"
    assert "sysak agent is not installed" in out["message"]
    assert out["task_id"] == mock.requests(action="GetDiagnosisResult")[0]["query"]["task_id"]


async def test_diagnosis_timeout(mock, env, config_file):
    mock.scenario(diagnosis={"final": "never"})
    env = dict(env, SYSOM_MCP_DIAGNOSIS_TIMEOUT="2")
    async with support.open_session(env, config=config_file) as client:
        t0 = time.monotonic()
        out = business_error(await client.call("loadtask", DIAG_ARGS), diagnosis=True)
        elapsed = time.monotonic() - t0
    assert out["code"] == "TaskTimeout"
    task_id = mock.requests(action="GetDiagnosisResult")[0]["query"]["task_id"]
    assert out["task_id"] == task_id and task_id in out["message"]
    assert 1.8 <= elapsed < 8, f"timed out after {elapsed:.1f}s, configured 2s"
    assert len(mock.requests(action="GetDiagnosisResult")) >= 5, "polls every 50 ms until the timeout"


async def test_diagnosis_result_not_json(mcp_client, mock):
    raw = "Traceback: this is {not json"
    mock.scenario(diagnosis={"polls_before_done": 0, "result": raw})
    out = business_error(await mcp_client.call("vmcore", DIAG_ARGS), diagnosis=True)
    assert out["code"] == "ResultParseFailed"
    assert out["result"] == {"raw": raw}


async def test_diagnosis_poll_error_is_get_result_failed(mcp_client, mock):
    # A non-retryable error while polling ends the diagnosis with GetResultFailed.
    mock.scenario(faults={"GetDiagnosisResult": [FORBIDDEN]})
    out = business_error(await mcp_client.call("delay", DIAG_ARGS), diagnosis=True)
    assert out["code"] == "GetResultFailed"
    assert_permission_message(out["message"])


# ------------------------------------------------------------------ broken upstream answers


async def test_malformed_upstream_json(mcp_client, mock):
    mock.scenario(faults={"ListClusters": [{"malformed": True}]})
    business_error(await mcp_client.call("list_clusters", {"uid": UID}))
    # The server survived and serves the next call.
    assert payload(await mcp_client.call("list_clusters", {"uid": UID}))["code"] == "Success"


async def test_slow_upstream_hits_read_timeout(mock, env, config_file):
    mock.scenario(faults={"ListClusters": [{"delay_ms": 2000, "times": -1}]})
    env = dict(env, SYSOM_MCP_READ_TIMEOUT_MS="300", SYSOM_MCP_MAX_RETRIES="0")
    async with support.open_session(env, config=config_file) as client:
        t0 = time.monotonic()
        out = business_error(await client.call("list_clusters", {"uid": UID}))
        elapsed = time.monotonic() - t0
    assert elapsed < 1.9, f"read timeout 300 ms not applied ({elapsed:.1f}s)"
    assert re.search(r"time[sd]?[ -]?out", out["message"], re.I), out["message"]


# ------------------------------------------------------------------ credentials problems


async def test_no_credentials(mock, sysom_bin, config_file):
    env = support.server_env(mock, credentials=False)
    async with support.open_session(env, config=config_file) as client:
        assert len(await client.list_tools()) == 21
        for name, args in MINIMAL_ARGS.items():
            res = await client.call(name, args)
            text = result_text(res)
            assert "ACCESS_KEY_ID" in text and "ACCESS_KEY_SECRET" in text, (name, text)
            if not res["isError"]:
                assert payload(res)["code"] != "Success", name
    assert mock.requests(kind=None) == [], "nothing may be sent without credentials"


async def test_wrong_secret_reports_signature_error(mock, sysom_bin, config_file):
    env = support.server_env(mock, ACCESS_KEY_SECRET="not-the-secret-the-mock-knows")
    async with support.open_session(env, config=config_file) as client:
        out = business_error(await client.call("list_history_tasks", {"days": 1}))
    assert "IncompleteSignature" in out["message"] or "SignatureDoesNotMatch" in out["message"]
    recs = mock.requests(action="ListVmcoreDiagnosisTask")
    assert len(recs) == 1 and recs[0]["signature_ok"] is False, "signature errors are not retried"
