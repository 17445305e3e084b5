"""Helpers for the HTTP-mode tests (test_http_*.py): start sysom-mcp on a free loopback port,
connect the real Python ``mcp`` clients (1.x and 2.x) over legacy SSE and Streamable HTTP, and
talk raw HTTP / SSE when the exact bytes matter.

Every server started here is stopped (SIGTERM, then SIGKILL) when its context ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness import MCP_MAJOR, binary_path, free_port

MCP_PATH = "/mcp/unified"

# Well-formed JSON-RPC bodies used by the raw tests.
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "sysom-mcp-http-tests", "version": "0"}}}


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------

class Server:
    """A running ``sysom-mcp --sse`` on 127.0.0.1 (or ``host``) and a free port."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, *, host: str = "127.0.0.1",
                 tls_ca: Path | None = None, mode: str = "--sse", config: Path | None = None,
                 wait: bool = True, stderr_path: Path | None = None, nofile: int | None = None):
        self.port = free_port()
        self.host = host
        self.tls_ca = tls_ca
        self.scheme = "https" if tls_ca else "http"
        if config is None:
            fd, name = tempfile.mkstemp(prefix="sysom-mcp-http-", suffix=".toml")
            os.write(fd, b"# empty\n")
            os.close(fd)
            config = Path(name)
            self._own_config = config
        else:
            self._own_config = None
        if stderr_path is None:
            fd, name = tempfile.mkstemp(prefix="sysom-mcp-http-stderr-", suffix=".log")
            os.close(fd)
            stderr_path = Path(name)
            self._own_stderr = True
        else:
            self._own_stderr = False
        self.stderr_path = stderr_path
        self.argv = [mode, "--host", host, "--port", str(self.port), "--config", str(config), *(args or [])]
        self._err = open(stderr_path, "wb")  # noqa: SIM115
        def limit_fds():  # runs in the child: a descriptor limit of `nofile`
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([str(binary_path()), *self.argv], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, cwd=str(harness.REPO_ROOT),
                                     preexec_fn=limit_fds if nofile else None)
        # Clients always connect through loopback, whatever the bind address.
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"
        self.url = self.base + MCP_PATH
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise

    # -- lifecycle --
    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sysom-mcp {' '.join(self.argv)} exited rc={self.proc.returncode} "
                                   f"before /healthz answered\n--- stderr ---\n{self.stderr()}")
            try:
                # Any HTTP answer means it is serving (an IP allow-list may 403 even /healthz).
                self.request("GET", "/healthz", timeout=2)
                return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"/healthz not ready: {last}\n--- stderr ---\n{self.stderr()}")

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def sighup_and_wait(self, marker: str = "configuration reloaded", timeout: float = 5) -> None:
        """SIGHUP, then wait until the log reports the reload (or a rejection)."""
        before = self.stderr_path.read_text(errors="replace").count(marker)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr_path.read_text(errors="replace")
            if text.count(marker) > before:
                return
            if "reload rejected" in text:
                raise AssertionError(f"reload rejected:\n{self.stderr()}")
            time.sleep(0.05)
        raise TimeoutError(f"no '{marker}' in the log after SIGHUP\n{self.stderr()}")

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        if self._own_config:
            self._own_config.unlink(missing_ok=True)
        if self._own_stderr:
            self.stderr_path.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- raw HTTP --
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_ca:
            return None
        return ssl.create_default_context(cafile=str(self.tls_ca))

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        if self.tls_ca:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context())
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; returns (status, lower-cased headers, body)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()


def write_tokens(path: Path, *tokens: str) -> Path:
    path.write_text("# sysom-mcp client tokens\n" + "".join(f"{t}\n" for t in tokens))
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_json_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(extra or {})}


# ---------------------------------------------------------------------------------------------
# Raw SSE
# ---------------------------------------------------------------------------------------------

class RawSse:
    """A GET on the MCP path read as a raw event stream (blocking, bounded by timeouts)."""

    def __init__(self, server: Server, headers: dict[str, str] | None = None, path: str = MCP_PATH,
                 timeout: float = 10):
        self.conn = server.connection(timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines: list[tuple[float, str]] = []  # (monotonic time, line) as read

    def readline(self) -> str | None:
        """Next line without its newline; None at end of stream."""
        raw = self.resp.readline()  # de-chunked
        if not raw:
            return None
        line = raw.decode().rstrip("\r\n")
        self.lines.append((time.monotonic(), line))
        return line

    def next_event(self) -> dict[str, str] | None:
        """The next event as {'event': ..., 'data': ...}; comments are recorded but skipped."""
        event: dict[str, str] = {}
        while True:
            line = self.readline()
            if line is None:
                return None
            if line == "":
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value

    def endpoint(self) -> str:
        ev = self.next_event()
        assert ev is not None and ev.get("event") == "endpoint", f"first event is not endpoint: {ev}"
        return ev["data"]

    def set_timeout(self, timeout: float) -> None:
        sock = self.conn.sock
        if sock is not None:
            sock.settimeout(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_until_closed(stream: RawSse, timeout: float) -> str:
    """Read until the server ends the stream: "eof" for a clean end of the response, "aborted" for a
    connection cut mid-response, "" (false) if it is still open after ``timeout``.

    (A timed-out socket file cannot be read again, so one timeout ends the wait.)"""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        stream.set_timeout(remaining)
        try:
            if stream.readline() is None:
                return "eof"
        except TimeoutError:
            return ""
        except (ConnectionError, http.client.IncompleteRead, ValueError, OSError):
            return "aborted"


# ---------------------------------------------------------------------------------------------
# Real MCP clients (mcp 1.x and 2.x)
# ---------------------------------------------------------------------------------------------

def httpx_module():
    """mcp 2.x ships on httpx2, 1.x on httpx."""
    if MCP_MAJOR >= 2:
        import httpx2
        return httpx2
    import httpx
    return httpx


def http_client(headers: dict[str, str] | None = None, verify: Any = True, timeout: float = 30):
    hx = httpx_module()
    return hx.AsyncClient(headers=headers or {}, verify=verify, timeout=hx.Timeout(timeout, read=300),
                          trust_env=False)


@contextlib.asynccontextmanager
async def streamable_streams(url: str, headers: dict[str, str] | None = None, verify: Any = True):
    """(read, write) of the Streamable HTTP client; works with mcp 1.x and 2.x."""
    from mcp.client.streamable_http import streamable_http_client
    async with http_client(headers, verify) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            yield streams[0], streams[1]


@contextlib.asynccontextmanager
async def sse_streams(url: str, headers: dict[str, str] | None = None):
    from mcp.client.sse import sse_client
    async with sse_client(url, headers=headers) as streams:
        yield streams[0], streams[1]


@contextlib.asynccontextmanager
async def mcp_session(transport: str, url: str, headers: dict[str, str] | None = None, verify: Any = True):
    """An initialised harness.Client over ``transport`` ('sse' or 'http')."""
    from mcp import ClientSession
    streams = sse_streams(url, headers) if transport == "sse" else streamable_streams(url, headers, verify)
    async with streams as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield harness.Client(session)


def tools_from_jsonrpc(body: bytes) -> list[str]:
    msg = json.loads(body)
    assert "result" in msg, f"JSON-RPC error: {msg}"
    return [t["name"] for t in msg["result"]["tools"]]


def sse_json_messages(body: bytes) -> list[dict]:
    """The JSON-RPC messages in an SSE body (Streamable HTTP answering with text/event-stream)."""
    out = []
    for block in body.decode().split("\n\n"):
        data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
        if data and data[0]:
            with contextlib.suppress(ValueError):
                out.append(json.loads("\n".join(data)))
    return out


def jsonrpc_answer(headers: dict[str, str], body: bytes) -> dict:
    """The JSON-RPC response of a Streamable HTTP POST, whether JSON or SSE-framed."""
    if headers.get("content-type", "").startswith("text/event-stream"):
        msgs = [m for m in sse_json_messages(body) if "id" in m and "method" not in m]
        assert msgs, f"no JSON-RPC response in SSE body: {body[:500]!r}"
        return msgs[-1]
    return json.loads(body)


# ---------------------------------------------------------------------------------------------
# Fixture: servers started by a test, all stopped at teardown
# ---------------------------------------------------------------------------------------------

import pytest  # noqa: E402


@pytest.fixture
def start(mock, sysom_bin):
    """start(args, env=None, **Server kwargs) -> Server; env defaults to server_env(mock)."""
    started: list[Server] = []

    def _start(args: list[str] | None = None, *, env: dict[str, str] | None = None, **kw) -> Server:
        srv = Server(env if env is not None else harness.server_env(mock), args, **kw)
        started.append(srv)
        return srv

    yield _start
    for srv in started:
        srv.stop()
