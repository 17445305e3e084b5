"""--idle-timeout: under socket activation the server exits 0 once it has had no connection for
that long (systemd's socket starts it again); without activation the option is ignored."""

from __future__ import annotations

import socket
import time

import support
from support import stderr_text, tcp_listening, wait_exit, wait_healthz


def test_idle_exit_under_activation(sysom_bin, mock, config_file, procs):
    port = support.free_port()
    proc = procs.activated([f"127.0.0.1:{port}"], ["--config", str(config_file), "--idle-timeout", "2"],
                           support.server_env(mock))
    wait_healthz(port=port, proc=proc)

    # An open (idle) connection keeps it alive past the timeout.
    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        time.sleep(3.5)
        assert proc.poll() is None, f"exited with a connection open:\n{stderr_text(proc)}"
    finally:
        conn.close()
    closed = time.monotonic()

    rc = wait_exit(proc, 8)
    elapsed = time.monotonic() - closed
    assert rc == 0, stderr_text(proc)
    assert 1.5 <= elapsed <= 4.5, f"exited {elapsed:.1f}s after the last connection closed"
    assert "idle; exiting until the next connection" in stderr_text(proc)
    assert not tcp_listening(port)


def test_idle_timeout_ignored_without_activation(sysom_bin, mock, config_file, procs):
    port = support.free_port()
    proc = procs.binary(["--streamable-http", "--port", str(port), "--config", str(config_file),
                         "--idle-timeout", "2"], support.server_env(mock))
    wait_healthz(port=port, proc=proc)
    time.sleep(4)
    assert proc.poll() is None, stderr_text(proc)
    assert "--idle-timeout only applies under socket activation; ignored" in stderr_text(proc)
    wait_healthz(port=port, proc=proc, timeout=3)
