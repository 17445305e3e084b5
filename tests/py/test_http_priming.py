"""SSE priming events (an event with an id and `retry:` but empty data, so a client can resume)
go only to sessions on protocol 2025-11-25 or later: older clients (TS SDK 1.21 and earlier) try
to parse the empty data as JSON and report an error for every stream (issue 11)."""

from __future__ import annotations

import pytest

from support import INITIALIZE, MCP_PATH, TOOLS_LIST, jsonrpc_answer, post_json_headers


def primed(body: bytes) -> bool:
    """Whether an SSE body carries an event without data (the priming event)."""
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines and not any(line.startswith("data:") and line[5:].strip() for line in lines):
            return True
    return False


def session(srv, version: str) -> tuple[bytes, bytes]:
    """Initialise on `version`, then tools/list in that session: the two SSE bodies."""
    init = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": version}}
    status, headers, first = srv.request("POST", MCP_PATH, body=init, headers=post_json_headers())
    assert status == 200, first
    assert headers["content-type"].startswith("text/event-stream"), headers
    assert jsonrpc_answer(headers, first)["result"]["protocolVersion"] == version
    sid = headers["mcp-session-id"]
    status, headers, second = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 2}, headers=post_json_headers(
        {"Mcp-Session-Id": sid, "MCP-Protocol-Version": version}))
    assert status == 200, second
    assert len(jsonrpc_answer(headers, second)["result"]["tools"]) >= 21
    return first, second


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_no_priming_before_2025_11_25(start, version):
    srv = start()
    for body in session(srv, version):
        assert not primed(body), body[:300]


def test_priming_from_2025_11_25(start):
    srv = start()
    first, second = session(srv, "2025-11-25")
    assert primed(first) and primed(second), (first[:300], second[:300])
