//! local_loadtask (the load average explained: running and D-state tasks, their wchan and
//! kernel stack, the CPU hogs, softirqs, PSI) and local_delay (run-queue wait per task over a
//! window, from schedstat).

use std::collections::HashMap;

use procfs_core::{LoadAverage, process::Schedstat};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    findings::{Findings, Severity, round1},
    psi::{self, Psi},
    root::Root,
    tasks::{self, Task, USER_HZ},
};

/// A load average above the CPU count means tasks queue for CPU or wait in D state (the load
/// average counts both; Brendan Gregg, "Linux Load Averages: Solving the Mystery", 2017).
pub const LOAD_PER_CPU_HIGH: f64 = 1.0;
/// A process using this much of one CPU over its lifetime is a CPU hog worth naming (engine's
/// choice: a busy loop shows close to 100 %).
pub const HOG_CPU_PCT: f64 = 50.0;
/// Tasks listed per state.
const LIST: usize = 20;
/// Kernel stacks read (each needs root and costs a stack walk) for the first D-state tasks only.
const STACKS_FOR: usize = 5;

#[derive(Debug, Serialize, JsonSchema)]
pub struct LoadFigures {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub cpus: Option<usize>,
    /// Tasks running or runnable (R), and in uninterruptible sleep (D), right now.
    pub running: usize,
    pub uninterruptible: usize,
    pub tasks_total: usize,
    pub running_tasks: Vec<TaskInfo>,
    pub uninterruptible_tasks: Vec<TaskInfo>,
    /// Processes by CPU share over their lifetime (utime+stime / age).
    pub cpu_hogs: Vec<CpuHog>,
    /// Softirq counts since boot, summed over CPUs (/proc/softirqs).
    pub softirqs: Vec<SoftirqCount>,
    pub psi_cpu: Option<Psi>,
    pub psi_io: Option<Psi>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskInfo {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    /// Kernel function the task sleeps in (/proc/PID/task/TID/wchan); empty when running.
    pub wchan: String,
    /// Kernel stack (root only; read for the first few D-state tasks).
    pub stack: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CpuHog {
    pub pid: i32,
    pub comm: String,
    /// CPU share of one CPU over the process lifetime, percent (can exceed 100 with threads).
    pub cpu_pct: f64,
    pub cpu_seconds: f64,
    pub threads: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SoftirqCount {
    pub name: String,
    pub count: u64,
}

fn task_info(root: &Root, t: &Task, stack: bool) -> TaskInfo {
    let dir = format!("/proc/{}/task/{}", t.pid, t.tid);
    let wchan = root.first_line(&format!("{dir}/wchan"));
    TaskInfo {
        pid: t.pid,
        tid: t.tid,
        comm: t.comm.clone(),
        wchan: if wchan == "0" { String::new() } else { wchan },
        stack: if stack {
            root.read(&format!("{dir}/stack"))
                .map(|s| {
                    s.lines()
                        .map(|l| l.split_once(' ').map_or(l, |(_, f)| f).to_string())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

/// CPU hogs by lifetime share, one entry per process.
pub fn hogs(tasks: &[Task], uptime: f64) -> Vec<CpuHog> {
    let mut by_pid: HashMap<i32, (String, u64, u64, usize)> = HashMap::new();
    for t in tasks {
        let e = by_pid
            .entry(t.pid)
            .or_insert((String::new(), 0, u64::MAX, 0));
        if t.tid == t.pid || e.0.is_empty() {
            e.0 = t.comm.clone();
        }
        e.1 += t.cpu_ticks;
        e.2 = e.2.min(t.start_ticks);
        e.3 += 1;
    }
    let mut hogs: Vec<CpuHog> = by_pid
        .into_iter()
        .filter_map(|(pid, (comm, ticks, start, threads))| {
            let age = uptime - start as f64 / USER_HZ;
            // Younger than a second: the share is noise.
            (age >= 1.0).then(|| CpuHog {
                pid,
                comm,
                cpu_pct: round1(ticks as f64 / USER_HZ * 100.0 / age),
                cpu_seconds: round1(ticks as f64 / USER_HZ),
                threads,
            })
        })
        .collect();
    hogs.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct).then(a.pid.cmp(&b.pid)));
    hogs.truncate(10);
    hogs
}

fn softirqs(root: &Root) -> Vec<SoftirqCount> {
    let Ok(text) = root.read("/proc/softirqs") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            Some(SoftirqCount {
                name: name.trim().to_string(),
                count: rest
                    .split_whitespace()
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum(),
            })
        })
        .collect()
}

/// Load figures are f32 in the kernel's text; two decimals as /proc/loadavg prints them.
pub fn round2(v: f32) -> f64 {
    (v as f64 * 100.0).round() / 100.0
}

pub fn loadavg(root: &Root, f: &mut Findings) -> Option<LoadAverage> {
    match root.parse::<LoadAverage>("/proc/loadavg") {
        Ok(l) => Some(l),
        Err(e) => {
            f.unavailable("The load average", &e);
            None
        }
    }
}

pub fn collect(root: &Root) -> (Findings, LoadFigures) {
    let mut f = Findings::default();
    let load = loadavg(root, &mut f);
    let cpus = tasks::cpu_count(root);
    let all = tasks::scan(root).unwrap_or_default();
    let uptime = tasks::uptime(root).unwrap_or(0.0);
    let running: Vec<&Task> = all.iter().filter(|t| t.state == 'R').collect();
    let dstate: Vec<&Task> = all.iter().filter(|t| t.state == 'D').collect();
    let running_tasks: Vec<TaskInfo> = running
        .iter()
        .take(LIST)
        .map(|t| task_info(root, t, false))
        .collect();
    let uninterruptible_tasks: Vec<TaskInfo> = dstate
        .iter()
        .take(LIST)
        .enumerate()
        .map(|(i, t)| task_info(root, t, i < STACKS_FOR))
        .collect();
    let cpu_hogs = hogs(&all, uptime);
    let psi_cpu = psi::read(root, "cpu", &mut f);
    let psi_io = psi::read(root, "io", &mut f);

    let (l1, l5, l15) = load
        .as_ref()
        .map(|l| (round2(l.one), round2(l.five), round2(l.fifteen)))
        .unwrap_or_default();
    if let (Some(_), Some(n)) = (&load, cpus) {
        let per_cpu = l1 / n as f64;
        let trend = if l1 > l15 * 1.2 {
            "rising"
        } else if l1 < l15 * 0.8 {
            "falling"
        } else {
            "steady"
        };
        let detail = format!(
            "load average {l1:.2} / {l5:.2} / {l15:.2} (1/5/15 min, {trend}) on {n} CPU(s) = {per_cpu:.2} per CPU; now {} running/runnable and {} uninterruptible (D) task(s) of {}",
            running.len(),
            dstate.len(),
            all.len()
        );
        if per_cpu > LOAD_PER_CPU_HIGH {
            let cause = if dstate.len() > running.len() {
                "mostly tasks in uninterruptible sleep (IO or kernel locks), not CPU demand"
            } else {
                "mostly CPU demand: runnable tasks queue for CPU"
            };
            f.add(
                Severity::Warning,
                format!("Load {l1:.2} exceeds the {n} CPU(s): {cause}"),
                detail,
                "/proc/loadavg",
            );
        } else {
            f.add(
                Severity::Info,
                format!("Load {l1:.2} on {n} CPU(s)"),
                detail,
                "/proc/loadavg",
            );
        }
    }
    if !dstate.is_empty() {
        let mut by_wchan: HashMap<String, usize> = HashMap::new();
        for t in &uninterruptible_tasks {
            *by_wchan
                .entry(if t.wchan.is_empty() {
                    "?".into()
                } else {
                    t.wchan.clone()
                })
                .or_default() += 1;
        }
        let mut waits: Vec<(String, usize)> = by_wchan.into_iter().collect();
        waits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let names: Vec<String> = uninterruptible_tasks
            .iter()
            .take(5)
            .map(|t| {
                format!(
                    "{} (pid {}) in {}",
                    t.comm,
                    t.pid,
                    if t.wchan.is_empty() { "?" } else { &t.wchan }
                )
            })
            .collect();
        f.add(
            Severity::Warning,
            format!("{} task(s) in uninterruptible sleep (D)", dstate.len()),
            format!(
                "D-state tasks count in the load average without using CPU; {}; waiting in: {}",
                names.join(", "),
                waits
                    .iter()
                    .map(|(w, n)| format!("{w} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "/proc/PID/task/TID/stat, wchan",
        );
        f.next(
            "local_iodiagnose",
            "tasks are stuck in uninterruptible sleep, usually waiting for IO",
        );
    }
    for h in cpu_hogs.iter().filter(|h| h.cpu_pct >= HOG_CPU_PCT).take(3) {
        let now = if running.iter().any(|t| t.pid == h.pid) {
            ", running now"
        } else {
            ""
        };
        f.add(
            Severity::Info,
            format!(
                "CPU hog: {} (pid {}) uses {:.0}% of a CPU",
                h.comm, h.pid, h.cpu_pct
            ),
            format!(
                "{:.1} CPU seconds over its lifetime, {} thread(s){now}",
                h.cpu_seconds, h.threads
            ),
            format!("/proc/{}/stat", h.pid),
        );
    }
    if let Some(p) = &psi_cpu {
        psi::judge_some(p, "cpu", "local_delay", &mut f);
    }
    if let Some(p) = &psi_io {
        psi::judge_some(p, "io", "local_iodiagnose", &mut f);
    }
    (
        f,
        LoadFigures {
            load1: l1,
            load5: l5,
            load15: l15,
            cpus,
            running: running.len(),
            uninterruptible: dstate.len(),
            tasks_total: all.len(),
            running_tasks,
            uninterruptible_tasks,
            cpu_hogs,
            softirqs: softirqs(root),
            psi_cpu,
            psi_io,
        },
    )
}

/// One schedstat reading per task: (comm, pid, run ns, wait ns, timeslices).
pub type SchedSample = HashMap<i32, (String, i32, u64, u64, u64)>;

/// Reads /proc/PID/task/TID/schedstat of every task (each file opened and closed in turn).
pub fn sched_sample(root: &Root) -> SchedSample {
    let mut out = HashMap::new();
    for t in tasks::scan(root).unwrap_or_default() {
        if let Ok(s) = root.parse::<Schedstat>(&format!("/proc/{}/task/{}/schedstat", t.pid, t.tid))
        {
            out.insert(
                t.tid,
                (t.comm, t.pid, s.sum_exec_runtime, s.run_delay, s.pcount),
            );
        }
    }
    out
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DelayFigures {
    /// Seconds between the two readings.
    pub window_s: f64,
    /// The threshold: average wait per scheduling, milliseconds.
    pub threshold_ms: f64,
    pub tasks_sampled: usize,
    /// Tasks with the most run-queue wait in the window.
    pub top_waiters: Vec<TaskDelay>,
    pub psi_cpu: Option<Psi>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskDelay {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    /// Time spent waiting on a run queue in the window, ms.
    pub wait_ms: f64,
    /// Time on CPU in the window, ms.
    pub run_ms: f64,
    /// Times scheduled in the window.
    pub timeslices: u64,
    /// wait_ms / timeslices.
    pub avg_wait_ms: f64,
}

pub fn judge_delay(
    root: &Root,
    a: &SchedSample,
    b: &SchedSample,
    window_s: f64,
    threshold_ms: f64,
) -> (Findings, DelayFigures) {
    let mut f = Findings::default();
    let mut delays: Vec<TaskDelay> = b
        .iter()
        .filter_map(|(tid, (comm, pid, run, wait, slices))| {
            let (_, _, run0, wait0, slices0) = a.get(tid)?;
            let slices = slices.saturating_sub(*slices0);
            let wait_ms = wait.saturating_sub(*wait0) as f64 / 1e6;
            Some(TaskDelay {
                pid: *pid,
                tid: *tid,
                comm: comm.clone(),
                wait_ms: round1(wait_ms),
                run_ms: round1(run.saturating_sub(*run0) as f64 / 1e6),
                timeslices: slices,
                avg_wait_ms: round1(if slices == 0 {
                    0.0
                } else {
                    wait_ms / slices as f64
                }),
            })
        })
        .filter(|d| d.wait_ms > 0.0)
        .collect();
    delays.sort_by(|x, y| y.wait_ms.total_cmp(&x.wait_ms).then(x.tid.cmp(&y.tid)));
    delays.truncate(LIST);
    let slow: Vec<&TaskDelay> = delays
        .iter()
        .filter(|d| d.avg_wait_ms >= threshold_ms)
        .collect();
    if slow.is_empty() {
        f.add(
            Severity::Info,
            format!("No task waited {threshold_ms} ms or more per scheduling"),
            match delays.first() {
                Some(d) => format!(
                    "most run-queue wait in {window_s:.1} s: {} (tid {}) {:.1} ms over {} timeslice(s)",
                    d.comm, d.tid, d.wait_ms, d.timeslices
                ),
                None => format!("no run-queue wait recorded in {window_s:.1} s"),
            },
            "/proc/PID/task/TID/schedstat",
        );
    } else {
        f.add(
            Severity::Warning,
            format!("{} task(s) waited ≥ {threshold_ms} ms per scheduling for a CPU", slow.len()),
            slow.iter()
                .take(5)
                .map(|d| format!("{} (tid {}): {:.1} ms waiting over {} timeslice(s) = {:.1} ms each, {:.1} ms on CPU", d.comm, d.tid, d.wait_ms, d.timeslices, d.avg_wait_ms, d.run_ms))
                .collect::<Vec<_>>()
                .join("; "),
            "/proc/PID/task/TID/schedstat",
        );
        f.next(
            "local_loadtask",
            "runnable tasks queue for CPU; see who runs",
        );
    }
    let psi_cpu = psi::read(root, "cpu", &mut f);
    if let Some(p) = &psi_cpu {
        psi::judge_some(p, "cpu", "local_loadtask", &mut f);
    }
    (
        f,
        DelayFigures {
            window_s: round1(window_s),
            threshold_ms,
            tasks_sampled: b.len(),
            top_waiters: delays,
            psi_cpu,
        },
    )
}
