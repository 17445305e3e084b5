//! Giving memory freed by closed sessions back to the system (issue 16). glibc's malloc keeps
//! freed chunks in its arenas: after 10,000 legacy SSE sessions had closed, none of their
//! ~400 MiB went back (bench/README.md). [`Trim`] calls `malloc_trim(0)`, which returns every
//! free page of every arena, each time the number of open sessions has halved since its peak,
//! so a burst that ends costs a handful of trims (log2 of its size), and steady churn none.

use std::sync::Mutex;

/// Below this peak nothing is trimmed: a few sessions hold too little to be worth a trim.
const MIN_PEAK: usize = 64;

/// The peak of open sessions since the last trim.
#[derive(Default)]
pub(crate) struct Trim {
    peak: Mutex<usize>,
}

impl Trim {
    /// Notes the number of open sessions after one opened.
    pub(crate) fn opened(&self, open: usize) {
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        *peak = (*peak).max(open);
    }

    /// Notes the number of open sessions after one closed; trims (off the runtime's worker
    /// threads) when it is half the peak or less.
    pub(crate) fn closed(&self, open: usize) {
        if self.should_trim(open) {
            tokio::task::spawn_blocking(malloc_trim);
        }
    }

    fn should_trim(&self, open: usize) -> bool {
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        if *peak < MIN_PEAK || open * 2 > *peak {
            return false;
        }
        *peak = open;
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_trim() {
    // SAFETY: malloc_trim only walks and releases the allocator's free memory; it takes the
    // arena locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_trimmed_at_each_halving_and_small_counts_never() {
        let t = Trim::default();
        for open in 1..=1000 {
            t.opened(open);
        }
        let trims: Vec<usize> = (0..1000)
            .rev()
            .filter(|&open| t.should_trim(open))
            .collect();
        assert_eq!(trims, vec![500, 250, 125, 62]);
        let small = Trim::default();
        small.opened(MIN_PEAK - 1);
        assert!(!small.should_trim(0));
    }
}
