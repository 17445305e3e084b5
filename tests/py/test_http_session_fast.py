"""In-session `tools/list` and `ping` answered from the prepared body (src/http/session_fast.rs):
the answer must be the one rmcp gives in the same session - the same status, headers, SSE events
(priming event on 2025-11-25 sessions, none before), event-id shape and JSON-RPC id - and the
session checks must stay rmcp's (404 for an unknown, deleted or foreign session; scopes filter
the list per principal; rmcp's 406 for an Accept that lacks a type). rmcp's own answer in a
session is obtained with `Accept: …, text/event-stream;q=1`, which rmcp reads as the plain header
but the prepared path leaves to rmcp."""

from __future__ import annotations

import json
import re
import time

import pytest

from support import MCP_PATH, bearer, new_token, post_json_headers

RMCP_ACCEPT = {"Accept": "application/json, text/event-stream;q=1"}
READ = {"list_all_instances", "list_pods_of_instance", "list_clusters", "list_instances",
        "query_diagnosis_task", "list_history_tasks", "check_sysom_initialed"}


def initialize(srv, version: str, auth: dict[str, str] | None = None) -> dict[str, str]:
    """An initialized session; returns the headers its requests carry."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "session-fast-tests", "version": "0"}}}
    status, headers, body = srv.request("POST", MCP_PATH, body=init, headers=post_json_headers(auth))
    assert status == 200, body
    session = {**(auth or {}), "Mcp-Session-Id": headers["mcp-session-id"]}
    if version >= "2025-06-18":
        session["MCP-Protocol-Version"] = version
    status, _, _ = srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                               headers=post_json_headers(session))
    assert status == 202
    return session


def events(body: bytes) -> list[list[tuple[str, str]]]:
    """The SSE events of a body, each as its (field, value) lines in order."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            out.append([tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")
                        for line in block.split("\n") if not line.startswith(":")])
    return out


def ask(srv, session: dict[str, str], message: dict, rmcp: bool = False):
    headers = post_json_headers({**session, **(RMCP_ACCEPT if rmcp else {})})
    return srv.request("POST", MCP_PATH, body=message, headers=headers)


def comparable(resp):
    """Status, the headers rmcp sets, and the events with the request-stream number blanked."""
    status, headers, body = resp
    evs = []
    for ev in events(body):
        fields = []
        for name, value in ev:
            if name == "id":
                m = re.fullmatch(r"(\d+)/(\d+)", value)
                assert m, f"event id {value!r} is not rmcp's <index>/<request> form"
                value = m.group(1) + "/N"
            elif name == "data" and value:
                value = json.loads(value)
            fields.append((name, value))
        evs.append(fields)
    kept = {k: headers.get(k) for k in ("content-type", "cache-control", "x-accel-buffering", "mcp-session-id")}
    return status, kept, evs


def stream_number(body: bytes) -> int:
    return int(next(v for ev in events(body) for k, v in ev if k == "id").split("/")[1])


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26"])
def test_in_session_answers_equal_rmcps(start, version):
    srv = start()
    session = initialize(srv, version)
    for message in ({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}},
                    {"jsonrpc": "2.0", "id": "req-5", "method": "tools/list"},
                    {"jsonrpc": "2.0", "id": 9, "method": "ping"}):
        ours, theirs = ask(srv, session, message), ask(srv, session, message, rmcp=True)
        assert comparable(ours) == comparable(theirs), message
        status, headers, body = ours
        answer = [json.loads(v) for ev in events(body) for k, v in ev if k == "data" and v]
        assert status == 200 and answer[0]["id"] == message["id"]
        # A priming event (empty data, an id, retry) opens the stream from 2025-11-25 on only.
        assert (events(body)[0][0] == ("data", "")) == (version >= "2025-11-25")
        # The prepared path answered (its request streams count down from 2^64 - 1), rmcp the
        # other; their event ids never name the same request stream.
        assert stream_number(body) >= 2**63 > stream_number(theirs[2])
    if version == "2025-06-18":  # the list itself is rmcp's
        _, _, body = ask(srv, session, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert len(json.loads(events(body)[-1][0][1])["result"]["tools"]) == 21


def test_resuming_a_prepared_answer_is_an_empty_stream_as_for_an_expired_one(start):
    srv = start()
    session = initialize(srv, "2025-11-25")
    _, _, body = ask(srv, session, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    last = [v for ev in events(body) for k, v in ev if k == "id"][-1]
    status, headers, body = srv.request("GET", MCP_PATH, headers={
        **session, "Accept": "text/event-stream", "Last-Event-ID": last}, timeout=10)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert not [ev for ev in events(body) if any(k == "data" and v for k, v in ev)]


def test_unknown_deleted_and_mismatched_requests_go_to_rmcp(start):
    srv = start()
    session = initialize(srv, "2025-06-18")
    tools_list = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    status, _, body = ask(srv, {**session, "Mcp-Session-Id": "no-such-session"}, tools_list)
    assert (status, body) == (404, b"Not Found: Session not found")
    # rmcp's 406 when the client does not accept both types.
    status, _, _ = srv.request("POST", MCP_PATH, body=tools_list, headers={
        **session, "Content-Type": "application/json", "Accept": "application/json"})
    assert status == 406
    status, _, _ = srv.request("DELETE", MCP_PATH, headers=session)
    assert status in (200, 204)
    status, _, body = ask(srv, session, tools_list)
    assert (status, body) == (404, b"Not Found: Session not found")


def test_a_session_answers_its_own_principal_only_with_its_scopes(start, tmp_path):
    path = tmp_path / "mcp-tokens"
    reader, other = new_token(path, "reader", "read"), new_token(path, "other", "read,diagnose,admin")
    srv = start(["--token-file", str(path)])
    session = initialize(srv, "2025-11-25", bearer(reader))
    tools_list = {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}
    ours, theirs = ask(srv, session, tools_list), ask(srv, session, tools_list, rmcp=True)
    assert comparable(ours) == comparable(theirs)
    assert stream_number(ours[2]) >= 2**63 > stream_number(theirs[2])
    names = {t["name"] for t in json.loads(events(ours[2])[-1][0][1])["result"]["tools"]}
    assert names == READ
    # Another principal's session is unknown to it, as rmcp answers an unknown one.
    status, _, body = ask(srv, {**session, **bearer(other)}, tools_list)
    assert (status, body) == (404, b"Not Found: Session not found")


def test_a_session_used_only_for_tool_lists_does_not_idle_out(start):
    """rmcp's idle timer only sees requests that reach it; the prepared path lets one through
    often enough that a session in use never expires (idle timeout 3 s, 5 s of tools/list)."""
    srv = start(["--session-idle-timeout", "3"])
    session = initialize(srv, "2025-11-25")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, _, body = ask(srv, session, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert status == 200, body
        time.sleep(0.05)
    time.sleep(4)  # ...and an unused one still does
    status, _, _ = ask(srv, session, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert status == 404


def test_an_id_in_flight_is_refused_on_the_prepared_path_too(start, mock):
    """A tools/list whose id is that of a call still in flight is refused (400, -32600) as rmcp's
    path refuses it, not answered from the prepared body."""
    import threading

    from support import UID
    srv = start()
    session = initialize(srv, "2025-06-18")
    mock.scenario(latency_ms=3000)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "list_clusters", "arguments": {"uid": UID}}}
    first = threading.Thread(target=ask, args=(srv, session, call))
    first.start()
    time.sleep(1)  # the call is in flight (the mock answers after 3 s)
    status, _, body = ask(srv, session, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    first.join()
    assert status == 400 and json.loads(body)["error"]["code"] == -32600, body[:300]
    status, _, _ = ask(srv, session, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    assert status == 200
