#!/usr/bin/env python3
"""Server CPU per tool call, and call latency at c=1, for one or more sysom-mcp builds (issue 16).

The same measurement as bench.py's overhead part (`list_history_tasks`, one signed GET to the mock
SysOM with `latency_ms`, sequential calls after a warm-up, CPU = user + system time of the server
process from /proc/PID/stat over the timed calls), but on its own, for several binaries
interleaved round by round so before/after figures come from one run:

    python3 bench/call_cpu.py --mock tests/mock_sysom/mock_sysom.py \
        --bin before=/work/before/sysom-mcp --bin after=target/release/sysom-mcp \
        [--calls 500] [--rounds 3] [--latency-ms 20] [--perf DIR]

`--perf DIR` runs `perf record -g` on each server over its timed calls (DIR/NAME-MODE-ROUND.data);
use a build with symbols (the `profiling` profile), and read it with `perf report -i FILE`
(`--perf-args 'record --call-graph dwarf -F 1000'` for usable user-space stacks: the binary has
no frame pointers). `--perf-args 'stat -e ...'` counts events instead (the file holds the counts).
Standard library only; loopback only; every process it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the driver's helpers: mock, sessions, percentiles)
from bench import CALL, Mock, StdioSession, check_call, cpu_secs, decode_answer, pct, post_json  # noqa: E402


PERF_ARGS = ["record", "-g", "-F", "2000"]


def perf_start(pid: int, out: str | None) -> subprocess.Popen | None:
    if not out:
        return None
    p = subprocess.Popen(["perf", *PERF_ARGS, "-p", str(pid), "-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf attaches
    return p


def perf_stop(p: subprocess.Popen | None) -> None:
    if p is not None:
        p.send_signal(signal.SIGINT)
        p.wait(30)


def timed(n: int, one, pid: int, perf_out: str | None) -> tuple[float, list[float]]:
    for _ in range(10):  # warm-up: the first connection, the allocator
        one()
    rec = perf_start(pid, perf_out)
    times = []
    cpu0 = cpu_secs(pid)
    for _ in range(n):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    cpu = (cpu_secs(pid) - cpu0) / n
    perf_stop(rec)
    return cpu, times


def run_stdio(args, binary, mock, workdir, perf_out):
    args.sysom = binary
    s = StdioSession(args, mock, workdir)
    try:
        return timed(args.calls, lambda: check_call(s.request(*CALL)), s.proc.pid, perf_out)
    finally:
        s.close()


def run_http(args, binary, mock, workdir, perf_out):
    p, port = bench.start_sysom_http(args, workdir, mock, binary=binary)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = {"jsonrpc": "2.0", "id": 1, "method": CALL[0], "params": CALL[1]}

    def one():
        st, body = post_json(c, payload)
        assert st == 200, (st, body[:200])
        check_call(decode_answer(body))

    try:
        return timed(args.calls, one, p.pid, perf_out)
    finally:
        c.close()
        bench.stop(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH, repeatable")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--modes", default="stdio,http")
    ap.add_argument("--perf", help="directory for perf output files (one per server and round)")
    ap.add_argument("--perf-args", help="perf subcommand and options instead of `record -g -F 2000`, "
                    "e.g. 'stat -e context-switches,raw_syscalls:sys_enter'")
    args = ap.parse_args()
    if args.perf_args:
        PERF_ARGS[:] = args.perf_args.split()
    bins = [b.split("=", 1) for b in args.bin]
    modes = args.modes.split(",")
    workdir = tempfile.mkdtemp(prefix="sysom-callcpu-")
    if args.perf:
        os.makedirs(args.perf, exist_ok=True)
    R: dict = {}
    try:
        mock = Mock(args.mock, workdir)
        mock.scenario(latency_ms=args.latency_ms)
        rtt = []
        for rnd in range(args.rounds):
            rtt += bench.upstream_rtt(mock, 200)
            for name, path in (bins if rnd % 2 == 0 else bins[::-1]):
                for mode in modes:
                    mock.reset()
                    mock.scenario(latency_ms=args.latency_ms)
                    out = os.path.join(args.perf, f"{name}-{mode}-{rnd}.data") if args.perf else None
                    run = run_stdio if mode == "stdio" else run_http
                    cpu, times = run(args, path, mock, workdir, out)
                    r = R.setdefault((name, mode), {"cpu": [], "times": []})
                    r["cpu"].append(cpu)
                    r["times"] += times
                    bench.log(f"round {rnd} {name} {mode}: cpu/call {cpu * 1e3:.3f} ms, "
                              f"p50 {statistics.median(times) * 1e3:.2f} ms")
    finally:
        bench.stop_all()
    rtt50, rtt99 = statistics.median(rtt) * 1e3, pct(rtt, 99) * 1e3
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\n{args.rounds} rounds x {args.calls} calls per build and transport, latency {args.latency_ms} ms, "
          f"load average {' '.join(load)}; upstream RTT p50 {rtt50:.2f} ms, p99 {rtt99:.2f} ms\n")
    print("| build | transport | server CPU per call (mean of rounds; each round) | call p50 | call p99 "
          "| overhead p50 (call - RTT p50) | overhead p99 (call p99 - RTT p99) |")
    print("|---|---|---|---|---|---|---|")
    for (name, mode), r in R.items():
        t = r["times"]
        p50, p99 = statistics.median(t) * 1e3, pct(t, 99) * 1e3
        rounds = ", ".join(f"{c * 1e3:.3f}" for c in r["cpu"])
        print(f"| {name} | {mode} | {statistics.mean(r['cpu']) * 1e3:.3f} ms ({rounds}) | {p50:.2f} ms | "
              f"{p99:.2f} ms | {p50 - rtt50:.2f} ms | {p99 - rtt99:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
