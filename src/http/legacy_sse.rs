//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships but which the
//! deployment guide's clients (`sse_client`, Qwen Code `"transport": "sse"`) still speak.
//!
//! A GET opens an event stream whose first event, `endpoint`, names the URL to POST messages
//! to (`{path}/messages?sessionId=…`). Each stream is one MCP session: an rmcp service runs over
//! a pair of channels (client→server fed by the POSTs, server→client written as `message`
//! events), with keep-alive comments so proxies do not cut an idle stream.

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

use crate::{metrics, tools::SysomServer};

pub type Body = BoxBody<Bytes, Infallible>;

struct Session {
    inbound: mpsc::Sender<ClientJsonRpcMessage>,
    last_seen: Arc<Mutex<Instant>>,
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
}

impl Registry {
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a session and returns the streaming response. `shutdown` ends every stream.
    pub fn open(
        self: &Arc<Self>,
        server: SysomServer,
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
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Session {
                    inbound: in_tx,
                    last_seen: last_seen.clone(),
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
                            if body_tx.send(Bytes::from(format!("event: message\ndata: {json}\n\n"))).await.is_err() {
                                break;
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
                        if body_tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
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

    /// Delivers one client message to its session.
    pub async fn post(&self, session_id: &str, body: &[u8]) -> Result<(), PostError> {
        let (mut inbound, last_seen) = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = sessions.get(session_id).ok_or(PostError::UnknownSession)?;
            (s.inbound.clone(), s.last_seen.clone())
        };
        let message: ClientJsonRpcMessage =
            serde_json::from_slice(body).map_err(|e| PostError::Malformed(e.to_string()))?;
        *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        inbound.send(message).await.map_err(|_| PostError::Closed)
    }
}
