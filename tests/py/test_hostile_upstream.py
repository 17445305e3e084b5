"""A hostile or broken SysOM upstream (issue 17, items 3, 4, 6, 9, 11): redirects to another
origin, bodies that drip in one byte at a time, bodies far larger than any real answer, and
secrets that must not reach MCP clients.
"""

from __future__ import annotations

import re

import pytest

import support
from support import UID, payload, result_text
from control import MockSysom

pytestmark = pytest.mark.anyio


def business_error(res: dict) -> dict:
    assert res["isError"] is False, result_text(res)
    out = payload(res)
    assert out["code"] != "Success", out
    return out


# ------------------------------------------------------------------ item 9: redirects


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_to_other_origin_is_not_followed(mock, env, config_file, status):
    with MockSysom(access_key_id=mock.access_key_id, access_key_secret=mock.access_key_secret,
                   host="127.0.0.1") as other:
        target = f"{other.url}/api/v1/am/cluster/list_clusters"
        mock.scenario(faults={"ListClusters": [{"redirect": target, "status": status}]})
        async with support.open_session(dict(env, SYSOM_MCP_MAX_RETRIES="0"), config=config_file) as client:
            out = business_error(await client.call("list_clusters", {"uid": UID}))
        assert other.requests(kind=None) == [], "the redirect target must never be contacted"
        assert str(status) in out["message"], out["message"]


# ------------------------------------------------------------------ item 4: response size cap


async def test_huge_upstream_body_is_refused(mock, env, config_file):
    mock.scenario(faults={"ListClusters": [{"huge_bytes": 8 * 1024 * 1024}]})
    env = dict(env, SYSOM_MCP_MAX_RESPONSE_BYTES=str(1024 * 1024), SYSOM_MCP_MAX_RETRIES="0")
    async with support.open_session(env, config=config_file) as client:
        out = business_error(await client.call("list_clusters", {"uid": UID}))
        assert "1048576" in out["message"] and "larger" in out["message"], out["message"]
        # The server survived and serves the next call.
        assert payload(await client.call("list_clusters", {"uid": UID}))["code"] == "Success"


async def test_body_under_the_cap_is_accepted(mock, env, config_file):
    mock.scenario(faults={"ListClusters": [{"huge_bytes": 512 * 1024}]})
    env = dict(env, SYSOM_MCP_MAX_RESPONSE_BYTES=str(1024 * 1024))
    async with support.open_session(env, config=config_file) as client:
        assert payload(await client.call("list_clusters", {"uid": UID}))["code"] == "Success"


# ------------------------------------------------------------------ item 6: total deadlines


async def test_drip_fed_body_hits_the_total_request_deadline(mock, env, config_file):
    # One byte every 100 ms never trips the 10 s read timeout; only a total deadline ends it.
    mock.scenario(faults={"ListClusters": [{"drip_ms": 100, "times": -1}]})
    env = dict(env, SYSOM_MCP_REQUEST_TIMEOUT_MS="1500", SYSOM_MCP_MAX_RETRIES="0")
    async with support.open_session(env, config=config_file) as client:
        out = business_error(await client.call("list_clusters", {"uid": UID}, timeout=40))
    assert re.search(r"did not finish within", out["message"]), out["message"]


async def test_drip_fed_diagnosis_poll_still_ends_the_tool_call(mock, env, config_file):
    # The diagnosis poll drip-feeds; the diagnosis timeout (3 s in the harness) must still apply.
    mock.scenario(faults={"GetDiagnosisResult": [{"drip_ms": 200, "times": -1}]})
    env = dict(env, SYSOM_MCP_REQUEST_TIMEOUT_MS="60000", SYSOM_MCP_MAX_RETRIES="0")
    async with support.open_session(env, config=config_file) as client:
        res = await client.call("memgraph", {"uid": UID, "region": "cn-hangzhou", "channel": "ecs",
                                             "instance": support.INSTANCE}, timeout=40)
    text = result_text(res)
    assert re.search(r"time[sd]?[ -]?out|did not finish", text, re.I), text


# ------------------------------------------------------------------ item 3: activation cache


async def test_activation_cache_is_keyed_by_the_account_not_the_uid(mcp_client, mock):
    first = payload(await mcp_client.call("check_sysom_initialed", {"uid": "1"}))
    assert first["data"] == {"initialed": True, "from_cache": False}
    # The uid is never sent upstream: the answer was about the AccessKey's account, so any uid
    # reuses it and a client-chosen uid adds nothing to the cache.
    for uid in ("2", "x" * 100_000):
        again = payload(await mcp_client.call("check_sysom_initialed", {"uid": uid}))
        assert again["data"] == {"initialed": True, "from_cache": True}
    assert len(mock.requests(action="InitialSysom")) == 1


# ------------------------------------------------------------------ item 11: secrets in errors


async def test_endpoint_password_is_not_echoed_in_tool_errors(mock, env, config_file):
    port = support.free_port()
    env = dict(env, SYSOM_ENDPOINT=f"http://user:hunter2-endpoint-pw@127.0.0.1:{port}",
               SYSOM_MCP_MAX_RETRIES="0")
    async with support.open_session(env, config=config_file) as client:
        res = await client.call("list_clusters", {"uid": UID})
    text = result_text(res)
    assert "127.0.0.1" in text, text
    assert "hunter2-endpoint-pw" not in text, text


def test_secret_in_config_file_is_not_quoted_in_parse_errors(mock, env, tmp_path):
    cfg = tmp_path / "config.toml"
    # A secret pasted into the wrong place: a type error and a syntax error both quote the line.
    for text in ('[server]\nport = "LTAIsecretvalue-hunter2"\n',
                 'access_key_secret = LTAIsecretvalue-hunter2\n',
                 '[upstream]\nmax_retries = 1\naccess_key_secret = "LTAIsecretvalue-hunter2"\n'):
        cfg.write_text(text)
        proc = support.run_binary(["--stdio", "--config", str(cfg)], env)
        assert proc.returncode != 0
        assert "config" in proc.stderr, proc.stderr
        assert "hunter2" not in proc.stderr + proc.stdout, proc.stderr
