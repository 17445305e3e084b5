"""Issue 17 item 15: the JSON-RPC error codes and HTTP statuses the spec gives for malformed
requests, on every transport: invalid `tools/call` params are -32602 (not -32601 "method not
found"), a DELETE of an unknown session is 404, an `initialize` without the Accept types a
session needs is a JSON 406, and a sessionless `initialize` with bad params says what is wrong.
"""

from __future__ import annotations

import json

import pytest

import support
from support import INITIALIZE, MCP_PATH, jsonrpc_answer, post_json_headers

# tools/call requests whose params do not fit CallToolRequestParams.
BAD_CALLS = {
    "array-arguments": {"name": "list_instances", "arguments": []},
    "string-arguments": {"name": "list_instances", "arguments": "region=cn-hangzhou"},
    "numeric-name": {"name": 1, "arguments": {}},
    "missing-params": None,
}


def bad_call(rid, params):
    msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/call"}
    if params is not None:
        msg["params"] = params
    return msg


def assert_invalid_params(answer: dict, rid) -> None:
    assert answer.get("id") == rid, answer
    assert "error" in answer, answer
    assert answer["error"]["code"] == -32602, answer
    assert "tools/call" in answer["error"]["message"], answer


@pytest.mark.parametrize("params", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_tools_call_params_are_invalid_params_sessionless(start, params):
    srv = start()
    status, headers, body = srv.request("POST", MCP_PATH, body=bad_call(7, params),
                                        headers=post_json_headers())
    assert status == 200, (status, body)
    assert_invalid_params(jsonrpc_answer(headers, body), 7)


def test_bad_tools_call_params_are_invalid_params_in_a_session(start):
    srv = start()
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    assert status == 200
    session = {"Mcp-Session-Id": headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
    srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=post_json_headers(session))
    for i, params in enumerate(BAD_CALLS.values(), start=10):
        status, headers, body = srv.request("POST", MCP_PATH, body=bad_call(i, params),
                                            headers=post_json_headers(session))
        assert status == 200, (status, body)
        assert_invalid_params(jsonrpc_answer(headers, body), i)


def test_bad_tools_call_params_are_invalid_params_on_stdio(env):
    client = support.RawStdio(env)
    try:
        client.initialize()
        for params in BAD_CALLS.values():
            rid = client._next_id
            client._next_id += 1
            client.send(bad_call(rid, params))
            assert_invalid_params(client.wait_response(rid, timeout=10), rid)
    finally:
        client.proc.kill()
        client.proc.wait()


def test_delete_of_an_unknown_session_is_404(start):
    srv = start()
    status, headers, body = srv.request("DELETE", MCP_PATH, headers={"Mcp-Session-Id": "no-such-session"})
    # The same 404 as a POST in an unknown (or another principal's) session.
    assert status == 404, (status, body)
    assert b"Session not found" in body, body
    # A real session is still deleted with 204, and then it is unknown too.
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    sid = headers["mcp-session-id"]
    assert srv.request("DELETE", MCP_PATH, headers={"Mcp-Session-Id": sid})[0] == 204
    assert srv.request("DELETE", MCP_PATH, headers={"Mcp-Session-Id": sid})[0] == 404


@pytest.mark.parametrize("accept", [None, "application/json", "text/event-stream"],
                         ids=["no-accept", "json-only", "sse-only"])
def test_initialize_without_both_accept_types_is_a_json_406(start, accept):
    srv = start()
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    status, resp_headers, body = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=headers)
    assert status == 406, (status, body)
    assert resp_headers["content-type"].startswith("application/json"), resp_headers
    answer = json.loads(body)
    assert answer["id"] == INITIALIZE["id"], answer
    assert answer["error"]["code"] == -32600, answer
    message = answer["error"]["message"]
    assert "application/json" in message and "text/event-stream" in message, message
    assert "mcp-session-id" not in resp_headers


@pytest.mark.parametrize("params", [
    [],
    {"protocolVersion": 20250618, "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}},
    {"protocolVersion": "2025-06-18", "capabilities": {}},
], ids=["array", "numeric-version", "no-client-info"])
def test_sessionless_bad_initialize_is_invalid_params(start, params):
    srv = start()
    msg = {**INITIALIZE, "params": params}
    status, headers, body = srv.request("POST", MCP_PATH, body=msg, headers=post_json_headers())
    assert status == 400, (status, body)
    answer = json.loads(body)
    assert answer["id"] == INITIALIZE["id"], answer
    assert answer["error"]["code"] == -32602, answer
    assert "initialize" in answer["error"]["message"], answer
    assert "Session ID" not in answer["error"]["message"], answer
    assert "mcp-session-id" not in headers


# Item 14 (a call running when the grace ends gets a JSON-RPC error) is asserted in
# test_http_limits.py::test_sigterm_answers_calls_running_at_the_end_of_the_grace.
