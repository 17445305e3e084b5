"""Sessionless 2026-07-28 `tools/list` answered from the prepared body (src/http/stateless_fast.rs),
end to end. Which requests the prepared path takes, and that its bytes are rmcp's, is checked in
the unit tests there (against rmcp's stateless service in-process); here the running server's
answers to the plain shape must equal its answers to shapes that rmcp answers itself (a `cursor`
of null, an extra `_meta` key), every invalid variant gets rmcp's own error, a scoped token sees
only its tools, and a body rmcp cannot read (a repeated key) is rmcp's 415 on both paths."""

from __future__ import annotations

import json
import re

import pytest

from support import MCP_PATH, bearer, new_token, post_json_headers

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "stateless-fast-tests", "version": "0"}}
MODERN = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
READ = {"list_all_instances", "list_pods_of_instance", "list_clusters", "list_instances",
        "query_diagnosis_task", "list_history_tasks", "check_sysom_initialed"}


def tools_list(rid, params=None) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/list",
            "params": {"_meta": META} if params is None else params}


def post(srv, message, headers=None, auth=None):
    status, h, body = srv.request("POST", MCP_PATH, body=message,
                                  headers=post_json_headers({**(auth or {}), **(headers or MODERN)}))
    return status, h.get("content-type"), body


def open_2025_11_25_session(srv) -> dict:
    """Initializes a 2025-11-25 Streamable HTTP session; returns the headers that address it."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "stateless-fast-tests", "version": "0"}}}
    status, headers, _ = srv.request("POST", MCP_PATH, body=init, headers=post_json_headers())
    assert status == 200, status
    session = {"Mcp-Session-Id": headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    status, _, _ = srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                               headers=post_json_headers(session))
    assert status == 202
    return session


@pytest.mark.parametrize("rid", [1, "req-\"7\"\u00e9", -3])
def test_the_plain_shape_answers_what_rmcp_answers(start, rid):
    srv = start()
    status, ctype, body = post(srv, tools_list(rid))
    assert (status, ctype) == (200, "application/json")
    answer = json.loads(body)
    assert list(answer) == ["jsonrpc", "id", "result"] and answer["id"] == rid
    result = answer["result"]
    assert list(result)[:3] == ["resultType", "ttlMs", "cacheScope"], list(result)
    assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == ("complete", 0, "private")
    assert len(result["tools"]) == 21
    # Shapes rmcp answers itself: the same status, type and bytes.
    for other in (tools_list(rid, {"_meta": META, "cursor": None}),
                  tools_list(rid, {"_meta": {**META, "com.example/trace": "t"}}),
                  tools_list(rid, {"_meta": {k: v for k, v in META.items() if "clientInfo" not in k},
                                   "extra": 1})):
        assert post(srv, other) == (status, ctype, body), other
    # Sent in pieces, but with its length, as rmcp sends its answers.
    _, headers, _ = srv.request("POST", MCP_PATH, body=tools_list(rid), headers=post_json_headers(MODERN))
    assert headers.get("content-length") == str(len(body)) and "transfer-encoding" not in headers
    # Accept of either type alone, or none: the same answer (rmcp's stateless path answers JSON).
    for accept in ("application/json", "text/event-stream", "*/*"):
        got = srv.request("POST", MCP_PATH, body=tools_list(rid),
                          headers={"Content-Type": "application/json", "Accept": accept, **MODERN})
        assert (got[0], got[1].get("content-type"), got[2]) == (status, ctype, body), accept


def test_invalid_variants_get_rmcps_errors(start):
    srv = start()
    no_caps = {k: v for k, v in META.items() if "clientCapabilities" not in k}
    cases = [
        (tools_list(1), {"MCP-Protocol-Version": "2026-07-28"}, 400, -32020,
         "missing required Mcp-Method header"),
        (tools_list(2), {**MODERN, "Mcp-Method": "ping"}, 400, -32020,
         "Mcp-Method header `ping` does not match body method `tools/list`"),
        (tools_list(3), {"Mcp-Method": "tools/list"}, 400, -32020,
         "request _meta protocolVersion requires MCP-Protocol-Version header"),
        (tools_list(4), {**MODERN, "MCP-Protocol-Version": "2025-11-25"}, 400, -32020,
         "MCP-Protocol-Version header (2025-11-25) does not match request _meta protocolVersion (2026-07-28)"),
        (tools_list(5, {"_meta": no_caps}), MODERN, 400, -32602,
         "request _meta is missing or has malformed required fields: io.modelcontextprotocol/clientCapabilities"),
        (tools_list(6, {}), MODERN, 400, -32602,
         "Invalid params: request _meta is missing or has malformed required fields: "
         "io.modelcontextprotocol/protocolVersion, io.modelcontextprotocol/clientCapabilities"),
        ({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"_meta": META}},
         {**MODERN, "Mcp-Method": "ping"}, 404, -32601, "ping"),
    ]
    for message, headers, want_status, code, text in cases:
        status, ctype, body = post(srv, message, headers)
        assert (status, ctype) == (want_status, "application/json"), (message, body)
        assert json.loads(body) == {"jsonrpc": "2.0", "id": message["id"],
                                    "error": {"code": code, "message": text}}, body
    # An Accept naming neither type is refused before rmcp, as for every POST.
    status, _, body = srv.request("POST", MCP_PATH, body=tools_list(8),
                                  headers={"Content-Type": "application/json", "Accept": "text/html", **MODERN})
    assert status == 406 and json.loads(body)["error"] == "not_acceptable"


def test_prepared_session_era_answers_carry_their_length(start):
    srv = start()
    plain = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    status, headers, body = srv.request("POST", MCP_PATH, body=plain, headers=post_json_headers())
    assert status == 200 and json.loads(body)["id"] == 1
    assert headers.get("content-length") == str(len(body)) and "transfer-encoding" not in headers
    session = open_2025_11_25_session(srv)
    status, headers, body = srv.request("POST", MCP_PATH, body=plain, headers=post_json_headers(session))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert headers.get("content-length") == str(len(body)) and "transfer-encoding" not in headers
    assert re.search(rb'^data: \nid: 0/\d+\nretry: 3000\n\ndata: \{"jsonrpc":"2.0","id":1,"result":\{"tools":\[.*'
                     rb'\]\}\}\nid: 1/\d+\n\n$', body, re.S), body[-200:]


def test_a_repeated_key_is_rmcps_415_on_both_paths(start):
    srv = start()
    meta = json.dumps(META)
    dup = f'{{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list","params":{{"_meta":{meta}}}}}'
    status, _, body = srv.request("POST", MCP_PATH, body=dup, headers=post_json_headers(MODERN))
    assert status == 415, body
    # The session-era prepared paths, sessionless and in a session, leave it to rmcp too.
    old = '{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}'
    status, _, body = srv.request("POST", MCP_PATH, body=old, headers=post_json_headers())
    assert status == 415, body
    session = open_2025_11_25_session(srv)
    status, _, body = srv.request("POST", MCP_PATH, body=old.replace('"id":1', '"id":3'),
                                  headers=post_json_headers(session))
    assert status == 415, body


def test_a_token_sees_only_the_tools_of_its_scopes(start, tmp_path):
    path = tmp_path / "mcp-tokens"
    reader, admin = new_token(path, "reader", "read"), new_token(path, "admin", "read,diagnose,admin")
    srv = start(["--token-file", str(path)])
    status, _, body = post(srv, tools_list(1), auth=bearer(reader))
    assert status == 200
    assert {t["name"] for t in json.loads(body)["result"]["tools"]} == READ
    # rmcp's answer for the same principal is the same list.
    assert post(srv, tools_list(1, {"_meta": META, "cursor": None}), auth=bearer(reader))[2] == body
    status, _, body = post(srv, tools_list(1), auth=bearer(admin))
    assert status == 200 and len(json.loads(body)["result"]["tools"]) == 21
    status, _, _ = post(srv, tools_list(1))
    assert status == 401
    status, _, _ = post(srv, tools_list(1), auth=bearer("smcp_" + "x" * 43))
    assert status == 401
