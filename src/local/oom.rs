//! local_oomcheck: OOM kills from the kernel log (victim, cgroup, constraint, memory state at
//! the time) and the per-cgroup OOM counters (v2 memory.events, v1 memory.oom_control).

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    cgroup,
    findings::{Findings, Severity, human_bytes},
    root::{KmsgRecord, Root},
};

/// OOM events listed in full; older ones are only counted.
const MAX_EVENTS: usize = 20;

#[derive(Debug, Serialize, JsonSchema)]
pub struct OomFigures {
    /// Kills found in the kernel log (newest last), within the `time` window if given.
    pub events: Vec<OomEvent>,
    /// Kills in the log before the listed ones.
    pub older_events: usize,
    /// Host total since boot (/proc/vmstat oom_kill); counts kills even after the log rotated.
    pub oom_kills_since_boot: Option<u64>,
    /// cgroups whose counters (v2 memory.events, v1 memory.oom_control) count OOM kills.
    pub cgroups: Vec<CgroupOom>,
    /// Whether the kernel log could be read.
    pub kernel_log_read: bool,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct OomEvent {
    /// Unix time (seconds) from the record's boot-relative timestamp; null when boot time is unknown.
    pub time: Option<u64>,
    /// Seconds since boot.
    pub uptime_s: f64,
    /// The killed process.
    pub victim: Option<String>,
    pub pid: Option<i32>,
    /// The cgroup the victim ran in (task_memcg).
    pub cgroup: Option<String>,
    /// The cgroup whose limit was hit (oom_memcg); null for a host-wide OOM.
    pub oom_cgroup: Option<String>,
    /// CONSTRAINT_NONE (host memory), CONSTRAINT_MEMCG (a cgroup limit), CONSTRAINT_CPUSET or
    /// CONSTRAINT_MEMORY_POLICY.
    pub constraint: Option<String>,
    /// The process whose allocation invoked the OOM killer.
    pub trigger: Option<String>,
    pub gfp_mask: Option<String>,
    pub order: Option<u32>,
    /// Victim's anonymous RSS at the kill, bytes.
    pub anon_rss: Option<u64>,
    pub total_vm: Option<u64>,
    /// cgroup usage and limit at the time (memory: usage ..kB, limit ..kB), bytes.
    pub cgroup_usage: Option<u64>,
    pub cgroup_limit: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CgroupOom {
    pub path: String,
    pub oom: u64,
    pub oom_kill: u64,
    /// Current memory.current and memory.max, bytes.
    pub current: Option<u64>,
    pub max: Option<u64>,
}

/// A time window parsed from `time`: a Unix timestamp (events since then) or `start~end`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

impl Window {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::default());
        };
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`time` must be a Unix timestamp or start~end, got {s:?}"))
        };
        match s.split_once('~') {
            Some((a, b)) => Ok(Self {
                start: Some(num(a)?),
                end: Some(num(b)?),
            }),
            None => Ok(Self {
                start: Some(num(s)?),
                end: None,
            }),
        }
    }

    fn contains(&self, t: Option<u64>) -> bool {
        match t {
            None => self.start.is_none() && self.end.is_none(),
            Some(t) => self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t <= e),
        }
    }
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse::<u64>().ok().map(|v| v * 1024)
}

fn kv<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(',')
        .find_map(|part| part.trim().strip_prefix(key)?.strip_prefix('='))
}

/// Assembles OOM events from kernel log records. The kernel prints, in order: "<comm> invoked
/// oom-killer: gfp_mask=…, order=…", the memory state ("memory: usage …kB, limit …kB" for a
/// cgroup), "oom-kill:constraint=…,oom_memcg=…,task_memcg=…,task=…,pid=…" and "… Killed process
/// PID (comm) total-vm:…kB, anon-rss:…kB …". A kill line closes the event.
pub fn parse_events(records: &[KmsgRecord], boot_time: Option<u64>) -> Vec<OomEvent> {
    let mut events = Vec::new();
    let mut cur = OomEvent::default();
    let mut open = false;
    for r in records {
        let m = r.message.as_str();
        if let Some(idx) = m.find(" invoked oom-killer:") {
            cur = OomEvent {
                trigger: Some(m[..idx].trim().to_string()),
                gfp_mask: m
                    .split("gfp_mask=")
                    .nth(1)
                    .map(|v| v.split([',', '(']).next().unwrap_or("").to_string()),
                order: m
                    .split("order=")
                    .nth(1)
                    .and_then(|v| v.split(',').next()?.trim().parse().ok()),
                ..OomEvent::default()
            };
            open = true;
        } else if let Some(rest) = m.strip_prefix("memory: usage ") {
            cur.cgroup_usage = kib_field(rest, "");
            cur.cgroup_limit = kib_field(rest, "limit ");
            open = true;
        } else if let Some(rest) = m.strip_prefix("oom-kill:") {
            cur.constraint = kv(rest, "constraint").map(str::to_string);
            cur.oom_cgroup = kv(rest, "oom_memcg").map(str::to_string);
            cur.cgroup = kv(rest, "task_memcg").map(str::to_string);
            cur.victim = kv(rest, "task").map(str::to_string);
            cur.pid = kv(rest, "pid").and_then(|p| p.parse().ok());
            open = true;
        } else if let Some(idx) = m.find("Killed process ") {
            let rest = &m[idx + "Killed process ".len()..];
            if let Some((pid, after)) = rest.split_once(' ') {
                cur.pid = cur.pid.or(pid.parse().ok());
                if let Some(name) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
                    cur.victim.get_or_insert_with(|| name.0.to_string());
                }
            }
            cur.anon_rss = kib_field(rest, "anon-rss:");
            cur.total_vm = kib_field(rest, "total-vm:");
            cur.uptime_s = r.usec as f64 / 1e6;
            cur.time = boot_time.map(|b| b + r.usec / 1_000_000);
            events.push(std::mem::take(&mut cur));
            open = false;
        }
    }
    let _ = open;
    events
}

pub fn collect(root: &Root, window: Window) -> (Findings, OomFigures) {
    let mut f = Findings::default();
    let boot = root.boot_time();
    let (all, log_read) = match root.kernel_log() {
        Ok(records) => (parse_events(&records, boot), true),
        Err(e) => {
            f.unavailable("The kernel log (OOM kill records)", &e);
            (Vec::new(), false)
        }
    };
    let mut events: Vec<OomEvent> = all
        .into_iter()
        .filter(|e| window.contains(e.time))
        .collect();
    let older = events.len().saturating_sub(MAX_EVENTS);
    events.drain(..older);

    let since_boot: Option<u64> = root.read("/proc/vmstat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    });

    let mut cgroups = Vec::new();
    let hierarchy = cgroup::Memory::detect(root).ok();
    if let Some(hierarchy) = hierarchy {
        for cg in hierarchy.walk(root) {
            let Some(m) = hierarchy.read(root, &cg).filter(|m| m.oom_kill > 0) else {
                continue;
            };
            cgroups.push(CgroupOom {
                oom: m.oom,
                oom_kill: m.oom_kill,
                current: Some(m.current),
                max: m.max,
                path: cg,
            });
        }
        // memory.events counts kills in the subtree too: the deepest cgroups say where they were.
        let paths: Vec<String> = cgroups.iter().map(|c| c.path.clone()).collect();
        cgroups.retain(|c| {
            !paths.iter().any(|p| {
                p != &c.path && p.starts_with(&format!("{}/", c.path.trim_end_matches('/')))
            })
        });
    }

    for e in &events {
        let victim = e.victim.as_deref().unwrap_or("?");
        let scope = match e.constraint.as_deref() {
            Some("CONSTRAINT_MEMCG") => format!(
                "the memory limit of cgroup {}",
                e.oom_cgroup.as_deref().unwrap_or("?")
            ),
            Some("CONSTRAINT_NONE") | None => "host memory running out".to_string(),
            Some(other) => other.to_string(),
        };
        let mut detail = format!(
            "{victim} (pid {}) in cgroup {} was killed because of {scope}",
            e.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            e.cgroup.as_deref().unwrap_or("?"),
        );
        if let Some(rss) = e.anon_rss {
            detail.push_str(&format!("; its anon RSS was {}", human_bytes(rss)));
        }
        if let (Some(u), Some(l)) = (e.cgroup_usage, e.cgroup_limit) {
            detail.push_str(&format!(
                "; cgroup usage {} of limit {}",
                human_bytes(u),
                human_bytes(l)
            ));
        }
        if let Some(t) = &e.trigger {
            detail.push_str(&format!("; the allocation of {t} invoked the killer"));
        }
        f.add(
            Severity::Critical,
            format!("OOM kill: {victim} at {:.0} s after boot", e.uptime_s),
            detail,
            "/dev/kmsg",
        );
    }
    for c in &cgroups {
        if events
            .iter()
            .any(|e| e.cgroup.as_deref() == Some(c.path.as_str()))
        {
            continue;
        }
        f.add(
            Severity::Warning,
            format!("cgroup {} has had {} OOM kill(s)", c.path, c.oom_kill),
            format!(
                "oom {} oom_kill {}; usage {}, limit {} (the kernel log no longer holds the records)",
                c.oom,
                c.oom_kill,
                c.current.map(human_bytes).unwrap_or_else(|| "?".into()),
                c.max.map(human_bytes).unwrap_or_else(|| "unlimited".into())
            ),
            hierarchy.map_or_else(String::new, |h| h.events_file(&c.path)),
        );
    }
    if events.is_empty() && cgroups.is_empty() {
        f.add(
            Severity::Info,
            "No OOM kill found",
            format!(
                "{} OOM kill(s) since boot per /proc/vmstat; none in the kernel log{}",
                since_boot
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into()),
                if window.start.is_some() {
                    " within the window"
                } else {
                    ""
                }
            ),
            "/dev/kmsg",
        );
    } else {
        f.next(
            "local_memgraph",
            "see what holds memory now in the cgroups that were OOM-killed",
        );
    }
    (
        f,
        OomFigures {
            events,
            older_events: older,
            oom_kills_since_boot: since_boot,
            cgroups,
            kernel_log_read: log_read,
        },
    )
}
