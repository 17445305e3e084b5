#!/usr/bin/env python3
"""Memory per idle legacy SSE session alone (bench.py's measurement, issue 16), for several
builds in one run: each server in turn gets N sessions opened (GET, `endpoint` event read) and
held; the figure is (RSS held − RSS before) / N. sysom-mcp runs with --sse-keep-alive 1 and its
streams are read for 5 s (every one must keep getting keep-alives), as in bench.py.

    ulimit -n "$(ulimit -Hn)"
    bench/sse_memory.py 10000 before=OLD/sysom-mcp after=target/release/sysom-mcp \
        bare=target/bench/release/bare-hyper      # a name starting with "bare" is bare-hyper
"""
import asyncio
import os
import resource
import sys
import tempfile
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main() -> int:
    n = int(sys.argv[1])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="sse-memory-")
    try:
        for spec in sys.argv[2:]:
            name, binary = spec.split("=", 1)
            args = SimpleNamespace(sysom=binary, bare=binary)
            if name.startswith("bare"):  # sends nothing after its first event: just stay open
                p, port = bench.start_bare(args, workdir)
                path, hold, probe = "/sse", 0.01, None
            else:
                p, port = bench.start_sysom_http(args, workdir, extra_args=["--sse-keep-alive", "1"])
                path, hold, probe = bench.MCP_PATH, 5.0, port
            time.sleep(0.5)
            before = bench.proc_status(p.pid)
            r = asyncio.run(bench.sse_run(port, path, n, hold, p.pid, probe))
            if probe is None:
                r["alive_after_hold"] = r["ok"] - r["closed_during_hold"]
            held = r["status"]
            print(f"{name}: {n} sessions, ok {r['ok']}, failures {r['failures'] or 'none'}, alive "
                  f"{r['alive_after_hold']}; RSS {before['VmRSS']} -> {held['VmRSS']} KiB = "
                  f"{(held['VmRSS'] - before['VmRSS']) / n:.1f} KiB per session (RssAnon "
                  f"{(held['RssAnon'] - before['RssAnon']) / n:.1f}); opened in {r['open_secs']:.1f} s; "
                  f"probe {r['probe']}; gauge {r['gauge']}", flush=True)
            time.sleep(2.5)
            after = bench.proc_status(p.pid)["VmRSS"]
            gauge = bench.open_sessions_gauge(port) if probe else "-"
            print(f"  {name}: 2.5 s after the client closed them: RSS {after} KiB, gauge {gauge}", flush=True)
            bench.stop(p)
    finally:
        bench.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
