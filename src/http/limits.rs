//! Connection and session limits: per-client-IP connection counts, MCP POSTs in flight (what a
//! shutdown drains), and the session cap, taken as a reservation so that concurrent opens
//! cannot exceed it.

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

/// Open connections, per client address and in total, and MCP POSTs without a response yet.
#[derive(Default)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    posts: AtomicUsize,
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

    /// Counts an MCP POST as in flight until the guard drops (its response is ready).
    pub(crate) fn post_started(&self) -> PostGuard<'_> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        PostGuard(self)
    }

    /// Registers a connection from `ip`; `None` when that client is over `limit`.
    pub(crate) fn connection_opened(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        limit: usize,
    ) -> Option<ConnectionGuard> {
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_default();
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard {
            counters: self.clone(),
            ip,
        })
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
    fn per_ip_connection_limit() {
        let counters = Arc::new(Counters::default());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let first = counters.connection_opened(Some(ip), 1);
        assert!(first.is_some());
        assert!(counters.connection_opened(Some(ip), 1).is_none());
        assert!(counters.connection_opened(None, 1).is_some());
        drop(first);
        assert!(counters.connection_opened(Some(ip), 1).is_some());
        assert_eq!(counters.open_connections(), 0);
    }
}
