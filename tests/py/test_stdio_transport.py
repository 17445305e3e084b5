"""The stdio transport's descriptors: pipes go through the event loop on descriptions of the
server's own (rmcp's stdio_pipes), so O_NONBLOCK never reaches the standard streams a client or
a child shares; anything that is not a pipe is served through the blocking handles."""

from __future__ import annotations

import json
import os
import subprocess

import support

O_NONBLOCK = os.O_NONBLOCK


def fd_flags(pid: int, fd: str) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags in fdinfo {fd}")


def test_pipes_are_reopened_non_blocking_and_the_standard_streams_keep_blocking(mock):
    with support.RawStdio(support.server_env(mock, credentials=False)) as srv:
        srv.initialize()
        listed = srv.request("tools/list")
        assert listed["result"]["tools"], listed
        pid = srv.proc.pid
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        for std in ("0", "1"):
            target = fds[std]
            assert target.startswith("pipe:"), target
            assert not fd_flags(pid, std) & O_NONBLOCK, f"fd {std} was made non-blocking"
            # The transport's own description of the same pipe, non-blocking.
            own = [fd for fd, t in fds.items() if t == target and fd not in ("0", "1", "2")]
            assert own, f"no descriptor of its own for {target}: {fds}"
            assert all(fd_flags(pid, fd) & O_NONBLOCK for fd in own), own
        # The client's ends of the pipes are its own descriptions: still blocking.
        assert os.get_blocking(srv.proc.stdin.fileno()) and os.get_blocking(srv.proc.stdout.fileno())


def test_a_file_as_stdin_is_served_through_the_blocking_handles(mock, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "file", "version": "0"}}}) + "\n")
    answers = tmp_path / "answers.jsonl"
    with open(requests, "rb") as stdin, open(answers, "wb") as stdout:
        proc = subprocess.run([str(support.binary_path()), "--stdio"], stdin=stdin, stdout=stdout,
                              stderr=subprocess.DEVNULL, env=support.server_env(mock, credentials=False),
                              timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert lines and lines[0]["id"] == 1 and lines[0]["result"]["serverInfo"], lines
