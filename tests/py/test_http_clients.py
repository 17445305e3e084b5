"""The deployment guide's clients against sysom-mcp over HTTP: the Python ``mcp`` package (legacy
``sse_client`` and the Streamable HTTP client, 1.x and 2.x), the guide's two curl commands and
Qwen Code's ``qwen mcp add/list``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import support
from support import INSTANCE, MCP_PATH, UID, bearer, mcp_session, payload, tools_from_jsonrpc, write_tokens

DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
TRANSPORTS = ["sse", "http"]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_list_tools_and_diagnose_with_progress(start, mock, transport):
    mock.scenario(diagnosis={"polls_before_done": 4})
    srv = start()
    async with mcp_session(transport, srv.url) as client:
        tools = await client.list_tools()
        assert len(tools) == 21, [t["name"] for t in tools]
        assert "memgraph" in {t["name"] for t in tools}

        seen: list[float] = []

        async def on_progress(progress, total, message):
            seen.append(progress)

        out = payload(await client.call("memgraph", DIAG_ARGS, progress=on_progress, timeout=30))
        assert out["code"] == "Success", out
        assert len(seen) >= 1, f"no progress notification over {transport}"
        assert seen == sorted(seen)
    # The diagnosis really went to the mock.
    assert mock.requests(action="GetDiagnosisResult"), "no GetDiagnosisResult reached the mock"


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_clients_with_bearer_token(start, tmp_path, transport):
    tokens = write_tokens(tmp_path / "tokens", "tok-" + "a" * 32)
    srv = start(["--token-file", str(tokens)])
    async with mcp_session(transport, srv.url, headers=bearer("tok-" + "a" * 32)) as client:
        assert len(await client.list_tools()) == 21
        out = payload(await client.call("list_all_instances", {"uid": UID}))
        assert out["code"] == "Success", out


@pytest.mark.anyio
async def test_guide_python_example(start):
    """REMOTE_DEPLOYMENT_GUIDE.zh.md §3.2, unchanged except for the URL."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    srv = start()
    server_url = srv.url
    async with sse_client(server_url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            assert len(tools.tools) == 21
            result = await session.call_tool("list_all_instances", {
                "uid": "1418925853835361",
                "region": "cn-hangzhou",
            })
    res = support.wire(result)
    assert not res.get("isError"), res
    assert payload(res)["code"] == "Success"


# --- the guide's curl commands ----------------------------------------------------------------

def curl(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    return subprocess.run(["curl", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def parse_head(text: str) -> tuple[str, dict[str, str]]:
    lines = [line for line in text.replace("\r", "").split("\n")]
    status = lines[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def test_guide_curl_get_answers_promptly(start):
    """`curl http://HOST:7140/mcp/unified` gets a status line and headers at once (it is an SSE
    stream, so curl then waits; -m 2 ends it with exit 28 *after* the headers arrived)."""
    srv = start()
    proc = curl("-m", "2", "-sS", "-D", "-", "-o", "/dev/null", srv.url)
    assert proc.returncode in (0, 28), proc.stderr
    status, headers = parse_head(proc.stdout)
    assert status.startswith("HTTP/1.1 200"), proc.stdout
    assert headers.get("content-type", "").startswith("text/event-stream"), headers


def test_guide_curl_verbose_get(start):
    """`curl -v …/mcp/unified` (guide §4.2) prints the endpoint event without waiting for the end."""
    srv = start()
    proc = curl("-m", "2", "-sS", "-N", srv.url)
    assert proc.returncode in (0, 28), proc.stderr
    assert "event: endpoint" in proc.stdout
    assert f"data: {MCP_PATH}/messages?sessionId=" in proc.stdout


def test_guide_curl_post_tools_list(start):
    srv = start()
    proc = curl("-sS", "-m", "10", "-X", "POST", srv.url, "-H", "Content-Type: application/json", "-d",
                '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')
    assert proc.returncode == 0, proc.stderr
    msg = json.loads(proc.stdout)
    assert msg["id"] == 1
    assert len(tools_from_jsonrpc(proc.stdout.encode())) == 21


def test_guide_curl_post_with_token(start, tmp_path):
    tokens = write_tokens(tmp_path / "tokens", "curl-token-123")
    srv = start(["--token-file", str(tokens)])
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    proc = curl("-sS", "-m", "10", "-X", "POST", srv.url, "-H", "Content-Type: application/json",
                "-H", "Authorization: Bearer curl-token-123", "-d", body)
    assert proc.returncode == 0, proc.stderr
    assert len(tools_from_jsonrpc(proc.stdout.encode())) == 21
    refused = curl("-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", srv.url,
                   "-H", "Content-Type: application/json", "-d", body)
    assert refused.stdout == "401"


# --- Qwen Code ------------------------------------------------------------------------------------

QWEN_VERSION = os.environ.get("SYSOM_TEST_QWEN_VERSION", "0.24.4")
QWEN_PREFIX = support.REPO_ROOT / ".venv" / "qwen"


def qwen_binary() -> Path:
    """`qwen` from npm, installed once under .venv/qwen (skips the test if npm cannot install it)."""
    binary = QWEN_PREFIX / "node_modules" / ".bin" / "qwen"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        pytest.skip("npm not installed: cannot install @qwen-code/qwen-code")
    try:
        proc = subprocess.run(["npm", "install", "--prefix", str(QWEN_PREFIX), "--no-audit", "--no-fund",
                               f"@qwen-code/qwen-code@{QWEN_VERSION}"],
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install @qwen-code/qwen-code timed out")
    if proc.returncode != 0 or not binary.exists():
        pytest.skip(f"npm install @qwen-code/qwen-code@{QWEN_VERSION} failed: {proc.stderr[-800:]}")
    return binary


def test_qwen_code_sse_and_http(start, tmp_path):
    qwen = qwen_binary()
    token = "qwen-token-" + "b" * 24
    srv = start(["--token-file", str(write_tokens(tmp_path / "tokens", token))])
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "NO_COLOR": "1", "CI": "1"}

    def qwen_cmd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(qwen), *args], capture_output=True, text=True, timeout=60, env=env,
                              cwd=str(home / "work"), stdin=subprocess.DEVNULL)

    for kind, name in (("sse", "sysom-sse"), ("http", "sysom-http")):
        added = qwen_cmd("mcp", "add", "-t", kind, name, srv.url, "-H", f"Authorization: Bearer {token}")
        assert added.returncode == 0, added.stdout + added.stderr
    settings = json.loads((home / ".qwen" / "settings.json").read_text())
    assert settings["mcpServers"]["sysom-sse"]["url"] == srv.url
    assert settings["mcpServers"]["sysom-http"]["httpUrl"] == srv.url

    listed = qwen_cmd("mcp", "list")
    out = listed.stdout + listed.stderr
    lines = {name: [line for line in out.splitlines() if f"{name}:" in line] for name in ("sysom-sse", "sysom-http")}
    for name, found in lines.items():
        assert found, f"{name} missing from `qwen mcp list`:\n{out}"
        assert found[0].rstrip().endswith("- Connected"), f"{name} not connected:\n{out}\n{srv.stderr()}"

    # A wrong token really is refused (so "Connected" above means the token was checked).
    wrong = qwen_cmd("mcp", "add", "-t", "http", "sysom-wrong", srv.url, "-H", "Authorization: Bearer nope")
    assert wrong.returncode == 0, wrong.stdout + wrong.stderr
    listed = qwen_cmd("mcp", "list")
    bad = [line for line in (listed.stdout + listed.stderr).splitlines() if "sysom-wrong:" in line]
    assert bad and not bad[0].rstrip().endswith("- Connected"), listed.stdout
