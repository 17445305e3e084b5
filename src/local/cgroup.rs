//! cgroups: a bounded walk of a hierarchy and the per-cgroup files the tools read. Everything
//! is read from the unified (v2) hierarchy; memory accounting also from v1's memory controller,
//! which RHEL 8, Alibaba Cloud Linux 2 and 3 and older Ubuntu releases still mount by default.

use std::collections::BTreeMap;

use super::root::{Root, Unreadable};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Walk limits: a host with thousands of pods still answers quickly; deeper cgroups are summed
/// into their ancestors by the kernel anyway.
const MAX_DEPTH: usize = 6;
const MAX_CGROUPS: usize = 4000;

/// Whether the unified (v2) hierarchy is mounted where the tools look.
pub fn unified(root: &Root) -> Result<(), Unreadable> {
    root.read(&format!("{CGROUP_ROOT}/cgroup.controllers"))
        .map(|_| ())
}

/// Every cgroup path (relative to the hierarchy, `/` first) down to [`MAX_DEPTH`].
pub fn walk(root: &Root) -> Vec<String> {
    walk_under(root, CGROUP_ROOT)
}

fn walk_under(root: &Root, base: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut i = 0;
    while i < out.len() && out.len() < MAX_CGROUPS {
        let cg = out[i].clone();
        i += 1;
        if cg.matches('/').count() > MAX_DEPTH {
            continue;
        }
        let dir = under(base, &cg);
        let Ok(entries) = std::fs::read_dir(root.path(&dir)) else {
            continue;
        };
        let mut children: Vec<String> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                e.file_type().ok()?.is_dir().then_some(())?;
                let name = e.file_name().into_string().ok()?;
                Some(if cg == "/" {
                    format!("/{name}")
                } else {
                    format!("{cg}/{name}")
                })
            })
            .collect();
        children.sort();
        out.extend(children);
    }
    out.truncate(MAX_CGROUPS);
    out
}

/// The kernel path of cgroup `cg`'s directory.
pub fn dir_of(cg: &str) -> String {
    under(CGROUP_ROOT, cg)
}

fn under(base: &str, cg: &str) -> String {
    if cg == "/" {
        base.to_string()
    } else {
        format!("{base}{cg}")
    }
}

/// A `key value` file (memory.stat, memory.events, cpu.stat) as a map.
pub fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// io.stat: per cgroup and device `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`.
pub fn io_stat(text: &str) -> Vec<(String, BTreeMap<String, u64>)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?.to_string();
            let kv = f
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            Some((dev, kv))
        })
        .collect()
}

/// Where v1 mounts its memory controller.
pub const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
/// v1 reports "no limit" as the largest page-aligned counter (PAGE_COUNTER_MAX pages): anything
/// this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The hierarchy that does this host's memory accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    V2,
    V1,
}

/// One cgroup's memory figures, the same whichever hierarchy they come from.
#[derive(Debug, Clone, Default)]
pub struct MemoryReading {
    /// Bytes charged now (v2 memory.current, v1 memory.usage_in_bytes).
    pub current: u64,
    /// The hard limit, bytes; None when unlimited (v2 memory.max, v1 memory.limit_in_bytes).
    pub max: Option<u64>,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    /// Times the OOM killer ran for this cgroup (v2 memory.events oom; v1 counts only kills).
    pub oom: u64,
    /// Processes it killed (memory.events / memory.oom_control oom_kill).
    pub oom_kill: u64,
    /// Times usage hit the limit (v2 memory.events max, v1 memory.failcnt).
    pub limit_hits: u64,
}

impl Memory {
    /// v2 when the unified hierarchy is mounted, else v1's memory controller; the error is the
    /// v2 one, whose remedy names both.
    pub fn detect(root: &Root) -> Result<Memory, Unreadable> {
        match unified(root) {
            Ok(()) => Ok(Memory::V2),
            Err(e) => match root.read(&format!("{V1_MEMORY_ROOT}/memory.usage_in_bytes")) {
                Ok(_) => Ok(Memory::V1),
                Err(_) => Err(e),
            },
        }
    }

    fn base(self) -> &'static str {
        match self {
            Memory::V2 => CGROUP_ROOT,
            Memory::V1 => V1_MEMORY_ROOT,
        }
    }

    /// Every cgroup of this hierarchy, as [`walk`].
    pub fn walk(self, root: &Root) -> Vec<String> {
        walk_under(root, self.base())
    }

    pub fn dir_of(self, cg: &str) -> String {
        under(self.base(), cg)
    }

    /// What the usage file is called, for finding texts.
    pub fn usage_name(self) -> &'static str {
        match self {
            Memory::V2 => "memory.current",
            Memory::V1 => "memory.usage_in_bytes",
        }
    }

    /// The file a finding about usage cites.
    pub fn current_file(self, cg: &str) -> String {
        format!("{}/{}", self.dir_of(cg), self.usage_name())
    }

    /// The file a finding about OOM kills cites.
    pub fn events_file(self, cg: &str) -> String {
        let file = match self {
            Memory::V2 => "memory.events",
            Memory::V1 => "memory.oom_control",
        };
        format!("{}/{file}", self.dir_of(cg))
    }

    /// The memory cgroup of process `pid`: the `0::` line on v2, the line naming the memory
    /// controller on v1 (on hybrid hosts the `0::` line there is systemd's, not memory's).
    pub fn of_pid(self, root: &Root, pid: i32) -> Option<String> {
        let text = root.read(&format!("/proc/{pid}/cgroup")).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_id, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let wanted = match self {
                Memory::V2 => controllers.is_empty(),
                Memory::V1 => controllers.split(',').any(|c| c == "memory"),
            };
            wanted.then(|| path.trim().to_string())
        })
    }

    /// Cgroup `cg`'s figures; None when it has no memory accounting (the controller is not
    /// enabled there, or it went away during the walk).
    pub fn read(self, root: &Root, cg: &str) -> Option<MemoryReading> {
        let dir = self.dir_of(cg);
        let file = |name: &str| root.read(&format!("{dir}/{name}")).unwrap_or_default();
        match self {
            Memory::V2 => {
                let current = root.read_u64(&format!("{dir}/memory.current"))?;
                let stat = flat_keyed(&file("memory.stat"));
                let events = flat_keyed(&file("memory.events"));
                let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
                Some(MemoryReading {
                    current,
                    max: root.read_u64(&format!("{dir}/memory.max")),
                    anon: get(&stat, "anon"),
                    file: get(&stat, "file"),
                    shmem: get(&stat, "shmem"),
                    oom: get(&events, "oom"),
                    oom_kill: get(&events, "oom_kill"),
                    limit_hits: get(&events, "max"),
                })
            }
            Memory::V1 => {
                let current = root.read_u64(&format!("{dir}/memory.usage_in_bytes"))?;
                let stat = flat_keyed(&file("memory.stat"));
                // total_* include the descendants, as v2's memory.stat does.
                let get = |k: &str| {
                    stat.get(&format!("total_{k}"))
                        .or_else(|| stat.get(k))
                        .copied()
                        .unwrap_or(0)
                };
                let oom_kill = flat_keyed(&file("memory.oom_control"))
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0);
                Some(MemoryReading {
                    current,
                    max: root
                        .read_u64(&format!("{dir}/memory.limit_in_bytes"))
                        .filter(|m| *m < V1_UNLIMITED),
                    anon: get("rss"),
                    file: get("cache"),
                    shmem: get("shmem"),
                    oom: oom_kill,
                    oom_kill,
                    limit_hits: root.read_u64(&format!("{dir}/memory.failcnt")).unwrap_or(0),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded tree holding `files` (path, content).
    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let root = Root::recorded(dir.path());
        (dir, root)
    }

    #[test]
    fn v1_memory_controller_reads_like_v2() {
        let (_dir, root) = tree(&[
            ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "900\n"),
            ("/sys/fs/cgroup/memory/app/memory.usage_in_bytes", "800\n"),
            // The kernel's "no limit" (PAGE_COUNTER_MAX pages).
            (
                "/sys/fs/cgroup/memory/app/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/app/job/memory.usage_in_bytes",
                "700\n",
            ),
            (
                "/sys/fs/cgroup/memory/app/job/memory.limit_in_bytes",
                "1000\n",
            ),
            (
                "/sys/fs/cgroup/memory/app/job/memory.stat",
                "rss 1\ncache 2\nshmem 3\ntotal_rss 600\ntotal_cache 90\ntotal_shmem 10\n",
            ),
            (
                "/sys/fs/cgroup/memory/app/job/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("/sys/fs/cgroup/memory/app/job/memory.failcnt", "5\n"),
            (
                "/proc/7/cgroup",
                "4:memory:/app/job\n1:name=systemd:/user.slice\n0::/user.slice\n",
            ),
        ]);
        let m = Memory::detect(&root).expect("v1 detected");
        assert_eq!(m, Memory::V1);
        assert_eq!(m.walk(&root), ["/", "/app", "/app/job"]);
        assert_eq!(m.read(&root, "/app").expect("app").max, None);
        let job = m.read(&root, "/app/job").expect("job");
        assert_eq!((job.current, job.max), (700, Some(1000)));
        // total_* (the subtree, as v2 counts) win over the cgroup's own rss/cache/shmem.
        assert_eq!((job.anon, job.file, job.shmem), (600, 90, 10));
        assert_eq!((job.oom_kill, job.limit_hits), (2, 5));
        assert_eq!(m.of_pid(&root, 7).as_deref(), Some("/app/job"));
        assert_eq!(Memory::V2.of_pid(&root, 7).as_deref(), Some("/user.slice"));
        assert_eq!(
            m.current_file("/app/job"),
            "/sys/fs/cgroup/memory/app/job/memory.usage_in_bytes"
        );
    }

    #[test]
    fn no_memory_hierarchy_is_the_v2_error() {
        let (_dir, root) = tree(&[("/proc/stat", "btime 1\n")]);
        let e = Memory::detect(&root).expect_err("nothing mounted");
        assert_eq!(e.path, "/sys/fs/cgroup/cgroup.controllers");
        assert!(
            e.remedy().contains("v1 memory controller"),
            "{}",
            e.remedy()
        );
    }
}
