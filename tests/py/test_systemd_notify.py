"""sd_notify and the watchdog, through a fake NOTIFY_SOCKET (issue 5, "Tests").

The exact datagrams are asserted: READY=1 with the listen address once the socket accepts,
STATUS updates with sessions and running tool calls, RELOADING=1 + MONOTONIC_USEC then READY=1 on
SIGHUP, WATCHDOG=1 at half of WATCHDOG_USEC and only while the process runs (SIGSTOP is the stalled
runtime). STOPPING=1 + EXTEND_TIMEOUT_USEC on SIGTERM are asserted by the SIGTERM scenarios
themselves, in test_http_limits.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest

import support
from support import (Background, NotifySocket, http_request, mcp_post, stderr_text, tools_call,
                     wait_exit, wait_healthz, wait_until)


@pytest.fixture
def notify():
    with NotifySocket() as n:
        yield n


def http_args(port: int, config) -> list[str]:
    return ["--streamable-http", "--port", str(port), "--config", str(config)]


def initialize_session(port: int) -> str:
    """Opens a stateful Streamable HTTP session and returns its id."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "sysom-mcp-tests", "version": "0"}}}
    status, headers, _ = http_request("POST", "/mcp/unified", port=port, body=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json",
                                               "Accept": "application/json, text/event-stream"})
    assert status == 200, status
    sid = headers.get("mcp-session-id")
    assert sid, headers
    status, _, _ = http_request("POST", "/mcp/unified", port=port,
                                body=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode(),
                                headers={"Content-Type": "application/json", "Mcp-Session-Id": sid,
                                         "Accept": "application/json, text/event-stream"})
    assert status in (200, 202), status
    return sid


def test_ready_status_reload_stopping_datagrams(sysom_bin, mock, config_file, procs, notify):
    port = support.free_port()
    env = support.server_env(mock, NOTIFY_SOCKET=notify.path, SYSOM_MCP_DIAGNOSIS_TIMEOUT="6")
    proc = procs.binary(http_args(port, config_file) + ["--shutdown-grace", "3"], env)

    # READY=1 comes first (no WATCHDOG_USEC, so nothing else), and the socket already accepts then.
    _, first = notify.wait_for(lambda d: True, timeout=15)
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert first == f"READY=1\nSTATUS=serving on 127.0.0.1:{port}\n".encode(), first
    status, _, body = http_request("GET", "/healthz", port=port)
    assert status == 200, body

    # STATUS follows open sessions and running tool calls (updated every 2 s, only on change).
    mark = notify.mark()
    sid = initialize_session(port)
    expected = f"STATUS=serving on 127.0.0.1:{port}; 1 open sessions; 0 tool calls running\n".encode()
    notify.wait_for(lambda d: d == expected, since=mark, timeout=6)

    mock.scenario(diagnosis={"final": "never"})  # the call stays running until the 6 s diagnosis timeout
    mark = notify.mark()
    caller = Background(tools_call, "memgraph", support.MINIMAL_ARGS["memgraph"], port=port)
    notify.wait_for(lambda d: d.startswith(b"STATUS=") and b"; 1 tool calls running\n" in d, since=mark, timeout=6)
    caller.join(15)
    mock.reset()

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, like time.monotonic()), then READY=1.
    mark = notify.mark()
    before_us = time.monotonic() * 1e6
    proc.send_signal(signal.SIGHUP)
    idx, _ = notify.wait_for(lambda d: d.startswith(b"READY=1"), since=mark, timeout=10)
    after_us = time.monotonic() * 1e6
    reload_msgs = [d for d in notify.messages(since=mark)[: idx - mark + 1] if not d.startswith(b"STATUS=")]
    assert len(reload_msgs) == 2, reload_msgs
    m = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)\n", reload_msgs[0])
    assert m, reload_msgs[0]
    assert before_us - 1e6 <= int(m.group(1)) <= after_us + 1e6, (before_us, m.group(1), after_us)
    assert reload_msgs[1] == f"READY=1\nSTATUS=serving on 127.0.0.1:{port}\n".encode()
    assert "configuration reloaded" in stderr_text(proc)

    # The session survived the reload.
    status, _, _ = http_request("POST", "/mcp/unified", port=port,
                                body=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).encode(),
                                headers={"Content-Type": "application/json", "Mcp-Session-Id": sid,
                                         "Accept": "application/json, text/event-stream"})
    assert status == 200
    http_request("DELETE", "/mcp/unified", port=port, headers={"Mcp-Session-Id": sid})

    # SIGTERM: STOPPING=1 with EXTEND_TIMEOUT_USEC covering the 3 s shutdown grace, then exit 0.
    mark = notify.mark()
    proc.send_signal(signal.SIGTERM)
    _, stopping = notify.wait_for(lambda d: d.startswith(b"STOPPING=1"), since=mark, timeout=10)
    m = re.match(rb"STOPPING=1\nEXTEND_TIMEOUT_USEC=(\d+)\n", stopping)
    assert m, stopping
    assert int(m.group(1)) >= 3_000_000, stopping
    assert wait_exit(proc, 10) == 0
    assert not [d for d in notify.messages(since=mark) if d.startswith(b"READY=1")]


def test_no_ready_when_startup_fails(sysom_bin, mock, config_file, procs, notify, tmp_path):
    """READY=1 only after listeners, config and tokens: a busy port or an unreadable token file
    means an error exit and no READY."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        env = support.server_env(mock, NOTIFY_SOCKET=notify.path)
        proc = procs.binary(http_args(busy.getsockname()[1], config_file), env)
        assert wait_exit(proc, 10) == 1, stderr_text(proc)
        assert "cannot listen" in stderr_text(proc)
    finally:
        busy.close()
    proc = procs.binary(http_args(support.free_port(), config_file) + ["--token-file", str(tmp_path / "nope")], env)
    assert wait_exit(proc, 10) == 2, stderr_text(proc)
    time.sleep(0.2)
    assert not [d for d in notify.messages(watchdog=True) if d.startswith(b"READY=1")], notify.messages()


def test_watchdog_pings_stop_while_stalled(sysom_bin, mock, config_file, procs, notify):
    port = support.free_port()
    env = support.server_env(mock, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="400000")
    proc = procs.binary(http_args(port, config_file), env)
    notify.wait_for(lambda d: d.startswith(b"READY=1"), timeout=15)
    wait_until(lambda: "systemd watchdog enabled" in stderr_text(proc), 5, what="watchdog log line")

    # Steady state: every ~200 ms (half of WATCHDOG_USEC).
    t0 = time.monotonic()
    time.sleep(2.1)
    pings = notify.watchdog_times(t0 + 0.05, t0 + 2.05)
    assert 7 <= len(pings) <= 13, pings
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 0.5, gaps

    # Stalled (SIGSTOP): no pings at all, so systemd would restart the service.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)  # a ping already in flight may still arrive
        mark = notify.mark()
        time.sleep(1.5)
        assert notify.messages(watchdog=True, since=mark) == []
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    resumed = time.monotonic()

    # Running again: pings resume at the same pace, without a catch-up burst for the missed ticks.
    notify.wait_for(lambda d: d == b"WATCHDOG=1\n", since=mark, timeout=2)
    time.sleep(1.5)
    after = notify.watchdog_times(resumed, resumed + 1.45)
    assert 5 <= len(after) <= 9, [round(t - resumed, 3) for t in after]
    burst = [t for t in after if t - after[0] < 0.1]
    assert len(burst) <= 2, f"catch-up burst after the stall: {[round(t - resumed, 3) for t in after]}"
    assert proc.poll() is None


def test_watchdog_pid_of_another_process_disables_pings(sysom_bin, mock, config_file, procs, notify):
    env = support.server_env(mock, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="400000", WATCHDOG_PID="1")
    procs.binary(http_args(support.free_port(), config_file), env)
    notify.wait_for(lambda d: d.startswith(b"READY=1"), timeout=15)
    time.sleep(1.0)
    assert b"WATCHDOG=1\n" not in notify.messages(watchdog=True)


def test_notify_socket_missing_is_harmless(sysom_bin, mock, config_file, procs, tmp_path):
    """A NOTIFY_SOCKET that points nowhere is logged, never fatal."""
    port = support.free_port()
    env = support.server_env(mock, NOTIFY_SOCKET=str(tmp_path / "absent.sock"))
    proc = procs.binary(http_args(port, config_file), env)
    wait_healthz(port=port, proc=proc)
    status, out = mcp_post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, port=port)
    assert status == 200 and len(out["result"]["tools"]) == 21


