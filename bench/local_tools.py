#!/usr/bin/env python3
"""Latency of the local snapshot tools (memgraph, loadtask, disk, triage) with at least
--procs processes on the host: spawns idle sleepers to reach the count, serves sysom-mcp over
stdio, calls each tool --calls times and prints p50/p90, then the server's own CPU time and RSS
(/proc/PID/stat utime+stime, /proc/PID/status VmHWM). Not run by CI.

    python3 bench/local_tools.py --bin target/release/sysom-mcp --procs 500 --calls 30

Not done yet: the side-by-side run with PyPI linux-mcp-server's equivalent tools.
"""
import argparse, json, os, statistics, subprocess, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sysom-mcp")
    ap.add_argument("--procs", type=int, default=500)
    ap.add_argument("--calls", type=int, default=30)
    a = ap.parse_args()
    have = sum(1 for d in os.listdir("/proc") if d.isdigit())
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(max(0, a.procs - have))]
    srv = subprocess.Popen([a.bin, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, env={"PATH": "/usr/bin:/bin"})
    ids = iter(range(1, 10**9))

    def rpc(method, params=None):
        i = next(ids)
        srv.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params or {}}) + "\n")
        srv.stdin.flush()
        while True:
            m = json.loads(srv.stdout.readline())
            if m.get("id") == i:
                return m

    try:
        rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
        srv.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        srv.stdin.flush()
        procs = sum(1 for d in os.listdir("/proc") if d.isdigit())
        print(f"processes on the host: {procs}")
        for tool in ["local_memgraph", "local_loadtask", "local_disk", "local_triage"]:
            times = []
            for _ in range(a.calls):
                t = time.perf_counter()
                r = rpc("tools/call", {"name": tool, "arguments": {}})
                times.append((time.perf_counter() - t) * 1000)
                assert r["result"]["structuredContent"]["code"] == "Success", r
            times.sort()
            print(f"{tool:16} p50 {statistics.median(times):7.1f} ms  p90 {times[int(len(times) * 0.9) - 1]:7.1f} ms")
        stat = open(f"/proc/{srv.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(l for l in open(f"/proc/{srv.pid}/status") if l.startswith("VmHWM")).split()[1]
        print(f"server CPU time {cpu_s:.2f} s for {4 * a.calls} calls; peak RSS {int(hwm) / 1024:.1f} MiB")
    finally:
        srv.kill()
        for s in sleepers:
            s.kill()


if __name__ == "__main__":
    main()
