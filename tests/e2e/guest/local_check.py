#!/usr/bin/env python3
"""Checks a local_* tool's answer (the JSON that `*_client.py --save FILE` wrote) for an induced
condition of e2e step 13. Exit 0 when the condition is reported; otherwise print why and the
relevant part of the answer (findings and figures), exit 1.

  local_check.py oom FILE VICTIM UNIT       local_oomcheck names VICTIM, its cgroup ends in /UNIT
  local_check.py writer FILE COMM           local_iofsstat: COMM is the top writer
  local_check.py drops FILE COUNTER         local_packetdrop: COUNTER rose
  local_check.py full FILE MOUNTPOINT       local_disk: MOUNTPOINT is reported full
  local_check.py busy FILE COMM             local_loadtask: COMM is the top CPU consumer
"""
import json
import sys


def show(ans, figures_key=None):
    res = ans.get("result") or {}
    print(f"code {ans.get('code')!r} message {ans.get('message')!r}")
    for f in res.get("findings", [])[:12]:
        print(f"  [{f.get('severity')}] {f.get('title')} | {f.get('detail', '')[:300]}")
    figs = res.get("figures", {})
    if figures_key:
        figs = {figures_key: figs.get(figures_key)}
    print("  figures: " + json.dumps(figs, ensure_ascii=False)[:1500])


def fail(ans, why, key=None):
    print("FAIL: " + why)
    show(ans, key)
    sys.exit(1)


def main():
    kind, path, *args = sys.argv[1:]
    with open(path) as fh:
        ans = json.load(fh)
    if ans.get("code") != "Success":
        fail(ans, "the tool did not answer Success")
    figs = ans["result"]["figures"]
    findings = ans["result"]["findings"]
    if kind == "oom":
        victim, unit = args
        ev = [e for e in figs["events"] if e.get("victim") == victim]
        if not ev:
            fail(ans, f"no OOM event with victim {victim!r}")
        e = ev[-1]
        if not (e.get("cgroup") or "").endswith("/" + unit):
            fail(ans, f"victim {victim} found, but its cgroup {e.get('cgroup')!r} is not .../{unit}", "events")
        if not any(f["severity"] == "critical" and victim in f["title"] and unit in f["detail"] for f in findings):
            fail(ans, f"no critical finding naming {victim} and {unit}")
        print(f"OOM kill of {victim} (pid {e.get('pid')}) in {e.get('cgroup')}, constraint {e.get('constraint')}")
    elif kind == "writer":
        (comm,) = args
        procs = figs["top_processes"]
        if not procs:
            fail(ans, "no process wrote in the window", "top_processes")
        top = max(procs, key=lambda p: p["write_bytes"])
        if top["comm"] != comm or top["write_bytes"] <= 0:
            fail(ans, f"top writer is {top['comm']!r}, not {comm!r}", "top_processes")
        print(f"top writer {top['comm']} (pid {top['pid']}): {top['write_bytes']} bytes in {figs['window_s']} s")
    elif kind == "drops":
        (counter,) = args
        c = [c for c in figs["rising"] if c["counter"] == counter]
        if not c or c[0]["delta"] <= 0:
            fail(ans, f"{counter} did not rise", "rising")
        if not any(counter in f["title"] for f in findings):
            fail(ans, f"no finding names {counter}")
        print(f"{counter} rose by {c[0]['delta']} ({c[0]['per_second']}/s) in netns of pid {figs['netns_pid']}")
    elif kind == "full":
        (mnt,) = args
        fs = [f for f in figs["filesystems"] if f["mountpoint"] == mnt]
        if not fs:
            fail(ans, f"{mnt} not among the file systems", "filesystems")
        if not any(f["severity"] == "critical" and mnt in f["title"] and "full" in f["title"] for f in findings):
            fail(ans, f"{mnt} is listed ({fs[0]['used_pct']}% used) but not reported full", "filesystems")
        print(f"{mnt}: {fs[0]['used_pct']}% used, {fs[0]['avail']} bytes available, reported full")
    elif kind == "busy":
        (comm,) = args
        hogs = figs["cpu_hogs"]
        if not hogs or hogs[0]["comm"] != comm:
            fail(ans, f"top CPU consumer is {hogs[0]['comm'] if hogs else None!r}, not {comm!r}", "cpu_hogs")
        running = [t["comm"] for t in figs["running_tasks"]]
        print(f"top CPU consumer {comm} (pid {hogs[0]['pid']}) at {hogs[0]['cpu_pct']}% of a CPU; running now: {running}")
    else:
        sys.exit(f"unknown check {kind}")


if __name__ == "__main__":
    main()
