"""sysom-mcp as an OAuth 2.1 resource server, against a real OpenID provider: oidc-provider from npm
(tests/oauth/provider.mjs, installed by tests/run.sh) issues client-credentials access tokens with
a resource indicator (RFC 8707). Checked: RFC 9728 protected-resource metadata and the
`resource_metadata` of every 401; the right audience and scope works with the Python MCP clients
on both transports; wrong audience, wrong issuer, expired, not yet valid, bad signature, rotated
keys and missing scope each get the right status and header; the audit trail names the subject
and holds no token."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import support
from support import MCP_PATH, TOOLS_LIST, UID, mcp_session, payload, post_json_headers, tools_from_jsonrpc
from test_http_scopes import ADMIN, DIAGNOSE, READ, audit_records, call_message

FIXTURE = support.REPO_ROOT / "tests" / "oauth"
RESOURCE = "https://sysom-mcp.test/mcp/unified"
METADATA_URL = "https://sysom-mcp.test/.well-known/oauth-protected-resource/mcp/unified"


class Provider:
    """The running oidc-provider fixture."""

    def __init__(self):
        node = shutil.which("node")
        if not node or not (FIXTURE / "node_modules" / "oidc-provider").is_dir():
            pytest.skip("oidc-provider is not installed: run `npm ci --prefix tests/oauth` (tests/run.sh does)")
        self.proc = subprocess.Popen([node, str(FIXTURE / "provider.mjs")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("oidc-provider fixture did not start")
        info = json.loads(line)
        self.issuer = info["issuer"]
        self.token_endpoint = info["token_endpoint"]

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> dict:
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback fixture)
            return json.loads(resp.read())

    def token(self, scope: str = "sysom:read sysom:diagnose", resource: str = RESOURCE) -> str:
        """An access token by the client-credentials grant."""
        form = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            form["scope"] = scope
        basic = base64.b64encode(b"agent:agent-secret").decode()
        out = self._post(self.token_endpoint, urllib.parse.urlencode(form).encode(),
                         {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
        assert out["token_type"].lower() == "bearer", out
        return out["access_token"]

    def mint(self, forge: bool = False, **claims) -> str:
        body = json.dumps({"claims": {"aud": RESOURCE, **claims}, "forge": forge}).encode()
        return self._post(self.issuer + "/test/mint", body, {"Content-Type": "application/json"})["token"]

    def rotate(self) -> None:
        self._post(self.issuer + "/test/rotate", b"{}", {"Content-Type": "application/json"})

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def idp():
    p = Provider()
    yield p
    p.stop()


@pytest.fixture
def oauth_server(start, idp):
    return start(["--oauth-issuer", idp.issuer, "--oauth-resource", RESOURCE])


def post(srv, message: dict, token: str | None):
    extra = {"Authorization": f"Bearer {token}"} if token else {}
    return srv.request("POST", MCP_PATH, body=message, headers=post_json_headers(extra))


def challenge(headers: dict[str, str]) -> str:
    return headers.get("www-authenticate", "")


def test_protected_resource_metadata(oauth_server, idp):
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource" + MCP_PATH,
                 MCP_PATH + "/.well-known/oauth-protected-resource"):
        status, headers, body = oauth_server.request("GET", path)
        assert status == 200, path
        meta = json.loads(body)
        assert meta["resource"] == RESOURCE and meta["authorization_servers"] == [idp.issuer], meta
        assert set(meta["scopes_supported"]) == {"sysom:read", "sysom:diagnose", "sysom:admin"}
        assert meta["bearer_methods_supported"] == ["header"]
    status, headers, body = post(oauth_server, TOOLS_LIST, None)
    assert status == 401
    assert f'resource_metadata="{METADATA_URL}"' in challenge(headers), challenge(headers)
    assert "error=" not in challenge(headers), "no credential presented: no error code (RFC 6750 3.1)"


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_right_audience_and_scope_works(oauth_server, idp, transport):
    token = idp.token("sysom:read sysom:diagnose")
    async with mcp_session(transport, oauth_server.url, {"Authorization": f"Bearer {token}"}) as client:
        names = {t["name"] for t in await client.list_tools()}
        assert names == READ | DIAGNOSE
        out = payload(await client.call("list_all_instances", {"uid": UID}))
        assert out["code"] == "Success"
    records = [r for r in audit_records(oauth_server) if r.get("SYSOM_TOOL") == "list_all_instances"]
    assert records and records[-1]["SYSOM_PRINCIPAL"] == "agent" and records[-1]["SYSOM_AUTH"] == "oauth"
    assert token not in oauth_server.stderr_path.read_text(errors="replace")
    assert token.split(".")[2] not in oauth_server.stderr_path.read_text(errors="replace")


def test_missing_scope_is_403_step_up(oauth_server, idp):
    token = idp.token("sysom:read")
    status, headers, body = post(oauth_server, call_message("initial_sysom", {"uid": UID}), token)
    assert status == 403, body
    c = challenge(headers)
    assert 'error="insufficient_scope"' in c and 'scope="sysom:admin"' in c and "resource_metadata=" in c, c
    status, _, body = post(oauth_server, TOOLS_LIST, token)
    assert status == 200 and set(tools_from_jsonrpc(body)) == READ
    # A token with none of our scopes authenticates but sees and may call nothing.
    bare = idp.token("")
    status, _, body = post(oauth_server, TOOLS_LIST, bare)
    assert status == 200 and tools_from_jsonrpc(body) == []
    assert post(oauth_server, call_message("list_all_instances", {"uid": UID}), bare)[0] == 403
    admin = idp.token("sysom:admin")
    status, _, body = post(oauth_server, TOOLS_LIST, admin)
    assert set(tools_from_jsonrpc(body)) == ADMIN


def test_each_defect_is_a_401_with_invalid_token(oauth_server, idp):
    now = int(time.time())
    cases = {
        "another audience": (idp.token(resource="https://other.test/mcp"), "audience"),
        "another issuer": (idp.mint(iss="http://127.0.0.1:1/evil"), "issuer"),
        "expired": (idp.mint(exp=now - 120, iat=now - 600), "expired"),
        "not yet valid": (idp.mint(nbf=now + 600), "not valid yet"),
        "bad signature": (idp.mint(forge=True), "signature"),
        "no audience": (idp.mint(aud=None), "audience"),
    }
    for what, (token, words) in cases.items():
        status, headers, body = post(oauth_server, TOOLS_LIST, token)
        assert status == 401, what
        c = challenge(headers)
        assert 'error="invalid_token"' in c and f'resource_metadata="{METADATA_URL}"' in c, (what, c)
        assert words in json.loads(body)["message"], (what, body)
    # A minted token with every claim right is accepted: the refusals above are the defects.
    status, _, body = post(oauth_server, TOOLS_LIST, idp.mint())
    assert status == 200 and set(tools_from_jsonrpc(body)) == READ | DIAGNOSE | ADMIN
    log = oauth_server.stderr_path.read_text(errors="replace")
    for token, _ in cases.values():
        assert token.split(".")[2] not in log


def test_rotated_keys(oauth_server, idp):
    old = idp.token()
    assert post(oauth_server, TOOLS_LIST, old)[0] == 200
    idp.rotate()
    # The server fetches keys again on an unknown kid, at most every 10 s.
    time.sleep(10.5)
    new = idp.token()
    assert post(oauth_server, TOOLS_LIST, new)[0] == 200
    status, headers, body = post(oauth_server, TOOLS_LIST, old)
    assert status == 401, "a token of the rotated-out key still works"
    assert "unknown key" in json.loads(body)["message"]


def test_static_tokens_still_work_beside_oauth(start, idp, tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text("plain-token-beside-oauth-0123456789\n")
    srv = start(["--oauth-issuer", idp.issuer, "--oauth-resource", RESOURCE, "--token-file", str(tokens)])
    assert post(srv, TOOLS_LIST, "plain-token-beside-oauth-0123456789")[0] == 200
    assert post(srv, TOOLS_LIST, idp.token())[0] == 200
    assert post(srv, TOOLS_LIST, "nope")[0] == 401
