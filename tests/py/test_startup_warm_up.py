"""The upstream HTTPS client is built off the start-up path (issue 16).

Building it reads and parses the whole system CA store; at start that competed with the first
requests. The server builds it in the background only once it is ready (after READY=1 and a
delay), and a cloud call that comes first builds it itself, once. Both are asserted on the order
of the server's own log lines (one writer, program order), not on timings.
"""

from __future__ import annotations

import time

import support

LOG = "info,rmcp=warn,sysom_mcp::upstream=debug"
BUILDING = "building the HTTPS client"
BUILT = "HTTPS client built"
SERVING = "serving MCP over"


def test_the_ca_store_is_read_only_after_the_server_is_ready(start, mock):
    srv = start(env=support.server_env(mock, RUST_LOG=LOG))
    srv.wait_log(BUILT, timeout=15)
    log = srv.stderr_path.read_text(errors="replace")
    assert log.index(SERVING) < log.index(BUILDING), log
    assert log.count(BUILDING) == 1, log


def test_a_cloud_call_before_the_warm_up_builds_the_client_once(start, mock):
    srv = start(env=support.server_env(mock, RUST_LOG=LOG))
    status, answer = support.tools_call("list_history_tasks", support.MINIMAL_ARGS["list_history_tasks"],
                                        port=srv.port)
    assert status == 200 and "result" in answer, answer
    assert not answer["result"].get("isError"), answer
    srv.wait_log(BUILT, timeout=15)
    # Past the warm-up's delay (1 s after readiness) the client is not built a second time.
    time.sleep(2.5)
    log = srv.stderr_path.read_text(errors="replace")
    assert log.count(BUILDING) == 1, log
    assert log.count(BUILT) == 1, log
