//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships but which the
//! deployment guide's clients (`sse_client`, Qwen Code `"transport": "sse"`) still speak.
//!
//! A GET opens an event stream whose first event, `endpoint`, names the URL to POST messages
//! to (`{path}/messages?sessionId=…`). Each stream is one MCP session: an rmcp service runs over
//! a pair of channels (client→server fed by the POSTs, server→client written as `message`
//! events), with keep-alive comments so proxies do not cut an idle stream. The service is
//! started by the session's first POST, not by the GET: an open stream that has sent nothing
//! yet costs its connection, one task and two small channels (issue 16: about 28 KiB of the
//! 40 KiB an idle session took was the rmcp service and its channels).
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
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, channel::mpsc};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use rmcp::{
    ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

type InFlight = Arc<Mutex<session_load::InFlight>>;

struct Session {
    /// The id of the principal that opened the session: only it may post to it.
    owner: String,
    /// The running service's input, once the first POST has started it...
    inbound: Option<mpsc::Sender<ClientJsonRpcMessage>>,
    /// ...and until then what starts it.
    starter: Option<Box<Starter>>,
    last_seen: Arc<Mutex<Instant>>,
    in_flight: InFlight,
}

/// What the first POST of a session needs to start its rmcp service.
struct Starter {
    server: SysomServer,
    outbound: mpsc::Sender<ServerJsonRpcMessage>,
    ct: CancellationToken,
}

impl Starter {
    /// Spawns the session's rmcp service; returns its input.
    fn start(self) -> mpsc::Sender<ClientJsonRpcMessage> {
        let (in_tx, in_rx) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
        let Starter {
            server,
            outbound,
            ct,
        } = self;
        // The out sink errors are never fatal to the sink type, so map them into io errors.
        let sink =
            outbound.sink_map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e));
        tokio::spawn(async move {
            match server.serve_with_ct((sink, in_rx), ct.clone()).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::debug!(error = %e, "legacy SSE session ended before initialize"),
            }
            ct.cancel();
        });
        in_tx
    }
}

impl Session {
    /// The running service's input, starting the service if this is the first message.
    fn sender(&mut self) -> Option<mpsc::Sender<ClientJsonRpcMessage>> {
        if self.inbound.is_none()
            && let Some(starter) = self.starter.take()
        {
            self.inbound = Some(starter.start());
        }
        self.inbound.clone()
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

    /// Opens a session and returns the streaming response. `shutdown` ends every stream.
    /// A registry whose session ids start with `route` and a dot, when given: the routing
    /// hint a load balancer reads from the `sessionId` of the message POSTs.
    pub fn with_route(route: Option<String>) -> Self {
        Self {
            route,
            ..Self::default()
        }
    }

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
        let (out_tx, mut out_rx) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
        let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
        let ct = shutdown.child_token();
        let last_seen = Arc::new(Mutex::new(Instant::now()));
        let in_flight = InFlight::default();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(
            id.clone(),
            Session {
                owner,
                inbound: None,
                starter: Some(Box::new(Starter {
                    server,
                    outbound: out_tx,
                    ct: ct.clone(),
                })),
                last_seen: last_seen.clone(),
                in_flight: in_flight.clone(),
            },
        );
        self.trim.opened(sessions.len());
        drop(sessions);
        metrics::sessions_changed("sse", 1);
        tracing::debug!(session = %id, "legacy SSE session opened");

        let endpoint = format!("event: endpoint\ndata: {message_path}?sessionId={id}\n\n");
        let registry = self.clone();
        tokio::spawn(async move {
            let _ = body_tx.send(Bytes::from(endpoint)).await;
            let mut tick = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
            loop {
                tokio::select! {
                    _ = ct.cancelled() => break,
                    _ = body_tx.closed() => break,
                    msg = out_rx.next() => match msg {
                        Some(msg) => {
                            let json = serde_json::to_string(&msg).unwrap_or_default();
                            *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                            let event = Bytes::from(format!("event: message\ndata: {json}\n\n"));
                            match tokio::time::timeout(SLOW_READER_GRACE, body_tx.send(event)).await {
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
                                in_flight.lock().unwrap_or_else(|e| e.into_inner()).done(&key);
                            }
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        let idle = last_seen.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                        if idle > idle_timeout {
                            tracing::debug!(session = %id, "legacy SSE session idle; closing");
                            break;
                        }
                        let ping = body_tx.send(Bytes::from_static(b": keep-alive\n\n"));
                        if !matches!(tokio::time::timeout(SLOW_READER_GRACE, ping).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
            }
            ct.cancel();
            let open = {
                let mut sessions = registry.sessions.lock().unwrap_or_else(|e| e.into_inner());
                sessions.remove(&id);
                sessions.len()
            };
            registry.trim.closed(open);
            metrics::sessions_changed("sse", -1);
            tracing::debug!(session = %id, "legacy SSE session closed");
        });

        let stream = futures::stream::unfold(body_rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(BodyExt::boxed(StreamBody::new(stream)))
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
        let (last_seen, in_flight) = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = sessions
                .get(session_id)
                .filter(|s| s.owner == principal.id())
                .ok_or(PostError::UnknownSession)?;
            (s.last_seen.clone(), s.in_flight.clone())
        };
        let mut message: ClientJsonRpcMessage =
            serde_json::from_slice(body).map_err(|e| PostError::Malformed(e.to_string()))?;
        if let ClientJsonRpcMessage::Request(r) = &mut message {
            rmcp::model::GetExtensions::extensions_mut(&mut r.request).insert(principal.clone());
        }
        if let ClientJsonRpcMessage::Request(r) = &message {
            in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(id_key(&r.id), body.len(), budget)
                .map_err(PostError::Refused)?;
        }
        // A cancelled request gets no answer: it is no longer in flight.
        if let ClientJsonRpcMessage::Notification(n) = &message
            && let rmcp::model::ClientNotification::CancelledNotification(c) = &n.notification
            && let Some(id) = &c.params.request_id
        {
            in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .done(&id_key(id));
        }
        *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        // The first message that gets this far starts the session's service.
        let mut inbound = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(session_id)
            .and_then(Session::sender)
            .ok_or(PostError::Closed)?;
        inbound.send(message).await.map_err(|_| PostError::Closed)
    }
}
