"""Resumable Streamable HTTP streams for session clients of the 2025 revisions (Qwen Code's
default): every event of a tools/call stream has an id; a client whose stream breaks mid-diagnosis
reconnects with GET + Last-Event-ID and receives the rest of the stream, the result included,
from the same diagnosis (one InvokeDiagnosis in the mock's record). rmcp's session manager keeps
a bounded cache of each stream's recent events; replay works within one instance.
"""

from __future__ import annotations

import json

import pytest

import support
from support import INSTANCE, MCP_PATH, UID, RawSse, Server, post_json_headers

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}


def initialize(srv: Server, version: str) -> dict[str, str]:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "resume-test", "version": "1"}}}
    status, headers, body = srv.request("POST", MCP_PATH, body=init, headers=post_json_headers())
    assert status == 200, body[:300]
    session = {"Mcp-Session-Id": headers["mcp-session-id"], "MCP-Protocol-Version": version}
    srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=post_json_headers(session))
    return session


class PostSse(RawSse):
    """A POST whose answer is read as a raw event stream."""

    def __init__(self, server: Server, body: dict, headers: dict[str, str]):
        self.conn = server.connection(20)
        self.conn.request("POST", MCP_PATH, body=json.dumps(body), headers=post_json_headers(headers))
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines = []


def events_until_result(stream: RawSse, rid: int) -> tuple[list[dict], dict | None]:
    seen = []
    while (ev := stream.next_event()) is not None:
        seen.append(ev)
        data = ev.get("data", "")
        if data.strip().startswith("{"):
            msg = json.loads(data)
            if msg.get("id") == rid and "result" in msg:
                return seen, msg
    return seen, None


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_a_cut_stream_resumes_with_last_event_id_and_delivers_the_original_result(mock, version):
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 2.5})
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="20", SYSOM_MCP_POLL_INTERVAL_MS="200",
                             SYSOM_MCP_POLL_MAX_INTERVAL_MS="200")
    with Server(env, []) as srv:
        session = initialize(srv, version)
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "memgraph", "arguments": DIAG_ARGS, "_meta": {"progressToken": "p1"}}}
        first = PostSse(srv, call, session)
        assert first.status == 200 and first.headers["content-type"].startswith("text/event-stream")
        # Read until the first progress notification (the diagnosis is running), then cut.
        last_id = None
        while (ev := first.next_event()) is not None:
            if "id" in ev:
                last_id = ev["id"]
            if "notifications/progress" in ev.get("data", ""):
                break
        assert last_id, "the stream's events carry ids"
        first.close()
        # Reconnect: GET with Last-Event-ID replays what followed and the result.
        with RawSse(srv, headers={**session, "Last-Event-ID": last_id}, timeout=20) as again:
            assert again.status == 200, again.status
            events, result = events_until_result(again, 7)
        assert result is not None, f"no result after resuming from {last_id}: {events}"
        assert result["result"]["structuredContent"]["code"] == "Success", result
        ids = [e["id"] for e in events if "id" in e]
        assert last_id not in ids and len(ids) == len(set(ids)), (last_id, ids)
    assert len(mock.requests(action="InvokeDiagnosis")) == 1
