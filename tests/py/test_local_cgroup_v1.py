"""The local memory tools on a host whose memory controller is cgroup v1 (RHEL 8, Alibaba Cloud
Linux 2 and 3, this project's CI machines): a real memory cgroup is made under this test's own,
a process fills it to its limit, then another is OOM-killed in it, and local_memgraph and
local_oomcheck must name that cgroup from the kernel's own v1 files. Skipped where the host has
the unified hierarchy (the v2 paths are covered by the fixture-tree tests in src/local/tests.rs)
or when not root (making cgroups needs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import open_session, payload, server_env, wait_until

pytestmark = pytest.mark.anyio

V1 = Path("/sys/fs/cgroup/memory")
LIMIT = 96 << 20

# Joins the cgroup given as argv[1], then allocates anonymous memory 1 MiB at a time until the
# cgroup's usage is at 93 % of its limit (argv[2] = "fill") and waits, or without end ("hog")
# until the kernel kills it.
FILLER = r"""
import sys, time
cg, mode = sys.argv[1], sys.argv[2]
open(cg + "/cgroup.procs", "w").write(str(__import__("os").getpid()))
limit = int(open(cg + "/memory.limit_in_bytes").read())
chunks = []
while True:
    chunks.append(bytearray(b"x" * (1 << 20)))
    if mode == "fill" and int(open(cg + "/memory.usage_in_bytes").read()) >= 0.93 * limit:
        break
print("full", flush=True)
time.sleep(120)
"""


def v1_memory_cgroup_of_self() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


@pytest.fixture
def memcg(tmp_path):
    """A fresh v1 memory cgroup (limit LIMIT) under this process's own; removed afterwards."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() or not (V1 / "memory.usage_in_bytes").exists():
        pytest.skip("the host's memory controller is not cgroup v1")
    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    own = v1_memory_cgroup_of_self()
    assert own is not None
    rel = f"{own.rstrip('/')}/sysom-test-v1-{os.getpid()}"
    path = V1 / rel.lstrip("/")
    try:
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(LIMIT))
    except OSError as e:
        pytest.skip(f"cannot make a v1 memory cgroup here: {e}")
    yield rel, path
    for _ in range(50):
        try:
            path.rmdir()
            break
        except OSError:
            time.sleep(0.1)


def run_filler(path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FILLER, str(path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


async def test_v1_cgroup_at_its_limit_then_an_oom_kill_in_it(mock, config_file, memcg):
    rel, path = memcg
    env = server_env(mock, credentials=False)
    env.pop("SYSOM_MCP_TOOLS", None)
    filler = run_filler(path, "fill")
    try:
        assert filler.stdout.readline().strip() == "full"
        async with open_session(env, config=config_file) as client:
            mem = payload(await client.call("local_memgraph", timeout=60))
            near = [f for f in mem["result"]["findings"]
                    if f["title"].startswith(f"cgroup {rel} at ") and "of its memory limit" in f["title"]]
            assert near, [f["title"] for f in mem["result"]["findings"]]
            assert near[0]["severity"] == "critical", near  # anonymous memory dominates
            assert near[0]["source"] == f"{path}/memory.usage_in_bytes"
            assert "Unavailable" not in str([f["title"] for f in mem["result"]["findings"]
                                             if "cgroup memory accounting" in f["title"]])
    finally:
        filler.kill()
        filler.wait()
    # The same cgroup, now with a process that never stops allocating: the kernel kills it.
    hog = run_filler(path, "hog")
    assert hog.wait(timeout=60) == -9
    wait_until(lambda: int(dict(line.split() for line in (path / "memory.oom_control").read_text()
                                .splitlines())["oom_kill"]) >= 1, 10, what="memory.oom_control counts the kill")
    async with open_session(env, config=config_file) as client:
        oom = payload(await client.call("local_oomcheck", timeout=60))["result"]
        counted = [c for c in oom["figures"]["cgroups"] if c["path"] == rel]
        assert counted and counted[0]["oom_kill"] >= 1, oom["figures"]["cgroups"]
        assert counted[0]["max"] == LIMIT
