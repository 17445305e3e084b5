"""DNS-rebinding protection (issue 11): with no Host allow-list the server accepts only loopback
names, IP literals, the configured --host and the system hostname; a present Origin must be
same-origin or allow-listed. Checked on a loopback listener and on a non-loopback one (a dummy
interface in a network namespace this test creates)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import support
from support import INITIALIZE, MCP_PATH, TOOLS_LIST, post_json_headers

EVIL = "evil.example.com"


def post(srv, body, headers):
    return srv.request("POST", MCP_PATH, body=body, headers=post_json_headers(headers))


# --- loopback listener --------------------------------------------------------------------------

def test_loopback_rejects_a_rebound_host_on_every_mcp_route(start):
    srv = start()
    rebound = {"Host": f"{EVIL}:{srv.port}", "Origin": f"http://{EVIL}:{srv.port}"}
    status, _, body = post(srv, INITIALIZE, rebound)
    assert status == 403, body
    assert json.loads(body)["error"] == "host_not_allowed"
    status, _, _ = post(srv, TOOLS_LIST, {"Host": EVIL})
    assert status == 403
    # Legacy SSE: opening the stream and posting to the message endpoint.
    status, _, _ = srv.request("GET", MCP_PATH, headers={"Host": EVIL, "Accept": "text/event-stream"})
    assert status == 403
    status, _, _ = srv.request("POST", MCP_PATH + "/messages?sessionId=x", body=TOOLS_LIST,
                               headers={"Host": EVIL, "Content-Type": "application/json"})
    assert status == 403


def test_loopback_rejects_a_foreign_origin_even_with_a_good_host(start):
    srv = start()
    for origin in (f"http://{EVIL}", f"http://127.0.0.1:{srv.port + 1}", "null"):
        status, _, body = post(srv, TOOLS_LIST, {"Origin": origin})
        assert status == 403, origin
        assert json.loads(body)["error"] == "origin_not_allowed"
    status, _, _ = srv.request("GET", MCP_PATH, headers={"Origin": f"http://{EVIL}", "Accept": "text/event-stream"})
    assert status == 403


def test_loopback_accepts_loopback_names_same_origin_and_the_allow_lists(start):
    srv = start()
    for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "localhost", f"[::1]:{srv.port}"):
        status, _, body = post(srv, TOOLS_LIST, {"Host": host})
        assert status == 200, (host, body)
    status, _, _ = post(srv, TOOLS_LIST, {"Origin": f"http://127.0.0.1:{srv.port}"})
    assert status == 200
    # Widening: a listed origin, and `*` in --allowed-hosts.
    wide = start(["--allowed-origins", "http://localhost:3000", "--allowed-hosts", "*"])
    assert post(wide, TOOLS_LIST, {"Origin": "http://localhost:3000"})[0] == 200
    assert post(wide, TOOLS_LIST, {"Host": "mcp.example.com"})[0] == 200
    assert post(wide, TOOLS_LIST, {"Origin": f"http://{EVIL}"})[0] == 403


# --- non-loopback listener in a network namespace ------------------------------------------------

ADDR = "10.199.0.1"


@pytest.fixture
def netns():
    """A fresh network namespace with lo and a veth pair, one end holding ADDR; yields its name."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"sysom-rebind-{os.getpid()}"
    cmds = [["ip", "netns", "add", name],
            ["ip", "-n", name, "link", "set", "lo", "up"],
            # veth rather than dummy: container kernels often lack the dummy module.
            ["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["ip", "-n", name, "addr", "add", f"{ADDR}/24", "dev", "v0"],
            ["ip", "-n", name, "link", "set", "v0", "up"],
            ["ip", "-n", name, "link", "set", "v1", "up"]]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError as e:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        pytest.skip(f"cannot set up a network namespace: {e.stderr.decode().strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextlib.contextmanager
def server_in(ns: str, mock, extra: list[str]):
    port = 7140
    config = Path(tempfile.mkstemp(prefix="sysom-mcp-rebind-", suffix=".toml")[1])
    config.write_text("# empty\n")
    err = Path(tempfile.mkstemp(prefix="sysom-mcp-rebind-stderr-", suffix=".log")[1])
    proc = support.launch(["--sse", "--host", ADDR, "--port", str(port), "--config", str(config),
                           "--allow-unauthenticated", *extra], support.server_env(mock),
                          argv0=["ip", "netns", "exec", ns, str(support.binary_path())], stderr_path=err)
    try:
        support.wait_until(lambda: curl(ns, port, {"Host": ADDR})[0] != 0, 15, interval=0.1,
                           what=f"the server in {ns}", proc=proc)
        yield port
    finally:
        support.stop_process(proc)
        err.unlink(missing_ok=True)
        config.unlink(missing_ok=True)


def curl(ns: str, port: int, headers: dict[str, str]) -> tuple[int, str]:
    """POST tools/list from inside the namespace with these headers: (HTTP status or 0, body)."""
    args = ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}",
            "-X", "POST", f"http://{ADDR}:{port}{MCP_PATH}", "-H", "Content-Type: application/json",
            "-H", "Accept: application/json, text/event-stream", "--data", json.dumps(TOOLS_LIST)]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=15).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def test_non_loopback_listener_accepts_its_address_and_hostname_and_rejects_rebinding(netns, mock):
    hostname = socket.gethostname()
    with server_in(netns, mock, []) as port:
        assert curl(netns, port, {"Host": f"{ADDR}:{port}"})[0] == 200
        assert curl(netns, port, {"Host": f"{hostname}:{port}"})[0] == 200, hostname
        assert curl(netns, port, {"Host": f"{ADDR}:{port}", "Origin": f"http://{ADDR}:{port}"})[0] == 200
        status, body = curl(netns, port, {"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"})
        assert status == 403 and "host_not_allowed" in body, body
        status, body = curl(netns, port, {"Host": f"{ADDR}:{port}", "Origin": f"http://{EVIL}"})
        assert status == 403 and "origin_not_allowed" in body, body
        # A DNS name other than the system hostname needs --allowed-hosts.
        assert curl(netns, port, {"Host": f"mcp.example.com:{port}"})[0] == 403


def test_non_loopback_allowed_hosts_widen_to_a_dns_name(netns, mock):
    with server_in(netns, mock, ["--allowed-hosts", "mcp.example.com"]) as port:
        assert curl(netns, port, {"Host": f"mcp.example.com:{port}"})[0] == 200
        assert curl(netns, port, {"Host": f"mcp.example.com:{port}",
                                  "Origin": f"http://mcp.example.com:{port}"})[0] == 200
        assert curl(netns, port, {"Host": f"{EVIL}:{port}"})[0] == 403
