//! Pressure stall information (/proc/pressure/*): the share of time tasks waited for a resource.

use procfs_core::get_pressure;
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    findings::{Findings, Severity, round1},
    root::Root,
};

/// systemd-oomd's default memory pressure limit (oomd.conf(5), DefaultMemoryPressureLimit=60%):
/// past it, systemd-oomd starts killing.
pub const MEMORY_FULL_CRITICAL_PCT: f64 = 60.0;
/// Some-pressure above this share of the last 10 s means tasks are visibly slowed (engine's
/// choice: the kernel's Documentation/accounting/psi.rst defines the figures but no threshold).
pub const SOME_WARNING_PCT: f64 = 10.0;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Psi {
    /// Share of time (%) at least one task was stalled, last 10 s / 60 s / 300 s.
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub some_avg300: f64,
    /// Share of time (%) all non-idle tasks were stalled (always 0 for cpu at host level).
    pub full_avg10: f64,
    pub full_avg60: f64,
    /// Total stall time, microseconds (some).
    pub some_total_us: u64,
}

/// Reads /proc/pressure/`resource`; a kernel without PSI is a finding, not an error.
pub fn read(root: &Root, resource: &str, f: &mut Findings) -> Option<Psi> {
    let path = format!("/proc/pressure/{resource}");
    let text = match root.read(&path) {
        Ok(t) => t,
        Err(e) => {
            f.unavailable(&format!("{resource} pressure (PSI)"), &e);
            return None;
        }
    };
    // cpu has no "full" line on kernels before 5.13; procfs-core wants both.
    let text = if text.contains("full") {
        text
    } else {
        format!("{text}full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    };
    let (some, full) = get_pressure(text.as_bytes()).ok()?;
    Some(Psi {
        some_avg10: round1(some.avg10 as f64),
        some_avg60: round1(some.avg60 as f64),
        some_avg300: round1(some.avg300 as f64),
        full_avg10: round1(full.avg10 as f64),
        full_avg60: round1(full.avg60 as f64),
        some_total_us: some.total,
    })
}

pub fn judge_memory(p: &Psi, f: &mut Findings) {
    if p.full_avg10 >= MEMORY_FULL_CRITICAL_PCT {
        f.add(
            Severity::Critical,
            format!("Memory thrashing: all tasks stalled {}% of the last 10 s", p.full_avg10),
            format!(
                "PSI memory full avg10 {} avg60 {} (systemd-oomd acts at {MEMORY_FULL_CRITICAL_PCT}%); some avg10 {}",
                p.full_avg10, p.full_avg60, p.some_avg10
            ),
            "/proc/pressure/memory",
        );
        f.next(
            "local_memgraph",
            "memory pressure is severe; find what holds the memory",
        );
    } else if p.some_avg10 >= SOME_WARNING_PCT {
        f.add(
            Severity::Warning,
            format!(
                "Memory pressure: tasks stalled on memory {}% of the last 10 s",
                p.some_avg10
            ),
            format!(
                "PSI memory some avg10 {} avg60 {} avg300 {}, full avg10 {}",
                p.some_avg10, p.some_avg60, p.some_avg300, p.full_avg10
            ),
            "/proc/pressure/memory",
        );
        f.next("local_memgraph", "tasks are waiting for memory");
    }
}

/// A some-pressure finding for cpu or io.
pub fn judge_some(p: &Psi, resource: &str, next_tool: &str, f: &mut Findings) {
    if p.some_avg10 >= SOME_WARNING_PCT {
        f.add(
            Severity::Warning,
            format!(
                "{resource} pressure: tasks stalled {}% of the last 10 s",
                p.some_avg10
            ),
            format!(
                "PSI {resource} some avg10 {} avg60 {} avg300 {}, full avg10 {}",
                p.some_avg10, p.some_avg60, p.some_avg300, p.full_avg10
            ),
            format!("/proc/pressure/{resource}"),
        );
        f.next(next_tool, format!("tasks are waiting for {resource}"));
    }
}
