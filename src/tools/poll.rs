//! When to poll `GetDiagnosisResult`: fast at first (most diagnoses finish within seconds),
//! then backing off geometrically up to a cap, so long diagnoses cost few upstream requests.
//! The process-wide ceiling on requests per second sits below this, in the upstream client.

use std::time::Duration;

/// Polls made at the base interval before backing off.
const FAST_POLLS: u32 = 5;
/// Each later interval is this much longer than the one before.
const GROWTH: f64 = 1.5;

/// The delays between successive polls of one diagnosis.
#[derive(Debug, Clone)]
pub struct Schedule {
    base: Duration,
    max: Duration,
    polls: u32,
}

impl Schedule {
    /// `base` for the first polls, then growing by half each time, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            polls: 0,
        }
    }

    /// The delay before the next poll.
    pub fn next_delay(&mut self) -> Duration {
        let slow = self.polls.saturating_sub(FAST_POLLS).min(64);
        self.polls = self.polls.saturating_add(1);
        self.base.mul_f64(GROWTH.powi(slow as i32)).min(self.max)
    }
}

/// The delay a poller following [`Schedule::new`]`(base, max)` waits after `elapsed`: the
/// interval a client polling the same task is told to keep.
pub fn delay_at(base: Duration, max: Duration, elapsed: Duration) -> Duration {
    let mut schedule = Schedule::new(base, max);
    let mut waited = Duration::ZERO;
    loop {
        let delay = schedule.next_delay();
        waited += delay;
        if waited > elapsed || delay >= schedule.max {
            return delay;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(base_ms: u64, max_ms: u64, n: usize) -> Vec<u64> {
        let mut s = Schedule::new(
            Duration::from_millis(base_ms),
            Duration::from_millis(max_ms),
        );
        (0..n).map(|_| s.next_delay().as_millis() as u64).collect()
    }

    #[test]
    fn fast_first_then_backs_off_to_the_cap() {
        assert_eq!(
            delays(1000, 10_000, 12),
            [
                1000, 1000, 1000, 1000, 1000, 1000, 1500, 2250, 3375, 5062, 7593, 10_000
            ]
        );
    }

    #[test]
    fn stays_at_the_cap() {
        assert!(delays(1000, 4000, 200).iter().skip(20).all(|&d| d == 4000));
    }

    #[test]
    fn delay_at_follows_the_schedule() {
        let at = |ms| {
            delay_at(
                Duration::from_millis(1000),
                Duration::from_millis(10_000),
                Duration::from_millis(ms),
            )
            .as_millis()
        };
        assert_eq!(at(0), 1000);
        assert_eq!(at(6500), 1500);
        assert_eq!(at(3_600_000), 10_000);
    }

    #[test]
    fn a_cap_below_the_base_means_the_base() {
        assert_eq!(delays(500, 100, 10), vec![500; 10]);
    }
}
