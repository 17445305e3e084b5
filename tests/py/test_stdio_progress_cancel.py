"""Progress notifications during a diagnosis, and cancellation stopping the upstream polling."""

from __future__ import annotations

import time

import anyio
import pytest

import support
from support import INSTANCE, UID, RawStdio, payload, raw_payload

pytestmark = pytest.mark.anyio

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


def poll_count(mock) -> int:
    return len(mock.requests(action="GetDiagnosisResult"))


SETTLE, WATCH = 0.3, 0.6  # let in-flight polls finish, then watch 12 poll intervals of 50 ms
STOPPED = "GetDiagnosisResult polling continued after cancellation"


def assert_polling_stopped(mock):
    time.sleep(SETTLE)
    before = poll_count(mock)
    time.sleep(WATCH)
    assert poll_count(mock) == before, STOPPED


async def assert_polling_stopped_async(mock):
    # Must not block the event loop: the client writes its courtesy cancel from it.
    await anyio.sleep(SETTLE)
    before = poll_count(mock)
    await anyio.sleep(WATCH)
    assert poll_count(mock) == before, STOPPED


async def test_progress_notifications(mcp_client, mock):
    mock.scenario(diagnosis={"polls_before_done": 4})
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    out = payload(await mcp_client.call("memgraph", DIAG_ARGS, progress=on_progress))
    assert out["code"] == "Success"
    assert len(seen) >= 1, "no notifications/progress for a call that carried a progressToken"
    progresses = [p for p, _, _ in seen]
    assert progresses == sorted(progresses), "progress must increase"


def test_cancel_notification_stops_polling(mock, env, config_file, tmp_path):
    """Raw JSON-RPC: send notifications/cancelled for an in-flight diagnosis (works for any client)."""
    mock.scenario(diagnosis={"final": "never"})
    env = dict(env, SYSOM_MCP_DIAGNOSIS_TIMEOUT="60")
    with RawStdio(env, ["--config", str(config_file)], stderr_path=tmp_path / "stderr.log") as srv:
        srv.initialize()
        rid = srv.start_request("tools/call", {"name": "iodiagnose", "arguments": DIAG_ARGS})
        mock.wait_for(lambda reqs: sum(r["action"] == "GetDiagnosisResult" for r in reqs) >= 3, timeout=10)
        srv.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": rid, "reason": "user cancelled"}})
        assert_polling_stopped(mock)
        # The session stays usable after a cancellation.
        resp = srv.call_tool("list_history_tasks", {"days": 1})
        assert raw_payload(resp)["code"] == "Success"


@pytest.mark.skipif(support.MCP_MAJOR < 2, reason="mcp 1.x does not send notifications/cancelled when the "
                                                  "caller abandons a request")
async def test_client_side_cancellation_stops_polling(mcp_client, mock):
    mock.scenario(diagnosis={"final": "never"})
    with anyio.move_on_after(0.6) as scope:
        await mcp_client.call("packetdrop", DIAG_ARGS)
    assert scope.cancelled_caught
    assert poll_count(mock) >= 1
    await assert_polling_stopped_async(mock)
