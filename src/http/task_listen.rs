//! Task status notifications (`notifications/tasks`, the `io.modelcontextprotocol/tasks`
//! extension's "Task Status Notifications") on a 2026-07-28 `subscriptions/listen` stream.
//!
//! rmcp 3.11 cannot carry them: its `SubscriptionFilter` has no `taskIds` (serde drops it, so
//! its acknowledgement could not list them) and its subscription sink refuses
//! `TaskStatusNotification`. So the router hands a `subscriptions/listen` POST whose
//! `params.notifications` carries `taskIds` to [`State::task_listen`], which answers it
//! itself as the SSE stream rmcp would send for a 2026-07-28 request (`data: <message>` events
//! without ids — the stateless transport keeps no event store — and `:` keep-alive comments
//! after `--sse-keep-alive` of silence). Every other `subscriptions/listen` still goes to rmcp
//! (which answers -32601: this server offers no other subscription).
//!
//! What is decided here:
//!
//! * **Which requests.** A request of protocol 2026-07-28 only: its `_meta` names that
//!   version (the `MCP-Protocol-Version` header agrees, `Mcp-Method` names the method, as
//!   rmcp checks for that version) and carries client capabilities.
//!   Anything else (a session-era request, a malformed 2026 one) is left to rmcp, whose answer
//!   (-32601 for legacy, -32602/-32001 for broken metadata) stays as it was. 2026-07-28 has no
//!   sessions (SEP-2567; rmcp serves such a request statelessly even with an `Mcp-Session-Id`),
//!   so the client's capabilities are read from the request's `_meta` only, as rmcp's
//!   `client_capabilities()` does for per-request metadata.
//! * **Capability.** `taskIds` without the tasks extension in the request's capabilities is
//!   -32021 "Missing required client capability" (HTTP 400, as rmcp maps that code), with
//!   `data.requiredCapabilities.extensions["io.modelcontextprotocol/tasks"] = {}`.
//! * **Which tasks.** Only handles that open for the caller's principal (the key ring's
//!   `open`, exactly what `tasks/get` requires) are acknowledged; forged, tampered, expired,
//!   malformed and other principals' handles are silently left out of the acknowledgement (the
//!   spec's "task IDs it has agreed to"), duplicates listed once. `tasks/get` needs no scope
//!   beyond being authenticated as the handle's principal (`tasks/*` are not tools, so
//!   `auth::scope` is not consulted); a subscription needs the same and nothing more.
//! * **Other filter fields.** This server advertises no list-changed or resource
//!   subscriptions, and rmcp intersects the requested filter with the advertised capabilities,
//!   so the acknowledgement carries `taskIds` only; nothing else is ever sent on the stream
//!   (no `notifications/progress`, no `notifications/message`).
//! * **What is sent.** The acknowledgement first, then each accepted task's current
//!   `DetailedTask` (what `tasks/get` would answer then: SysOM is asked at once unless another
//!   subscription on this instance polled the same diagnosis already), then one notification
//!   per change of status or status message, the result inlined once completed. Polls follow
//!   [`crate::tools::poll::delay_at`] from the task's creation and go through the upstream
//!   client (and its rate ceiling); one poller per SysOM task however many subscriptions and
//!   handles watch it (`tools::tasks::Watches`). A `tasks/cancel` through this instance is
//!   notified at once. Every notification carries `_meta["io.modelcontextprotocol/
//!   subscriptionId"]` = the listen request's id.
//! * **How it ends.** When every accepted task has had its terminal notification (at once if
//!   none was accepted), and on server shutdown, the stream ends gracefully with the
//!   `SubscriptionsListenResult` (`_meta.subscriptionId`); when the client goes away (or does
//!   not read for [`SLOW_READER_GRACE`]) it ends at once, without a result, and its pollers stop
//!   unless another subscription still watches the same diagnosis.
//! * **Bounds.** At most [`MAX_TASK_IDS`] task ids per request (more: -32602 naming the
//!   limit). A subscription is a call against the principal's calls-per-minute limit (429 as
//!   for `tools/call`) and, while open, counts as a session against `--max-sessions` (503
//!   when full), on a connection counted against the per-client connection limit. Memory per
//!   subscription is its handles and a small channel.
//! * **Audit.** Refusals are recorded (tool `subscriptions/listen`, with the decision and the
//!   HTTP status); an accepted subscription is recorded when it ends, with how many task ids
//!   were accepted and how it ended. Handles are never recorded.
//! * **stdio.** Not supported: rmcp's stdio service cannot be intercepted before it answers,
//!   so on stdio `subscriptions/listen` stays rmcp's -32601 and clients poll `tasks/get`.

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rmcp::{
    ServerHandler,
    model::{
        ClientCapabilities, DetailedTask, ErrorData, Implementation, NotificationMetaObject,
        RequestId, SubscriptionsListenResult, TaskStatusNotificationParams,
    },
};
use serde_json::{Value, json};

use super::{Body, State, limits, router};
use crate::{audit, auth::Principal, metrics, tools::TaskFeed as Feed};

/// Task ids one `subscriptions/listen` may name.
pub(crate) const MAX_TASK_IDS: usize = 64;
/// The only protocol version whose `subscriptions/listen` is answered here.
const VERSION: &str = "2026-07-28";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
const TOOL: &str = "subscriptions/listen";
/// How long the stream may stay unwritable (the client not reading) before it is closed.
const SLOW_READER_GRACE: Duration = Duration::from_secs(10);
/// Encoded events waiting for the connection.
const CHANNEL_CAPACITY: usize = 8;

/// A `subscriptions/listen` this module answers.
#[derive(Debug, PartialEq)]
pub(crate) struct Listen {
    id: Value,
    request_id: RequestId,
    /// The task ids asked for, or why `taskIds` is not a list of strings.
    task_ids: Result<Vec<String>, &'static str>,
    declares_tasks: bool,
}

/// The `subscriptions/listen` with `taskIds` of protocol 2026-07-28 that `message` is, if it is
/// one (see the module docs for what is left to rmcp).
pub(crate) fn recognise(message: &Value, headers: &HeaderMap) -> Option<Listen> {
    if message.get("method").and_then(Value::as_str) != Some(TOOL) {
        return None;
    }
    let id = message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    // An id rmcp cannot take (a fraction) stays rmcp's to refuse.
    let request_id: RequestId = serde_json::from_value(id.clone()).ok()?;
    let params = message.get("params")?;
    let task_ids = params.get("notifications")?.get("taskIds")?;
    let meta = params.get("_meta")?;
    if meta
        .get("io.modelcontextprotocol/protocolVersion")
        .and_then(Value::as_str)
        != Some(VERSION)
        || headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            != Some(VERSION)
    {
        return None;
    }
    // SEP-2243: rmcp refuses a 2026-07-28 request whose Mcp-Method header is missing or
    // disagrees (-32020); such a request stays rmcp's to refuse.
    let mut methods = headers.get_all("mcp-method").iter();
    if methods.next().and_then(|v| v.to_str().ok()) != Some(TOOL) || methods.next().is_some() {
        return None;
    }
    let capabilities: ClientCapabilities = serde_json::from_value(
        meta.get("io.modelcontextprotocol/clientCapabilities")?
            .clone(),
    )
    .ok()?;
    let task_ids = match task_ids.as_array() {
        Some(ids) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("notifications.taskIds must be a list of task ids (strings)"),
        None => Err("notifications.taskIds must be a list of task ids (strings)"),
    };
    Some(Listen {
        id: id.clone(),
        request_id,
        task_ids,
        declares_tasks: capabilities.supports_tasks(),
    })
}

/// `notifications/subscriptions/acknowledged` accepting `task_ids` on subscription `id`.
pub(crate) fn acknowledgement(id: &Value, task_ids: &[&str]) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "_meta": {SUBSCRIPTION_ID: id},
            "notifications": {"taskIds": task_ids},
        },
    })
}

/// `notifications/tasks` carrying `task` on subscription `id`.
pub(crate) fn notification(id: &RequestId, task: DetailedTask) -> Value {
    let mut meta = NotificationMetaObject::new();
    meta.set_subscription_id(id.clone());
    let params = TaskStatusNotificationParams::new(task).with_meta(meta);
    json!({"jsonrpc": "2.0", "method": "notifications/tasks", "params": params})
}

/// The `SubscriptionsListenResult` that ends subscription `id` gracefully, as rmcp builds it.
pub(crate) fn listen_result(id: &Value, request_id: &RequestId, server: Implementation) -> Value {
    let mut result = SubscriptionsListenResult::complete(request_id.clone());
    result.meta.set_server_info(server);
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn sse_event(message: &Value) -> Bytes {
    Bytes::from(format!("data: {message}\n\n"))
}

fn error_response(status: StatusCode, id: &Value, error: ErrorData) -> Response<Body> {
    router::full(
        status,
        "application/json",
        json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string(),
    )
}

fn refusal_record(
    principal: &Principal,
    decision: audit::Decision,
    client: Option<IpAddr>,
    status: StatusCode,
    message: &str,
) {
    let mut r = audit::Record::refusal(
        principal,
        decision,
        "streamable_http",
        status.as_str(),
        message,
    );
    r.client = client.map(|c| c.to_string()).unwrap_or_default();
    r.tool = TOOL.to_string();
    r.emit();
}

/// How a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every accepted task reached a terminal status.
    Completed,
    Shutdown,
    /// The client closed the stream (or stopped reading it).
    Disconnected,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Shutdown => "shutdown",
            Self::Disconnected => "disconnected",
        }
    }
}

/// An open subscription, counted as a session until it drops.
struct Open(Arc<State>);

impl Open {
    fn new(state: Arc<State>) -> Self {
        state.counters.subscription_opened();
        metrics::sessions_changed("task_subscription", 1);
        Self(state)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.subscription_closed();
        metrics::sessions_changed("task_subscription", -1);
    }
}

impl State {
    /// The answer to a task `subscriptions/listen` (see the module docs), or None when the
    /// message is not one (rmcp answers it).
    pub(crate) async fn task_listen(
        self: &Arc<Self>,
        message: &Value,
        headers: &HeaderMap,
        principal: &Principal,
        client: Option<IpAddr>,
    ) -> Option<Response<Body>> {
        let listen = recognise(message, headers)?;
        let (id, request_id) = (listen.id, listen.request_id);
        if !listen.declares_tasks {
            let error = ErrorData::missing_required_client_capability(
                ClientCapabilities::builder().enable_tasks().build(),
            );
            refusal_record(
                principal,
                audit::Decision::DeniedCapability,
                client,
                StatusCode::BAD_REQUEST,
                "subscriptions/listen with taskIds refused: the request does not declare the tasks extension",
            );
            return Some(error_response(StatusCode::BAD_REQUEST, &id, error));
        }
        let task_ids = match listen.task_ids {
            Ok(ids) if ids.len() > MAX_TASK_IDS => Err(format!(
                "at most {MAX_TASK_IDS} taskIds per subscriptions/listen (got {})",
                ids.len()
            )),
            Ok(ids) => Ok(ids),
            Err(why) => Err(why.to_string()),
        };
        let task_ids = match task_ids {
            Ok(ids) => ids,
            Err(why) => {
                refusal_record(
                    principal,
                    audit::Decision::InvalidParams,
                    client,
                    StatusCode::OK,
                    &format!("subscriptions/listen refused: {why}"),
                );
                let error = ErrorData::invalid_params(why, None);
                return Some(error_response(StatusCode::OK, &id, error));
            }
        };
        if !router::accepts(headers, "text/event-stream") {
            return Some(router::jsonrpc_error_for(
                StatusCode::NOT_ACCEPTABLE,
                &id,
                -32600,
                "Not Acceptable: subscriptions/listen answers with an event stream; accept text/event-stream",
            ));
        }
        if let Err(refusal) = self.server().limits().admit(&principal.id(), false) {
            refusal_record(
                principal,
                audit::Decision::RateLimited,
                client,
                StatusCode::TOO_MANY_REQUESTS,
                &format!("subscriptions/listen refused: {}", refusal.message()),
            );
            return Some(router::rate_limited(Some(&id), refusal));
        }
        let Some(slot) = self.reserve_session().await else {
            refusal_record(
                principal,
                audit::Decision::RateLimited,
                client,
                StatusCode::SERVICE_UNAVAILABLE,
                "subscriptions/listen refused: too many open sessions",
            );
            return Some(limits::too_many_sessions());
        };
        let open = Open::new(self.clone());
        drop(slot);

        let who = principal.id();
        let mut feeds: Vec<Feed> = Vec::new();
        for handle in &task_ids {
            if feeds.iter().any(|f| f.handle() == handle) {
                continue;
            }
            match self.server().watch_task(handle, &who) {
                Ok(feed) => feeds.push(feed),
                Err(why) => tracing::debug!(reason = %why, "task subscription: a task id left out"),
            }
        }
        let accepted: Vec<&str> = feeds.iter().map(Feed::handle).collect();
        let ack = sse_event(&acknowledgement(&id, &accepted));
        let mut record = audit::Record {
            transport: "streamable_http",
            tool: TOOL.to_string(),
            decision: Some(audit::Decision::Allowed),
            client: client.map(|c| c.to_string()).unwrap_or_default(),
            ..audit::Record::by(principal)
        };
        let summary = format!("{} of {} task ids accepted", accepted.len(), task_ids.len());
        tracing::debug!(subscription = %id, "{summary}");

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CAPACITY);
        let _ = tx.try_send(ack);
        let keep_alive = self.config.load().server.sse_keep_alive;
        let shutdown = self.shutdown.clone();
        let done = sse_event(&listen_result(
            &id,
            &request_id,
            self.server().get_info().server_info,
        ));
        tokio::spawn(async move {
            let started = Instant::now();
            let end = stream(feeds, &request_id, &tx, done, keep_alive, shutdown).await;
            drop(open);
            record.outcome = end.as_str().to_string();
            record.duration_ms = started.elapsed().as_millis() as u64;
            record.message = summary;
            record.emit();
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .header("x-accel-buffering", "no")
                .body(BodyExt::boxed(StreamBody::new(body)))
                .expect("static response parts are valid"),
        )
    }
}

/// Writes the notifications of `feeds` to `tx` until every feed ended (then `done`, the
/// listen result), the server shuts down (`done` too) or the client goes away.
async fn stream(
    feeds: Vec<Feed>,
    id: &RequestId,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    done: Bytes,
    keep_alive: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> End {
    let mut events = futures::stream::select_all(feeds.into_iter().map(|feed| {
        Box::pin(futures::stream::unfold(feed, |mut feed| async move {
            feed.next().await.map(|task| (task, feed))
        }))
    }));
    let send = |bytes: Bytes| async move {
        matches!(
            tokio::time::timeout(SLOW_READER_GRACE, tx.send(bytes)).await,
            Ok(Ok(()))
        )
    };
    let mut quiet_until = tokio::time::Instant::now() + keep_alive;
    loop {
        let event = tokio::select! {
            biased;
            _ = tx.closed() => return End::Disconnected,
            _ = shutdown.cancelled() => {
                let _ = send(done).await;
                return End::Shutdown;
            }
            task = events.next() => match task {
                Some(task) => sse_event(&notification(id, task)),
                None => {
                    return if send(done).await { End::Completed } else { End::Disconnected };
                }
            },
            _ = tokio::time::sleep_until(quiet_until) => Bytes::from_static(b":\n\n"),
        };
        if !send(event).await {
            return End::Disconnected;
        }
        quiet_until = tokio::time::Instant::now() + keep_alive;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{Task, TaskPayload, TaskStatus};

    const TASKS: &str = "io.modelcontextprotocol/tasks";

    fn headers(version: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = version {
            h.insert("mcp-protocol-version", v.parse().unwrap());
        }
        h.insert("mcp-method", TOOL.parse().unwrap());
        h
    }

    fn listen(task_ids: Value, capabilities: Value) -> Value {
        json!({
            "jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
            "params": {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": VERSION,
                    "io.modelcontextprotocol/clientCapabilities": capabilities,
                },
                "notifications": {"taskIds": task_ids, "toolsListChanged": true},
            },
        })
    }

    #[test]
    fn only_2026_task_listens_are_taken() {
        let caps = json!({"extensions": {TASKS: {}}});
        let m = listen(json!(["a", "b"]), caps.clone());
        assert_eq!(
            recognise(&m, &headers(Some(VERSION))),
            Some(Listen {
                id: json!(7),
                request_id: RequestId::Number(7),
                task_ids: Ok(vec!["a".into(), "b".into()]),
                declares_tasks: true,
            })
        );
        // The header must agree (rmcp answers the mismatch), the version must be 2026-07-28.
        assert_eq!(recognise(&m, &headers(None)), None);
        assert_eq!(recognise(&m, &headers(Some("2025-11-25"))), None);
        let mut h = headers(Some(VERSION));
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert_eq!(recognise(&m, &h), None, "rmcp answers the header mismatch");
        // No taskIds: rmcp's subscriptions/listen.
        let mut other = m.clone();
        other["params"]["notifications"]
            .as_object_mut()
            .unwrap()
            .remove("taskIds");
        assert_eq!(recognise(&other, &headers(Some(VERSION))), None);
        let bare = listen(json!(["a"]), json!({}));
        assert!(
            !recognise(&bare, &headers(Some(VERSION)))
                .unwrap()
                .declares_tasks
        );
        let bad = listen(json!("a"), caps);
        assert!(
            recognise(&bad, &headers(Some(VERSION)))
                .unwrap()
                .task_ids
                .is_err()
        );
    }

    #[test]
    fn the_wire_shapes() {
        let id = json!("sub-1");
        assert_eq!(
            acknowledgement(&id, &["h1"]),
            json!({
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {
                    "_meta": {"io.modelcontextprotocol/subscriptionId": "sub-1"},
                    "notifications": {"taskIds": ["h1"]},
                },
            })
        );
        let rid: RequestId = serde_json::from_value(id.clone()).unwrap();
        let task = Task::new(
            "h1".to_string(),
            TaskStatus::Working,
            "2026-12-03T10:00:00Z".to_string(),
            "2026-12-03T10:00:05Z".to_string(),
        );
        let mut result = rmcp::model::JsonObject::new();
        result.insert("isError".into(), json!(false));
        let done = DetailedTask::new(task, TaskPayload::Completed { result });
        let n = notification(&rid, done);
        assert_eq!(n["method"], "notifications/tasks");
        assert_eq!(
            n["params"]["_meta"],
            json!({"io.modelcontextprotocol/subscriptionId": "sub-1"})
        );
        assert_eq!(n["params"]["taskId"], "h1");
        assert_eq!(n["params"]["status"], "completed");
        assert_eq!(n["params"]["result"], json!({"isError": false}));
        assert!(n.get("id").is_none());

        let r = listen_result(&id, &rid, Implementation::new("sysom-mcp", "1.0"));
        assert_eq!(r["id"], "sub-1");
        assert_eq!(r["result"]["resultType"], "complete");
        assert_eq!(
            r["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "sub-1"
        );
        assert_eq!(
            r["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "sysom-mcp"
        );
        let e = ErrorData::missing_required_client_capability(
            ClientCapabilities::builder().enable_tasks().build(),
        );
        let e = serde_json::to_value(e).unwrap();
        assert_eq!(e["code"], -32021);
        assert_eq!(
            e["data"],
            json!({"requiredCapabilities": {"extensions": {TASKS: {}}}})
        );
        assert_eq!(
            sse_event(&json!({"a": 1})),
            Bytes::from_static(b"data: {\"a\":1}\n\n")
        );
    }
}
