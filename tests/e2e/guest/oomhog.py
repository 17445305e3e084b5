#!/usr/bin/env python3
"""Memory hog for e2e step 13: names itself (comm) e2e-oomhog and allocates 1 MiB at a time
until the OOM killer ends it. Safety: it allocates only when its own memory cgroup is limited
to at most 64 MiB (exit 3 otherwise, e.g. when MemoryMax= is not enforced), and never more
than 256 MiB (exit 4: the limit did not kill it).

  oomhog.py [CGROUP_DIR]   CGROUP_DIR: a memory cgroup directory this process was moved into
                           (its limit is checked there instead of through /proc/self/cgroup)"""
import ctypes
import sys

LIMIT_MAX = 64 << 20


def own_limit():
    for line in open("/proc/self/cgroup"):
        _, ctrl, path = line.rstrip("\n").split(":", 2)
        if ctrl == "":  # cgroup v2: memory.max of the cgroup and its parents
            files = ["/sys/fs/cgroup%s/memory.max" % path]
        elif "memory" in ctrl.split(","):  # cgroup v1
            files = ["/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % path]
        else:
            continue
        for f in files:
            try:
                v = open(f).read().strip()
            except OSError:
                continue
            if v != "max" and int(v) <= LIMIT_MAX:
                return int(v)
    return None


def dir_limit(d):
    import os
    if str(os.getpid()) not in open(d + "/cgroup.procs").read().split():
        return None
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            v = open(f"{d}/{name}").read().strip()
        except OSError:
            continue
        if v != "max" and int(v) <= LIMIT_MAX:
            return int(v)
    return None


limit = dir_limit(sys.argv[1]) if len(sys.argv) > 1 else own_limit()
if limit is None:
    print("e2e-oomhog: no memory limit <= 64 MiB on my cgroup; not allocating", flush=True)
    sys.exit(3)
print(f"e2e-oomhog: memory limit {limit} bytes; allocating", flush=True)
ctypes.CDLL(None).prctl(15, b"e2e-oomhog", 0, 0, 0)  # PR_SET_NAME
hog = []
for _ in range(256):
    hog.append(bytearray(1 << 20))
sys.exit(4)
