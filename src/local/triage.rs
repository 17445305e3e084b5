//! local_triage: everything cheap at once (memory, load, D-state tasks, PSI, file systems, OOM
//! kills, kernel problems, saved dumps), and which diagnosis to run next and why.

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    crash, disk,
    findings::{Findings, Severity, percent, round1},
    load, memory, oom,
    psi::{self, Psi},
    root::Root,
    tasks,
};

#[derive(Debug, Serialize, JsonSchema)]
pub struct TriageFigures {
    pub mem_total: Option<u64>,
    pub mem_available: Option<u64>,
    pub mem_available_pct: Option<f64>,
    pub load1: Option<f64>,
    pub cpus: Option<usize>,
    pub running: usize,
    pub uninterruptible: usize,
    pub psi_cpu: Option<Psi>,
    pub psi_memory: Option<Psi>,
    pub psi_io: Option<Psi>,
    pub filesystems: Vec<disk::FsUse>,
    pub oom_kills_in_log: Option<usize>,
    pub oom_kills_since_boot: Option<u64>,
    pub kernel_problems_in_log: Option<usize>,
    pub saved_dumps: usize,
}

pub fn collect(root: &Root) -> (Findings, TriageFigures) {
    let mut f = Findings::default();
    let mem = memory::meminfo(root, &mut f);
    if let Some(m) = &mem {
        memory::judge_meminfo(m, &mut f);
    }
    let la = load::loadavg(root, &mut f);
    let cpus = tasks::cpu_count(root);
    let all = tasks::scan(root).unwrap_or_default();
    let running = all.iter().filter(|t| t.state == 'R').count();
    let dstate: Vec<_> = all.iter().filter(|t| t.state == 'D').collect();
    if let (Some(l), Some(n)) = (&la, cpus) {
        let per_cpu = l.one as f64 / n as f64;
        if per_cpu > load::LOAD_PER_CPU_HIGH {
            f.add(
                Severity::Warning,
                format!("Load {:.2} exceeds the {n} CPU(s)", l.one),
                format!(
                    "{per_cpu:.2} per CPU; {running} runnable and {} D-state task(s) now",
                    dstate.len()
                ),
                "/proc/loadavg",
            );
            f.next(
                "local_loadtask",
                "the load average is above the CPU count; see what makes it",
            );
        } else {
            f.add(
                Severity::Info,
                format!("Load {:.2} on {n} CPU(s)", l.one),
                format!(
                    "{running} runnable and {} D-state task(s) now",
                    dstate.len()
                ),
                "/proc/loadavg",
            );
        }
    }
    if !dstate.is_empty() {
        f.add(
            Severity::Warning,
            format!("{} task(s) in uninterruptible sleep (D)", dstate.len()),
            dstate
                .iter()
                .take(5)
                .map(|t| format!("{} (pid {})", t.comm, t.pid))
                .collect::<Vec<_>>()
                .join(", "),
            "/proc/PID/task/TID/stat",
        );
        f.next(
            "local_loadtask",
            "D-state tasks: see where they wait (wchan, kernel stack)",
        );
        f.next(
            "local_iodiagnose",
            "D-state tasks usually wait for a slow device",
        );
    }
    let psi_cpu = psi::read(root, "cpu", &mut f);
    let psi_memory = psi::read(root, "memory", &mut Findings::default());
    let psi_io = psi::read(root, "io", &mut Findings::default());
    if let Some(p) = &psi_cpu {
        psi::judge_some(p, "cpu", "local_delay", &mut f);
    }
    if let Some(p) = &psi_memory {
        psi::judge_memory(p, &mut f);
    }
    if let Some(p) = &psi_io {
        psi::judge_some(p, "io", "local_iofsstat", &mut f);
    }
    let filesystems = disk::filesystems(root, &mut f);
    if filesystems.iter().any(|fs| {
        fs.used_pct >= disk::FS_USED_WARNING_PCT
            || fs.inodes_used_pct >= disk::INODES_USED_WARNING_PCT
    }) {
        f.next(
            "local_disk",
            "a file system is (nearly) full; find what fills it",
        );
    }
    if let Some(m) = &mem
        && percent(m.available, m.total) < memory::MEM_AVAILABLE_LOW_PCT
    {
        f.next(
            "local_memgraph",
            "memory is nearly exhausted; see what holds it",
        );
    }
    let since_boot: Option<u64> = root.read("/proc/vmstat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    });
    let (oom_in_log, problems_in_log) = match root.kernel_log() {
        Ok(records) => {
            let ooms = oom::parse_events(&records, root.boot_time());
            if let Some(last) = ooms.last() {
                f.add(
                    Severity::Critical,
                    format!("{} OOM kill(s) in the kernel log", ooms.len()),
                    format!(
                        "latest: {} (pid {}) in cgroup {}",
                        last.victim.as_deref().unwrap_or("?"),
                        last.pid
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "?".into()),
                        last.cgroup.as_deref().unwrap_or("?")
                    ),
                    "/dev/kmsg",
                );
                f.next(
                    "local_oomcheck",
                    "processes were OOM-killed; see victims, cgroups and limits",
                );
            }
            let problems = crash::log_problems(&records);
            if let Some((p, sev)) = problems.iter().max_by_key(|(_, s)| *s) {
                f.add(
                    *sev,
                    format!("{} kernel problem record(s) in the log", problems.len()),
                    format!("worst: {} — {}", p.kind, p.message),
                    "/dev/kmsg",
                );
                f.next(
                    "local_crash",
                    "the kernel log holds oopses, lockups or hung tasks",
                );
            }
            (Some(ooms.len()), Some(problems.len()))
        }
        Err(e) => {
            f.unavailable("The kernel log", &e);
            if since_boot.unwrap_or(0) > 0 {
                f.add(
                    Severity::Warning,
                    format!("{} OOM kill(s) since boot", since_boot.unwrap_or(0)),
                    "/proc/vmstat oom_kill counts them; the kernel log with the details is not readable",
                    "/proc/vmstat",
                );
                f.next("local_oomcheck", "processes were OOM-killed since boot");
            }
            (None, None)
        }
    };
    let saved = root.list(crash::CRASH_DIR).map(|d| d.len()).unwrap_or(0);
    if saved > 0 {
        f.add(
            Severity::Warning,
            format!("{saved} saved crash dump(s) in {}", crash::CRASH_DIR),
            "the kernel crashed before; local_crash reads the panic reason from vmcore-dmesg",
            crash::CRASH_DIR,
        );
        f.next("local_crash", "saved crash dumps exist");
    }
    if f.worst().is_none_or(|w| w < Severity::Warning) {
        f.next(
            "local_packetdrop",
            "nothing stands out in memory, CPU, IO or disks; if the complaint is network, sample drop counters",
        );
    }
    (
        f,
        TriageFigures {
            mem_total: mem.as_ref().map(|m| m.total),
            mem_available: mem.as_ref().map(|m| m.available),
            mem_available_pct: mem.as_ref().map(|m| round1(percent(m.available, m.total))),
            load1: la.as_ref().map(|l| load::round2(l.one)),
            cpus,
            running,
            uninterruptible: dstate.len(),
            psi_cpu,
            psi_memory,
            psi_io,
            filesystems,
            oom_kills_in_log: oom_in_log,
            oom_kills_since_boot: since_boot,
            kernel_problems_in_log: problems_in_log,
            saved_dumps: saved,
        },
    )
}
