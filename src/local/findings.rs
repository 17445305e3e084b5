//! What every local tool answers: findings an agent can act on, the raw figures behind them and
//! the diagnosis to run next, inside the same `code` / `message` / `data` envelope as the cloud
//! tools.

use schemars::JsonSchema;
use serde::Serialize;

use super::root::Unreadable;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A figure worth knowing; nothing is wrong.
    Info,
    /// An input could not be read, so part of the diagnosis is missing.
    Unavailable,
    /// Something is degrading or will fail if it goes on.
    Warning,
    /// Something is failing now.
    Critical,
}

/// One conclusion, with the numbers that support it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    /// One line: what is wrong (or what is fine).
    pub title: String,
    /// The numbers behind the title and what they mean.
    pub detail: String,
    /// The kernel interface the numbers come from, e.g. /proc/meminfo.
    pub source: String,
}

/// A diagnosis worth running next, and why.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NextStep {
    /// A tool of this server, e.g. local_oomcheck.
    pub tool: String,
    pub why: String,
}

/// The `result` of a local tool: findings first (worst first), then the raw figures.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Report<F: JsonSchema> {
    /// One sentence: the worst finding, or that nothing abnormal was found.
    pub summary: String,
    pub findings: Vec<Finding>,
    /// The figures the findings were computed from.
    pub figures: F,
    pub next_steps: Vec<NextStep>,
}

/// Where the figures come from.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LocalSource {
    /// The local tool that answered.
    pub tool: String,
    /// The directory the kernel interfaces were read under (`/` on a live host).
    pub root: String,
    /// Host name as the kernel reports it (/proc/sys/kernel/hostname).
    pub hostname: String,
    /// Kernel release (/proc/sys/kernel/osrelease).
    pub kernel: String,
    /// Unix time (seconds) the collection started.
    pub collected_at: u64,
    /// Wall time the collection took, milliseconds.
    pub elapsed_ms: u64,
}

/// The envelope of every local tool: the cloud tools' `code` / `message` / `data`, with the
/// diagnosis in `result` as in the cloud diagnosis envelope.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(description = "Local diagnosis result envelope")]
pub struct LocalResult<F: JsonSchema> {
    /// Success, or Cancelled when the call was cancelled before the sampling window ended
    pub code: String,
    pub message: String,
    pub data: LocalSource,
    pub result: Report<F>,
}

/// Collects findings and next steps while a tool runs.
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<Finding>,
    next: Vec<NextStep>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn add(
        &mut self,
        severity: Severity,
        title: impl Into<String>,
        detail: impl Into<String>,
        source: impl Into<String>,
    ) {
        self.items.push(Finding {
            severity,
            title: title.into(),
            detail: detail.into(),
            source: source.into(),
        });
    }

    /// An input that could not be read: says what is missing and how to make it readable.
    pub fn unavailable(&mut self, what: &str, err: &Unreadable) {
        self.items.push(Finding {
            severity: Severity::Unavailable,
            title: format!("{what} could not be read"),
            detail: format!("{err}. {}", err.remedy()),
            source: err.path.clone(),
        });
    }

    /// Suggests `tool`; a tool suggested twice keeps its first reason.
    pub fn next(&mut self, tool: &str, why: impl Into<String>) {
        if !self.next.iter().any(|n| n.tool == tool) {
            self.next.push(NextStep {
                tool: tool.into(),
                why: why.into(),
            });
        }
    }

    pub fn worst(&self) -> Option<Severity> {
        self.items.iter().map(|f| f.severity).max()
    }

    pub fn titles(&self) -> impl Iterator<Item = &Finding> {
        self.items.iter()
    }

    /// The report: findings sorted worst first (stable, so the order within a severity is the
    /// order they were found in).
    pub fn into_report<F: JsonSchema>(mut self, figures: F) -> Report<F> {
        self.items.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let summary = match self.items.first() {
            Some(f) if f.severity >= Severity::Warning => format!(
                "{} problem(s) found; the worst: {}",
                self.items
                    .iter()
                    .filter(|f| f.severity >= Severity::Warning)
                    .count(),
                f.title
            ),
            _ => "Nothing abnormal found in what could be read.".to_string(),
        };
        Report {
            summary,
            findings: self.items,
            figures,
            next_steps: self.next,
        }
    }
}

/// Bytes as a short human figure (binary units), for finding texts.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Rounds to one decimal, so figures read cleanly in JSON.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
