#!/usr/bin/env python3
"""Latency of the local snapshot tools (memgraph, loadtask, disk, triage) with at least --procs
processes on the host, side by side in one run with the equivalent tools of a peer local
diagnosis MCP server, PyPI `linux-mcp-server` (get_memory_information, get_cpu_information,
get_disk_usage, get_system_information, all with host=localhost). Spawns idle sleepers to reach
the process count, serves each server over stdio, calls each tool --calls times (alternating the
two servers call by call, so both see the same host) and prints p50/p90 per tool, the ratio, and
each server's own CPU time (utime+stime, plus the children it waited for: linux-mcp-server runs
`free`, `df`, `ps`...) and peak RSS (VmHWM). Not run by CI.

    python3 bench/local_tools.py --bin target/release/sysom-mcp --procs 500 --calls 30 \
        --peer .venv-linuxmcp/bin/linux-mcp-server [--markdown bench/local-results.md]
"""
import argparse, json, os, statistics, subprocess, time

PAIRS = [  # (sysom-mcp tool, linux-mcp-server tool)
    ("local_memgraph", "get_memory_information"),
    ("local_loadtask", "get_cpu_information"),
    ("local_disk", "get_disk_usage"),
    ("local_triage", "get_system_information"),
]


class Server:
    def __init__(self, argv, ok):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"})
        self.ok = ok
        self.ids = iter(range(1, 10**9))
        self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, m):
        self.p.stdin.write(json.dumps(m) + "\n")
        self.p.stdin.flush()

    def rpc(self, method, params=None):
        i = next(self.ids)
        self.send({"jsonrpc": "2.0", "id": i, "method": method, "params": params or {}})
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{method}: server closed stdout")
            m = json.loads(line)
            if m.get("id") == i:
                return m

    def call(self, tool, args):
        t = time.perf_counter()
        r = self.rpc("tools/call", {"name": tool, "arguments": args})
        ms = (time.perf_counter() - t) * 1000
        assert self.ok(r), json.dumps(r)[:500]
        return ms

    def usage(self):
        stat = open(f"/proc/{self.p.pid}/stat").read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        own = (int(stat[11]) + int(stat[12])) / tck
        children = (int(stat[13]) + int(stat[14])) / tck
        hwm = next(l for l in open(f"/proc/{self.p.pid}/status") if l.startswith("VmHWM")).split()[1]
        return own, children, int(hwm) / 1024

    def close(self):
        self.p.kill()
        self.p.wait()


def pct(times, q):
    s = sorted(times)
    return s[min(len(s) - 1, int(len(s) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sysom-mcp")
    ap.add_argument("--peer", default=".venv-linuxmcp/bin/linux-mcp-server",
                    help="linux-mcp-server executable ('' to skip the peer)")
    ap.add_argument("--procs", type=int, default=500)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--markdown", help="also write the table to this file")
    a = ap.parse_args()
    have = sum(1 for d in os.listdir("/proc") if d.isdigit())
    sleepers = [subprocess.Popen(["sleep", "900"]) for _ in range(max(0, a.procs - have))]
    ours = peer = None
    try:
        ours = Server([a.bin, "--stdio", "--tools", "local"],
                      lambda r: r["result"]["structuredContent"]["code"] == "Success")
        if a.peer:
            peer = Server([a.peer], lambda r: not r["result"].get("isError"))
        procs = sum(1 for d in os.listdir("/proc") if d.isdigit())
        load = open("/proc/loadavg").read().split()[0]
        ours0 = ours.usage()
        peer0 = peer.usage() if peer else None
        rows = []
        for mine, theirs in PAIRS:
            t_ours, t_peer = [], []
            for _ in range(a.calls):
                t_ours.append(ours.call(mine, {}))
                if peer:
                    t_peer.append(peer.call(theirs, {"host": "localhost"}))
            rows.append((mine, theirs, t_ours, t_peer))
        o1, p1 = ours.usage(), (peer.usage() if peer else None)
    finally:
        for s in (ours, peer):
            if s:
                s.close()
        for s in sleepers:
            s.kill()
    n = a.calls * len(PAIRS)
    out = [f"{procs} processes on the host, load average {load}, {a.calls} calls per tool, "
           f"calls alternating between the servers",
           "",
           "| sysom-mcp tool | p50 | p90 | linux-mcp-server tool | p50 | p90 | p50 ratio (peer / ours) |",
           "|---|---|---|---|---|---|---|"]
    for mine, theirs, t_o, t_p in rows:
        po = statistics.median(t_o)
        cells = [f"`{mine}`", f"{po:.1f} ms", f"{pct(t_o, 0.9):.1f} ms"]
        if t_p:
            pp = statistics.median(t_p)
            cells += [f"`{theirs}`", f"{pp:.1f} ms", f"{pct(t_p, 0.9):.1f} ms", f"{pp / po:.1f}×"]
        else:
            cells += ["—"] * 4
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"sysom-mcp: CPU time {o1[0] - ours0[0]:.2f} s for its {n} calls "
               f"({(o1[0] - ours0[0]) / n * 1000:.1f} ms a call), peak RSS {o1[2]:.1f} MiB")
    if p1:
        own = p1[0] - peer0[0]
        ch = p1[1] - peer0[1]
        out.append(f"linux-mcp-server: CPU time {own:.2f} s own + {ch:.2f} s in the commands it ran, "
                   f"for its {n} calls ({(own + ch) / n * 1000:.1f} ms a call), peak RSS {p1[2]:.1f} MiB")
    text = "\n".join(out)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
