//! local_iofsstat (per device IOPS, throughput, await and util from diskstats; per process bytes
//! from /proc/PID/io; per cgroup io.stat; over a window) and local_iodiagnose (await and util
//! outliers, PSI io, D-state tasks, queue settings).

use std::collections::{BTreeMap, HashMap};

use procfs_core::{DiskStat, process::Io};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    cgroup,
    findings::{Findings, Severity, human_bytes, round1},
    psi::{self, Psi},
    root::Root,
    tasks,
};

/// A device busy this share of the window is saturated, for devices that serve one request at a
/// time (iostat(1): "%util … close to 100% … indicates device saturation"; for SSD/NVMe with
/// parallel queues it only says the device was never idle).
pub const UTIL_SATURATED_PCT: f64 = 90.0;
/// Average wait per IO above which a device is slow (engine's choice: well above a rotating
/// disk's ~10 ms seek and far above an SSD's sub-millisecond service time).
pub const AWAIT_SLOW_MS: f64 = 50.0;
const TOP: usize = 10;

/// One reading for the IO sampler.
#[derive(Debug, Clone, Default)]
pub struct IoSample {
    pub disks: BTreeMap<String, DiskStat>,
    /// pid → (comm, read_bytes, write_bytes)
    pub procs: HashMap<i32, (String, u64, u64)>,
    /// cgroup → (rbytes, wbytes, rios, wios) summed over devices
    pub cgroups: BTreeMap<String, [u64; 4]>,
    pub missing: Vec<super::root::Unreadable>,
    pub procs_unreadable: usize,
}

/// Whole block devices (those under /sys/block), without idle loop and ram devices.
fn whole_disks(root: &Root) -> Vec<String> {
    root.list("/sys/block").unwrap_or_default()
}

pub fn sample(root: &Root) -> IoSample {
    let mut s = IoSample::default();
    let disks = whole_disks(root);
    match root.read("/proc/diskstats") {
        Ok(text) => {
            for line in text.lines() {
                if let Ok(d) = DiskStat::from_line(line)
                    && (disks.is_empty() || disks.contains(&d.name))
                {
                    s.disks.insert(d.name.clone(), d);
                }
            }
        }
        Err(e) => s.missing.push(e),
    }
    for pid in root.pids("/proc").unwrap_or_default() {
        match root.parse::<Io>(&format!("/proc/{pid}/io")) {
            Ok(io) => {
                let comm = root.first_line(&format!("/proc/{pid}/comm"));
                s.procs.insert(pid, (comm, io.read_bytes, io.write_bytes));
            }
            Err(_) => s.procs_unreadable += 1,
        }
    }
    if cgroup::unified(root).is_ok() {
        for cg in cgroup::walk(root) {
            let Ok(text) = root.read(&format!("{}/io.stat", cgroup::dir_of(&cg))) else {
                continue;
            };
            let mut sum = [0u64; 4];
            for (_, kv) in cgroup::io_stat(&text) {
                for (i, k) in ["rbytes", "wbytes", "rios", "wios"].iter().enumerate() {
                    sum[i] += kv.get(*k).copied().unwrap_or(0);
                }
            }
            s.cgroups.insert(cg, sum);
        }
    }
    s
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct IoFigures {
    pub window_s: f64,
    pub devices: Vec<DeviceIo>,
    /// Processes by bytes read + written in the window (/proc/PID/io: bytes that reached the
    /// block layer, so page-cache hits are not counted; the kernel adds a child's IO to its
    /// parent when the parent reaps it, so a short-lived child shows up as its parent).
    pub top_processes: Vec<ProcessIo>,
    /// cgroups by bytes in the window (io.stat).
    pub top_cgroups: Vec<CgroupIo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeviceIo {
    pub device: String,
    pub read_iops: f64,
    pub write_iops: f64,
    /// Bytes per second.
    pub read_bps: f64,
    pub write_bps: f64,
    /// Average time per IO, queueing included, ms (as iostat's r_await / w_await).
    pub read_await_ms: f64,
    pub write_await_ms: f64,
    /// Share of the window with IO in flight, percent (iostat %util).
    pub util_pct: f64,
    /// Requests in flight at the second reading.
    pub in_flight: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProcessIo {
    pub pid: i32,
    pub comm: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CgroupIo {
    pub path: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

fn rate(d: u64, s: f64) -> f64 {
    round1(d as f64 / s)
}

pub fn compare(a: &IoSample, b: &IoSample, window_s: f64, f: &mut Findings) -> IoFigures {
    let w = window_s.max(0.001);
    for e in &b.missing {
        f.unavailable("Block device statistics", e);
    }
    let mut devices: Vec<DeviceIo> = b
        .disks
        .iter()
        .filter_map(|(name, d)| {
            let o = a.disks.get(name)?;
            let reads = d.reads.saturating_sub(o.reads);
            let writes = d.writes.saturating_sub(o.writes);
            let avg = |t: u64, n: u64| {
                if n == 0 {
                    0.0
                } else {
                    round1(t as f64 / n as f64)
                }
            };
            Some(DeviceIo {
                device: name.clone(),
                read_iops: rate(reads, w),
                write_iops: rate(writes, w),
                read_bps: rate(d.sectors_read.saturating_sub(o.sectors_read) * 512, w),
                write_bps: rate(d.sectors_written.saturating_sub(o.sectors_written) * 512, w),
                read_await_ms: avg(d.time_reading.saturating_sub(o.time_reading), reads),
                write_await_ms: avg(d.time_writing.saturating_sub(o.time_writing), writes),
                util_pct: round1(
                    (d.time_in_progress.saturating_sub(o.time_in_progress) as f64 / (w * 1000.0)
                        * 100.0)
                        .min(100.0),
                ),
                in_flight: d.in_progress,
            })
        })
        .filter(|d| d.read_iops + d.write_iops > 0.0 || d.in_flight > 0)
        .collect();
    devices.sort_by(|x, y| {
        y.util_pct
            .total_cmp(&x.util_pct)
            .then(x.device.cmp(&y.device))
    });
    let mut procs: Vec<ProcessIo> = b
        .procs
        .iter()
        .filter_map(|(pid, (comm, r, wr))| {
            let (_, r0, w0) = a.procs.get(pid)?;
            let p = ProcessIo {
                pid: *pid,
                comm: comm.clone(),
                read_bytes: r.saturating_sub(*r0),
                write_bytes: wr.saturating_sub(*w0),
            };
            (p.read_bytes + p.write_bytes > 0).then_some(p)
        })
        .collect();
    procs.sort_by(|x, y| {
        (y.read_bytes + y.write_bytes)
            .cmp(&(x.read_bytes + x.write_bytes))
            .then(x.pid.cmp(&y.pid))
    });
    procs.truncate(TOP);
    let mut cgroups: Vec<CgroupIo> = b
        .cgroups
        .iter()
        .filter(|(cg, _)| cg.as_str() != "/")
        .filter_map(|(cg, v)| {
            let o = a.cgroups.get(cg)?;
            let d: Vec<u64> = v.iter().zip(o).map(|(x, y)| x.saturating_sub(*y)).collect();
            (d[0] + d[1] > 0).then(|| CgroupIo {
                path: cg.clone(),
                read_bytes: d[0],
                write_bytes: d[1],
                read_ios: d[2],
                write_ios: d[3],
            })
        })
        .collect();
    cgroups.sort_by(|x, y| {
        (y.read_bytes + y.write_bytes)
            .cmp(&(x.read_bytes + x.write_bytes))
            .then(x.path.cmp(&y.path))
    });
    cgroups.truncate(TOP);

    for d in &devices {
        let await_ms = d.read_await_ms.max(d.write_await_ms);
        let text = format!(
            "{:.0} r/s + {:.0} w/s, {}/s read, {}/s written, await r {} ms w {} ms, util {}%, {} in flight",
            d.read_iops,
            d.write_iops,
            human_bytes(d.read_bps as u64),
            human_bytes(d.write_bps as u64),
            d.read_await_ms,
            d.write_await_ms,
            d.util_pct,
            d.in_flight
        );
        if d.util_pct >= UTIL_SATURATED_PCT || await_ms >= AWAIT_SLOW_MS {
            f.add(
                Severity::Warning,
                format!("{} is {}: util {}%, await {} ms", d.device, if d.util_pct >= UTIL_SATURATED_PCT { "saturated" } else { "slow" }, d.util_pct, await_ms),
                format!("{text} (saturated at {UTIL_SATURATED_PCT}% util, slow at {AWAIT_SLOW_MS} ms await)"),
                "/proc/diskstats",
            );
        } else {
            f.add(
                Severity::Info,
                format!("{}: {:.0} IOPS", d.device, d.read_iops + d.write_iops),
                text,
                "/proc/diskstats",
            );
        }
    }
    if let Some(p) = procs.first() {
        f.add(
            Severity::Info,
            format!(
                "Top IO process: {} (pid {}), {} written, {} read",
                p.comm,
                p.pid,
                human_bytes(p.write_bytes),
                human_bytes(p.read_bytes)
            ),
            format!(
                "in {window_s:.1} s, bytes that reached the block layer (including children it reaped in the window)"
            ),
            format!("/proc/{}/io", p.pid),
        );
    }
    if let Some(c) = cgroups.first() {
        f.add(
            Severity::Info,
            format!(
                "Top IO cgroup: {}, {} written, {} read",
                c.path,
                human_bytes(c.write_bytes),
                human_bytes(c.read_bytes)
            ),
            format!(
                "{} write and {} read IOs in {window_s:.1} s",
                c.write_ios, c.read_ios
            ),
            format!("{}/io.stat", cgroup::dir_of(&c.path)),
        );
    }
    if b.procs_unreadable > 0 && !super::root::running_as_root() && a.procs.len() < 2 {
        f.add(
            Severity::Unavailable,
            format!("IO counters of {} process(es) could not be read", b.procs_unreadable),
            "/proc/PID/io of other users needs root (ptrace access): run as root or install the local-diagnosis drop-in",
            "/proc/PID/io",
        );
    }
    IoFigures {
        window_s: round1(window_s),
        devices,
        top_processes: procs,
        top_cgroups: cgroups,
    }
}

pub fn judge_iofsstat(root: &Root, a: &IoSample, window_s: f64) -> (Findings, IoFigures) {
    let b = sample(root);
    let mut f = Findings::default();
    let figures = compare(a, &b, window_s, &mut f);
    if figures.devices.iter().any(|d| {
        d.util_pct >= UTIL_SATURATED_PCT || d.read_await_ms.max(d.write_await_ms) >= AWAIT_SLOW_MS
    }) {
        f.next(
            "local_iodiagnose",
            "a device is saturated or slow; check its queue settings and who waits on it",
        );
    }
    (f, figures)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct IoDiagnoseFigures {
    pub io: IoFigures,
    pub psi_io: Option<Psi>,
    /// Tasks in uninterruptible sleep at the end of the window, with where they wait.
    pub uninterruptible: Vec<String>,
    pub queues: Vec<QueueSettings>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QueueSettings {
    pub device: String,
    pub scheduler: String,
    pub nr_requests: Option<u64>,
    pub rotational: Option<bool>,
    pub read_ahead_kb: Option<u64>,
}

pub fn judge_iodiagnose(root: &Root, a: &IoSample, window_s: f64) -> (Findings, IoDiagnoseFigures) {
    let b = sample(root);
    let mut f = Findings::default();
    let io = compare(a, &b, window_s, &mut f);
    let psi_io = psi::read(root, "io", &mut f);
    if let Some(p) = &psi_io {
        psi::judge_some(p, "io", "local_iofsstat", &mut f);
    }
    let dstate: Vec<String> = tasks::scan(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.state == 'D')
        .take(20)
        .map(|t| {
            let wchan = root.first_line(&format!("/proc/{}/task/{}/wchan", t.pid, t.tid));
            format!(
                "{} (pid {}) in {}",
                t.comm,
                t.pid,
                if wchan.is_empty() { "?" } else { &wchan }
            )
        })
        .collect();
    if !dstate.is_empty() {
        f.add(
            Severity::Warning,
            format!("{} task(s) in uninterruptible sleep", dstate.len()),
            dstate
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            "/proc/PID/task/TID/stat",
        );
        f.next(
            "local_loadtask",
            "see the kernel stacks of the D-state tasks",
        );
    }
    let queues: Vec<QueueSettings> = whole_disks(root)
        .into_iter()
        .filter(|d| b.disks.contains_key(d))
        .map(|d| {
            let q = format!("/sys/block/{d}/queue");
            let sched = root.first_line(&format!("{q}/scheduler"));
            // "[mq-deadline] none" → the bracketed one is active
            let active = sched
                .split_whitespace()
                .find_map(|s| s.strip_prefix('[')?.strip_suffix(']'))
                .unwrap_or(&sched)
                .to_string();
            QueueSettings {
                scheduler: active,
                nr_requests: root.read_u64(&format!("{q}/nr_requests")),
                rotational: root.read_u64(&format!("{q}/rotational")).map(|v| v == 1),
                read_ahead_kb: root.read_u64(&format!("{q}/read_ahead_kb")),
                device: d,
            }
        })
        .collect();
    for q in &queues {
        if let Some(dev) = io
            .devices
            .iter()
            .find(|d| d.device == q.device && d.util_pct >= UTIL_SATURATED_PCT)
        {
            f.add(
                Severity::Info,
                format!("Queue of {}: {} scheduler, {} requests, {}", q.device, q.scheduler, q.nr_requests.unwrap_or(0), if q.rotational == Some(true) { "rotational" } else { "non-rotational" }),
                format!(
                    "util {}%: {}",
                    dev.util_pct,
                    if q.rotational == Some(true) {
                        "a rotating disk at this util is saturated; move or throttle the top writer (io.max of its cgroup)"
                    } else {
                        "an SSD can be 100% util and still have headroom: judge by await"
                    }
                ),
                format!("/sys/block/{}/queue", q.device),
            );
        }
    }
    (
        f,
        IoDiagnoseFigures {
            io,
            psi_io,
            uninterruptible: dstate,
            queues,
        },
    )
}
