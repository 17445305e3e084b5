#!/usr/bin/env python3
"""A/B of sysom-mcp variants on issue 16's start-up and memory figures, alternated in one run so
that load on the machine hits every variant alike. Reuses bench.py's measurements:

- cold start: exec -> first successful sessionless `tools/list` answer (bench.first_answer),
  median over the runs, the variants interleaved run by run; bare-hyper alongside if given;
- idle RSS after start + one `tools/list` (VmRSS, RssAnon, RssFile), 0.3 s after it as bench.py
  takes it and again 2.5 s after (once the HTTPS client has been built), per round;
- optionally (--sse N) the legacy SSE memory curve: RSS before, with N sessions held, and 0.5,
  2.5 and 5 s after the client closed them (bench.sse_run), and the ratio after / before.

    bench/ab-startup.py --variant base=OLD/sysom-mcp --variant new=NEW/sysom-mcp \
        [--variant 'arena2=OLD/sysom-mcp;GLIBC_TUNABLES=glibc.malloc.arena_max=2'] \
        [--bare target/bench/release/bare-hyper] [--cold-runs 20] [--rounds 2] [--sse 10000]

A variant is LABEL=BINARY, optionally followed by ;NAME=VALUE environment settings. The
environment is bench.sysom_env's (SSL_CERT_FILE/SSL_CERT_DIR are kept from the caller, so the
CA store read at start is the caller's). Nothing is asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def parse_variant(spec: str):
    label, _, rest = spec.partition("=")
    binary, *envs = rest.split(";")
    env = dict(e.split("=", 1) for e in envs if e)
    return label, binary, env


def cold_once(binary, env, bare=False) -> float:
    body = json.dumps(bench.TOOLS_LIST).encode()
    port = bench.free_port()
    cmd = [binary, str(port)] if bare else [binary, "--sse", "--host", "127.0.0.1", "--port", str(port), "--log", "stderr"]
    t = time.perf_counter()
    p = bench.spawn(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.first_answer(port, p, body, t + 10)
    dt = time.perf_counter() - t
    bench.stop(p)
    return dt


def idle(binary, env, workdir):
    p, port = bench.start_sysom_http(argparse.Namespace(sysom=binary), workdir, extra_env=env)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    st, _ = bench.post_json(c, bench.TOOLS_LIST)
    assert st == 200
    c.close()
    time.sleep(0.3)
    s = bench.proc_status(p.pid)
    time.sleep(2.2)  # past the HTTPS client's warm-up (1 s after readiness)
    later = bench.proc_status(p.pid)
    bench.stop(p)
    return s, later


def sse_curve(binary, env, workdir, n):
    p, port = bench.start_sysom_http(argparse.Namespace(sysom=binary), workdir, extra_env=env,
                                     extra_args=["--sse-keep-alive", "1"])
    before = bench.proc_status(p.pid)
    r = asyncio.run(bench.sse_run(port, bench.MCP_PATH, n, 5.0, p.pid, port))
    curve = []
    t0 = time.monotonic()
    for at in (0.5, 2.5, 5.0):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        curve.append(bench.proc_status(p.pid))
    gauge = bench.open_sessions_gauge(port)
    bench.stop(p)
    return {"before": before, "held": r["status"]["VmRSS"], "curve": curve, "ok": r["ok"],
            "failures": r["failures"], "gauge_after": gauge, "open_secs": r["open_secs"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--bare")
    ap.add_argument("--cold-runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sse", type=int, default=0)
    ap.add_argument("--no-cold", action="store_true")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    workdir = tempfile.mkdtemp(prefix="sysom-ab-")
    if args.sse:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(args.sse + 200, soft)), hard))
    try:
        for label, binary, _ in variants:
            print(f"{label}: {binary} {os.stat(binary).st_size} bytes", flush=True)
        if not args.no_cold:
            cold = {label: [] for label, _, _ in variants}
            cold_bare = []
            for _ in range(args.cold_runs):
                for label, binary, env in variants:
                    cold[label].append(cold_once(binary, bench.sysom_env(None, env)))
                if args.bare:
                    cold_bare.append(cold_once(args.bare, bench.sysom_env(None), bare=True))
            for label, times in cold.items():
                print(f"cold start {label}: median {statistics.median(times) * 1e3:.1f} ms "
                      f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})", flush=True)
            if cold_bare:
                print(f"cold start bare-hyper: median {statistics.median(cold_bare) * 1e3:.1f} ms "
                      f"(min {min(cold_bare) * 1e3:.1f}, max {max(cold_bare) * 1e3:.1f})", flush=True)
        for rnd in range(1, args.rounds + 1):
            for label, binary, env in variants:
                s, later = idle(binary, env, workdir)
                print(f"round {rnd} idle {label}: VmRSS {s['VmRSS']} KiB (RssAnon {s['RssAnon']}, "
                      f"RssFile {s['RssFile']}), {s['Threads']} threads; 2.5 s after start: VmRSS "
                      f"{later['VmRSS']} KiB (RssAnon {later['RssAnon']}, RssFile {later['RssFile']}), "
                      f"{later['Threads']} threads", flush=True)
            if args.sse:
                for label, binary, env in variants:
                    r = sse_curve(binary, env, workdir, args.sse)
                    c = [x["VmRSS"] for x in r["curve"]]
                    b, last = r["before"], r["curve"][-1]
                    print(f"round {rnd} sse x{args.sse} {label}: ok {r['ok']} failures {r['failures']} "
                          f"open {r['open_secs']:.1f} s; RSS before {b['VmRSS']} (anon {b['RssAnon']}, file "
                          f"{b['RssFile']}) held {r['held']} after {c[0]}/{c[1]}/{c[2]} KiB (0.5/2.5/5 s; at 5 s "
                          f"anon {last['RssAnon']}, file {last['RssFile']}); 5 s / before = "
                          f"{c[2] / b['VmRSS']:.2f}; gauge after {r['gauge_after']}", flush=True)
    finally:
        bench.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
