//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships but which the
//! deployment guide's clients (`sse_client`, Qwen Code `"transport": "sse"`) still speak.
//!
//! A GET opens an event stream whose first event, `endpoint`, names the URL to POST messages
//! to (`{path}/messages?sessionId=…`). Each stream is one MCP session: an rmcp service runs over
//! a pair of channels (client→server fed by the POSTs, server→client written as `message`
//! events), with keep-alive comments so proxies do not cut an idle stream.
//!
//! A client that POSTs but never reads its stream must not make the server queue answers for
//! it without bound: each session admits at most [`MAX_IN_FLIGHT`] requests whose answer has
//! not been written to the stream yet (more are refused with 429), and a stream the client has
//! not read for [`SLOW_READER_GRACE`] is closed, which drops the session. The same in-flight
//! set refuses a second request with an id that is still in flight (its answer would be lost).

use std::{
    collections::{HashMap, HashSet},
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

use crate::{auth::Principal, metrics, tools::SysomServer};

pub type Body = BoxBody<Bytes, Infallible>;

/// Requests of one session whose answer has not been written yet, by their JSON id.
const MAX_IN_FLIGHT: usize = 64;
/// How long the stream may stay unwritable (the client not reading) before it is closed.
const SLOW_READER_GRACE: Duration = Duration::from_secs(10);

type InFlight = Arc<Mutex<HashSet<String>>>;

struct Session {
    /// The id of the principal that opened the session: only it may post to it.
    owner: String,
    inbound: mpsc::Sender<ClientJsonRpcMessage>,
    last_seen: Arc<Mutex<Instant>>,
    in_flight: InFlight,
}

fn id_key(id: &rmcp::model::RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

/// The open legacy SSE sessions.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Session>>,
}

/// Why a POST could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    UnknownSession,
    Malformed(String),
    Closed,
    /// The session has [`MAX_IN_FLIGHT`] unanswered requests (its client is not reading).
    Busy,
    /// A request with this id is still in flight in the session.
    DuplicateId,
}

impl Registry {
    pub(crate) fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (in_tx, in_rx) = mpsc::channel::<ClientJsonRpcMessage>(32);
        let (out_tx, mut out_rx) = mpsc::channel::<ServerJsonRpcMessage>(32);
        let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let last_seen = Arc::new(Mutex::new(Instant::now()));
        let in_flight = InFlight::default();
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Session {
                    owner,
                    inbound: in_tx,
                    last_seen: last_seen.clone(),
                    in_flight: in_flight.clone(),
                },
            );
        metrics::sessions_changed("sse", 1);
        tracing::debug!(session = %id, "legacy SSE session opened");

        let ct = shutdown.child_token();
        let service_ct = ct.clone();
        // The out sink errors are never fatal to the sink type, so map them into io errors.
        let sink = out_tx.sink_map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e));
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
                                in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
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
            registry
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
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
    pub async fn post(
        &self,
        session_id: &str,
        principal: &Principal,
        body: &[u8],
    ) -> Result<(), PostError> {
        let (mut inbound, last_seen, in_flight) = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = sessions
                .get(session_id)
                .filter(|s| s.owner == principal.id())
                .ok_or(PostError::UnknownSession)?;
            (s.inbound.clone(), s.last_seen.clone(), s.in_flight.clone())
        };
        let mut message: ClientJsonRpcMessage =
            serde_json::from_slice(body).map_err(|e| PostError::Malformed(e.to_string()))?;
        if let ClientJsonRpcMessage::Request(r) = &mut message {
            rmcp::model::GetExtensions::extensions_mut(&mut r.request).insert(principal.clone());
        }
        if let ClientJsonRpcMessage::Request(r) = &message {
            let mut pending = in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let key = id_key(&r.id);
            if pending.contains(&key) {
                return Err(PostError::DuplicateId);
            }
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(PostError::Busy);
            }
            pending.insert(key);
        }
        // A cancelled request gets no answer: it is no longer in flight.
        if let ClientJsonRpcMessage::Notification(n) = &message
            && let rmcp::model::ClientNotification::CancelledNotification(c) = &n.notification
            && let Some(id) = &c.params.request_id
        {
            in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id_key(id));
        }
        *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        inbound.send(message).await.map_err(|_| PostError::Closed)
    }
}
