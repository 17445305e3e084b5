#!/usr/bin/env python3
"""A/B of sysom-mcp builds on issue 16's in-session and sessionless `tools/list` rates and the
server's CPU time per request (user + system of the server process over the wrk run / requests),
the builds alternated round by round in one run so that load on the machine hits each alike.
The CPU figure is the steadier of the two: at c=1 the rate follows wake-up latency, which moves
with the machine's idleness more than with the build. Reuses bench.py's measurement (its session
modes, request bodies and wrk driver):

    bench/ab-session-rps.py --variant base=OLD/sysom-mcp --variant new=NEW/sysom-mcp \
        [--rounds 3] [--secs 4] [--modes s1125,s0326,m0728] [--conns 1,32]

Prints requests/second and CPU µs per request per variant, mode and concurrency for each round,
then the medians and new ÷ base. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def rates(binary: str, mode: str, version: str, conns: list[int], secs: int, workdir: str) -> dict:
    args = argparse.Namespace(sysom=binary)
    p, port = bench.start_sysom_http(args, workdir)
    try:
        lua, _, _ = bench.session_wrk_script(port, version, os.path.join(workdir, f"ab-{mode}.lua"))
        bench.wrk(lua, port, 8, 1)  # warm-up
        out = {}
        for n in conns:
            before = bench.cpu_secs(p.pid)
            w = bench.wrk(lua, port, n, secs)
            cpu = bench.cpu_secs(p.pid) - before
            assert w["non2xx"] == 0 and w["errors"] == 0, w
            out[n] = (w["rps"], cpu / (w["rps"] * secs) * 1e6)
        return out
    finally:
        bench.stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="LABEL=BINARY (the first is the base)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--modes", default="s1125,s0326,m0728")
    ap.add_argument("--conns", default="1,32")
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variant]
    modes = [m for m in bench.SESSION_MODES if m[0] in args.modes.split(",")]
    conns = [int(c) for c in args.conns.split(",")]
    got: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        for rnd in range(args.rounds):
            for mode, version, _ in modes:
                # Alternate which variant goes first, round by round.
                order = variants if rnd % 2 == 0 else variants[::-1]
                for label, binary in order:
                    for n, (rps, cpu) in rates(binary, mode, version, conns, args.secs, workdir).items():
                        got.setdefault((label, mode, n), []).append((rps, cpu))
                        print(f"round {rnd + 1} {label:>8} {mode} c={n}: {rps:.0f} req/s, "
                              f"{cpu:.1f} µs CPU/request", flush=True)
    base = variants[0][0]
    for figure, idx, fmt in (("req/s", 0, "{:.0f}"), ("server CPU µs per request", 1, "{:.1f}")):
        print(f"\n{figure}, median of {args.rounds} rounds\n")
        print("| mode | c | " + " | ".join(variant for variant, _ in variants)
              + " | " + " | ".join(f"{label} ÷ {base}" for label, _ in variants[1:]) + " |")
        print("|---|---|" + "---|" * (2 * len(variants) - 1))
        for mode, _, what in modes:
            for n in conns:
                med = {label: statistics.median(g[idx] for g in got[(label, mode, n)]) for label, _ in variants}
                print(f"| {what} | {n} | " + " | ".join(fmt.format(med[label]) for label, _ in variants) + " | "
                      + " | ".join(f"{med[label] / med[base]:.2f}" for label, _ in variants[1:]) + " |")

if __name__ == "__main__":
    main()
