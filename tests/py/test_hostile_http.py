"""Hostile HTTP clients (issue 17, items 1, 13, 15 and friends): bodies built to amplify in
memory, and the JSON-RPC answers malformed requests must get.
"""

from __future__ import annotations

import json
import threading

import pytest

from support import MCP_PATH, post_json_headers

# The body of the issue: 4 MiB, two million zeros in one array.
ZEROS = ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":[' + "0," * 2_000_000 + '0]}}').encode()
EMPTY_OBJECTS = ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":[' + "{}," * 1_300_000
                 + '{}]}}').encode()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def post(srv, body: bytes, results: list, path: str = MCP_PATH):
    try:
        status, headers, data = srv.request("POST", path, body=body, headers=post_json_headers(), timeout=60)
        results.append((status, data))
    except OSError as e:  # pragma: no cover - reported by the assertion below
        results.append((None, str(e).encode()))


@pytest.mark.parametrize("body", [ZEROS, EMPTY_OBJECTS], ids=["zeros", "empty-objects"])
def test_amplifying_bodies_are_refused_without_the_memory(start, body):
    srv = start(["--max-body-bytes", str(8 << 20)])
    before = peak_rss_mb(srv.proc.pid)
    results: list = []
    threads = [threading.Thread(target=post, args=(srv, body, results)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for status, data in results:
        assert status in (400, 413), (status, data[:200])
        answer = json.loads(data)
        assert answer["error"]["code"] in (-32600, -32700), answer
    grown = peak_rss_mb(srv.proc.pid) - before
    # Eight concurrent 4-5 MiB bodies: the bodies themselves, not their parse trees.
    assert grown < 120, f"peak RSS grew by {grown:.0f} MB"
    status, _, _ = srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                               headers=post_json_headers())
    assert status == 200


# ------------------------------------------------------------------ item 2: a reader that never reads

def test_legacy_sse_client_that_never_reads_is_pushed_back_then_dropped(start):
    from support import RawSse
    srv = start()
    stream = RawSse(srv)  # opened, endpoint read, then never read again
    endpoint = stream.endpoint()
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                       "clientInfo": {"name": "never-reads", "version": "0"}}}
    headers = {"Content-Type": "application/json"}
    assert srv.request("POST", endpoint, body=init, headers=headers)[0] == 202
    srv.request("POST", endpoint, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=headers)
    before = peak_rss_mb(srv.proc.pid)
    # Keep asking for tools/list (tens of KiB each) with fresh ids. The server refuses once 64
    # answers are unwritten (429) — at first that may only mean it is busy — and, once the
    # socket buffers are full and a write has been stuck for its grace time, drops the session
    # (404/410). How soon the buffers fill depends on the kernel, so keep going until then.
    import time
    statuses = []
    deadline = time.monotonic() + 90
    i = 0
    while time.monotonic() < deadline:
        i += 1
        status, _, _ = srv.request("POST", endpoint, headers=headers,
                                   body={"jsonrpc": "2.0", "id": i, "method": "tools/list"})
        statuses.append(status)
        if status in (404, 410):
            break
        assert status in (202, 429, 503), (status, statuses[-5:])
        if status != 202:
            time.sleep(0.2)
    assert statuses[-1] in (404, 410), f"the unread session was never dropped ({len(statuses)} posts)"
    assert 429 in statuses or 503 in statuses, "never pushed back before the drop"
    grown = peak_rss_mb(srv.proc.pid) - before
    assert grown < 64, f"peak RSS grew by {grown:.0f} MB for one unread session"
    stream.close()
    # The server still serves others.
    assert srv.request("GET", "/healthz")[0] == 200


# ------------------------------------------------------------------ item 13: --stateless

def test_stateless_never_opens_legacy_sse_sessions(start):
    srv = start(["--stateless"])
    status, headers, _ = srv.request("GET", MCP_PATH, headers={"Accept": "text/event-stream"}, timeout=5)
    assert status == 405, status
