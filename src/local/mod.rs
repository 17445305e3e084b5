//! The local diagnosis engine: diagnoses the host the server runs on from kernel interfaces
//! (/proc, /sys, cgroup v2, PSI, the kernel log), with no cloud account. SysOM computes its
//! diagnoses on the target with sysak from the same interfaces; these tools do it in-process.
//!
//! Every tool is named `local_*` so it cannot be mistaken for one of the 21 cloud tools, is
//! read-only and closed-world, and answers the cloud envelope (`code`, `message`, `data`) with
//! findings, raw figures and next steps in `result`. Inputs that cannot be read become findings
//! that say what is missing; no tool fails as a whole because of one.

mod cgroup;
pub mod crash;
pub mod disk;
pub mod findings;
pub mod io;
pub mod load;
pub mod memory;
pub mod net;
pub mod oom;
mod psi;
pub mod root;
mod tasks;
pub mod triage;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use findings::{Finding, LocalResult, Severity};
pub use root::Root;

use crate::auth::Scope;
use crate::tools::{CallCtx, Effect, Services, ToolDef, tool};
use findings::{Findings, LocalSource};

pub const SUCCESS: &str = "Success";
pub const CANCELLED: &str = "Cancelled";

/// Bounds of the sampling windows, seconds. The upper bounds are those SysOM documents for the
/// same diagnoses (iofsstat ≤ 30, delay and netjitter ≤ 60; /work reference §5), so a local
/// call never outlasts the cloud one.
pub const IOFSSTAT_MAX_S: u64 = 30;
pub const SAMPLE_MAX_S: u64 = 60;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Wraps findings and figures in the envelope.
pub fn envelope<F: JsonSchema>(
    tool: &str,
    root: &Root,
    started: (u64, Instant),
    code: &str,
    findings: Findings,
    figures: F,
) -> LocalResult<F> {
    // An agent reads "no findings" as "the tool saw nothing"; say explicitly that the figures
    // were read and none crossed a threshold.
    let mut findings = findings;
    if code == SUCCESS && findings.is_empty() {
        findings.add(
            Severity::Info,
            "Nothing abnormal found",
            "No figure crossed a threshold in what could be read; `figures` has the numbers.",
            tool,
        );
    }
    let report = findings.into_report(figures);
    let message = if code == SUCCESS {
        report.summary.clone()
    } else {
        "Cancelled before the sampling window ended".to_string()
    };
    LocalResult {
        code: code.to_string(),
        message,
        data: LocalSource {
            tool: tool.to_string(),
            root: root.base().display().to_string(),
            hostname: root.first_line("/proc/sys/kernel/hostname"),
            kernel: root.first_line("/proc/sys/kernel/osrelease"),
            collected_at: started.0,
            elapsed_ms: started.1.elapsed().as_millis() as u64,
        },
        result: report,
    }
}

/// Runs a snapshot collector off the async threads (it does blocking file reads).
async fn snapshot<F, C>(tool: &'static str, root: Root, collect: C) -> LocalResult<F>
where
    F: JsonSchema + Send + 'static,
    C: FnOnce(&Root) -> (Findings, F) + Send + 'static,
{
    let started = (now_unix(), Instant::now());
    tokio::task::spawn_blocking(move || {
        let (f, figures) = collect(&root);
        envelope(tool, &root, started, SUCCESS, f, figures)
    })
    .await
    .expect("local collectors do not panic")
}

/// Waits out a sampling window in one-second steps, reporting progress; false when cancelled.
/// Nothing is held open meanwhile: the readings before and after are complete file reads.
pub async fn wait_window(ctx: &CallCtx, window: Duration, what: &str) -> bool {
    let started = Instant::now();
    let total = window.as_secs_f64();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= window {
            return true;
        }
        ctx.progress(
            elapsed.as_secs_f64().floor(),
            total,
            format!("{what}: {:.0} of {total:.0} s", elapsed.as_secs_f64()),
        )
        .await;
        let step = (window - elapsed).min(Duration::from_secs(1));
        tokio::select! {
            _ = ctx.cancel.cancelled() => return false,
            _ = tokio::time::sleep(step) => {}
        }
    }
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

/// A sampler: `first` reads, the window passes, `second` reads and judges.
async fn sampled<S, F>(
    tool: &'static str,
    mut root: Root,
    ctx: CallCtx,
    window: Duration,
    empty: F,
    first: impl FnOnce(&Root) -> S + Send + 'static,
    judge: impl FnOnce(&Root, S, f64) -> (Findings, F) + Send + 'static,
) -> LocalResult<F>
where
    S: Send + 'static,
    F: JsonSchema + Send + 'static,
{
    let started = (now_unix(), Instant::now());
    let r = root.clone();
    let (a, r) = blocking(move || (first(&r), r)).await.expect("no panic");
    let t0 = Instant::now();
    if !wait_window(&ctx, window, tool).await {
        return envelope(tool, &r, started, CANCELLED, Findings::default(), empty);
    }
    ctx.progress(
        window.as_secs_f64(),
        window.as_secs_f64(),
        format!("{tool}: reading"),
    )
    .await;
    root.advance();
    // On a recorded tree the window is the one asked for; live, the one measured.
    let elapsed = if root.is_live() {
        t0.elapsed().as_secs_f64()
    } else {
        window.as_secs_f64()
    };
    blocking(move || {
        let (f, figures) = judge(&root, a, elapsed);
        envelope(tool, &root, started, SUCCESS, f, figures)
    })
    .await
    .expect("local collectors do not panic")
}

fn window(duration: Option<u64>, default: u64, max: u64) -> Duration {
    Duration::from_secs(duration.unwrap_or(default).clamp(1, max))
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MemgraphParams {
    /// Read PSS (smaps_rollup) for the five largest processes whatever their size: the kernel
    /// walks their page tables, about 0.1 s per GiB resident. Default false: PSS only while
    /// their resident memory adds up to 64 MiB
    #[serde(default)]
    pss: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OomParams {
    /// Only OOM kills in this window: a Unix timestamp (kills since then) or `start~end`
    #[serde(default)]
    time: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DiskParams {
    /// Directory whose biggest entries to size (bounded walk, one file system); default: the
    /// fullest file system when one is at least 90 % used
    #[serde(default)]
    path: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IoParams {
    /// Sampling window in seconds (1–30, default 5; SysOM's iofsstat caps it at 30)
    #[serde(default)]
    duration: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IoDiagnoseParams {
    /// Sampling window in seconds (1–60, default 5)
    #[serde(default)]
    duration: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PacketDropParams {
    /// Sampling window in seconds (1–60, default 5)
    #[serde(default)]
    duration: Option<u64>,
    /// Sample the network namespace of this process (a container's or netns's) instead of the server's own
    #[serde(default)]
    pid: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NetJitterParams {
    /// Sampling window in seconds (1–60, default 5)
    #[serde(default)]
    duration: Option<u64>,
    /// RTT in ms that counts as slow (default 10, as SysOM's netjitter)
    #[serde(default)]
    threshold: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DelayParams {
    /// Sampling window in seconds (1–60, default 10)
    #[serde(default)]
    duration: Option<u64>,
    /// Average run-queue wait per scheduling, in ms, that counts as a delay (default 20, as SysOM's delay)
    #[serde(default)]
    threshold: Option<f64>,
}

fn root_of(s: &Services) -> Root {
    Root::new(s.local_root.clone())
}

const COMMON: &str = " Runs on this host, from kernel interfaces (no cloud account, no uid/region/instance); \
read-only. Answers code/message/data with result.findings (severity, title, detail with the numbers), \
result.figures (raw figures) and result.next_steps.";

/// A description with the common trailer. Tool declarations take `&'static str`, so each one
/// is leaked, but once per process: the table is built again for every server (the fuzz
/// targets build one per input), and the cache keeps that from growing.
fn desc(s: &'static str) -> &'static str {
    use std::{collections::HashMap, sync::Mutex};
    static DESCRIPTIONS: Mutex<Option<HashMap<&'static str, &'static str>>> = Mutex::new(None);
    let mut cache = DESCRIPTIONS.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .get_or_insert_with(HashMap::new)
        .entry(s)
        .or_insert_with(|| Box::leak(format!("{s}{COMMON}").into_boxed_str()))
}

/// The local tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        tool::<NoParams, LocalResult<triage::TriageFigures>, _, _>(
            "local_triage",
            desc(
                "Start here: looks at everything cheap on this host at once (memory, load, D-state tasks, PSI, file systems, OOM kills, kernel oopses and lockups, saved crash dumps) and says which local diagnosis to run next, and why.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, _p: NoParams, _ctx| {
                snapshot("local_triage", root_of(&s), triage::collect)
            },
        ),
        tool::<MemgraphParams, LocalResult<memory::MemoryFigures>, _, _>(
            "local_memgraph",
            desc(
                "Memory breakdown of this host (like SysOM memgraph): meminfo (anon, page cache, shmem/tmpfs, slab, hugepages), top processes by RSS (PSS for the small ones, all five with pss=true), memory.current/memory.stat per service and pod (cgroup v2, or a v1 memory controller), PSI memory; flags exhaustion, cgroups at their limit and unreclaimable growth.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: MemgraphParams, _ctx| {
                let all_pss = p.pss.unwrap_or(false);
                snapshot("local_memgraph", root_of(&s), move |r| {
                    memory::collect(r, all_pss)
                })
            },
        ),
        tool::<OomParams, LocalResult<oom::OomFigures>, _, _>(
            "local_oomcheck",
            desc(
                "OOM kills on this host (like SysOM oomcheck): from the kernel log, each kill with victim, pid, cgroup, constraint (host or cgroup limit), the allocating process and memory state at the time; plus per-cgroup oom_kill counters (v2 memory.events, v1 memory.oom_control). Optional `time` window.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: OomParams, _ctx| {
                let root = root_of(&s);
                async move {
                    let window = oom::Window::parse(p.time.as_deref()).unwrap_or_default();
                    snapshot("local_oomcheck", root, move |r| oom::collect(r, window)).await
                }
            },
        ),
        tool::<NoParams, LocalResult<load::LoadFigures>, _, _>(
            "local_loadtask",
            desc(
                "The load average of this host explained (like SysOM loadtask): runnable and D-state tasks with their wchan and kernel stack, CPU hogs, softirqs, PSI cpu and io; says whether load is CPU demand or tasks stuck in uninterruptible sleep.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, _p: NoParams, _ctx| {
                snapshot("local_loadtask", root_of(&s), load::collect)
            },
        ),
        tool::<DelayParams, LocalResult<load::DelayFigures>, _, _>(
            "local_delay",
            desc(
                "Scheduling delay on this host (like SysOM delay/nosched): samples every task's run-queue wait from schedstat over `duration` seconds and names the tasks that waited longest for a CPU; PSI cpu. Reports progress; cancellable.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: DelayParams, ctx| {
                let root = root_of(&s);
                let threshold = p.threshold.filter(|t| *t > 0.0).unwrap_or(20.0);
                sampled(
                    "local_delay",
                    root,
                    ctx,
                    window(p.duration, 10, SAMPLE_MAX_S),
                    load::DelayFigures {
                        window_s: 0.0,
                        threshold_ms: threshold,
                        tasks_sampled: 0,
                        top_waiters: Vec::new(),
                        psi_cpu: None,
                    },
                    load::sched_sample,
                    move |root, a, elapsed| {
                        let b = load::sched_sample(root);
                        load::judge_delay(root, &a, &b, elapsed, threshold)
                    },
                )
            },
        ),
        tool::<IoParams, LocalResult<io::IoFigures>, _, _>(
            "local_iofsstat",
            desc(
                "IO load of this host (like SysOM iofsstat) over `duration` seconds: per device IOPS, throughput, await and util from diskstats; per process bytes read and written (/proc/PID/io); per cgroup io.stat; names the top writer. Reports progress; cancellable.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: IoParams, ctx| {
                sampled(
                    "local_iofsstat",
                    root_of(&s),
                    ctx,
                    window(p.duration, 5, IOFSSTAT_MAX_S),
                    io::IoFigures {
                        window_s: 0.0,
                        devices: Vec::new(),
                        top_processes: Vec::new(),
                        top_cgroups: Vec::new(),
                    },
                    io::sample,
                    |root, a, elapsed| io::judge_iofsstat(root, &a, elapsed),
                )
            },
        ),
        tool::<IoDiagnoseParams, LocalResult<io::IoDiagnoseFigures>, _, _>(
            "local_iodiagnose",
            desc(
                "IO problems of this host (like SysOM iodiagnose) over `duration` seconds: await and util outliers per device, PSI io, tasks stuck in D state and where, block queue settings (scheduler, nr_requests, rotational, read-ahead). Reports progress; cancellable.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: IoDiagnoseParams, ctx| {
                sampled(
                    "local_iodiagnose",
                    root_of(&s),
                    ctx,
                    window(p.duration, 5, SAMPLE_MAX_S),
                    io::IoDiagnoseFigures {
                        io: io::IoFigures {
                            window_s: 0.0,
                            devices: Vec::new(),
                            top_processes: Vec::new(),
                            top_cgroups: Vec::new(),
                        },
                        psi_io: None,
                        uninterruptible: Vec::new(),
                        queues: Vec::new(),
                    },
                    io::sample,
                    |root, a, elapsed| io::judge_iodiagnose(root, &a, elapsed),
                )
            },
        ),
        tool::<PacketDropParams, LocalResult<net::PacketDropFigures>, _, _>(
            "local_packetdrop",
            desc(
                "Packet drops on this host (like SysOM packetdrop) over `duration` seconds: rises of the drop and error counters of /proc/net/snmp and netstat (each explained), softnet_stat backlog drops and time squeeze, per-interface rx/tx drops and errors. `pid` samples that process's network namespace. Reports progress; cancellable.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: PacketDropParams, ctx| {
                let pid = p.pid;
                sampled(
                    "local_packetdrop",
                    root_of(&s),
                    ctx,
                    window(p.duration, 5, SAMPLE_MAX_S),
                    net::PacketDropFigures {
                        window_s: 0.0,
                        netns_pid: pid,
                        rising: Vec::new(),
                        devices: Vec::new(),
                        softnet_dropped: 0,
                        softnet_time_squeeze: 0,
                    },
                    move |root| net::sample(root, pid),
                    move |root, a, elapsed| {
                        let b = net::sample(root, pid);
                        net::judge_drops(&a, &b, elapsed, pid)
                    },
                )
            },
        ),
        tool::<NetJitterParams, LocalResult<net::JitterFigures>, _, _>(
            "local_netjitter",
            desc(
                "Network latency of this host (like SysOM netjitter) over `duration` seconds: RTT, RTT variation and retransmissions of every established TCP socket (sock_diag), the retransmitted share of segments, softnet time squeeze and backlog drops. Reports progress; cancellable.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: NetJitterParams, ctx| {
                let threshold = p
                    .threshold
                    .filter(|t| *t > 0.0)
                    .unwrap_or(net::RTT_MS_DEFAULT_THRESHOLD);
                sampled(
                    "local_netjitter",
                    root_of(&s),
                    ctx,
                    window(p.duration, 5, SAMPLE_MAX_S),
                    net::JitterFigures {
                        window_s: 0.0,
                        threshold_ms: threshold,
                        sockets: 0,
                        slowest: Vec::new(),
                        most_retransmitting: Vec::new(),
                        retrans_pct: None,
                        softnet_time_squeeze: 0,
                        softnet_dropped: 0,
                    },
                    |root| net::sample(root, None),
                    move |root, a, elapsed| {
                        let b = net::sample(root, None);
                        net::judge_jitter(root, &a, &b, elapsed, threshold)
                    },
                )
            },
        ),
        tool::<DiskParams, LocalResult<disk::DiskFigures>, _, _>(
            "local_disk",
            desc(
                "File systems of this host: space and inodes per mount (full and nearly full flagged), deleted files still held open by processes, and the biggest entries under `path` (bounded walk within one file system).",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, p: DiskParams, _ctx| {
                let root = root_of(&s);
                snapshot("local_disk", root, move |r| {
                    disk::collect(r, p.path.as_deref())
                })
            },
        ),
        tool::<NoParams, LocalResult<crash::CrashFigures>, _, _>(
            "local_crash",
            desc(
                "Kernel crashes on this host: kdump readiness (crashkernel=, kexec_crash_loaded), saved dumps under /var/crash with the panic reason from their vmcore-dmesg, pstore records, and panics, oopses, soft/hard lockups, RCU stalls and hung tasks in the kernel log.",
            ),
            "local",
            Effect::LocalReadOnly,
            Scope::Diagnose,
            |s: Arc<Services>, _p: NoParams, _ctx| {
                snapshot("local_crash", root_of(&s), crash::collect)
            },
        ),
    ]
}

#[cfg(test)]
mod tests;
