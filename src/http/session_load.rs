//! What one session may have in flight: requests whose answer has not been written yet, by
//! their JSON-RPC id, and the bytes of their bodies. Both transports hold their sessions to
//! these bounds, so that one client cannot make a session grow without limit, and both refuse
//! a second request with an id still in flight (rmcp routes answers by id: in a Streamable
//! HTTP session the duplicate's stream would take the first answer and the first stream would
//! stay open for good; in a legacy SSE session one answer would be lost).
//!
//! Streamable HTTP requests are tracked here from the POST until rmcp ends the request's event
//! stream, which it does once the answer is written (or the session ends). A client that drops
//! the connection first has not cancelled the call (it may resume the stream), so the stream is
//! drained in the background and the id stays taken until the answer is out.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Frame;
use rmcp::model::RequestId;

use super::Body;

/// Requests of one session whose answer has not been written yet.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// The request bytes a session may have in flight, in largest accepted bodies: one such body
/// and then some, never dozens of them.
pub(crate) const BODIES_IN_FLIGHT: usize = 2;

/// The request bytes a session may have in flight when one body may be `max_body_bytes`.
pub(crate) fn byte_budget(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_mul(BODIES_IN_FLIGHT)
}

/// The key of a request id (`1` and `"1"` are different ids).
pub(crate) fn id_key(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

/// Why a request was not admitted to its session.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A request with this id is still in flight in the session.
    DuplicateId,
    /// The session has [`MAX_IN_FLIGHT`] requests in flight.
    TooMany,
    /// The session's requests in flight would exceed their byte budget.
    TooManyBytes(usize),
}

impl Refusal {
    pub(crate) fn message(&self) -> String {
        match self {
            Refusal::DuplicateId => {
                "Invalid Request: a request with this id is still in flight in this session".into()
            }
            Refusal::TooMany => format!(
                "this session has {MAX_IN_FLIGHT} requests in flight; wait for their answers (read the event stream)"
            ),
            Refusal::TooManyBytes(budget) => format!(
                "this session's requests in flight would exceed {budget} bytes; wait for their answers"
            ),
        }
    }
}

/// One session's requests in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    ids: HashMap<String, usize>,
    bytes: usize,
}

impl InFlight {
    /// Admits request `key` of `bytes`, or says why not.
    pub(crate) fn admit(
        &mut self,
        key: String,
        bytes: usize,
        budget: usize,
    ) -> Result<(), Refusal> {
        if self.ids.contains_key(&key) {
            return Err(Refusal::DuplicateId);
        }
        if self.ids.len() >= MAX_IN_FLIGHT {
            return Err(Refusal::TooMany);
        }
        if self.bytes.saturating_add(bytes) > budget {
            return Err(Refusal::TooManyBytes(budget));
        }
        self.bytes += bytes;
        self.ids.insert(key, bytes);
        Ok(())
    }

    /// Request `key` has been answered (or cancelled).
    pub(crate) fn done(&mut self, key: &str) {
        if let Some(bytes) = self.ids.remove(key) {
            self.bytes -= bytes;
        }
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The requests in flight of every Streamable HTTP session (only sessions with one appear).
#[derive(Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<String, InFlight>>,
}

impl Sessions {
    /// Admits a request of `session`; it stays in flight until the guard drops.
    pub(crate) fn admit(
        self: &Arc<Self>,
        session: &str,
        id: &RequestId,
        bytes: usize,
        budget: usize,
    ) -> Result<Admitted, Refusal> {
        let key = id_key(id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let load = sessions.entry(session.to_string()).or_default();
        if let Err(refusal) = load.admit(key.clone(), bytes, budget) {
            // Leave no empty entry for a session id no request got into.
            if load.is_empty() {
                sessions.remove(session);
            }
            return Err(refusal);
        }
        Ok(Admitted {
            sessions: self.clone(),
            session: session.to_string(),
            key,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// A request in flight; dropping it marks the request answered.
pub(crate) struct Admitted {
    sessions: Arc<Sessions>,
    session: String,
    key: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut sessions = self
            .sessions
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(load) = sessions.get_mut(&self.session) {
            load.done(&self.key);
            if load.is_empty() {
                sessions.remove(&self.session);
            }
        }
    }
}

/// `resp` (rmcp's answer stream for the request) keeps the request in flight until the stream
/// ends; an answer that is not a stream (an error status) ends it at once.
pub(crate) fn hold_until_answered(resp: Response<Body>, admitted: Admitted) -> Response<Body> {
    if !resp.status().is_success() {
        return resp;
    }
    resp.map(|inner| {
        BodyExt::boxed(Answered {
            inner: Some(inner),
            admitted: Some(admitted),
        })
    })
}

struct Answered {
    inner: Option<Body>,
    admitted: Option<Admitted>,
}

impl http_body::Body for Answered {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.inner = None;
            self.admitted = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        // The client went away before the answer: drain the stream until rmcp ends it.
        if let (Some(mut inner), Some(admitted)) = (self.inner.take(), self.admitted.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                while let Some(Ok(_)) = inner.frame().await {}
                drop(admitted);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_count_and_bytes_are_refused_and_released() {
        let mut load = InFlight::default();
        assert_eq!(load.admit("1".into(), 10, 25), Ok(()));
        assert_eq!(load.admit("1".into(), 1, 25), Err(Refusal::DuplicateId));
        assert_eq!(load.admit("2".into(), 10, 25), Ok(()));
        assert_eq!(
            load.admit("3".into(), 10, 25),
            Err(Refusal::TooManyBytes(25))
        );
        load.done("1");
        assert_eq!(load.admit("3".into(), 10, 25), Ok(()));
        load.done("2");
        load.done("3");
        load.done("3");
        assert!(load.is_empty());
        assert_eq!(load.bytes, 0);
        for i in 0..MAX_IN_FLIGHT {
            assert_eq!(load.admit(i.to_string(), 0, 0), Ok(()));
        }
        assert_eq!(load.admit("x".into(), 0, 0), Err(Refusal::TooMany));
    }

    #[tokio::test]
    async fn a_session_is_forgotten_once_nothing_is_in_flight() {
        let sessions = Arc::new(Sessions::default());
        let id = RequestId::Number(1);
        let a = sessions.admit("s", &id, 1, 10).unwrap();
        assert!(matches!(
            sessions.admit("s", &id, 1, 10),
            Err(Refusal::DuplicateId)
        ));
        // A refusal for a session with nothing in flight leaves no entry behind.
        assert!(matches!(
            sessions.admit("t", &id, 11, 10),
            Err(Refusal::TooManyBytes(10))
        ));
        assert_eq!(sessions.tracked(), 1);
        drop(a);
        assert_eq!(sessions.tracked(), 0);
        let again = sessions.admit("s", &id, 1, 10).unwrap();
        drop(again);
        assert_eq!(sessions.tracked(), 0);
    }

    #[tokio::test]
    async fn a_dropped_answer_stream_keeps_the_id_until_it_ends() {
        let sessions = Arc::new(Sessions::default());
        let id = RequestId::Number(7);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
        });
        let resp = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(stream)));
        let resp = hold_until_answered(resp, sessions.admit("s", &id, 1, 10).unwrap());
        drop(resp); // the client went away
        tokio::task::yield_now().await;
        assert!(matches!(
            sessions.admit("s", &id, 1, 10),
            Err(Refusal::DuplicateId)
        ));
        tx.send(Bytes::from_static(b"data: answer\n\n"))
            .await
            .unwrap();
        drop(tx); // rmcp ends the stream after the answer
        for _ in 0..100 {
            if sessions.tracked() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(sessions.tracked(), 0);
    }
}
