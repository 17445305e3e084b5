#!/usr/bin/env python3
"""1,000 concurrent long diagnoses against the mock SysOM (issue 14).

Each diagnosis takes `--secs` seconds on the mock (`seconds_before_done`), all are started at
once as stateless Streamable HTTP tools/call POSTs with distinct instances (so none coalesce),
and sysom-mcp runs with a ceiling of `--ceiling` upstream requests per second. Measured: VmRSS
idle and at its peak while all are in flight (per in-flight diagnosis = the difference / N),
upstream requests per second from the mock's request record (max over 1 s windows, against the
ceiling), and how many results arrived with code Success. Nothing is asserted.

    python3 bench/diagnoses.py --sysom target/debug/sysom-mcp [--n 1000] [--secs 30] [--ceiling 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared helpers: mock, server start, process cleanup)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def call(port: int, i: int) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "loadtask",
        "arguments": {"uid": "1", "region": "cn-hangzhou", "channel": "ecs", "instance": f"i-bench{i:05d}"}}})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {bench.MCP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                  "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        payload = out
    answer = bench.decode_answer(payload)
    return answer["result"].get("structuredContent") or {}


async def run_all(port: int, n: int) -> list[dict]:
    return await asyncio.gather(*(call(port, i) for i in range(n)), return_exceptions=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sysom", default=os.path.join(ROOT, "target", "debug", "sysom-mcp"))
    ap.add_argument("--mock", default=os.path.join(ROOT, "tests", "mock_sysom", "mock_sysom.py"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--ceiling", type=int, default=100)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="sysom-bench-diag-")
    try:
        mock = bench.Mock(args.mock, workdir)
        mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": args.secs})
        proc, port = bench.start_sysom_http(args, workdir, mock, extra_env={
            "SYSOM_MCP_MAX_REQUESTS_PER_SECOND": str(args.ceiling),
            "SYSOM_MCP_DIAGNOSIS_TIMEOUT": str(int(args.secs * 6)),
            "SYSOM_MCP_STATELESS": "true",
        })
        asyncio.run(run_all(port, 1))  # warm up: one diagnosis end to end
        mock.reset()
        mock.scenario(diagnosis={"polls_before_done": 0, "seconds_before_done": args.secs})
        idle = bench.proc_status(proc.pid)["VmRSS"]
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                peak[0] = max(peak[0], bench.proc_status(proc.pid)["VmRSS"])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.time()
        results = asyncio.run(run_all(port, args.n))
        wall = time.time() - t0
        stop.set()
        sampler.join()
        reqs = mock.openapi_requests()
        per_sec = collections.Counter(int(r["time"] - t0) for r in reqs)
        times, lo, sliding = sorted(r["time"] for r in reqs), 0, 0
        for hi, t in enumerate(times):  # the most requests within any 1 s, wherever it starts
            while t - times[lo] >= 1:
                lo += 1
            sliding = max(sliding, hi - lo + 1)
        invokes = sum(r["action"] == "InvokeDiagnosis" for r in reqs)
        ok = sum(isinstance(r, dict) and r.get("code") == "Success" for r in results)
        errors = collections.Counter(
            (r.get("code") if isinstance(r, dict) else type(r).__name__) for r in results if not (
                isinstance(r, dict) and r.get("code") == "Success"))
        lines = [
            f"# {args.n} concurrent {args.secs:.0f} s diagnoses ({os.path.basename(args.sysom)}, "
            f"{'debug' if 'debug' in args.sysom else 'release'} build)",
            "",
            "| figure | value |",
            "|---|---|",
            f"| results delivered with code Success | {ok} / {args.n} |",
            f"| other outcomes | {dict(errors) or 'none'} |",
            f"| wall time for all | {wall:.1f} s |",
            f"| VmRSS idle (after one diagnosis) | {bench.mb(idle):.1f} MB |",
            f"| VmRSS peak, {args.n} in flight | {bench.mb(peak[0]):.1f} MB |",
            f"| RSS per in-flight diagnosis | {(peak[0] - idle) / args.n:.1f} KiB |",
            f"| upstream requests | {len(reqs)} ({invokes} InvokeDiagnosis, "
            f"{len(reqs) - invokes} GetDiagnosisResult) |",
            f"| upstream req/s: ceiling / max 1 s window / mean | {args.ceiling} / "
            f"{max(per_sec.values()) if per_sec else 0} / {len(reqs) / wall:.1f} |",
            f"| most upstream requests within any 1 s (sliding) | {sliding} |",
        ]
        messages = collections.Counter(r.get("message", "")[:120] for r in results
                                       if isinstance(r, dict) and r.get("code") != "Success")
        lines += [f"| failure message (x{n}) | {m} |" for m, n in messages.most_common(3)]
        text = "\n".join(lines) + "\n"
        print(text)
        with open(os.path.join(ROOT, "bench", "diagnoses-results.md"), "w") as f:
            f.write(text)
        return 0
    finally:
        bench.stop_all()


if __name__ == "__main__":
    sys.exit(main())
