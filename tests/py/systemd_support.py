"""Helpers for the systemd integration tests (test_systemd_*.py).

* ``NotifySocket``: a fake ``NOTIFY_SOCKET`` (AF_UNIX datagram socket) recording every datagram.
* ``Procs`` / the ``procs`` fixture: spawn the binary (directly, through ``systemd-socket-activate``
  or inside a private mount namespace with a fake journal) and kill whatever is left at teardown.
* ``http_request`` / ``mcp_post``: plain HTTP over TCP or a Unix socket, no third-party client.
* ``parse_journal_datagram``: the journald native protocol (``KEY=VALUE`` and binary-safe fields).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import harness

HERE = Path(__file__).resolve().parent
WATCHDOG = b"WATCHDOG=1\n"


def short_tmpdir(prefix: str = "sd-") -> Path:
    """A fresh directory with a short path (AF_UNIX paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def socket_activate_bin() -> str | None:
    return shutil.which("systemd-socket-activate") or next(
        (p for p in ("/lib/systemd/systemd-socket-activate", "/usr/lib/systemd/systemd-socket-activate")
         if os.access(p, os.X_OK)), None)


# --------------------------------------------------------------------------------------------
# Fake NOTIFY_SOCKET


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


# --------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Spawns processes and kills every one still running at teardown."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self._n = 0

    def _stderr(self) -> Path:
        self._n += 1
        return self.tmp / f"proc{self._n}.stderr"

    def popen(self, argv: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        stderr_path = self._stderr()
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(argv, env=env, stderr=err, cwd=str(harness.REPO_ROOT), **kw)
        proc.stderr_path = stderr_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def binary(self, args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        return self.popen([str(harness.binary_path()), *args], env, **kw)

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
        argv += [str(harness.binary_path()), *args]
        return self.popen(argv, env)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot die of SIGTERM
                    proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.close()


def stderr_text(proc: subprocess.Popen) -> str:
    return Path(proc.stderr_path).read_text(errors="replace")  # type: ignore[attr-defined]


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process still running after {timeout}s; stderr:\n{stderr_text(proc)}") from None


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s")


def tcp_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------
# HTTP without third-party clients


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def http_request(method: str, target: str, *, port: int | None = None, unix: str | None = None,
                 body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = (UnixHTTPConnection(unix, timeout) if unix is not None
            else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def mcp_post(message: dict, *, port: int | None = None, unix: str | None = None, path: str = "/mcp/unified",
             headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict]:
    """One sessionless (stateless) JSON-RPC POST; returns (status, parsed JSON or {})."""
    hdrs = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})}
    status, resp_headers, raw = http_request("POST", path, port=port, unix=unix, body=json.dumps(message).encode(),
                                             headers=hdrs, timeout=timeout)
    if status != 200:
        return status, {}
    text = raw.decode()
    if resp_headers.get("content-type", "").startswith("text/event-stream"):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = next((d for d in reversed(datas) if d), "{}")
    return status, json.loads(text)


def tools_call(name: str, arguments: dict, rid: int = 1, **kw) -> tuple[int, dict]:
    return mcp_post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                     "params": {"name": name, "arguments": arguments}}, **kw)


def tools_list(rid: int = 1, **kw) -> tuple[int, dict]:
    return mcp_post({"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": {}}, **kw)


def wait_healthz(*, port: int | None = None, unix: str | None = None, proc: subprocess.Popen | None = None,
                 timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited rc={proc.returncode} before /healthz answered:\n{stderr_text(proc)}")
        try:
            status, _, _ = http_request("GET", "/healthz", port=port, unix=unix, timeout=2)
            if status == 200:
                return
            last = status
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"/healthz not ready: {last}")


# --------------------------------------------------------------------------------------------
# journald native protocol


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

