//! The process-wide ceiling on upstream requests per second: one token bucket (governor's
//! GCRA) that every signed request waits on, so a thousand diagnoses in flight cannot exceed
//! what the SysOM account is allowed, whatever their poll schedules.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A shared limiter; cloning shares the bucket. `None` inside means no ceiling.
#[derive(Clone, Default)]
pub struct Ceiling(Option<Arc<DefaultDirectRateLimiter>>);

impl Ceiling {
    /// `per_second` requests per second with a burst of one second's worth; 0 = unlimited.
    pub fn per_second(per_second: u32) -> Self {
        Self(
            NonZeroU32::new(per_second)
                .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n)))),
        )
    }

    /// The process's bucket for `per_second`: a configuration reload that keeps the rate keeps
    /// the bucket, so calls started before and after the reload share one ceiling.
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

    /// Waits until one more request fits under the ceiling.
    pub async fn admit(&self) {
        if let Some(limiter) = &self.0 {
            limiter.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_one_second_of_requests() {
        let ceiling = Ceiling::per_second(3);
        let limiter = ceiling.0.as_ref().unwrap();
        assert!((0..3).all(|_| limiter.check().is_ok()));
        assert!(
            limiter.check().is_err(),
            "a fourth request in the same instant must wait"
        );
    }

    #[test]
    fn same_rate_shares_the_bucket() {
        let (a, b) = (Ceiling::shared(7), Ceiling::shared(7));
        assert!(Arc::ptr_eq(a.0.as_ref().unwrap(), b.0.as_ref().unwrap()));
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(Ceiling::per_second(0).0.is_none());
    }
}
