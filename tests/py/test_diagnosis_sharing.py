"""Identical diagnoses in flight share one upstream task; one caller's cancellation leaves the others."""

from __future__ import annotations

import anyio
import pytest

from support import INSTANCE, UID, payload

pytestmark = pytest.mark.anyio

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


def invokes(mock) -> list[dict]:
    return mock.requests(action="InvokeDiagnosis")


async def test_identical_concurrent_calls_make_one_upstream_task(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 8})
    results: list[dict] = []

    async def call():
        results.append(payload(await mcp_client.call("memgraph", DIAG_ARGS)))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
    assert [r["code"] for r in results] == ["Success"] * 3
    assert len({r["task_id"] for r in results}) == 1, results
    assert len(invokes(mock)) == 1, "three identical calls must share one InvokeDiagnosis"


async def test_different_arguments_are_not_shared(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 4})
    other = dict(DIAG_ARGS, instance="i-other")
    async with anyio.create_task_group() as tg:
        tg.start_soon(mcp_client.call, "memgraph", DIAG_ARGS)
        tg.start_soon(mcp_client.call, "memgraph", other)
        tg.start_soon(mcp_client.call, "loadtask", DIAG_ARGS)
    assert len(invokes(mock)) == 3


async def test_a_finished_shared_call_is_not_reused(mcp_client, mock):
    """Coalescing is for calls in flight: a later identical call gets a fresh diagnosis."""
    first = payload(await mcp_client.call("memgraph", DIAG_ARGS))
    second = payload(await mcp_client.call("memgraph", DIAG_ARGS))
    assert first["task_id"] != second["task_id"]
    assert len(invokes(mock)) == 2


async def test_one_caller_cancelling_does_not_cancel_the_other(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 9})
    survivor: list[dict] = []

    async def stays():
        survivor.append(payload(await mcp_client.call("memgraph", DIAG_ARGS)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(stays)
        with anyio.move_on_after(0.3) as scope:
            await mcp_client.call("memgraph", DIAG_ARGS)
        assert scope.cancelled_caught
    assert survivor and survivor[0]["code"] == "Success", survivor
    assert len(invokes(mock)) == 1


# --- a broken connection: the diagnosis goes on, and the repeated call gets its result ---------

@pytest.mark.parametrize("stateless", [True, False], ids=["stateless", "session"])
def test_repeated_call_after_a_dropped_connection_gets_the_same_task(mock, stateless):
    import json
    import socket
    import time

    import support
    from support import MCP_PATH, Server, jsonrpc_answer, post_json_headers

    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 1.5})
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="20")
    with Server(env, ["--stateless"] if stateless else []) as srv:
        session: dict[str, str] = {}
        if not stateless:
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "reconnect-test", "version": "1"}}}
            _, headers, _ = srv.request("POST", MCP_PATH, body=init, headers=post_json_headers())
            session = {"Mcp-Session-Id": headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
            srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers=post_json_headers(session))
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "memgraph", "arguments": DIAG_ARGS}})
        head = "".join(f"{k}: {v}\r\n" for k, v in post_json_headers(session).items())
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall((f"POST {MCP_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                      f"Content-Length: {len(call)}\r\n\r\n{call}").encode())
        mock.wait_for(lambda reqs: any(r["action"] == "GetDiagnosisResult" for r in reqs), timeout=10)
        sock.close()  # the client's connection breaks mid-diagnosis
        time.sleep(0.3)
        status, headers, body = srv.request("POST", MCP_PATH, body=call.replace('"id": 1', '"id": 2'),
                                            headers=post_json_headers(session), timeout=20)
        assert status == 200, body[:300]
        out = jsonrpc_answer(headers, body)["result"]["structuredContent"]
    assert out["code"] == "Success", out
    started = invokes(mock)
    assert len(started) == 1, "the repeated call must attach to the running diagnosis, not start another"
