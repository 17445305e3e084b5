//! cgroup v2: a bounded walk of the unified hierarchy and the per-cgroup files the tools read.

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
    let mut out = vec!["/".to_string()];
    let mut i = 0;
    while i < out.len() && out.len() < MAX_CGROUPS {
        let cg = out[i].clone();
        i += 1;
        if cg.matches('/').count() > MAX_DEPTH {
            continue;
        }
        let dir = dir_of(&cg);
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
    if cg == "/" {
        CGROUP_ROOT.to_string()
    } else {
        format!("{CGROUP_ROOT}{cg}")
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

/// The cgroup v2 path of process `pid` (`0::/path` in /proc/PID/cgroup).
pub fn of_pid(root: &Root, pid: i32) -> Option<String> {
    let text = root.read(&format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
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
