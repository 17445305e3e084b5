//! The process-wide ceiling on upstream requests per second, which every signed request waits
//! on, so a thousand diagnoses in flight cannot exceed what the SysOM account is allowed,
//! whatever their poll schedules.
//!
//! Requests are paced, not bucketed: each one goes out at least 1/N s after the one before, so
//! no window of one second ever holds more than N of them. (A token bucket with a second's
//! burst lets N through at once and N more within the same second: twice the ceiling, and a
//! burst of N new connections at the gateway.) Waiters are served in arrival order, so a poll
//! of a long-running diagnosis cannot be starved by newer calls until its deadline passes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// A shared limiter; cloning shares the pace. `None` inside means no ceiling.
#[derive(Clone, Default)]
pub struct Ceiling(Option<Arc<Pacer>>);

struct Pacer {
    interval: Duration,
    /// When the previous request went out; tokio's mutex queues its waiters first come, first
    /// served, which is what makes the ceiling fair.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Ceiling {
    /// At most `per_second` requests in any one second, evenly spaced; 0 = unlimited.
    pub fn per_second(per_second: u32) -> Self {
        Self((per_second > 0).then(|| {
            Arc::new(Pacer {
                interval: Duration::from_secs(1) / per_second,
                last: tokio::sync::Mutex::new(None),
            })
        }))
    }

    /// The process's pacer for `per_second`: a configuration reload that keeps the rate keeps
    /// the pacer, so calls started before and after the reload share one ceiling.
    pub fn shared(per_second: u32) -> Self {
        static CURRENT: Mutex<Option<(u32, Ceiling)>> = Mutex::new(None);
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((rate, ceiling)) if *rate == per_second => ceiling.clone(),
            _ => {
                let ceiling = Self::per_second(per_second);
                *current = Some((per_second, ceiling.clone()));
                ceiling
            }
        }
    }

    /// Waits, in turn, until one more request fits under the ceiling.
    pub async fn admit(&self) {
        let Some(pacer) = &self.0 else { return };
        let mut last = pacer.last.lock().await;
        if let Some(previous) = *last {
            tokio::time::sleep_until(previous + pacer.interval).await;
        }
        // The time it actually goes out, not the slot it was due in: a late wake-up must not
        // let the next request follow closer than the interval.
        *last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_interval_without_a_burst() {
        let ceiling = Ceiling::per_second(4);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            ceiling.admit().await;
            at.push(start.elapsed());
        }
        let ms: Vec<u128> = at.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 750, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let ceiling = Ceiling::per_second(10);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (ceiling, order) = (ceiling.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                ceiling.admit().await;
                order.lock().unwrap().push(i);
            }));
            // Each spawned waiter reaches the queue before the next is spawned.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn same_rate_shares_the_pacer() {
        let (a, b) = (Ceiling::shared(7), Ceiling::shared(7));
        assert!(Arc::ptr_eq(a.0.as_ref().unwrap(), b.0.as_ref().unwrap()));
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(Ceiling::per_second(0).0.is_none());
    }
}
