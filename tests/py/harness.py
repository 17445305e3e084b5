"""Launching sysom-mcp for the integration tests and talking MCP to it.

* ``server_env`` builds a clean environment pointing every upstream (SysOM, STS, ECS metadata)
  at the mock server, so no test can reach a real Alibaba Cloud host.
* ``open_session`` spawns ``sysom-mcp --stdio`` and connects the real Python ``mcp`` client
  (works with mcp 1.x and 2.x; results are compared as wire JSON to hide the 2.x renames).
* ``RawStdio`` is a minimal newline-delimited JSON-RPC client that keeps every byte the server
  printed (for stdout-purity, secret-leak and cancellation tests).
* ``spawn_binary`` / ``wait_healthz`` start the binary with arbitrary args (HTTP-mode tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
MCP_MAJOR = int(importlib.metadata.version("mcp").split(".")[0])

# Short timings so failure paths finish fast; individual tests override as needed.
DEFAULT_SERVER_ENV = {
    "SYSOM_MCP_POLL_INTERVAL_MS": "50",
    # No backoff unless a test asks for it: the poll counts of the mock's scenarios stay fast.
    "SYSOM_MCP_POLL_MAX_INTERVAL_MS": "50",
    "SYSOM_MCP_DIAGNOSIS_TIMEOUT": "3",
    "SYSOM_MCP_LOG": "stderr",
    "RUST_LOG": "info",
    # The cloud tools only: these tests are about the SysOM side; the local tools have their own.
    "SYSOM_MCP_TOOLS": "cloud",
}


def binary_path() -> Path:
    """$SYSOM_MCP_BIN, else target/debug/sysom-mcp under the repo root."""
    return Path(os.environ.get("SYSOM_MCP_BIN") or REPO_ROOT / "target" / "debug" / "sysom-mcp")


def server_env(mock, *, credentials: bool = True, **overrides: str | None) -> dict[str, str]:
    """Environment for the binary: only what we set (plus PATH/HOME), upstreams at the mock.

    ``overrides`` with value None removes a variable.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", **DEFAULT_SERVER_ENV,
           "SYSOM_ENDPOINT": mock.url,
           "SYSOM_STS_ENDPOINT": mock.url,
           "SYSOM_ECS_METADATA_ENDPOINT": mock.url}
    if credentials:
        env["ACCESS_KEY_ID"] = mock.access_key_id
        env["ACCESS_KEY_SECRET"] = mock.access_key_secret
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def wire(model) -> dict:
    """A pydantic mcp type as its JSON-RPC wire form (camelCase keys in both mcp 1.x and 2.x)."""
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def payload(result: dict) -> dict:
    """The JSON object a tool returned: its text content, checked equal to structuredContent."""
    texts = [c["text"] for c in result.get("content", []) if c.get("type") == "text"]
    assert len(texts) == 1, f"expected one text content item, got {result.get('content')}"
    parsed = json.loads(texts[0])
    if "structuredContent" in result:
        assert result["structuredContent"] == parsed, "structuredContent differs from the JSON text"
    return parsed


def result_text(result: dict) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content", []))


class Client:
    """Thin version-independent wrapper around mcp.ClientSession."""

    def __init__(self, session):
        self.session = session

    async def list_tools(self) -> list[dict]:
        return [wire(t) for t in (await self.session.list_tools()).tools]

    async def call(self, name: str, arguments: dict[str, Any] | None = None, *, progress=None,
                   timeout: float = 60) -> dict:
        """tools/call; returns the wire CallToolResult (content, structuredContent, isError)."""
        read_timeout = timeout if MCP_MAJOR >= 2 else dt.timedelta(seconds=timeout)
        res = await self.session.call_tool(name, arguments or {}, read_timeout_seconds=read_timeout,
                                           progress_callback=progress)
        out = wire(res)
        out.setdefault("isError", False)
        return out


@contextlib.asynccontextmanager
async def open_session(env: dict[str, str], args: list[str] | None = None, errlog_path: Path | None = None,
                       config: Path | None = None):
    """Spawn ``sysom-mcp --stdio --config <config> [args]`` and yield an initialised Client."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    argv = ["--stdio"] + (["--config", str(config)] if config else []) + (args or [])
    params = StdioServerParameters(command=str(binary_path()), args=argv, env=env, cwd=str(REPO_ROOT))
    own_log = errlog_path is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix="sysom-mcp-stderr-", suffix=".log")
        os.close(fd)
        errlog_path = Path(name)
    errlog = open(errlog_path, "w")  # noqa: SIM115
    try:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                try:
                    await session.initialize()
                except Exception as e:
                    # Show why the server died instead of a bare "Connection closed".
                    errlog.flush()
                    tail = errlog_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"sysom-mcp {' '.join(argv)} failed to initialize: {e!r}\n"
                                       f"--- its stderr ---\n{tail}") from e
                yield Client(session)
    finally:
        errlog.close()
        if own_log:
            errlog_path.unlink(missing_ok=True)


class RawStdio:
    """Newline-delimited JSON-RPC over the binary's stdio, keeping everything it prints."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, stderr_path: Path | None = None):
        self.stderr_file = open(stderr_path or os.devnull, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([str(binary_path()), "--stdio", *(args or [])], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     cwd=str(REPO_ROOT))
        self.stdout_lines: list[bytes] = []  # every raw line, for purity / leak checks
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.notifications: list[dict] = []
        self._next_id = 1
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # the purity test reports it
            if "id" not in msg or "method" in msg:
                self.notifications.append(msg)
            self.messages.put(msg)

    def send(self, msg: dict) -> None:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def start_request(self, method: str, params: dict | None = None) -> int:
        rid = self._next_id
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return rid

    def wait_response(self, rid: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response to request {rid}")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg.get("id") == rid and "method" not in msg:
                return msg

    def request(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.wait_response(self.start_request(method, params), timeout)

    def initialize(self) -> dict:
        resp = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                           "clientInfo": {"name": "sysom-mcp-tests", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return resp

    def call_tool(self, name: str, arguments: dict, timeout: float = 30) -> dict:
        return self.request("tools/call", {"name": name, "arguments": arguments}, timeout)

    def close(self, timeout: float = 10) -> int:
        """Close stdin (the stdio way to stop) and wait for exit."""
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.stderr_file.close()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_binary(args: list[str], env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    """Run the binary to completion (for --help, config errors, ...)."""
    return subprocess.run([str(binary_path()), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT))


def spawn_binary(args: list[str], env: dict[str, str], stderr_path: Path | None = None) -> subprocess.Popen:
    """Start the binary in the background (HTTP modes); the caller stops it."""
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([str(binary_path()), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err, cwd=str(REPO_ROOT))


def wait_healthz(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 15) -> dict:
    """Poll ``GET {base_url}/healthz`` until it answers 200; return its JSON."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sysom-mcp exited rc={proc.returncode} before /healthz answered")
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return json.loads(resp.read())
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"/healthz not ready: {last}")


# Minimal valid arguments for every tool (used where any successful call will do).
UID = "1234567890123456"
INSTANCE = "i-bp1mocktestinstance01"
MINIMAL_ARGS: dict[str, dict[str, Any]] = {
    "list_all_instances": {"uid": UID},
    "list_pods_of_instance": {"uid": UID, "instance": INSTANCE},
    "list_clusters": {"uid": UID},
    "list_instances": {"uid": UID},
    **{name: {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
       for name in ("memgraph", "javamem", "oomcheck", "iofsstat", "iodiagnose", "packetdrop", "netjitter",
                    "delay", "loadtask", "vmcore", "diskanalysis")},
    "create_vmcore_diagnosis_task": {"vmcore_url": "https://example.invalid/vmcore.gz"},
    "create_dmesg_diagnosis_task": {"dmesg_url": "https://example.invalid/dmesg.txt"},
    "query_diagnosis_task": {"task_id": "vmcore-task-0001"},
    "list_history_tasks": {"days": 7},
    "initial_sysom": {"uid": UID},
    "check_sysom_initialed": {"uid": UID},
}


def raw_payload(response: dict) -> dict:
    """payload() for a raw JSON-RPC tools/call response (RawStdio)."""
    assert "result" in response, f"JSON-RPC error: {response.get('error')}"
    return payload(response["result"])


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port (for --port in HTTP-mode tests)."""
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
