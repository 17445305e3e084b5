//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships but which the
//! deployment guide's clients (`sse_client`, Qwen Code `"transport": "sse"`) still speak.
//!
//! A GET opens an event stream whose first event, `endpoint`, names the URL to POST messages
//! to (`{path}/messages?sessionId=…`). Each stream is one MCP session: an rmcp service runs over
//! a pair of channels (client→server fed by the POSTs, server→client written as `message`
//! events), with keep-alive comments so proxies do not cut an idle stream. The service is
//! started by the session's first POST, not by the GET, and the stream is a body that its
//! connection drives: an open stream that has sent nothing yet costs its connection, its
//! registry entry and one small channel, and no task (issue 16).
//!
//! A client that POSTs but never reads its stream must not make the server queue answers for
//! it without bound: each session admits only so many requests (and request bytes) whose
//! answer has not been written to the stream yet (see [`session_load`]; more are refused with
//! 429), and a stream the client has not read for [`SLOW_READER_GRACE`] is closed, which drops
//! the session. The same in-flight set refuses a second request with an id that is still in
//! flight (its answer would be lost).

use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt, channel::mpsc};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::Frame;
use rmcp::{
    ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
};
use tokio::time::{Instant, Interval};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::session_load::{self, id_key};
use crate::{auth::Principal, metrics, tools::SysomServer};

pub type Body = BoxBody<Bytes, Infallible>;

/// Capacity of a session's channels: client→server messages, server→client messages, and
/// encoded events waiting for the connection. A slow reader is bounded by the session's
/// in-flight bounds ([`session_load`]) and [`SLOW_READER_GRACE`]; the channels only smooth
/// bursts.
const CHANNEL_CAPACITY: usize = 8;
/// How long the stream may stay unwritable (the client not reading) before it is closed.
const SLOW_READER_GRACE: Duration = Duration::from_secs(10);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// What a session's stream, its POSTs and its service share.
struct Shared {
    /// When a message last went either way (the idle timeout counts from it).
    last_seen: Mutex<Instant>,
    in_flight: Mutex<session_load::InFlight>,
}

impl Shared {
    fn seen(&self) {
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, session_load::InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Session {
    /// The id of the principal that opened the session: only it may post to it.
    owner: String,
    /// The running service's input, once the first POST has started it...
    inbound: Option<mpsc::Sender<ClientJsonRpcMessage>>,
    /// ...and until then what starts it.
    starter: Option<Box<Starter>>,
    shared: Arc<Shared>,
}

/// What the first POST of a session needs to start its rmcp service.
struct Starter {
    server: SysomServer,
    /// The stream's input: encoded events.
    events: mpsc::Sender<Bytes>,
    ct: CancellationToken,
    registry: Weak<Registry>,
}

impl Starter {
    /// Spawns the session's rmcp service and the task that writes its messages to the stream;
    /// returns the service's input.
    fn start(self, id: &str, shared: Arc<Shared>) -> mpsc::Sender<ClientJsonRpcMessage> {
        let (in_tx, in_rx) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
        let Starter {
            server,
            events,
            ct,
            registry,
        } = self;
        // The out sink errors are never fatal to the sink type, so map them into io errors.
        let sink = out_tx.sink_map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e));
        let service_ct = ct.clone();
        tokio::spawn(async move {
            match server
                .serve_with_ct((sink, in_rx), service_ct.clone())
                .await
            {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::debug!(error = %e, "legacy SSE session ended before initialize"),
            }
            service_ct.cancel();
        });
        tokio::spawn(forward(
            out_rx,
            events,
            shared,
            ct,
            registry,
            id.to_string(),
        ));
        in_tx
    }
}

/// Writes the service's messages to the stream as `message` events, until the service ends,
/// the stream goes away or stays unwritable for [`SLOW_READER_GRACE`]; then ends the session.
async fn forward(
    mut out_rx: mpsc::Receiver<ServerJsonRpcMessage>,
    mut events: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    ct: CancellationToken,
    registry: Weak<Registry>,
    id: String,
) {
    loop {
        let msg = tokio::select! {
            _ = ct.cancelled() => break,
            msg = out_rx.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let json = serde_json::to_string(&msg).unwrap_or_default();
        shared.seen();
        let event = Bytes::from(format!("event: message\ndata: {json}\n\n"));
        match tokio::time::timeout(SLOW_READER_GRACE, events.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!(session = %id, "legacy SSE client does not read its stream; closing the session");
                break;
            }
        }
        let answered = match &msg {
            ServerJsonRpcMessage::Response(r) => Some(id_key(&r.id)),
            ServerJsonRpcMessage::Error(e) => e.id.as_ref().map(id_key),
            _ => None,
        };
        if let Some(key) = answered {
            shared.in_flight().done(&key);
        }
    }
    ct.cancel();
    if let Some(registry) = registry.upgrade() {
        registry.close(&id);
    }
}

impl Session {
    /// The running service's input, starting the service if this is the first message.
    fn sender(&mut self, id: &str) -> Option<mpsc::Sender<ClientJsonRpcMessage>> {
        if self.inbound.is_none()
            && let Some(starter) = self.starter.take()
        {
            self.inbound = Some(starter.start(id, self.shared.clone()));
        }
        self.inbound.clone()
    }
}

/// A session's event stream, driven by its connection: no task of its own while the session
/// is idle (issue 16). It sends the `endpoint` event, then the service's messages as the
/// forwarding task queues them, and a keep-alive comment at every tick; it ends (and with it
/// the session) when the server shuts down, the session has been idle for its timeout or its
/// service has ended. Dropping it (the client went away) ends the session too.
struct EventStream {
    endpoint: Option<Bytes>,
    events: mpsc::Receiver<Bytes>,
    tick: Interval,
    idle_timeout: Duration,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    ct: CancellationToken,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    id: String,
    ended: bool,
}

impl EventStream {
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.ended {
            self.ended = true;
            self.ct.cancel();
            self.registry.close(&self.id);
        }
        Poll::Ready(None)
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(endpoint) = this.endpoint.take() {
            return Poll::Ready(Some(Ok(Frame::data(endpoint))));
        }
        match this.events.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => return Poll::Ready(Some(Ok(Frame::data(event)))),
            Poll::Ready(None) => return this.end(),
            Poll::Pending => {}
        }
        if this.cancelled.poll_unpin(cx).is_ready() {
            return this.end();
        }
        if this.tick.poll_tick(cx).is_ready() {
            if this.shared.idle() > this.idle_timeout {
                tracing::debug!(session = %this.id, "legacy SSE session idle; closing");
                return this.end();
            }
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// A map never gives back its table: after a burst of 10,000 sessions it would keep room for
/// 16,384 for good. Once it is a quarter full it is shrunk to twice its length, so a burst that
/// ends costs a few reallocations (each on a halving) and the table goes back with the trim.
const MIN_SHRINK_CAPACITY: usize = 1024;

fn shrink_if_sparse<V>(map: &mut HashMap<String, V>) {
    if map.capacity() > MIN_SHRINK_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// The open legacy SSE sessions.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Session>>,
    route: Option<String>,
    /// Returns the memory of closed sessions to the system after a burst.
    trim: super::trim::Trim,
}

/// Why a POST could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    UnknownSession,
    Malformed(String),
    Closed,
    /// A duplicate id, or a session at its bounds (its client is not reading).
    Refused(session_load::Refusal),
}

impl Registry {
    pub(crate) fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A registry whose session ids start with `route` and a dot, when given: the routing
    /// hint a load balancer reads from the `sessionId` of the message POSTs.
    pub fn with_route(route: Option<String>) -> Self {
        Self {
            route,
            ..Self::default()
        }
    }

    /// Forgets session `id` (once: the stream and the forwarding task may both end it).
    fn close(&self, id: &str) {
        let open = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if sessions.remove(id).is_none() {
                return;
            }
            shrink_if_sparse(&mut sessions);
            sessions.len()
        };
        // A stream dropped outside a runtime (a test's) has nothing to trim with.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.trim.closed(open);
        }
        metrics::sessions_changed("sse", -1);
        tracing::debug!(session = %id, "legacy SSE session closed");
    }

    /// Opens a session and returns the streaming response. `shutdown` ends every stream.
    pub fn open(
        self: &Arc<Self>,
        server: SysomServer,
        owner: String,
        message_path: &str,
        keep_alive: Duration,
        idle_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Response<Body> {
        let random = uuid::Uuid::new_v4().simple();
        let id = match &self.route {
            Some(route) => format!("{route}.{random}"),
            None => random.to_string(),
        };
        // One slot fewer than the capacity: a futures channel has one more per sender.
        let (events_tx, events_rx) = mpsc::channel::<Bytes>(CHANNEL_CAPACITY - 1);
        let ct = shutdown.child_token();
        let shared = Arc::new(Shared {
            last_seen: Mutex::new(Instant::now()),
            in_flight: Mutex::default(),
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(
            id.clone(),
            Session {
                owner,
                inbound: None,
                starter: Some(Box::new(Starter {
                    server,
                    events: events_tx,
                    ct: ct.clone(),
                    registry: Arc::downgrade(self),
                })),
                shared: shared.clone(),
            },
        );
        self.trim.opened(sessions.len());
        drop(sessions);
        metrics::sessions_changed("sse", 1);
        tracing::debug!(session = %id, "legacy SSE session opened");

        let endpoint = format!("event: endpoint\ndata: {message_path}?sessionId={id}\n\n");
        let stream = EventStream {
            endpoint: Some(Bytes::from(endpoint)),
            events: events_rx,
            tick: tokio::time::interval_at(Instant::now() + keep_alive, keep_alive),
            idle_timeout,
            cancelled: Box::pin(ct.clone().cancelled_owned()),
            ct,
            shared,
            registry: self.clone(),
            id,
            ended: false,
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(BodyExt::boxed(stream))
            .expect("static response parts are valid")
    }

    /// Delivers one client message to its session. A session opened by another principal is
    /// reported as unknown. The principal travels with a request to the tools (extensions).
    /// The session's requests in flight may take `budget` bytes of bodies.
    pub async fn post(
        &self,
        session_id: &str,
        principal: &Principal,
        body: &[u8],
        budget: usize,
    ) -> Result<(), PostError> {
        let shared = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = sessions
                .get(session_id)
                .filter(|s| s.owner == principal.id())
                .ok_or(PostError::UnknownSession)?;
            s.shared.clone()
        };
        let mut message: ClientJsonRpcMessage =
            serde_json::from_slice(body).map_err(|e| PostError::Malformed(e.to_string()))?;
        if let ClientJsonRpcMessage::Request(r) = &mut message {
            rmcp::model::GetExtensions::extensions_mut(&mut r.request).insert(principal.clone());
        }
        if let ClientJsonRpcMessage::Request(r) = &message {
            shared
                .in_flight()
                .admit(id_key(&r.id), body.len(), budget)
                .map_err(PostError::Refused)?;
        }
        // A cancelled request gets no answer: it is no longer in flight.
        if let ClientJsonRpcMessage::Notification(n) = &message
            && let rmcp::model::ClientNotification::CancelledNotification(c) = &n.notification
            && let Some(id) = &c.params.request_id
        {
            shared.in_flight().done(&id_key(id));
        }
        shared.seen();
        // The first message that gets this far starts the session's service.
        let mut inbound = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(session_id)
            .and_then(|s| s.sender(session_id))
            .ok_or(PostError::Closed)?;
        inbound.send(message).await.map_err(|_| PostError::Closed)
    }
}

#[cfg(test)]
mod shrink_tests {
    use super::*;

    #[test]
    fn the_session_table_shrinks_after_a_burst_and_small_tables_are_left_alone() {
        let mut map: HashMap<String, u64> = (0..10_000).map(|i| (i.to_string(), i)).collect();
        let burst = map.capacity();
        for i in 0..9_990u64 {
            map.remove(&i.to_string());
            shrink_if_sparse(&mut map);
        }
        assert_eq!(map.len(), 10);
        assert!(
            map.capacity() <= 4 * MIN_SHRINK_CAPACITY,
            "{} of {burst}",
            map.capacity()
        );
        let mut small: HashMap<String, u64> = HashMap::with_capacity(MIN_SHRINK_CAPACITY / 2);
        let cap = small.capacity();
        small.insert("a".into(), 1);
        shrink_if_sparse(&mut small);
        assert_eq!(small.capacity(), cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, tools::Services};

    fn server() -> SysomServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = config::ServerArgs {
            config: Some("/dev/null".into()),
            ..Default::default()
        };
        let cfg = config::load(&args, &|_| None).expect("defaults are valid");
        SysomServer::new(Services::from_config(&cfg, None).expect("no task key file is named"))
    }

    fn open(registry: &Arc<Registry>, idle: Duration, shutdown: &CancellationToken) -> Body {
        registry
            .open(
                server(),
                Principal::stdio().id(),
                "/mcp/messages",
                Duration::from_secs(1),
                idle,
                shutdown.clone(),
            )
            .into_body()
    }

    async fn next(body: &mut Body) -> Option<String> {
        let frame = body.frame().await?.expect("infallible");
        Some(String::from_utf8(frame.into_data().expect("data").to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_its_endpoint_then_keep_alives_and_dropping_it_ends_the_session() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let mut body = open(&registry, Duration::from_secs(60), &shutdown);
        let endpoint = next(&mut body).await.unwrap();
        assert!(endpoint.starts_with("event: endpoint\ndata: /mcp/messages?sessionId="));
        let started = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(registry.len(), 1);
        drop(body); // the client went away
        assert_eq!(registry.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_ends_at_its_idle_timeout_and_every_stream_at_shutdown() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let mut idle = open(&registry, Duration::from_millis(2500), &shutdown);
        let mut other = open(&registry, Duration::from_secs(60), &shutdown);
        next(&mut idle).await.unwrap();
        next(&mut other).await.unwrap();
        let started = Instant::now();
        let mut pings = 0;
        while let Some(event) = next(&mut idle).await {
            assert_eq!(event, ": keep-alive\n\n");
            pings += 1;
        }
        assert_eq!((pings, started.elapsed()), (2, Duration::from_secs(3)));
        assert!(http_body::Body::is_end_stream(&idle));
        assert_eq!(registry.len(), 1);
        shutdown.cancel();
        assert_eq!(next(&mut other).await, None);
        assert_eq!(registry.len(), 0);
    }

    #[tokio::test]
    async fn the_first_post_starts_the_service_whose_answer_comes_on_the_stream() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let mut body = open(&registry, Duration::from_secs(60), &shutdown);
        let endpoint = next(&mut body).await.unwrap();
        let id = endpoint
            .trim()
            .rsplit("sessionId=")
            .next()
            .unwrap()
            .to_string();
        let me = Principal::stdio();
        let init = br#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
        registry.post(&id, &me, init, 1 << 20).await.unwrap();
        let answer = next(&mut body).await.unwrap();
        assert!(
            answer.starts_with("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\""),
            "{answer}"
        );
        // Answered: the id is free again (a duplicate in flight would be refused).
        registry.post(&id, &me, init, 1 << 20).await.unwrap();
        drop(body);
        assert_eq!(
            registry.post(&id, &me, init, 1 << 20).await,
            Err(PostError::UnknownSession)
        );
    }
}
