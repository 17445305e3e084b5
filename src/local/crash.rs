//! local_crash: kdump readiness (crashkernel=, kexec_crash_loaded), saved dumps and their
//! vmcore-dmesg, pstore records, and panics, oopses, lockups and hung tasks in the kernel log.

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    findings::{Findings, Severity, human_bytes},
    root::{KmsgRecord, Root},
};

/// Where kdump tools save dumps: kexec-tools (RHEL family, Alibaba Cloud Linux) and
/// kdump-tools (Debian, Ubuntu) both default to /var/crash.
pub const CRASH_DIR: &str = "/var/crash";
pub const PSTORE_DIR: &str = "/sys/fs/pstore";
/// Lines of a saved kernel log kept around the panic.
const EXCERPT_LINES: usize = 12;

/// Kernel log texts that mark a kernel problem, with what each means (texts from the kernel's
/// panic(), die(), watchdog, hung-task and RCU stall reporters).
pub const KERNEL_PROBLEMS: &[(&str, &str, Severity)] = &[
    (
        "Kernel panic - not syncing",
        "kernel panic",
        Severity::Critical,
    ),
    (
        "BUG: soft lockup",
        "soft lockup: a CPU ran kernel code without scheduling for over 20 s",
        Severity::Critical,
    ),
    (
        "hard LOCKUP",
        "hard lockup: a CPU stopped taking interrupts",
        Severity::Critical,
    ),
    ("Oops:", "kernel oops", Severity::Critical),
    (
        "BUG: unable to handle",
        "kernel oops (bad memory access)",
        Severity::Critical,
    ),
    (
        "general protection fault",
        "general protection fault in the kernel",
        Severity::Critical,
    ),
    ("self-detected stall", "RCU stall", Severity::Warning),
    ("rcu_sched detected stalls", "RCU stall", Severity::Warning),
    (
        "blocked for more than",
        "hung task: a task was stuck in D state for over hung_task_timeout_secs",
        Severity::Warning,
    ),
    (
        "Machine check events logged",
        "machine check (hardware error)",
        Severity::Warning,
    ),
    (
        "Hardware Error",
        "hardware error reported by firmware",
        Severity::Warning,
    ),
    (
        "WARNING: CPU:",
        "kernel warning (WARN_ON)",
        Severity::Warning,
    ),
];

#[derive(Debug, Serialize, JsonSchema)]
pub struct CrashFigures {
    /// crashkernel= from the kernel command line; null when no memory is reserved for kdump.
    pub crashkernel: Option<String>,
    /// /sys/kernel/kexec_crash_loaded: a capture kernel is loaded and a panic will be dumped.
    pub kexec_crash_loaded: Option<bool>,
    /// Memory reserved for the capture kernel, bytes.
    pub kexec_crash_size: Option<u64>,
    pub saved_dumps: Vec<SavedDump>,
    pub pstore_records: Vec<String>,
    /// Kernel problems in the current kernel log.
    pub kernel_log_problems: Vec<LogProblem>,
    /// /proc/sys/kernel/tainted (0 = untainted).
    pub tainted: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SavedDump {
    pub directory: String,
    /// Files in it and their sizes.
    pub files: Vec<DumpFile>,
    /// The panic reason read from its vmcore-dmesg, and lines around it.
    pub panic: Option<String>,
    pub excerpt: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DumpFile {
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogProblem {
    pub kind: String,
    pub uptime_s: f64,
    pub message: String,
}

/// Kernel problems in kernel log records.
pub fn log_problems(records: &[KmsgRecord]) -> Vec<(LogProblem, Severity)> {
    records
        .iter()
        .filter_map(|r| {
            let (_, kind, sev) = KERNEL_PROBLEMS
                .iter()
                .find(|(pat, _, _)| r.message.contains(pat))?;
            Some((
                LogProblem {
                    kind: kind.to_string(),
                    uptime_s: r.usec as f64 / 1e6,
                    message: r.message.clone(),
                },
                *sev,
            ))
        })
        .collect()
}

fn is_dmesg_file(name: &str) -> bool {
    name.starts_with("vmcore-dmesg") || name.starts_with("dmesg")
}

/// Finds the panic reason and the lines around it in a saved kernel log.
fn panic_excerpt(text: &str) -> (Option<String>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let idx = lines.iter().position(|l| {
        KERNEL_PROBLEMS[..6]
            .iter()
            .any(|(pat, _, _)| l.contains(pat))
    });
    let Some(idx) = idx else {
        return (None, Vec::new());
    };
    let start = idx.saturating_sub(2);
    let end = (idx + EXCERPT_LINES).min(lines.len());
    let reason = lines[idx].trim();
    // "[ 12.3] Kernel panic - not syncing: ..." → from the marker on.
    let reason = reason.find("] ").map_or(reason, |i| &reason[i + 2..]);
    (
        Some(reason.to_string()),
        lines[start..end].iter().map(|l| l.to_string()).collect(),
    )
}

fn saved_dumps(root: &Root) -> Vec<SavedDump> {
    let Ok(dirs) = root.list(CRASH_DIR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in dirs {
        let dir = format!("{CRASH_DIR}/{d}");
        let Ok(names) = root.list(&dir) else { continue };
        let files: Vec<DumpFile> = names
            .iter()
            .map(|n| DumpFile {
                name: n.clone(),
                bytes: std::fs::metadata(root.path(&format!("{dir}/{n}")))
                    .map(|m| m.len())
                    .unwrap_or(0),
            })
            .collect();
        let (panic, excerpt) = names
            .iter()
            .find(|n| is_dmesg_file(n))
            .and_then(|n| std::fs::read(root.path(&format!("{dir}/{n}"))).ok())
            .map(|b| panic_excerpt(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        out.push(SavedDump {
            directory: dir,
            files,
            panic,
            excerpt,
        });
    }
    out
}

pub fn collect(root: &Root) -> (Findings, CrashFigures) {
    let mut f = Findings::default();
    let cmdline = root.read("/proc/cmdline").unwrap_or_default();
    let crashkernel = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("crashkernel="))
        .map(str::to_string);
    let loaded = root
        .read_u64("/sys/kernel/kexec_crash_loaded")
        .map(|v| v == 1);
    let size = root.read_u64("/sys/kernel/kexec_crash_size");
    match (&crashkernel, loaded) {
        (Some(ck), Some(true)) => f.add(
            Severity::Info,
            "kdump is ready",
            format!(
                "crashkernel={ck} reserves {}, and a capture kernel is loaded: a panic will be saved under {CRASH_DIR}",
                size.map(human_bytes).unwrap_or_else(|| "?".into())
            ),
            "/sys/kernel/kexec_crash_loaded",
        ),
        (Some(ck), _) => f.add(
            Severity::Warning,
            "kdump memory is reserved but no capture kernel is loaded",
            format!("crashkernel={ck} is set, but kexec_crash_loaded is not 1: start the kdump service (kdump or kdump-tools) so panics are saved"),
            "/sys/kernel/kexec_crash_loaded",
        ),
        (None, _) => f.add(
            Severity::Warning,
            "kdump is not set up: a kernel panic would leave no dump",
            "no crashkernel= on the kernel command line; add crashkernel=auto (RHEL family) or crashkernel=512M, install kexec-tools / kdump-tools, and reboot",
            "/proc/cmdline",
        ),
    }
    let dumps = saved_dumps(root);
    for d in &dumps {
        f.add(
            Severity::Critical,
            format!("Saved crash dump in {}", d.directory),
            match &d.panic {
                Some(p) => format!("the kernel crashed: {p}"),
                None => format!(
                    "{} file(s) ({}); no panic line found in a dmesg file",
                    d.files.len(),
                    d.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            d.directory.clone(),
        );
    }
    let pstore = root.list(PSTORE_DIR).unwrap_or_default();
    if !pstore.is_empty() {
        f.add(
            Severity::Warning,
            format!("{} pstore record(s) from an earlier crash", pstore.len()),
            format!("{}: the kernel log of a previous panic or oops kept by firmware; read and remove them", pstore.join(", ")),
            PSTORE_DIR,
        );
    }
    let problems = match root.kernel_log() {
        Ok(records) => log_problems(&records),
        Err(e) => {
            f.unavailable("The kernel log (panics, oopses, lockups)", &e);
            Vec::new()
        }
    };
    let mut shown = std::collections::BTreeSet::new();
    for (p, sev) in &problems {
        if shown.insert(p.kind.clone()) {
            let n = problems.iter().filter(|(q, _)| q.kind == p.kind).count();
            f.add(
                *sev,
                format!("{} in the kernel log ({n}×)", p.kind),
                format!("latest at {:.0} s after boot: {}", p.uptime_s, p.message),
                "/dev/kmsg",
            );
        }
    }
    let tainted = root.read_u64("/proc/sys/kernel/tainted");
    (
        f,
        CrashFigures {
            crashkernel,
            kexec_crash_loaded: loaded,
            kexec_crash_size: size,
            saved_dumps: dumps,
            pstore_records: pstore,
            kernel_log_problems: problems.into_iter().map(|(p, _)| p).take(50).collect(),
            tainted,
        },
    )
}
