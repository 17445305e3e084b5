"""Credential modes (docs/interface.md "Credentials"): access_key from files, sts, ram_role_arn via
the mock STS, ecs_ram_role via the mock metadata service.
"""

from __future__ import annotations

import asyncio

import pytest

import support
import mock_sysom as ms
from support import UID, payload

pytestmark = pytest.mark.anyio

ROLE_ARN = "acs:ram::1234567890123456:role/sysom-mcp-test"


def signed_header_names(rec: dict) -> list[str]:
    return ms.parse_authorization(rec["headers"]["authorization"])["signed_headers"]


async def call_ok(client, name="list_history_tasks", args=None):
    out = payload(await client.call(name, args or {"days": 1}))
    assert out["code"] == "Success", out
    return out


async def test_sts_token(mock, sysom_bin, config_file):
    mock.scenario(security_token="tok-sts-valid")
    env = support.server_env(mock, OPENAPI_TYPE="sts", SECURITY_TOKEN="tok-sts-valid")
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
    [rec] = mock.requests()
    assert rec["headers"]["x-acs-security-token"] == "tok-sts-valid"
    assert "x-acs-security-token" in signed_header_names(rec)
    assert rec["access_key_id"] == mock.access_key_id


async def test_sts_openapi_prefixed_names(mock, sysom_bin, config_file):
    mock.scenario(security_token="tok-sts-2")
    env = support.server_env(mock, credentials=False, OPENAPI_TYPE="sts",
                             OPENAPI_ACCESS_KEY_ID=mock.access_key_id, OPENAPI_ACCESS_KEY_SECRET=mock.access_key_secret,
                             OPENAPI_SECURITY_TOKEN="tok-sts-2")
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)


async def test_sts_wrong_token(mock, sysom_bin, config_file):
    mock.scenario(security_token="tok-sts-valid")
    env = support.server_env(mock, OPENAPI_TYPE="sts", SECURITY_TOKEN="tok-sts-stale")
    async with support.open_session(env, config=config_file) as client:
        out = payload(await client.call("list_history_tasks", {"days": 1}))
    assert out["code"] != "Success" and "InvalidSecurityToken" in out["message"]


async def test_ram_role_arn_assumes_once_and_caches(mock, sysom_bin, config_file):
    env = support.server_env(mock, OPENAPI_TYPE="ram_role_arn", ROLE_ARN=ROLE_ARN)
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
        await call_ok(client, "list_clusters", {"uid": UID})
        await call_ok(client, "memgraph", {"uid": UID, "region": "cn-hangzhou", "channel": "ecs",
                                           "instance": "i-1"})
    [sts] = mock.requests(kind="sts")
    params = {**sts["query"], **sts.get("form", {})}
    assert params["RoleArn"] == ROLE_ARN and params.get("RoleSessionName")
    assert sts["access_key_id"] == mock.access_key_id, "AssumeRole must be requested with the base AccessKey"
    for rec in mock.requests():
        assert rec["access_key_id"].startswith("STS.mock"), "OpenAPI calls must use the assumed credentials"
        assert rec["headers"].get("x-acs-security-token", "").startswith("tmptoken-")


async def test_ram_role_arn_refreshes_expired_credentials(mock, sysom_bin, config_file):
    mock.scenario(sts_lifetime_secs=1)
    env = support.server_env(mock, OPENAPI_TYPE="ram_role_arn", OPENAPI_ROLE_ARN=ROLE_ARN)
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
        await asyncio.sleep(1.5)
        await call_ok(client)  # the first credentials have expired by now
    assert len(mock.requests(kind="sts")) >= 2


async def test_ecs_ram_role_discovers_role(mock, sysom_bin, config_file):
    env = support.server_env(mock, credentials=False, OPENAPI_TYPE="ecs_ram_role")
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
        await call_ok(client, "list_instances", {"uid": UID})
    paths = [r["path"] for r in mock.requests(kind="metadata") if r["method"] == "GET"]
    assert "/latest/meta-data/ram/security-credentials/" in paths
    assert f"/latest/meta-data/ram/security-credentials/{ms.DEFAULT_ECS_ROLE}" in paths
    for rec in mock.requests():
        assert rec["access_key_id"].startswith("STS.ecs")
        assert rec["headers"].get("x-acs-security-token", "").startswith("tmptoken-")


async def test_ecs_ram_role_named(mock, sysom_bin, config_file):
    mock.scenario(ecs_role_name="NamedRole")
    env = support.server_env(mock, credentials=False, OPENAPI_TYPE="ecs_ram_role", ECS_RAM_ROLE="NamedRole")
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
    paths = [r["path"] for r in mock.requests(kind="metadata")]
    assert "/latest/meta-data/ram/security-credentials/NamedRole" in paths


async def test_credentials_directory_files(mock, sysom_bin, config_file, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "access-key-id").write_text(mock.access_key_id + "\n")  # trailing newline as `echo` leaves
    (creds / "access-key-secret").write_text(mock.access_key_secret + "\n")
    env = support.server_env(mock, credentials=False, CREDENTIALS_DIRECTORY=str(creds))
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
    assert mock.requests()[0]["access_key_id"] == mock.access_key_id


async def test_environment_beats_credentials_directory(mock, sysom_bin, config_file, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "access-key-id").write_text("LTAIfromfile")
    (creds / "access-key-secret").write_text("wrong-secret-from-file")
    env = support.server_env(mock, CREDENTIALS_DIRECTORY=str(creds))
    async with support.open_session(env, config=config_file) as client:
        await call_ok(client)
