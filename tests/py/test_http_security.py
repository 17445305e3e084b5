"""Who may use the HTTP server: bearer tokens (rotation, 401s, SIGHUP reload, refusal to serve a
non-loopback address without one), Host/Origin allow-lists, client IP allow-list and
X-Forwarded-For from trusted proxies."""

from __future__ import annotations

import json
import signal

import pytest

import support
from support import (INITIALIZE, MCP_PATH, TOOLS_LIST, UID, RawSse, Server, bearer, jsonrpc_answer, mcp_session,
                     payload, post_json_headers, tools_from_jsonrpc, write_tokens)

JSON = {"Content-Type": "application/json"}
OLD, NEW, KEEP = "old-token-" + "1" * 20, "new-token-" + "2" * 20, "keep-token-" + "3" * 20


def post_tools(srv, headers: dict[str, str] | None = None):
    return srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers={**JSON, **(headers or {})})


# --- bearer tokens ------------------------------------------------------------------------------

def test_two_tokens_both_work(start, tmp_path):
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", OLD, NEW))])
    for token in (OLD, NEW):
        status, _, body = post_tools(srv, bearer(token))
        assert status == 200, token
        assert len(tools_from_jsonrpc(body)) == 21
    # Token files are repeatable too.
    srv2 = start(["--token-file", str(write_tokens(tmp_path / "a", OLD)),
                  "--token-file", str(write_tokens(tmp_path / "b", NEW))])
    assert post_tools(srv2, bearer(OLD))[0] == 200
    assert post_tools(srv2, bearer(NEW))[0] == 200


def test_missing_token_is_401_with_challenge(start, tmp_path):
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", OLD))])
    for method, headers in (("POST", JSON), ("GET", {"Accept": "text/event-stream"})):
        status, resp_headers, body = srv.request(method, MCP_PATH, body=TOOLS_LIST if method == "POST" else None,
                                                 headers=headers)
        assert status == 401, method
        assert resp_headers["www-authenticate"].startswith("Bearer"), resp_headers
        assert resp_headers["content-type"].startswith("application/json")
        err = json.loads(body)
        assert err["error"] == "missing_token"
        assert "Authorization: Bearer" in err["message"]
    # The legacy message endpoint is protected as well.
    status, _, _ = srv.request("POST", MCP_PATH + "/messages?sessionId=abc", body=TOOLS_LIST, headers=JSON)
    assert status == 401


def test_wrong_or_malformed_token_is_401(start, tmp_path):
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", OLD))])
    status, headers, body = post_tools(srv, bearer("not-" + OLD))
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert json.loads(body)["error"] == "invalid_token"
    status, _, body = post_tools(srv, {"Authorization": f"Basic {OLD}"})
    assert status == 401
    assert json.loads(body)["error"] == "malformed_authorization"
    # A prefix of a valid token is not valid.
    assert post_tools(srv, bearer(OLD[:-1]))[0] == 401


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["sse", "http"])
async def test_real_client_without_token_is_refused(start, tmp_path, transport):
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", OLD))])
    with pytest.raises(BaseException):  # noqa: B017 (the error type differs between mcp versions)
        async with mcp_session(transport, srv.url, headers=bearer("wrong")) as client:
            await client.list_tools()


def test_health_needs_no_token_metrics_only_when_configured(start, mock, tmp_path):
    tokens = str(write_tokens(tmp_path / "tokens", OLD))
    srv = start(["--token-file", tokens])
    assert srv.request("GET", "/healthz")[0] == 200
    assert srv.request("GET", "/readyz")[0] == 200
    status, headers, body = srv.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")

    locked = start(["--token-file", tokens], env=support.server_env(mock, SYSOM_MCP_METRICS_AUTH="true"))
    assert locked.request("GET", "/healthz")[0] == 200
    assert locked.request("GET", "/readyz")[0] == 200
    status, headers, _ = locked.request("GET", "/metrics")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert locked.request("GET", "/metrics", headers=bearer("wrong"))[0] == 401
    status, _, body = locked.request("GET", "/metrics", headers=bearer(OLD))
    assert status == 200 and body


def test_non_loopback_without_token_refuses_to_start(mock, sysom_bin, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")
    proc = support.run_binary(["--sse", "--host", "0.0.0.0", "--port", str(support.free_port()),
                               "--config", str(config)], support.server_env(mock), timeout=15)
    assert proc.returncode != 0
    assert proc.returncode == 2, "a configuration error exits 2"
    assert "--token-file" in proc.stderr
    assert "--allow-unauthenticated" in proc.stderr


def test_non_loopback_with_allow_unauthenticated_starts(start):
    # Reachable on every interface for the test's duration, so only loopback clients are let in.
    srv = start(["--allow-unauthenticated", "--allowed-clients", "127.0.0.0/8"], host="0.0.0.0")
    status, _, body = post_tools(srv)
    assert status == 200 and len(tools_from_jsonrpc(body)) == 21


def test_non_loopback_with_token_starts_and_requires_it(start, tmp_path):
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", OLD)),
                 "--allowed-clients", "127.0.0.0/8"], host="0.0.0.0")
    assert post_tools(srv)[0] == 401
    assert post_tools(srv, bearer(OLD))[0] == 200


@pytest.mark.anyio
async def test_sighup_rotates_tokens_and_keeps_open_sessions(start, tmp_path):
    tokens = write_tokens(tmp_path / "tokens", OLD, KEEP)
    srv = start(["--token-file", str(tokens)])
    assert post_tools(srv, bearer(NEW))[0] == 401
    with RawSse(srv, headers=bearer(OLD)) as revoked:
        revoked_endpoint = revoked.endpoint()
        async with mcp_session("sse", srv.url, headers=bearer(KEEP)) as client:
            assert len(await client.list_tools()) == 21

            write_tokens(tokens, NEW, KEEP)
            srv.sighup_and_wait()

            assert post_tools(srv, bearer(NEW))[0] == 200, "the new token is not accepted after SIGHUP"
            assert post_tools(srv, bearer(OLD))[0] == 401, "the removed token still works after SIGHUP"
            # The session opened before the reload keeps working.
            assert len(await client.list_tools()) == 21
            out = payload(await client.call("list_all_instances", {"uid": UID}))
            assert out["code"] == "Success"
        # Messages for a session opened with the revoked token are refused.
        status, _, _ = srv.request("POST", revoked_endpoint, body=INITIALIZE, headers={**JSON, **bearer(OLD)})
        assert status == 401


def test_sighup_with_unreadable_token_file_keeps_old_tokens(start, tmp_path):
    tokens = write_tokens(tmp_path / "tokens", OLD)
    srv = start(["--token-file", str(tokens)])
    tokens.unlink()  # e.g. a typo in a rotation script
    srv.sighup_and_wait(marker="reload rejected")
    assert post_tools(srv, bearer(OLD))[0] == 200
    assert post_tools(srv)[0] == 401


def test_sighup_with_emptied_token_file_does_not_open_the_server(start, tmp_path):
    tokens = write_tokens(tmp_path / "tokens", OLD)
    srv = start(["--token-file", str(tokens)])
    assert post_tools(srv)[0] == 401
    tokens.write_text("# every token removed\n")
    srv.signal(signal.SIGHUP)
    srv.wait_log("configuration reloaded", "reload rejected")
    assert post_tools(srv)[0] == 401, "emptying the token file and reloading turned authentication off"
    assert post_tools(srv, bearer(OLD))[0] == 200, "the previous tokens stay valid after a rejected reload"
    assert "reload rejected" in srv.stderr()


# --- Host and Origin ----------------------------------------------------------------------------

def test_ip_host_header_works_without_allow_list(start):
    """An IP literal Host (the admin's address, or a NAT address) works with no allow-list; a DNS
    name other than loopback/hostname/--host does not (DNS rebinding, see test_http_rebinding)."""
    srv = start()
    host = {"Host": "192.0.2.10:7140"}
    status, headers, body = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers(host))
    assert status == 200, body
    sid = headers["mcp-session-id"]
    status, headers, body = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 2},
                                        headers=post_json_headers({**host, "Mcp-Session-Id": sid}))
    assert status == 200
    assert len(jsonrpc_answer(headers, body)["result"]["tools"]) == 21
    with RawSse(srv, headers=host) as sse:
        assert sse.status == 200
        sse.endpoint()
    assert post_tools(srv, {"Host": "mcp.example.com:7140"})[0] == 403


def test_host_allow_list(start):
    srv = start(["--allowed-hosts", "mcp.example.com"])
    assert post_tools(srv, {"Host": "mcp.example.com:7140"})[0] == 200
    assert post_tools(srv, {"Host": "mcp.example.com"})[0] == 200
    status, _, body = post_tools(srv, {"Host": "evil.example.net:7140"})
    assert status == 403
    assert json.loads(body)["error"] == "host_not_allowed"
    status, _, _ = srv.request("GET", MCP_PATH, headers={"Host": "127.0.0.1", "Accept": "text/event-stream"})
    assert status == 403


def test_origin_allow_list(start):
    srv = start(["--allowed-origins", "https://app.example.com"])
    status, _, body = post_tools(srv, {"Origin": "https://evil.example.net"})
    assert status == 403
    assert json.loads(body)["error"] == "origin_not_allowed"
    assert post_tools(srv, {"Origin": "https://app.example.com"})[0] == 200
    assert post_tools(srv)[0] == 200  # non-browser clients send no Origin
    status, _, _ = srv.request("GET", MCP_PATH, headers={"Origin": "http://localhost:3000",
                                                         "Accept": "text/event-stream"})
    assert status == 403


# --- client IP allow-list -----------------------------------------------------------------------

def test_client_not_in_allowed_networks_is_403(start):
    srv = start(["--allowed-clients", "10.0.0.0/8"])
    status, _, body = post_tools(srv)
    assert status == 403
    assert json.loads(body)["error"] == "client_not_allowed"
    # Checked first: even health and SSE are refused.
    assert srv.request("GET", "/healthz")[0] == 403
    assert srv.request("GET", MCP_PATH, headers={"Accept": "text/event-stream"})[0] == 403


def test_client_in_allowed_networks_is_served(start):
    srv = start(["--allowed-clients", "10.0.0.0/8,127.0.0.0/8,fd00::/8"])
    assert post_tools(srv)[0] == 200


def test_forwarded_for_from_trusted_proxy(start):
    xff = {"X-Forwarded-For": "10.1.2.3"}
    trusted = start(["--allowed-clients", "10.0.0.0/8", "--trusted-proxies", "127.0.0.1/32"])
    status, _, body = post_tools(trusted, xff)
    assert status == 200 and len(tools_from_jsonrpc(body)) == 21
    # The proxy itself is not a client: without the header it is refused.
    assert post_tools(trusted)[0] == 403
    # A forwarded client outside the networks is refused.
    assert post_tools(trusted, {"X-Forwarded-For": "192.0.2.1"})[0] == 403

    untrusted = start(["--allowed-clients", "10.0.0.0/8"])
    assert post_tools(untrusted, xff)[0] == 403, "X-Forwarded-For believed from an untrusted peer"
