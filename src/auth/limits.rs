//! Per-principal limits: tool calls per minute and concurrent diagnoses.
//!
//! The HTTP layer asks [`Limits::peek`] before handing a `tools/call` on, so that a refusal is
//! an HTTP 429 with `Retry-After`; the tool layer then records the call with [`Limits::admit`]
//! and holds a diagnosis slot for as long as the diagnosis runs (two calls racing past the
//! peek are refused there, as a JSON-RPC error). Hand-written because the crates for this
//! (governor) rate-limit but do not count concurrent work, and the window here is tiny.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// What a client at its diagnosis limit is told to wait: diagnoses take tens of seconds.
const DIAGNOSIS_RETRY: Duration = Duration::from_secs(10);

/// Why a call was refused, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CallsPerMinute { retry_after: Duration },
    ConcurrentDiagnoses { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Self::CallsPerMinute { retry_after } | Self::ConcurrentDiagnoses { retry_after } => {
                retry_after
            }
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::CallsPerMinute { retry_after } => format!(
                "too many tool calls per minute for this principal; retry in {}s",
                retry_after.as_secs().max(1)
            ),
            Self::ConcurrentDiagnoses { .. } => {
                "this principal already runs its maximum of concurrent diagnoses; retry when one finishes".into()
            }
        }
    }
}

#[derive(Default)]
struct Usage {
    recent: VecDeque<Instant>,
    running: usize,
}

/// The counters, shared by every session. Limits of 0 mean unlimited.
#[derive(Default)]
pub struct Limits {
    per_minute: AtomicUsize,
    diagnoses: AtomicUsize,
    usage: Mutex<HashMap<String, Usage>>,
}

impl Limits {
    pub fn new(per_minute: usize, diagnoses: usize) -> Arc<Self> {
        let l = Arc::new(Self::default());
        l.set(per_minute, diagnoses);
        l
    }

    /// New limits (SIGHUP); counts so far are kept.
    pub fn set(&self, per_minute: usize, diagnoses: usize) {
        self.per_minute.store(per_minute, Ordering::Relaxed);
        self.diagnoses.store(diagnoses, Ordering::Relaxed);
    }

    fn check(&self, usage: &mut Usage, diagnosis: bool, now: Instant) -> Result<(), Refusal> {
        while usage
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            usage.recent.pop_front();
        }
        let per_minute = self.per_minute.load(Ordering::Relaxed);
        if per_minute > 0 && usage.recent.len() >= per_minute {
            let oldest = *usage.recent.front().expect("non-empty at the limit");
            let retry_after = WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(Refusal::CallsPerMinute {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        let diagnoses = self.diagnoses.load(Ordering::Relaxed);
        if diagnosis && diagnoses > 0 && usage.running >= diagnoses {
            return Err(Refusal::ConcurrentDiagnoses {
                retry_after: DIAGNOSIS_RETRY,
            });
        }
        Ok(())
    }

    /// Whether a call would be admitted now, without counting it.
    pub fn peek(&self, principal: &str, diagnosis: bool) -> Result<(), Refusal> {
        let mut map = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(principal) {
            Some(usage) => self.check(usage, diagnosis, Instant::now()),
            None => Ok(()),
        }
    }

    /// Counts a call; a diagnosis also takes a slot until the returned guard drops.
    pub fn admit(
        self: &Arc<Self>,
        principal: &str,
        diagnosis: bool,
    ) -> Result<Option<DiagnosisSlot>, Refusal> {
        let now = Instant::now();
        let mut map = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 4096 {
            // Forget idle principals so the map is bounded by the active ones.
            map.retain(|_, u| u.running > 0 || !u.recent.is_empty());
        }
        let usage = map.entry(principal.to_string()).or_default();
        self.check(usage, diagnosis, now)?;
        usage.recent.push_back(now);
        if !diagnosis {
            return Ok(None);
        }
        usage.running += 1;
        Ok(Some(DiagnosisSlot {
            limits: self.clone(),
            principal: principal.to_string(),
        }))
    }
}

/// A running diagnosis; frees its slot on drop.
pub struct DiagnosisSlot {
    limits: Arc<Limits>,
    principal: String,
}

impl Drop for DiagnosisSlot {
    fn drop(&mut self) {
        let mut map = self.limits.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = map.get_mut(&self.principal) {
            u.running = u.running.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_per_minute_are_counted_per_principal() {
        let l = Limits::new(2, 0);
        assert!(l.admit("a", false).is_ok());
        assert!(l.peek("a", false).is_ok());
        assert!(l.admit("a", false).is_ok());
        let r = l.peek("a", false).unwrap_err();
        assert!(matches!(r, Refusal::CallsPerMinute { .. }));
        assert!(r.retry_after() >= Duration::from_secs(1) && r.retry_after() <= WINDOW);
        assert!(matches!(
            l.admit("a", false),
            Err(Refusal::CallsPerMinute { .. })
        ));
        assert!(
            l.admit("b", false).is_ok(),
            "another principal has its own budget"
        );
        l.set(0, 0);
        assert!(l.admit("a", false).is_ok(), "0 is unlimited");
    }

    #[test]
    fn diagnosis_slots_are_held_until_dropped() {
        let l = Limits::new(0, 1);
        let slot = l.admit("a", true).unwrap();
        assert!(slot.is_some());
        assert!(matches!(
            l.peek("a", true),
            Err(Refusal::ConcurrentDiagnoses { .. })
        ));
        assert!(
            l.admit("a", false).unwrap().is_none(),
            "reads are not diagnoses"
        );
        assert!(l.admit("a", true).is_err());
        drop(slot);
        assert!(l.admit("a", true).is_ok());
    }
}
