"""Named tokens with scopes over HTTP: tokens made with `sysom-mcp token new` (only their hash in
the file), what tools/list shows each one on both transports, tools/call outside the scopes
(HTTP 403 with a step-up challenge on Streamable HTTP, a JSON-RPC error on legacy SSE), sessions
bound to the principal that opened them, plain tokens of the old format, SIGHUP re-reading the
tokens file, the audit records on stderr (no token in them), and `check` warning about plain
tokens."""

from __future__ import annotations

import json
import subprocess

import pytest

import support
from support import (INITIALIZE, MCP_MAJOR, MCP_PATH, TOOLS_LIST, UID, RawSse, bearer, jsonrpc_answer, mcp_session,
                     new_token, payload, post_json_headers, tools_from_jsonrpc)

# What each scope unlocks among the 21 cloud tools (src/tools/mod.rs every_tool_declares_its_scope).
READ = {"list_all_instances", "list_pods_of_instance", "list_clusters", "list_instances",
        "query_diagnosis_task", "list_history_tasks", "check_sysom_initialed"}
DIAGNOSE = {"memgraph", "javamem", "oomcheck", "iofsstat", "iodiagnose", "packetdrop", "netjitter", "delay",
            "loadtask", "vmcore", "diskanalysis"}
ADMIN = {"create_vmcore_diagnosis_task", "create_dmesg_diagnosis_task", "initial_sysom"}
PLAIN = "plain-legacy-token-" + "7" * 24
FORBIDDEN = -32003


@pytest.fixture
def tokens(tmp_path):
    """A tokens file with reader (read), diag (diagnose), ops (read,admin) and a plain token."""
    path = tmp_path / "mcp-tokens"
    made = {name: new_token(path, name, scopes)
            for name, scopes in (("reader", "read"), ("diag", "diagnose"), ("ops", "read,admin"))}
    with path.open("a") as f:
        f.write(PLAIN + "\n")
    made["plain"] = PLAIN
    made["path"] = path
    return made


def post(srv, message: dict, token: str, extra: dict[str, str] | None = None):
    return srv.request("POST", MCP_PATH, body=message, headers=post_json_headers({**bearer(token), **(extra or {})}))


def call_message(name: str, arguments: dict, rid: int = 7) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def audit_records(srv) -> list[dict]:
    out = []
    for line in srv.stderr_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"SYSOM_AUDIT"' in line:
            out.append(json.loads(line))
    return out


def test_token_list_shows_names_and_scopes_never_tokens(tokens):
    proc = subprocess.run([str(support.binary_path()), "token", "list", "--file", str(tokens["path"])],
                          capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    for name, scope in (("reader", "sysom:read"), ("diag", "sysom:diagnose"), ("ops", "sysom:admin")):
        assert any(line.startswith(name) and scope in line for line in proc.stdout.splitlines()), proc.stdout
    assert "old format" in proc.stdout
    for secret in (tokens["reader"], tokens["diag"], tokens["ops"], PLAIN):
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_tools_list_shows_only_what_the_token_may_call(start, tokens, transport):
    srv = start(["--token-file", str(tokens["path"])])
    want = {"reader": READ, "diag": DIAGNOSE, "ops": READ | ADMIN, "plain": READ | DIAGNOSE | ADMIN}
    for name, expected in want.items():
        async with mcp_session(transport, srv.url, bearer(tokens[name])) as client:
            names = {t["name"] for t in await client.list_tools()}
            assert names == expected, name
    # The sessionless fast path (a prepared answer) is filtered the same way.
    for name, expected in want.items():
        status, _, body = post(srv, TOOLS_LIST, tokens[name])
        assert status == 200
        assert set(tools_from_jsonrpc(body)) == expected, name


@pytest.mark.anyio
async def test_local_tools_need_the_diagnose_scope(start, mock, tokens):
    srv = start(["--token-file", str(tokens["path"])], env=support.server_env(mock, SYSOM_MCP_TOOLS="local"))
    for name, sees_local in (("reader", False), ("ops", False), ("diag", True), ("plain", True)):
        status, _, body = post(srv, TOOLS_LIST, tokens[name])
        names = tools_from_jsonrpc(body)
        assert status == 200
        assert bool(names) == sees_local and all(n.startswith("local_") for n in names), (name, names)
    status, headers, body = post(srv, call_message("local_triage", {}), tokens["reader"])
    assert status == 403, body
    assert 'scope="sysom:diagnose"' in headers["www-authenticate"]


def test_call_outside_scope_is_403_with_step_up_challenge(start, tokens):
    srv = start(["--token-file", str(tokens["path"])])
    status, headers, body = post(srv, call_message("initial_sysom", {"uid": UID}), tokens["reader"])
    assert status == 403, body
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge, challenge
    assert 'scope="sysom:admin"' in challenge, challenge
    err = json.loads(body)
    assert err["id"] == 7 and err["error"]["code"] == FORBIDDEN, err
    assert err["error"]["data"]["required_scope"] == "sysom:admin"
    assert "initial_sysom" in err["error"]["message"]
    # The same token calls what it holds; a diagnose token may not list instances.
    status, headers, body = post(srv, call_message("list_all_instances", {"uid": UID}), tokens["reader"])
    assert status == 200, body
    assert payload(jsonrpc_answer(headers, body)["result"])["code"] == "Success"
    assert post(srv, call_message("list_all_instances", {"uid": UID}), tokens["diag"])[0] == 403
    # The plain token of the old format keeps every scope.
    assert post(srv, call_message("list_all_instances", {"uid": UID}), PLAIN)[0] == 200


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_clients_get_a_clear_error_outside_their_scope(start, tokens, transport):
    if transport == "http" and MCP_MAJOR < 2:
        pytest.skip("mcp 1.x's Streamable HTTP client raises on a 403 instead of reading the JSON-RPC error "
                    "in its body; the raw 403 is checked by test_call_outside_scope_is_403_with_step_up_challenge")
    from mcp.shared import exceptions
    McpError = getattr(exceptions, "MCPError", None) or exceptions.McpError  # renamed in mcp 2.x
    srv = start(["--token-file", str(tokens["path"])])
    async with mcp_session(transport, srv.url, bearer(tokens["reader"])) as client:
        out = payload(await client.call("list_all_instances", {"uid": UID}))
        assert out["code"] == "Success"
        with pytest.raises(McpError) as info:
            await client.call("initial_sysom", {"uid": UID}, timeout=20)
        error = info.value.error
        assert "sysom:admin" in error.message and "initial_sysom" in error.message, error
        assert error.code == FORBIDDEN
        # The session is still usable afterwards.
        assert payload(await client.call("check_sysom_initialed", {"uid": UID}))["code"]


def test_streamable_session_is_bound_to_its_principal(start, tokens):
    srv = start(["--token-file", str(tokens["path"])])
    status, headers, body = post(srv, INITIALIZE, tokens["ops"])
    assert status == 200, body
    sid = headers["mcp-session-id"]
    session = {"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post(srv, note, tokens["ops"], session)[0] == 202
    # Another principal, even one holding every scope, finds no such session.
    for other in ("reader", "plain"):
        status, _, body = post(srv, TOOLS_LIST, tokens[other], session)
        assert status == 404, (other, body)
        status, _, _ = srv.request("DELETE", MCP_PATH, headers={**bearer(tokens[other]), **session})
        assert status == 404, other
        status, _, _ = srv.request("GET", MCP_PATH, headers={**bearer(tokens[other]), **session,
                                                             "Accept": "text/event-stream"})
        assert status == 404, other
    status, headers, body = post(srv, TOOLS_LIST, tokens["ops"], session)
    assert status == 200 and set(tools_from_jsonrpc_any(headers, body)) == READ | ADMIN
    status, _, _ = srv.request("DELETE", MCP_PATH, headers={**bearer(tokens["ops"]), **session})
    assert status in (200, 204)
    refusals = [r for r in audit_records(srv) if r.get("SYSOM_SCOPE_DECISION") == "denied_session"]
    assert "reader" in {r.get("SYSOM_PRINCIPAL") for r in refusals}, refusals


def tools_from_jsonrpc_any(headers: dict[str, str], body: bytes) -> list[str]:
    return [t["name"] for t in jsonrpc_answer(headers, body)["result"]["tools"]]


def test_legacy_sse_session_is_bound_to_its_principal(start, tokens):
    srv = start(["--token-file", str(tokens["path"])])
    with RawSse(srv, bearer(tokens["ops"])) as stream:
        assert stream.status == 200
        endpoint = stream.endpoint()
        headers = {"Content-Type": "application/json"}
        status, _, _ = srv.request("POST", endpoint, body=INITIALIZE, headers={**headers, **bearer(tokens["reader"])})
        assert status == 404, "another principal posted into the session"
        status, _, _ = srv.request("POST", endpoint, body=INITIALIZE, headers={**headers, **bearer(tokens["ops"])})
        assert status == 202


def test_bad_token_is_401_and_no_token_reaches_the_log(start, tokens):
    srv = start(["--token-file", str(tokens["path"])])
    status, headers, body = post(srv, TOOLS_LIST, "smcp_" + "0" * 64)
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "resource_metadata" not in headers["www-authenticate"], "no OAuth configured: no metadata to point at"
    assert json.loads(body)["error"] == "invalid_token"
    assert srv.request("GET", "/.well-known/oauth-protected-resource")[0] == 404
    # A few allowed and refused calls, then the audit trail.
    assert post(srv, call_message("list_all_instances", {"uid": UID}), tokens["reader"])[0] == 200
    assert post(srv, call_message("initial_sysom", {"uid": UID}), tokens["reader"])[0] == 403
    records = audit_records(srv)
    allowed = [r for r in records if r.get("SYSOM_TOOL") == "list_all_instances"]
    assert allowed, records
    r = allowed[-1]
    assert r["SYSOM_PRINCIPAL"] == "reader" and r["SYSOM_AUTH"] == "token"
    assert r["SYSOM_SCOPE"] == "sysom:read" and r["SYSOM_SCOPE_DECISION"] == "allowed"
    assert r["SYSOM_RESULT_CODE"] == "Success" and r["SYSOM_CLIENT_ADDR"] == "127.0.0.1"
    assert r["SYSOM_TRANSPORT"] == "streamable_http" and "SYSOM_DURATION_MS" in r
    denied = [r for r in records if r.get("SYSOM_SCOPE_DECISION") == "denied_scope"]
    assert denied and denied[-1]["SYSOM_TOOL"] == "initial_sysom" and denied[-1]["SYSOM_RESULT_CODE"] == "403"
    assert any(r.get("SYSOM_SCOPE_DECISION") == "denied_auth" and r.get("SYSOM_RESULT_CODE") == "401"
               for r in records)
    log = srv.stderr_path.read_text(errors="replace")
    for secret in (tokens["reader"], tokens["diag"], tokens["ops"], PLAIN, "0" * 64):
        assert secret not in log


def test_sighup_rereads_named_tokens(start, tokens, tmp_path):
    srv = start(["--token-file", str(tokens["path"])])
    assert post(srv, TOOLS_LIST, tokens["diag"])[0] == 200
    # Drop diag, add a new read-only token; reload.
    lines = [line for line in tokens["path"].read_text().splitlines() if not line.startswith("diag ")]
    tokens["path"].write_text("\n".join(lines) + "\n")
    fresh = new_token(tokens["path"], "fresh", "read")
    srv.sighup_and_wait()
    assert post(srv, TOOLS_LIST, tokens["diag"])[0] == 401
    status, _, body = post(srv, TOOLS_LIST, fresh)
    assert status == 200 and set(tools_from_jsonrpc(body)) == READ


def test_check_warns_about_plain_tokens(mock, tokens, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("# empty\n")
    env = support.server_env(mock)
    proc = subprocess.run([str(support.binary_path()), "--config", str(config),
                           "--token-file", str(tokens["path"]), "check"], capture_output=True, text=True, timeout=60, env=env)
    assert "WARN" in proc.stdout and "1 plain token" in proc.stdout, proc.stdout
    assert "token new" in proc.stdout
    assert PLAIN not in proc.stdout + proc.stderr


# --- per-principal limits -----------------------------------------------------------------------

@pytest.mark.anyio
async def test_calls_per_minute_are_counted_per_principal(start, tokens):
    srv = start(["--token-file", str(tokens["path"]), "--max-calls-per-minute", "2"])
    call = call_message("list_all_instances", {"uid": UID})
    assert [post(srv, call, tokens["reader"])[0] for _ in range(2)] == [200, 200]
    status, headers, body = post(srv, call, tokens["reader"])
    assert status == 429, body
    assert 1 <= int(headers["retry-after"]) <= 60
    err = json.loads(body)["error"]
    assert err["code"] == -32004 and err["data"]["retry_after"] >= 1, err
    # Another principal has its own budget; over legacy SSE the refusal is a JSON-RPC error.
    assert post(srv, call, tokens["ops"])[0] == 200
    from mcp.shared import exceptions
    McpError = getattr(exceptions, "MCPError", None) or exceptions.McpError
    async with mcp_session("sse", srv.url, bearer(tokens["ops"])) as client:
        assert payload(await client.call("list_all_instances", {"uid": UID}))["code"] == "Success"
        with pytest.raises(McpError) as info:
            await client.call("list_all_instances", {"uid": UID}, timeout=20)
        assert info.value.error.code == -32004
    assert any(r.get("SYSOM_SCOPE_DECISION") == "rate_limited" and r.get("SYSOM_PRINCIPAL") == "reader"
               for r in audit_records(srv))


def test_concurrent_diagnoses_are_limited_per_principal(start, mock, tokens):
    import threading

    from support import INSTANCE
    mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": 2})
    env = support.server_env(mock, SYSOM_MCP_DIAGNOSIS_TIMEOUT="20")
    srv = start(["--token-file", str(tokens["path"]), "--max-concurrent-diagnoses", "1"], env=env)
    args = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
    first: list = []
    t = threading.Thread(target=lambda: first.append(post(srv, call_message("memgraph", args, 1), tokens["diag"])))
    t.start()
    mock.wait_for(lambda reqs: any(r["action"] == "InvokeDiagnosis" for r in reqs), timeout=10)
    status, headers, body = post(srv, call_message("oomcheck", args, 2), tokens["diag"])
    assert status == 429, body
    assert int(headers["retry-after"]) >= 1
    # Another principal is not limited by diag's running diagnosis.
    assert post(srv, call_message("oomcheck", args, 3), PLAIN)[0] == 200
    t.join(timeout=30)
    assert first and first[0][0] == 200, first
    # The slot is free again.
    assert post(srv, call_message("oomcheck", args, 4), tokens["diag"])[0] == 200


def test_every_tool_outside_a_tokens_scopes_is_refused_with_its_scope(start, tokens):
    """Not a sample: each of the 21 cloud tools, called by each named token that lacks its scope, is
    refused with 403 and the one scope it needs; called by a token that holds the scope, it is not."""
    srv = start(["--token-file", str(tokens["path"])])
    need = {**{t: "sysom:read" for t in READ}, **{t: "sysom:diagnose" for t in DIAGNOSE},
            **{t: "sysom:admin" for t in ADMIN}}
    assert len(need) == 21
    holds = {"reader": READ, "diag": DIAGNOSE, "ops": READ | ADMIN}
    for name, allowed in holds.items():
        for rid, (tool, scope) in enumerate(sorted(need.items()), start=100):
            status, headers, body = post(srv, call_message(tool, {"uid": UID}, rid), tokens[name])
            if tool in allowed:
                assert status != 403, (name, tool, body)
                continue
            assert status == 403, (name, tool, status, body)
            assert f'scope="{scope}"' in headers["www-authenticate"], (name, tool, headers)
            err = json.loads(body)
            assert err["id"] == rid and err["error"]["code"] == FORBIDDEN, err
            assert err["error"]["data"]["required_scope"] == scope, (name, tool, err)
