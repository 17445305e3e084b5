"""The one support module of the sysom-mcp integration tests (tests/py).

* Environment: ``server_env`` builds a clean environment pointing every upstream (SysOM, STS, ECS
  metadata) at the mock server, so no test can reach a real Alibaba Cloud host.
* Launching: ``launch`` is the one way a test starts the binary in the background. HTTP-mode servers
  get a listening socket the test bound itself (127.0.0.1:0), handed over as fd 3 with systemd's
  ``LISTEN_FDS``/``LISTEN_PID`` (``listening_socket``), so no port is picked free and bound later by
  somebody else. Tests about ``--host``/``--port`` themselves pass ``listen="port"`` (or use
  ``free_port``, the racy way, only there). ``Server`` / the ``start`` fixture wrap one HTTP
  server; ``Procs`` / the ``procs`` fixture any number of processes (systemd tests). Every process
  started here is stopped at teardown (``stop_process``).
* Waiting: ``wait_until`` (raises TimeoutError naming what it waited for), ``wait_healthz``,
  ``wait_exit``, ``read_until_closed``.
* MCP: ``open_session`` (stdio, the real Python ``mcp`` client, 1.x and 2.x, results compared as
  wire JSON), ``mcp_session`` (legacy SSE / Streamable HTTP), ``RawStdio`` (newline-delimited
  JSON-RPC keeping every byte), ``RawSse`` (a raw event stream), ``http_request``/``mcp_post``
  (plain HTTP over TCP or a Unix socket, TLS optional).
* systemd: ``NotifySocket`` (a fake ``NOTIFY_SOCKET``), ``systemd-socket-activate``, the journald
  native protocol and a fake journal in a private mount namespace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import http.client
import importlib.metadata
import json
import os
import queue
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent

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



# ---------------------------------------------------------------------------------------------
# Launching the binary
# ---------------------------------------------------------------------------------------------

# Moves the descriptors named before "--" to 3, 4, ... (closing the originals), sets LISTEN_PID to
# its own pid and execs the rest: LISTEN_PID must be the server's pid, which only the child knows
# (exec keeps it). bash, because dash's redirections take single-digit descriptors only.
_ACTIVATE = ('fd=3; while [[ $1 != -- ]]; do eval "exec $fd<&$1-"; fd=$((fd + 1)); shift; done; shift; '
             'export LISTEN_PID=$$; exec "$@"')


def listening_socket(host: str = "127.0.0.1", family: int = socket.AF_INET, backlog: int = 1024) -> socket.socket:
    """A TCP socket bound to (host, 0) and listening: the port is ours from the start."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now. Racy (another process may bind it before the binary does): only for
    tests about --port itself or about what does not listen; servers get ``listening_socket``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(args: list[str], env: dict[str, str], *, listen: list | None = None, stderr_path: Path | None = None,
           nofile: int | None = None, argv0: list[str] | None = None, **popen) -> subprocess.Popen:
    """Starts ``sysom-mcp args`` (or ``argv0 + args``) in the background, stdin and stdout on
    /dev/null unless given, stderr into ``stderr_path`` (kept as ``proc.stderr_path``) or ``stderr``.

    ``listen``: sockets (anything with a ``fileno()``) handed over by socket activation, as fds 3,
    4, ... with LISTEN_PID set to the child's pid and LISTEN_FDS to their number (unless ``env``
    sets it: a test may announce more than it passes). The caller may close its copies once this
    returns."""
    argv = [*(argv0 or [str(binary_path())]), *args]
    env = dict(env)
    high: list[int] = []
    if listen is not None:
        # Above anything the child could already have at 3, 4, ...; closed here after the fork.
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 64) for s in listen]
        argv = ["bash", "-c", _ACTIVATE, "bash", *map(str, high), "--", *argv]
        env.setdefault("LISTEN_FDS", str(len(listen)))
        env.pop("LISTEN_PID", None)
        popen["pass_fds"] = (*popen.get("pass_fds", ()), *high)
    if nofile is not None:
        def limit_fds():  # in the child: a descriptor limit of `nofile`
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        popen["preexec_fn"] = limit_fds
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("cwd", str(REPO_ROOT))
    err = open(stderr_path, "wb") if stderr_path else None  # noqa: SIM115
    popen.setdefault("stderr", err or subprocess.DEVNULL)
    try:
        proc = subprocess.Popen(argv, env=env, **popen)
    finally:
        if err:
            err.close()
        for fd in high:
            os.close(fd)
    proc.stderr_path = stderr_path  # type: ignore[attr-defined]
    return proc


def run_binary(args: list[str], env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    """Run the binary to completion (for --help, config errors, ...)."""
    return subprocess.run([str(binary_path()), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT))


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM (after SIGCONT: a stopped process cannot die of it), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stderr_text(proc: subprocess.Popen) -> str:
    path = getattr(proc, "stderr_path", None)
    return Path(path).read_text(errors="replace") if path else "(stderr not kept)"


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process still running after {timeout}s; stderr:\n{stderr_text(proc)}") from None


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition",
               proc: subprocess.Popen | None = None):
    """The first true value of ``predicate()``, polled every ``interval``; TimeoutError after
    ``timeout``. With ``proc``: RuntimeError as soon as it exits, and either error ends with the
    tail of its stderr."""
    def failure(kind, message: str):
        tail = f"\n--- stderr ---\n{stderr_text(proc)[-4000:]}" if proc is not None else ""
        return kind(message + tail)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise failure(RuntimeError, f"exited rc={proc.returncode} while waiting for {what}")
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise failure(TimeoutError, f"{what} not met within {timeout}s")
        time.sleep(interval)


class Background:
    """``fn(*args, **kw)`` running in a daemon thread: ``join`` waits for it and returns what it
    returned, re-raising what it raised; ``done`` says whether it has ended."""

    def __init__(self, fn: Callable[..., Any], *args, **kw):
        self._outcome: dict[str, Any] = {}

        def run():
            try:
                self._outcome["value"] = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001  (re-raised by join)
                self._outcome["error"] = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"still running after {timeout}s")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


def tcp_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Procs:
    """Spawns processes (``binary``, ``popen``, ``activated``) and stops every one still running at
    teardown; stderr of each goes to a file in ``tmp`` (``stderr_text``)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def next_stderr(self) -> Path:
        """Where the stderr of the next process started goes."""
        return self.tmp / f"proc{len(self.procs) + 1}.stderr"

    def binary(self, args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        """The binary; ``listen=[sockets]`` hands them over by socket activation (see ``launch``)."""
        proc = launch(args, env, stderr_path=self.next_stderr(), **kw)
        self.procs.append(proc)
        return proc

    def popen(self, argv: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        return self.binary(argv[1:], env, argv0=argv[:1], **kw)

    def activated(self, listen: list[str], args: list[str], env: dict[str, str], *,
                  datagram: bool = False) -> subprocess.Popen:
        """``systemd-socket-activate -l A [-l B] -E K=V... sysom-mcp args``. It binds the sockets at
        once and execs the server on the first connection (same pid), passing only -E variables."""
        tool = socket_activate_bin()
        if tool is None:
            pytest.skip("systemd-socket-activate not installed")
        argv = [tool]
        if datagram:
            argv.append("--datagram")
        for addr in listen:
            argv += ["-l", addr]
        for key, value in env.items():
            argv += ["-E", f"{key}={value}"]
        argv += [str(binary_path()), *args]
        return self.popen(argv, env)

    def close(self):
        for proc in self.procs:
            stop_process(proc, timeout=5)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.close()


def short_tmpdir(prefix: str = "sd-") -> Path:
    """A fresh directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def socket_activate_bin() -> str | None:
    return shutil.which("systemd-socket-activate") or next(
        (p for p in ("/lib/systemd/systemd-socket-activate", "/usr/lib/systemd/systemd-socket-activate")
         if os.access(p, os.X_OK)), None)


# ---------------------------------------------------------------------------------------------
# Plain HTTP (TCP, TLS or a Unix socket) and waiting for /healthz
# ---------------------------------------------------------------------------------------------

MCP_PATH = "/mcp/unified"

# Well-formed JSON-RPC bodies used by the raw tests.
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "sysom-mcp-http-tests", "version": "0"}}}


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def connection(*, port: int | None = None, unix: str | None = None, context: ssl.SSLContext | None = None,
               timeout: float = 10) -> http.client.HTTPConnection:
    """A connection to 127.0.0.1:port (HTTPS with ``context``) or to the Unix socket ``unix``."""
    if unix is not None:
        return UnixHTTPConnection(unix, timeout)
    if context is not None:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def http_request(method: str, target: str, *, port: int | None = None, unix: str | None = None,
                 body: bytes | str | dict | None = None, headers: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; returns (status, lower-cased headers, body)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    conn = connection(port=port, unix=unix, context=context, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_healthz(*, port: int | None = None, unix: str | None = None, proc: subprocess.Popen | None = None,
                 context: ssl.SSLContext | None = None, any_status: bool = False, timeout: float = 15) -> int:
    """Polls ``GET /healthz`` until it answers 200 (any HTTP status with ``any_status``: an IP
    allow-list may 403 even /healthz); returns the status. Fails early, with the server's stderr,
    if ``proc`` exits first."""
    def answered() -> int | None:
        try:
            status, _, _ = http_request("GET", "/healthz", port=port, unix=unix, context=context, timeout=2)
        except OSError:
            return None
        return status if any_status or status == 200 else None
    return wait_until(answered, timeout, what=f"/healthz on {unix or port}", proc=proc)


def write_tokens(path: Path, *tokens: str) -> Path:
    path.write_text("# sysom-mcp client tokens\n" + "".join(f"{t}\n" for t in tokens))
    return path


def new_token(path: Path, name: str, scopes: str) -> str:
    """`sysom-mcp token new NAME --scope SCOPES --file PATH`; returns the token it printed once."""
    proc = subprocess.run([str(binary_path()), "token", "new", name, "--scope", scopes, "--file", str(path)],
                          capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert token.startswith("smcp_") and len(token) > 40, proc.stdout
    assert token not in path.read_text(), "the tokens file holds the token itself"
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_json_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(extra or {})}


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


def mcp_post(message: dict, *, port: int | None = None, unix: str | None = None, path: str = MCP_PATH,
             headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict]:
    """One sessionless (stateless) JSON-RPC POST; returns (status, the JSON-RPC answer or {})."""
    status, resp_headers, raw = http_request("POST", path, port=port, unix=unix, body=message,
                                             headers=post_json_headers(headers), timeout=timeout)
    if status != 200:
        return status, {}
    return status, jsonrpc_answer(resp_headers, raw)


def tools_call(name: str, arguments: dict, rid: int = 1, **kw) -> tuple[int, dict]:
    return mcp_post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                     "params": {"name": name, "arguments": arguments}}, **kw)


def tools_list(rid: int = 1, **kw) -> tuple[int, dict]:
    return mcp_post({"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": {}}, **kw)


# ---------------------------------------------------------------------------------------------
# An HTTP-mode server
# ---------------------------------------------------------------------------------------------

class Server:
    """A running ``sysom-mcp --sse`` (or ``mode``) serving on ``host``, stopped (SIGTERM, then
    SIGKILL) when its context ends.

    By default it serves a socket bound here and handed over by socket activation (``launch``);
    ``listen="port"`` makes it bind ``--host``/``--port`` itself (a free port: racy, for tests about
    those flags)."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, *, host: str = "127.0.0.1",
                 tls_ca: Path | None = None, mode: str = "--sse", config: Path | None = None,
                 wait: bool = True, stderr_path: Path | None = None, nofile: int | None = None,
                 listen: str = "socket"):
        assert listen in ("socket", "port"), listen
        self.host = host
        self.tls_ca = tls_ca
        self.scheme = "https" if tls_ca else "http"
        self._own_config = None
        if config is None:
            fd, name = tempfile.mkstemp(prefix="sysom-mcp-http-", suffix=".toml")
            os.write(fd, b"# empty\n")
            os.close(fd)
            config = self._own_config = Path(name)
        self._own_stderr = stderr_path is None
        if stderr_path is None:
            fd, name = tempfile.mkstemp(prefix="sysom-mcp-http-stderr-", suffix=".log")
            os.close(fd)
            stderr_path = Path(name)
        self.stderr_path = stderr_path
        if listen == "socket":
            with listening_socket(host) as sock:
                self.port = sock.getsockname()[1]
                self.argv = [mode, "--config", str(config), *(args or [])]
                self.proc = launch(self.argv, env, listen=[sock], stderr_path=stderr_path, nofile=nofile)
        else:
            self.port = free_port(host)
            self.argv = [mode, "--host", host, "--port", str(self.port), "--config", str(config), *(args or [])]
            self.proc = launch(self.argv, env, stderr_path=stderr_path, nofile=nofile)
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
        # Any HTTP answer means it is serving (an IP allow-list may 403 even /healthz).
        wait_healthz(port=self.port, proc=self.proc, context=self.ssl_context(), any_status=True, timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_log(self, *markers: str, timeout: float = 5, since: int = 0) -> str:
        """Waits until the log (from character ``since`` on) holds one of ``markers``; returns it."""
        def found():
            text = self.stderr_path.read_text(errors="replace")[since:]
            return next((m for m in markers if m in text), None)
        try:
            return wait_until(found, timeout, what=f"one of {markers} in the log")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.stderr()}") from None

    def log_size(self) -> int:
        return len(self.stderr_path.read_text(errors="replace"))

    def sighup_and_wait(self, marker: str = "configuration reloaded", timeout: float = 5) -> None:
        """SIGHUP, then wait until the log reports the reload (AssertionError if it was rejected)."""
        since = self.log_size()
        self.signal(signal.SIGHUP)
        if self.wait_log(marker, "reload rejected", timeout=timeout, since=since) != marker:
            raise AssertionError(f"reload rejected:\n{self.stderr()}")

    def stop(self, timeout: float = 10) -> int:
        rc = stop_process(self.proc, timeout)
        if self._own_config:
            self._own_config.unlink(missing_ok=True)
        if self._own_stderr:
            self.stderr_path.unlink(missing_ok=True)
        return rc

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
        return connection(port=self.port, context=self.ssl_context(), timeout=timeout)

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; returns (status, lower-cased headers, body)."""
        return http_request(method, path, port=self.port, body=body, headers=headers, context=self.ssl_context(),
                            timeout=timeout)


@pytest.fixture
def start(mock, sysom_bin):
    """start(args, env=None, **Server kwargs) -> Server; env defaults to server_env(mock). Every
    server started is stopped at teardown."""
    started: list[Server] = []

    def _start(args: list[str] | None = None, *, env: dict[str, str] | None = None, **kw) -> Server:
        srv = Server(env if env is not None else server_env(mock), args, **kw)
        started.append(srv)
        return srv

    yield _start
    for srv in started:
        srv.stop()


# ---------------------------------------------------------------------------------------------
# Raw SSE, and waiting for the server to close a connection
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


def read_until_closed(conn: RawSse | socket.socket, timeout: float) -> str:
    """Reads (and drops) whatever arrives until the server ends ``conn``: "eof" for a clean end (of
    the SSE response, or of a raw socket), "aborted" for a reset or a response cut mid-way, ""
    (false) if it is still open after ``timeout``.

    (A timed-out socket file cannot be read again, so one timeout ends the wait.)"""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        if isinstance(conn, socket.socket):
            conn.settimeout(remaining)
            read = lambda: conn.recv(65536) or None  # noqa: E731
        else:
            conn.set_timeout(remaining)
            read = conn.readline
        try:
            if read() is None:
                return "eof"
        except TimeoutError:
            return ""
        except (ConnectionError, http.client.IncompleteRead, ValueError, OSError):
            return "aborted"


# ---------------------------------------------------------------------------------------------
# Real MCP clients over HTTP (mcp 1.x and 2.x)
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
    """An initialised Client over ``transport`` ('sse' or 'http')."""
    from mcp import ClientSession
    streams = sse_streams(url, headers) if transport == "sse" else streamable_streams(url, headers, verify)
    async with streams as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield Client(session)


# ---------------------------------------------------------------------------------------------
# MCP over stdio
# ---------------------------------------------------------------------------------------------

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



# ---------------------------------------------------------------------------------------------
# systemd: a fake NOTIFY_SOCKET
# ---------------------------------------------------------------------------------------------

WATCHDOG = b"WATCHDOG=1\n"


class NotifySocket:
    """Binds an AF_UNIX datagram socket and records (monotonic time, bytes) for every datagram."""

    def __init__(self):
        self.dir = short_tmpdir("sd-notify-")
        self.path = str(self.dir / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.records: list[tuple[float, bytes]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self):
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.records.append((time.monotonic(), data))
                self._cond.notify_all()

    def close(self):
        self._closed = True
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def messages(self, *, watchdog: bool = False, since: int = 0) -> list[bytes]:
        """Datagrams received so far (from index ``since``), WATCHDOG=1 pings left out unless asked."""
        with self._cond:
            recs = self.records[since:]
        return [d for _, d in recs if watchdog or d != WATCHDOG]

    def mark(self) -> int:
        with self._cond:
            return len(self.records)

    def wait_for(self, predicate, *, since: int = 0, timeout: float = 10) -> tuple[int, bytes]:
        """Waits for a datagram (index >= since) matching predicate; returns (index, datagram)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.records)):
                    if predicate(self.records[i][1]):
                        return i, self.records[i][1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [d for _, d in self.records[since:] if d != WATCHDOG]
                    raise TimeoutError(f"no matching notify datagram within {timeout}s; got {seen}")
                self._cond.wait(remaining)

    def watchdog_times(self, start: float, end: float) -> list[float]:
        with self._cond:
            return [t for t, d in self.records if d == WATCHDOG and start <= t <= end]


# ---------------------------------------------------------------------------------------------
# systemd: the journald native protocol, a fake journal
# ---------------------------------------------------------------------------------------------

def parse_journal_datagram(data: bytes) -> dict[str, list[bytes]]:
    """Parses one native-protocol entry: ``KEY=VALUE\\n`` lines and binary-safe fields
    ``KEY\\n<u64 little-endian length><data>\\n``. Values are lists (a key may repeat)."""
    fields: dict[str, list[bytes]] = {}
    i = 0
    while i < len(data):
        nl = data.find(b"\n", i)
        if nl < 0:
            raise ValueError(f"unterminated field at {i}: {data[i:i + 60]!r}")
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (length,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 1 + 8
            value = data[start:start + length]
            if len(value) != length or data[start + length:start + length + 1] != b"\n":
                raise ValueError(f"bad binary-safe field {key!r}")
            i = start + length + 1
        fields.setdefault(key.decode(), []).append(value)
    return fields


def journal_field(entry: dict[str, list[bytes]], key: str) -> str | None:
    values = entry.get(key)
    return values[0].decode(errors="replace") if values else None


def unshare_available() -> str | None:
    """None when `unshare -m` + tmpfs mounts work here, else the reason they do not."""
    if os.geteuid() != 0:
        return "needs root for unshare -m and mounting a tmpfs on /run/systemd"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd"],
                           capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"unshare -m / mount not permitted: {probe.stderr.strip()}"
    return None


# Runs inside `unshare -m`: a tmpfs on /run/systemd (private to this namespace), a datagram socket at
# /run/systemd/journal/socket, then the command. Every datagram (including ones passed as a sealed
# memfd, journald's path for large entries) is appended to argv[1] as <u32 le length><bytes>.
# SIGTERM/SIGINT are forwarded; the script exits with the command's status.
JOURNAL_CAPTURE = r"""
import os, signal, socket, struct, subprocess, sys, threading, time
out, argv = sys.argv[1], sys.argv[3:]
os.makedirs("/run/systemd", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sink = open(out, "ab", buffering=0)
def reader():
    while True:
        data, anc, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]):
                    os.lseek(fd, 0, os.SEEK_SET)
                    chunks = []
                    while chunk := os.read(fd, 1 << 20):
                        chunks.append(chunk)
                    os.close(fd)
                    data += b"".join(chunks)
        if data:
            sink.write(struct.pack("<I", len(data)) + data)
threading.Thread(target=reader, daemon=True).start()
child = subprocess.Popen(argv)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, lambda s, f: child.send_signal(s))
rc = child.wait()
time.sleep(0.3)  # let the reader store the last datagrams
os._exit(rc if rc >= 0 else 128 - rc)
"""


def journal_argv(outfile: Path, argv: list[str]) -> list[str]:
    """Runs argv inside a private mount namespace where /run/systemd/journal/socket is a fake
    journal writing every datagram to outfile (see JOURNAL_CAPTURE)."""
    return ["unshare", "-m", "--propagation", "private", sys.executable, "-c", JOURNAL_CAPTURE, str(outfile),
            "--", *argv]


def read_journal_capture(outfile: Path) -> list[bytes]:
    """Datagrams written by JOURNAL_CAPTURE: each as <u32 le length><bytes>."""
    data = outfile.read_bytes() if outfile.exists() else b""
    out, i = [], 0
    while i + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, i)
        if i + 4 + n > len(data):
            break
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out

