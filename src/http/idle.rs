//! When a connection counts as idle: no request in flight (a response whose body, an SSE
//! stream included, has not ended yet counts as in flight). hyper bounds the wait for HTTP/1
//! headers (`header_read_timeout`), but has no deadline for the first bytes of a connection
//! (the auto builder's protocol sniffing waits for ever) nor any idle timeout for HTTP/2; the
//! watcher here closes a connection that sent no request within the header timeout, or that
//! has had none in flight for the idle timeout.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{sync::watch, time::Instant};

use super::Body;

#[derive(Clone, Copy)]
struct State {
    in_flight: usize,
    /// When the last request ended (or the connection was accepted).
    since: Instant,
    /// Whether any request came yet.
    used: bool,
}

/// The requests in flight on one connection.
#[derive(Clone)]
pub(crate) struct Activity(watch::Sender<State>);

impl Activity {
    pub(crate) fn new() -> Self {
        Self(watch::Sender::new(State {
            in_flight: 0,
            since: Instant::now(),
            used: false,
        }))
    }

    /// Counts a request as in flight from its arrival until the guard drops: give the guard to
    /// its response with [`InFlight::until_sent`].
    pub(crate) fn request(&self) -> InFlight {
        self.0.send_modify(|s| {
            s.in_flight += 1;
            s.used = true;
        });
        InFlight(self.0.clone())
    }

    /// Resolves when the connection has been idle too long: no request within `first` of the
    /// accept, or none in flight for `idle` after the last one ended.
    pub(crate) async fn expired(&self, first: Duration, idle: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.in_flight > 0 {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
            let due = s.since + if s.used { idle } else { first };
            tokio::select! {
                () = tokio::time::sleep_until(due) => return,
                changed = rx.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
            }
        }
    }
}

/// A request in flight; see [`Activity::request`].
pub(crate) struct InFlight(watch::Sender<State>);

impl InFlight {
    /// Keeps the request in flight until `response`'s body ends (or is dropped).
    pub(crate) fn until_sent(self, response: http::Response<Body>) -> http::Response<Body> {
        response.map(|inner| {
            http_body_util::BodyExt::boxed(Tracked {
                inner,
                _guard: self,
            })
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> http::Response<Body> {
        super::super::router::full(http::StatusCode::OK, "text/plain", "ok")
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_expires_after_the_first_deadline() {
        let a = Activity::new();
        let started = Instant::now();
        a.expired(Duration::from_secs(2), Duration::from_secs(60))
            .await;
        assert_eq!(started.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_in_flight_keeps_it_alive_then_idle_counts_from_its_end() {
        let a = Activity::new();
        let resp = a.request().until_sent(ok());
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move {
                a.expired(Duration::from_secs(1), Duration::from_secs(5))
                    .await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watcher.is_finished(), "expired with a response in flight");
        let ended = Instant::now();
        drop(resp);
        let expired_at = watcher.await.unwrap();
        assert_eq!((expired_at - ended).as_secs(), 5);
    }
}
