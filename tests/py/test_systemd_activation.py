"""Socket activation (LISTEN_FDS/LISTEN_PID) with systemd-socket-activate and hand-made fds.

Good sockets (TCP, Unix, both at once) are served, with HTTP mode implied; every malformed case
ends with a non-zero exit and a clear message, never a port of our own.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time

import pytest

import support
from support import (NotifySocket, http_request, short_tmpdir, stderr_text, tcp_listening, tools_list, wait_exit,
                     wait_healthz, wait_until)

# Replaces itself (same pid) with argv[2:] after moving fd argv[1] to 3 and setting LISTEN_PID to
# its own pid: a faithful "systemd passed this fd" without systemd.
@pytest.fixture
def sockdir():
    d = short_tmpdir("sd-act-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def curl_unix(path: str, target: str, *extra: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "-m", "10", "--unix-socket", path, "-w", "\n%{http_code}", *extra,
                          f"http://localhost{target}"], capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def assert_serves_tools(**where):
    status, out = tools_list(**where)
    assert status == 200, status
    assert len(out["result"]["tools"]) == 21


def test_tcp_activation_implies_http_mode(sysom_bin, mock, config_file, procs):
    port = support.free_port()
    other = support.free_port()
    env = support.server_env(mock)
    # No mode flag: LISTEN_FDS selects HTTP; --port is not bound (the inherited socket is used).
    proc = procs.activated([f"127.0.0.1:{port}"], ["--config", str(config_file), "--port", str(other)], env)
    wait_healthz(port=port, proc=proc)  # the first connection makes systemd-socket-activate exec us
    assert_serves_tools(port=port)
    assert "activated=true" in stderr_text(proc)
    assert f"listen=127.0.0.1:{port}" in stderr_text(proc)
    assert not tcp_listening(other), "bound --port although sockets were inherited"
    assert proc.poll() is None


def test_unix_activation(sysom_bin, mock, config_file, procs, sockdir):
    path = str(sockdir / "mcp.sock")
    proc = procs.activated([path], ["--config", str(config_file)], support.server_env(mock))
    wait_healthz(unix=path, proc=proc)  # systemd-socket-activate binds asynchronously
    code, body = curl_unix(path, "/healthz")
    assert code == 200 and '"ok"' in body, (code, body)
    code, body = curl_unix(path, "/mcp/unified", "-X", "POST", "-H", "Content-Type: application/json",
                           "-H", "Accept: application/json, text/event-stream",
                           "--data", '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')
    assert code == 200 and '"memgraph"' in body, (code, body[:300])
    assert_serves_tools(unix=path)
    assert f"unix:{path}" in stderr_text(proc)


def test_tcp_and_unix_sockets_at_once(sysom_bin, mock, config_file, procs, sockdir):
    port = support.free_port()
    path = str(sockdir / "mcp.sock")
    with NotifySocket() as notify:
        proc = procs.activated([f"127.0.0.1:{port}", path], ["--config", str(config_file)],
                               support.server_env(mock, NOTIFY_SOCKET=notify.path))
        wait_healthz(port=port, proc=proc)
        _, ready = notify.wait_for(lambda d: d.startswith(b"READY=1"), timeout=5)
    assert ready == f"READY=1\nSTATUS=serving on 127.0.0.1:{port}, unix:{path}\n".encode(), ready
    wait_healthz(unix=path, proc=proc)
    assert_serves_tools(port=port)
    assert_serves_tools(unix=path)
    code, _ = curl_unix(path, "/healthz")
    assert code == 200
    log = stderr_text(proc)
    assert f"127.0.0.1:{port}" in log and f"unix:{path}" in log, log


def test_stdio_flag_with_inherited_sockets_is_a_config_error(sysom_bin, mock, config_file, procs):
    port = support.free_port()
    proc = procs.activated([f"127.0.0.1:{port}"], ["--stdio", "--config", str(config_file)], support.server_env(mock))
    wait_until(lambda: tcp_listening(port), 10, what="systemd-socket-activate listening")
    assert wait_exit(proc, 10) == 2
    assert "--stdio" in stderr_text(proc)


# ---------------------------------------------------------------------------------------------
# Malformed activation: exit non-zero, a message naming the problem, nothing listening.


def run_direct(env_extra: dict[str, str], config_file, mock, *, listen=None, port=None) -> tuple[int, str, int]:
    """Runs the binary to its exit with ``listen`` (a list of sockets or files) handed over as fds 3, ...
    (``support.launch``); ``listen=[]`` sets LISTEN_PID but passes nothing."""
    port = port or support.free_port()
    env = support.server_env(mock, **env_extra)
    proc = support.launch(["--streamable-http", "--port", str(port), "--config", str(config_file)], env,
                          listen=listen, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        support.stop_process(proc)
    return proc.returncode, err, port


def assert_refused(rc: int, err: str, port: int, *needles: str):
    assert rc == 2, (rc, err)
    assert err.startswith("sysom-mcp: socket activation: "), err
    for n in needles:
        assert n in err, (n, err)
    assert not tcp_listening(port), "something listens on --port after a refused activation"


@pytest.mark.parametrize("env_extra,needles", [
    ({"LISTEN_FDS": "x", "LISTEN_PID": "1"}, ["LISTEN_FDS=\"x\"", "not a number"]),
    ({"LISTEN_FDS": "1"}, ["LISTEN_PID is not"]),
    ({"LISTEN_FDS": "1", "LISTEN_PID": "abc"}, ["LISTEN_PID=\"abc\"", "not a process id"]),
    ({"LISTEN_FDS": "1", "LISTEN_PID": "1"}, ["LISTEN_PID=1 is not this process"]),
    ({"LISTEN_FDS": "-1", "LISTEN_PID": "1"}, ["LISTEN_FDS=\"-1\""]),
], ids=["fds-not-a-number", "no-listen-pid", "pid-not-a-number", "pid-of-another-process", "negative-fds"])
def test_malformed_environment(sysom_bin, mock, config_file, env_extra, needles):
    rc, err, port = run_direct(env_extra, config_file, mock)
    assert_refused(rc, err, port, *needles)


def test_listen_fds_zero(sysom_bin, mock, config_file):
    rc, err, port = run_direct({"LISTEN_FDS": "0"}, config_file, mock, listen=[])
    assert_refused(rc, err, port, "LISTEN_FDS=0")


def test_fd3_not_open(sysom_bin, mock, config_file):
    """LISTEN_FDS=1 but nothing at fd 3 (the launcher passes no descriptor beyond stderr)."""
    rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[])
    assert_refused(rc, err, port, "fd 3", "is not open")


def test_more_fds_announced_than_passed(sysom_bin, mock, config_file):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    with lsock:
        rc, err, port = run_direct({"LISTEN_FDS": "2"}, config_file, mock, listen=[lsock])
    assert_refused(rc, err, port, "fd 4", "is not open")


def test_regular_file_as_fd3(sysom_bin, mock, config_file, tmp_path):
    f = open(tmp_path / "plain.txt", "w+")  # noqa: SIM115
    with f:
        rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[f])
    assert_refused(rc, err, port, "fd 3", "not a socket")


@pytest.mark.parametrize("kind", ["unbound", "bound"])
def test_non_listening_tcp_socket_as_fd3(sysom_bin, mock, config_file, kind):
    s = socket.socket()
    if kind == "bound":
        s.bind(("127.0.0.1", 0))
    with s:
        rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[s])
    assert_refused(rc, err, port, "fd 3", "not listening")


def test_connected_stream_socket_as_fd3(sysom_bin, mock, config_file):
    """An Accept=yes style connection socket is not a listener."""
    a, b = socket.socketpair()
    with a, b:
        rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[a])
    assert_refused(rc, err, port, "fd 3", "not listening")


def test_udp_socket_as_fd3(sysom_bin, mock, config_file):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    with s:
        rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[s])
    assert_refused(rc, err, port, "fd 3", "Datagram", "stream socket")


def test_datagram_socket_from_socket_activate(sysom_bin, mock, config_file, procs):
    udp = support.free_port()
    port = support.free_port()
    proc = procs.activated([f"127.0.0.1:{udp}"], ["--streamable-http", "--port", str(port),
                                                   "--config", str(config_file)],
                           support.server_env(mock), datagram=True)
    time.sleep(0.3)  # systemd-socket-activate binds first, then waits for traffic
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            s.sendto(b"wake up", ("127.0.0.1", udp))
            time.sleep(0.2)
    rc = wait_exit(proc, 5)
    err = stderr_text(proc)
    assert rc == 2, (rc, err)
    assert "socket activation: inherited fd 3 is a Datagram socket" in err, err
    assert not tcp_listening(port)


def test_unix_datagram_socket_as_fd3(sysom_bin, mock, config_file, sockdir):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sockdir / "dgram.sock"))
    with s:
        rc, err, port = run_direct({"LISTEN_FDS": "1"}, config_file, mock, listen=[s])
    assert_refused(rc, err, port, "fd 3", "Datagram")


def test_listening_socket_passed_by_hand_is_served(sysom_bin, mock, config_file, procs):
    """Control for the refusals above: the same path with a good socket serves, on that socket only."""
    lsock = support.listening_socket()
    port = lsock.getsockname()[1]
    other = support.free_port()
    env = support.server_env(mock)
    with lsock:
        proc = procs.binary(["--port", str(other), "--config", str(config_file)], env, listen=[lsock])
    wait_healthz(port=port, proc=proc)
    assert_serves_tools(port=port)
    assert not tcp_listening(other)
    assert proc.poll() is None


def test_ipv4_and_ipv6_sockets_at_once(sysom_bin, mock, config_file, procs):
    try:
        with socket.socket(socket.AF_INET6) as s6:
            s6.bind(("::1", 0))
            port6 = s6.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback")
    port4 = support.free_port()
    proc = procs.activated([f"127.0.0.1:{port4}", f"[::1]:{port6}"], ["--config", str(config_file)],
                           support.server_env(mock))
    wait_healthz(port=port4, proc=proc)
    assert_serves_tools(port=port4)
    conn = http.client.HTTPConnection("::1", port6, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert f"[::1]:{port6}" in stderr_text(proc)



@pytest.mark.parametrize("count", ["4294967295", "2147483648", "2147483647"])
def test_absurd_listen_fds_count(sysom_bin, mock, config_file, count):
    """A count that overflows the fd range must not turn into "no sockets, serve nothing"."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    with lsock:
        try:
            rc, err, port = run_direct({"LISTEN_FDS": count}, config_file, mock, listen=[lsock])
        except subprocess.TimeoutExpired:
            pytest.fail(f"LISTEN_FDS={count}: still running after 20 s instead of refusing")
    assert_refused(rc, err, port, f"LISTEN_FDS={count} is too large")
