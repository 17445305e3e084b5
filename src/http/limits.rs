//! Connection and session limits: per-client-IP connection counts, the total connection cap
//! that keeps descriptors in reserve, MCP POSTs in flight (what a shutdown drains), and the
//! session cap, taken as a reservation so that concurrent opens cannot exceed it.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::{Response, StatusCode};

use super::{Body, router};

/// Descriptors kept free of client connections (for upstream requests, the journal, reloads):
/// a quarter of the limit, at least this many.
const FD_RESERVE_MIN: u64 = 32;

/// The most client connections the descriptor limit (`RLIMIT_NOFILE`) leaves room for.
pub(crate) fn connection_budget() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    budget_for(soft)
}

fn budget_for(nofile: u64) -> usize {
    let reserve = (nofile / 4).max(FD_RESERVE_MIN);
    usize::try_from(nofile.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Open connections, per client address and in total, and MCP POSTs without a response yet.
#[derive(Default)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    posts: AtomicUsize,
    /// Open task subscriptions (`subscriptions/listen` streams), counted as sessions.
    subscriptions: AtomicUsize,
    /// Sessions being opened right now (checked against the cap but not yet counted).
    opening: Mutex<usize>,
    /// Serialises the check-and-reserve step of [`Counters::reserve_session`].
    reserving: tokio::sync::Mutex<()>,
}

impl Counters {
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn posts_in_flight(&self) -> usize {
        self.posts.load(Ordering::Relaxed)
    }

    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub(crate) fn subscription_opened(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn subscription_closed(&self) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts an MCP POST as in flight until the guard drops (its response is ready).
    pub(crate) fn post_started(&self) -> PostGuard<'_> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        PostGuard(self)
    }

    /// Registers a connection from `ip`; `None` when that client is over `limit`.
    #[cfg(test)]
    pub(crate) fn connection_opened(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        limit: usize,
    ) -> Option<ConnectionGuard> {
        self.try_connection_opened(ip, limit, usize::MAX).ok()
    }

    fn count(self: &Arc<Self>, ip: Option<IpAddr>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            counters: self.clone(),
            ip,
        }
    }

    /// Registers a connection from `ip` unless the server holds `total` connections already
    /// ([`OverLimit::Total`]: close it unanswered) or that client holds `per_ip`.
    pub(crate) fn try_connection_opened(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        per_ip: usize,
        total: usize,
    ) -> Result<ConnectionGuard, OverLimit> {
        if self.connections.load(Ordering::Relaxed) >= total {
            return Err(OverLimit::Total);
        }
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_default();
            if *n >= per_ip {
                // Counted in the total (it holds a descriptor) but not against its client.
                return Err(OverLimit::PerIp(self.count(None)));
            }
            *n += 1;
        }
        Ok(self.count(ip))
    }

    /// Reserves room for one new session, or `None` when `open` (the sessions that exist)
    /// plus the ones being opened reach `max`. Keep the reservation until the new session is
    /// counted by `open` (or failed to open), then drop it.
    pub(crate) async fn reserve_session<F>(&self, open: F, max: usize) -> Option<SessionSlot<'_>>
    where
        F: Future<Output = usize>,
    {
        let _one_at_a_time = self.reserving.lock().await;
        // A slot is released only after its session is counted by `open`, so this sum can
        // count a session twice for a moment (refusing early) but never miss one.
        let open = open.await;
        let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if open + *opening >= max {
            return None;
        }
        *opening += 1;
        Some(SessionSlot(self))
    }
}

/// Why a connection was not registered.
pub(crate) enum OverLimit {
    /// Its client has the most connections it may have: answer 429, then close (the guard
    /// counts it in the total meanwhile).
    PerIp(ConnectionGuard),
    /// The server has as many connections as its descriptors allow: close at once.
    Total,
}

impl std::fmt::Debug for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerIp(_) => "PerIp",
            Self::Total => "Total",
        })
    }
}

/// See [`Counters::post_started`].
pub(crate) struct PostGuard<'a>(&'a Counters);

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        self.0.posts.fetch_sub(1, Ordering::Relaxed);
    }
}

/// See [`Counters::reserve_session`].
pub(crate) struct SessionSlot<'a>(&'a Counters);

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        let mut opening = self.0.opening.lock().unwrap_or_else(|e| e.into_inner());
        *opening -= 1;
    }
}

/// Decrements the connection counters when a connection ends.
pub(crate) struct ConnectionGuard {
    counters: Arc<Counters>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self
                .counters
                .per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

pub(crate) fn too_many_connections() -> Response<Body> {
    let mut resp = router::overloaded(
        StatusCode::TOO_MANY_REQUESTS,
        "too many connections from your address",
    );
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

pub(crate) fn too_many_sessions() -> Response<Body> {
    router::overloaded(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many open MCP sessions; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_session_opens_cannot_exceed_the_cap() {
        let counters = Counters::default();
        // Two sessions exist, the cap is four: two reservations succeed while both are held.
        let a = counters.reserve_session(async { 2 }, 4).await;
        let b = counters.reserve_session(async { 2 }, 4).await;
        let c = counters.reserve_session(async { 2 }, 4).await;
        assert!(a.is_some() && b.is_some());
        assert!(
            c.is_none(),
            "a third concurrent open would make five sessions"
        );
        drop(a);
        assert!(counters.reserve_session(async { 2 }, 4).await.is_some());
    }

    #[test]
    fn the_connection_budget_keeps_a_quarter_of_the_descriptors() {
        assert_eq!(budget_for(1024), 768);
        assert_eq!(budget_for(16384), 12288);
        assert_eq!(budget_for(64), 32);
        assert_eq!(budget_for(8), 1);
    }

    #[test]
    fn total_connection_cap() {
        let counters = Arc::new(Counters::default());
        let a = counters.try_connection_opened(None, 10, 2).unwrap();
        let _b = counters.try_connection_opened(None, 10, 2).unwrap();
        assert!(matches!(
            counters.try_connection_opened(None, 10, 2),
            Err(OverLimit::Total)
        ));
        drop(a);
        assert!(counters.try_connection_opened(None, 10, 2).is_ok());
    }

    #[test]
    fn per_ip_connection_limit() {
        let counters = Arc::new(Counters::default());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let over = counters.try_connection_opened(Some(ip), 0, 10);
        assert!(matches!(over, Err(OverLimit::PerIp(_))));
        assert_eq!(counters.open_connections(), 1, "counted in the total");
        drop(over);
        let first = counters.connection_opened(Some(ip), 1);
        assert!(first.is_some());
        assert!(counters.connection_opened(Some(ip), 1).is_none());
        assert!(counters.connection_opened(None, 1).is_some());
        drop(first);
        assert!(counters.connection_opened(Some(ip), 1).is_some());
        assert_eq!(counters.open_connections(), 0);
    }
}
