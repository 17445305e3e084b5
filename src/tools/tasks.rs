//! MCP tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663) for the cloud
//! diagnoses: to a client that declares the extension, a diagnosis tool answers at once with a
//! task whose id is a sealed handle (`crate::tasks::handle`) carrying SysOM's task id. Nothing
//! about the task is kept here: `tasks/get` opens the handle and asks SysOM, so any instance
//! holding the key answers for any task, including after the instance that created it is gone.
//!
//! What stays per instance: a `tasks/cancel` (SysOM cannot stop a diagnosis, so cancelling only
//! marks the handle cancelled on the instance that received it; others still report SysOM's
//! state) and nothing else.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolResult, CreateTaskResult, DetailedTask, GetTaskResult, JsonObject, Task,
        TaskPayload,
    },
    service::RequestContext,
};
use serde_json::Value;

use super::{
    Services,
    diagnosis::{self, Polled},
    envelope,
};
use crate::tasks::handle::{self, Claims, unix_secs};

/// How long a handle stays valid after its diagnosis's deadline: time enough to fetch the
/// result of a finished diagnosis later.
const KEEP_AFTER_DEADLINE: Duration = Duration::from_secs(3600);
/// Cancelled handles remembered per instance, at most.
const MAX_CANCELLED: usize = 10_000;

/// A diagnosis started for a task.
#[derive(Clone)]
pub struct Started {
    pub task_id: String,
    pub region: String,
    pub service: &'static str,
}

type StartFuture = Pin<Box<dyn Future<Output = Result<Started, Value>> + Send>>;
/// Checks the arguments (`Err`: the argument error) and returns the future that starts the
/// diagnosis (`Err`: the envelope saying why it did not start).
pub type Starter =
    Box<dyn Fn(Arc<Services>, JsonObject) -> Result<StartFuture, String> + Send + Sync>;

/// Diagnoses started as tasks through this instance, by coalescing key, until their deadline:
/// an identical task call while one is starting or still running gets its own handle for the
/// same SysOM task instead of a second InvokeDiagnosis. Per instance (the fleet shares only the
/// key); bounded like [`Cancelled`].
#[derive(Clone, Default)]
pub struct Starts(Arc<Mutex<HashMap<String, Arc<Start>>>>);

struct Start {
    until: tokio::time::Instant,
    started: tokio::sync::OnceCell<Result<Started, Value>>,
}

impl Starts {
    /// The diagnosis for `key`: the one in flight if there is one (`start` is not run), else
    /// what `start` gives, shared with identical calls for `lifetime` if it started.
    pub async fn start_or_attach<Fut>(
        &self,
        services: &Services,
        key: String,
        lifetime: Duration,
        start: Fut,
    ) -> Result<Started, Value>
    where
        Fut: Future<Output = Result<Started, Value>>,
    {
        let entry = loop {
            let entry = self.entry(&key, lifetime);
            let Some(Ok(started)) = entry.started.get() else {
                break entry; // starting now (wait for it) or fresh (start it)
            };
            // Started earlier: shared only while SysOM still runs it (a finished diagnosis is
            // not reused, as for calls without tasks).
            if let Polled::Running(_) = diagnosis::poll_once(services, &started.task_id).await {
                tracing::debug!(sysom_task_id = %started.task_id, "attached to an identical diagnosis task in flight");
                return Ok(started.clone());
            }
            self.remove(&key, &entry);
        };
        let outcome = entry.started.get_or_init(|| start).await.clone();
        if outcome.is_err() {
            self.remove(&key, &entry);
        }
        outcome
    }

    fn entry(&self, key: &str, lifetime: Duration) -> Arc<Start> {
        let now = tokio::time::Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.until > now);
        if let Some(entry) = map.get(key) {
            return entry.clone();
        }
        let entry = Arc::new(Start {
            until: now + lifetime,
            started: tokio::sync::OnceCell::new(),
        });
        if map.len() < MAX_CANCELLED {
            map.insert(key.to_string(), entry.clone());
        }
        entry
    }

    fn remove(&self, key: &str, entry: &Arc<Start>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(key);
        }
    }
}

/// Handles cancelled through this instance, with their expiry, and a counter of cancellations
/// that task subscriptions watch (so a `tasks/cancel` is notified at once, not at the next poll).
pub struct Cancelled {
    handles: Mutex<HashMap<String, u64>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Cancelled {
    fn default() -> Self {
        Self {
            handles: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Cancelled {
    fn insert(&self, handle: &str, expires_at: u64, now: u64) {
        {
            let mut map = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, e| *e > now);
            if map.len() < MAX_CANCELLED {
                map.insert(handle.to_string(), expires_at);
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn contains(&self, handle: &str) -> bool {
        let map = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(handle)
    }
}

/// SysOM's latest word on one diagnosis, shared by every subscription watching it.
type Latest = tokio::sync::watch::Sender<Option<Arc<Polled>>>;

/// The diagnoses task subscriptions watch on this instance, by SysOM task id: one poller per
/// diagnosis however many subscriptions (and handles) follow it. A poller polls at once, then on
/// the [`super::poll::delay_at`] schedule counted from the task's creation, until the diagnosis
/// ends, its deadline passes, or nobody watches any more. Bounded by the subscriptions, which
/// the HTTP layer bounds.
#[derive(Default)]
pub struct Watches(Mutex<HashMap<String, Latest>>);

impl Watches {
    /// Diagnoses polled right now (for tests and metrics).
    pub fn polling(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn subscribe(
        self: &Arc<Self>,
        services: &Arc<ArcSwap<Services>>,
        claims: &Claims,
    ) -> tokio::sync::watch::Receiver<Option<Arc<Polled>>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(latest) = map.get(&claims.task_id) {
            return latest.subscribe();
        }
        let latest = Latest::new(None);
        let rx = latest.subscribe();
        map.insert(claims.task_id.clone(), latest.clone());
        drop(map);
        let watches = self.clone();
        let services = services.clone();
        let (task_id, created_at) = (claims.task_id.clone(), claims.created_at);
        tokio::spawn(async move {
            watches.poll(services, task_id, created_at, latest).await;
        });
        rx
    }

    async fn poll(
        &self,
        services: Arc<ArcSwap<Services>>,
        task_id: String,
        created_at: u64,
        latest: Latest,
    ) {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(created_at);
        loop {
            let s = services.load_full();
            let deadline = created + s.diagnosis.timeout;
            let polled = diagnosis::poll_once(&s, &task_id).await;
            let over = matches!(polled, Polled::Done(_)) || SystemTime::now() >= deadline;
            latest.send_replace(Some(Arc::new(polled)));
            if !over {
                let elapsed = SystemTime::now()
                    .duration_since(created)
                    .unwrap_or_default();
                let settings = &s.diagnosis;
                let delay = super::poll::delay_at(
                    settings.poll_interval,
                    settings.poll_max_interval,
                    elapsed,
                )
                .min(
                    deadline
                        .duration_since(SystemTime::now())
                        .unwrap_or_default(),
                );
                drop(s);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = latest.closed() => {}
                }
            }
            // Decided under the lock, so that nobody subscribes to a poller that is leaving.
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if over || latest.receiver_count() == 0 {
                if map.get(&task_id).is_some_and(|l| l.same_channel(&latest)) {
                    map.remove(&task_id);
                }
                tracing::debug!(sysom_task_id = %task_id, "task subscription poller done");
                return;
            }
        }
    }
}

/// One subscribed handle: yields its `DetailedTask` now and on every change of status (or
/// status message), ending after a terminal one.
pub struct Feed {
    services: Arc<ArcSwap<Services>>,
    cancelled: Arc<Cancelled>,
    handle: String,
    claims: Claims,
    watches: Arc<Watches>,
    latest: tokio::sync::watch::Receiver<Option<Arc<Polled>>>,
    cancels: tokio::sync::watch::Receiver<u64>,
    last: Option<(rmcp::model::TaskStatus, Option<String>)>,
    done: bool,
}

fn is_terminal(status: rmcp::model::TaskStatus) -> bool {
    use rmcp::model::TaskStatus::*;
    matches!(status, Completed | Failed | Cancelled)
}

impl Feed {
    /// The handle this feed follows.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// The next state to notify; None once the terminal one was given (or the poller gave up).
    pub async fn next(&mut self) -> Option<DetailedTask> {
        if self.done {
            return None;
        }
        loop {
            let services = self.services.load_full();
            let now = unix_secs(SystemTime::now());
            let latest = self.latest.borrow_and_update().clone();
            let detail = if self.cancelled.contains(&self.handle) {
                Some(detailed(
                    &services,
                    self.handle.clone(),
                    &self.claims,
                    now,
                    View::Cancelled,
                ))
            } else {
                latest.as_deref().map(|polled| {
                    detailed(
                        &services,
                        self.handle.clone(),
                        &self.claims,
                        now,
                        View::Polled(polled),
                    )
                })
            };
            if let Some(detail) = detail {
                let key = (detail.task.status, detail.task.status_message.clone());
                let terminal = is_terminal(key.0);
                if self.last.as_ref() != Some(&key) {
                    self.last = Some(key);
                    self.done = terminal;
                    return Some(detail);
                }
            }
            tokio::select! {
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        // The poller left and every value it sent was seen, the last one not
                        // terminal for this handle: it stopped at its own deadline, counted
                        // from an earlier handle of the same SysOM task. Follow on with a
                        // poller of this handle's.
                        self.latest = self.watches.subscribe(&self.services, &self.claims);
                    }
                }
                _ = self.cancels.changed() => {}
            }
        }
    }
}

/// Opens `handle` for `principal` (as `tasks/get` does) and starts following it.
pub fn watch(
    services: &Arc<ArcSwap<Services>>,
    cancelled: &Arc<Cancelled>,
    watches: &Arc<Watches>,
    handle: &str,
    principal: &str,
) -> Result<Feed, handle::Refused> {
    let claims = services
        .load()
        .task_keys
        .open(handle, principal, SystemTime::now())?;
    let latest = watches.subscribe(services, &claims);
    Ok(Feed {
        services: services.clone(),
        cancelled: cancelled.clone(),
        handle: handle.to_string(),
        claims,
        watches: watches.clone(),
        latest,
        cancels: cancelled.changes.subscribe(),
        last: None,
        done: false,
    })
}

/// Whether the request declared the tasks extension (per request or at `initialize`).
pub fn client_wants_tasks(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
        .to_string()
}

/// The task as the client sees it (without its payload).
fn task(services: &Services, handle: String, claims: &Claims, now: u64) -> Task {
    let elapsed = Duration::from_secs(now.saturating_sub(claims.created_at));
    let settings = &services.diagnosis;
    let poll = super::poll::delay_at(settings.poll_interval, settings.poll_max_interval, elapsed);
    Task::new(
        handle,
        rmcp::model::TaskStatus::Working,
        rfc3339(claims.created_at),
        rfc3339(now),
    )
    .with_ttl_ms(claims.expires_at.saturating_sub(claims.created_at) * 1000)
    .with_poll_interval_ms(poll.as_millis() as u64)
}

/// Seals a handle for a diagnosis just started and answers the `tools/call` with it.
pub fn created(services: &Services, principal: String, started: Started) -> CreateTaskResult {
    let now = SystemTime::now();
    let deadline = now + services.diagnosis.timeout;
    let claims = Claims {
        task_id: started.task_id,
        region: started.region,
        service: started.service.to_string(),
        principal,
        created_at: unix_secs(now),
        expires_at: handle::expiry(deadline, KEEP_AFTER_DEADLINE),
        nonce: hex::encode(rand::random::<[u8; 6]>()),
    };
    let sealed = services.task_keys.seal(&claims);
    let mut t = task(services, sealed, &claims, unix_secs(now));
    t.status_message = Some(format!(
        "{} task {}: started",
        claims.service, claims.task_id
    ));
    tracing::info!(
        sysom_tool = %claims.service,
        sysom_task_id = %claims.task_id,
        "diagnosis {} started as an MCP task", claims.service
    );
    CreateTaskResult::new(t)
}

/// The `tools/call` result a diagnosis envelope stands for (a failed diagnosis is an error).
pub fn tool_result(envelope: Value, failure_is_error: bool) -> CallToolResult {
    let code = envelope
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or(envelope::SUCCESS);
    if failure_is_error && code != envelope::SUCCESS {
        CallToolResult::structured_error(envelope)
    } else {
        CallToolResult::structured(envelope)
    }
}

/// The spec's answer for a task id that is not (or no longer) valid: -32602.
fn refused(why: handle::Refused) -> ErrorData {
    ErrorData::invalid_params(format!("unknown task: {why}"), None)
}

fn open(
    services: &Services,
    handle: &str,
    principal: &str,
    now: SystemTime,
) -> Result<Claims, ErrorData> {
    services
        .task_keys
        .open(handle, principal, now)
        .map_err(refused)
}

/// What `tasks/get` knows about a task besides its handle: cancelled through this instance
/// (SysOM is not asked), or SysOM's latest word.
pub(crate) enum View<'a> {
    Cancelled,
    Polled(&'a Polled),
}

/// The `DetailedTask` of an opened handle at `now` (unix seconds), as `tasks/get` answers it
/// and `notifications/tasks` carries it: working while SysOM runs the diagnosis and its
/// deadline has not passed, completed (the tool result inlined) once it ended or timed out,
/// cancelled if cancelled here.
pub(crate) fn detailed(
    services: &Services,
    handle: String,
    claims: &Claims,
    now: u64,
    view: View<'_>,
) -> DetailedTask {
    let mut t = task(services, handle, claims, now);
    let envelope = match view {
        View::Cancelled => {
            t.status_message =
                Some("cancelled by the client; SysOM's diagnosis may still run".into());
            return DetailedTask::new(t, TaskPayload::Cancelled);
        }
        View::Polled(Polled::Running(status)) => {
            let deadline = claims.created_at + services.diagnosis.timeout.as_secs();
            if now < deadline {
                t.status_message = Some(format!(
                    "{} task {}: {status}",
                    claims.service, claims.task_id
                ));
                return DetailedTask::new(t, TaskPayload::Working);
            }
            diagnosis::timed_out(services.diagnosis.timeout, &claims.task_id)
        }
        View::Polled(Polled::Done(envelope)) => envelope.clone(),
    };
    let result = tool_result(
        serde_json::to_value(envelope).expect("envelopes serialise"),
        true,
    );
    let result = match serde_json::to_value(result) {
        Ok(Value::Object(m)) => m,
        _ => JsonObject::new(),
    };
    DetailedTask::new(t, TaskPayload::Completed { result })
}

/// `tasks/get`: opens the handle and asks SysOM how the diagnosis is doing.
pub async fn get(
    services: &Services,
    cancelled: &Cancelled,
    handle: String,
    principal: &str,
) -> Result<GetTaskResult, ErrorData> {
    let now = SystemTime::now();
    let claims = open(services, &handle, principal, now)?;
    let now = unix_secs(now);
    if cancelled.contains(&handle) {
        return Ok(GetTaskResult::new(detailed(
            services,
            handle,
            &claims,
            now,
            View::Cancelled,
        )));
    }
    let polled = diagnosis::poll_once(services, &claims.task_id).await;
    Ok(GetTaskResult::new(detailed(
        services,
        handle,
        &claims,
        now,
        View::Polled(&polled),
    )))
}

/// `tasks/cancel`: SysOM has no way to stop a diagnosis, so the handle is marked cancelled
/// here and `tasks/get` through this instance reports it so.
pub fn cancel(
    services: &Services,
    cancelled: &Cancelled,
    handle: &str,
    principal: &str,
) -> Result<(), ErrorData> {
    let now = SystemTime::now();
    let claims = open(services, handle, principal, now)?;
    cancelled.insert(handle, claims.expires_at, unix_secs(now));
    tracing::info!(sysom_task_id = %claims.task_id, "MCP task cancelled by the client");
    Ok(())
}

/// `tasks/update`: a diagnosis never asks the client for input.
pub fn update(services: &Services, handle: &str, principal: &str) -> Result<(), ErrorData> {
    open(services, handle, principal, SystemTime::now())?;
    Err(ErrorData::invalid_params(
        "this task has no outstanding input requests",
        None,
    ))
}
