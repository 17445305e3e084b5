//! Every task (thread) on the host from /proc/PID/task/TID/stat, one small file at a time.

use procfs_core::process::Stat;

use super::root::Root;

/// Clock ticks per second of /proc times. USER_HZ is 100 on every Linux architecture's ABI
/// (the kernel converts from its internal HZ), so no sysconf call is needed.
pub const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct Task {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub state: char,
    /// utime + stime, ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, ticks.
    pub start_ticks: u64,
    /// Aggregated block IO delay, ticks (delayacct).
    pub blkio_ticks: u64,
}

impl Task {
    fn from_stat(pid: i32, s: Stat) -> Self {
        Self {
            pid,
            tid: s.pid,
            comm: s.comm,
            state: s.state,
            cpu_ticks: s.utime + s.stime,
            start_ticks: s.starttime,
            blkio_ticks: s.delayacct_blkio_ticks.unwrap_or(0),
        }
    }
}

/// Every task; threads are read only from processes that have more than one.
pub fn scan(root: &Root) -> Option<Vec<Task>> {
    let pids = root.pids("/proc").ok()?;
    let mut out = Vec::with_capacity(pids.len() * 2);
    for pid in pids {
        let Ok(stat) = root.parse::<Stat>(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat.num_threads <= 1 {
            out.push(Task::from_stat(pid, stat));
            continue;
        }
        let Ok(tids) = root.pids(&format!("/proc/{pid}/task")) else {
            out.push(Task::from_stat(pid, stat));
            continue;
        };
        for tid in tids {
            if let Ok(s) = root.parse::<Stat>(&format!("/proc/{pid}/task/{tid}/stat")) {
                out.push(Task::from_stat(pid, s));
            }
        }
    }
    Some(out)
}

/// Seconds since boot (/proc/uptime).
pub fn uptime(root: &Root) -> Option<f64> {
    root.read("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Online CPUs, counted from the cpuN lines of /proc/stat.
pub fn cpu_count(root: &Root) -> Option<usize> {
    let text = root.read("/proc/stat").ok()?;
    let n = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    (n > 0).then_some(n)
}
