//! The SysOM OpenAPI client: one shared HTTPS connection pool (rustls, system CA store), signed
//! requests, timeouts, and retries with jittered backoff for GET operations that were throttled
//! or hit a 5xx. A POST is retried only when its connection could not be opened (it provably
//! never left): InvokeDiagnosis sent twice would start two diagnoses.
//!
//! The upstream is not trusted with our memory or our time: every request has a total deadline
//! (a body that drips in one byte at a time never trips a read timeout), bodies larger than
//! `max_response_bytes` are refused while they stream in, and redirects are never followed (a
//! redirect would carry the signed headers and the STS token to another origin).

pub mod ops;
pub mod rate_limit;

use std::{sync::Arc, time::Duration};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

use crate::{
    config::UpstreamSettings,
    credentials::{CredentialError, Provider},
    signed_request::{SendError, SignedRequest},
};
pub use ops::Operation;

/// Why a call produced no usable answer. `Display` matches the SDK's wording so users recognise
/// it, and never contains a secret.
#[derive(Debug, thiserror::Error, Clone)]
pub enum UpstreamError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("SysOM OpenAPI did not answer within {0:?} (read timeout)")]
    Timeout(Duration),
    #[error("cannot reach the SysOM OpenAPI at {endpoint}: {message}")]
    Connect {
        endpoint: String,
        message: String,
        /// The connection was never established, so the request was not sent.
        unsent: bool,
    },
    #[error("Error: {code} code: {status}, {message} request id: {}", request_id.as_deref().unwrap_or("-"))]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("SysOM OpenAPI answered HTTP {status} with a body that is not valid JSON: {snippet}")]
    Malformed { status: u16, snippet: String },
    #[error("SysOM OpenAPI request did not finish within {0:?} (total request deadline)")]
    Deadline(Duration),
    #[error(
        "SysOM OpenAPI answered with a body larger than {limit} bytes (upstream.max_response_bytes); refused"
    )]
    TooLarge { limit: usize },
    #[error("SysOM OpenAPI answered HTTP {status} (a redirect); redirects are never followed")]
    Redirected { status: u16 },
}

impl UpstreamError {
    /// The gateway's error code, or a short code of our own for transport failures.
    pub fn code(&self) -> &str {
        match self {
            Self::Credentials(CredentialError::Missing { .. }) => "CredentialsMissing",
            // STS or the ECS metadata service failed: configured, but not obtainable now.
            Self::Credentials(CredentialError::Fetch(_)) => "CredentialsUnavailable",
            Self::Timeout(_) => "UpstreamTimeout",
            Self::Connect { .. } => "UpstreamUnreachable",
            Self::Api { code, .. } => code,
            Self::Malformed { .. } => "MalformedResponse",
            Self::Deadline(_) => "UpstreamTimeout",
            Self::TooLarge { .. } => "ResponseTooLarge",
            Self::Redirected { .. } => "UpstreamRedirect",
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => *status >= 500 || code.starts_with("Throttling"),
            Self::Timeout(_) | Self::Connect { .. } | Self::Deadline(_) => true,
            _ => false,
        }
    }

    /// Whether a failed `method` request may be sent again: a GET if the failure is
    /// retryable, a POST only if it never left.
    fn may_retry(&self, method: ops::OpMethod) -> bool {
        match method {
            ops::OpMethod::Get => self.is_retryable(),
            ops::OpMethod::Post => matches!(self, Self::Connect { unsent: true, .. }),
        }
    }
}

/// The first 200 characters of a body, for error messages.
pub fn snippet(text: &str) -> String {
    let s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        format!("{s}…")
    } else {
        s
    }
}

/// Reads `Code`/`Message`/`RequestId` in any of the casings the gateway uses.
fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| v.get(*n).and_then(Value::as_str))
}

/// The request id of a JSON body, whatever its key's spelling.
pub fn request_id_of(v: &Value) -> Option<String> {
    field(v, &["RequestId", "requestId", "request_id"]).map(str::to_string)
}

tokio::task_local! {
    /// The RequestId of the last SysOM answer seen by the current tool call.
    static LAST_REQUEST_ID: std::cell::RefCell<Option<String>>;
}

/// Runs `fut` and also returns the RequestId of the last SysOM answer it received, so a tool
/// call's log record can carry it even when the result envelope has no place for it.
pub async fn with_request_id<F: std::future::Future>(fut: F) -> (F::Output, Option<String>) {
    LAST_REQUEST_ID
        .scope(std::cell::RefCell::new(None), async move {
            let out = fut.await;
            let id = LAST_REQUEST_ID.with(|c| c.borrow().clone());
            (out, id)
        })
        .await
}

/// Records `id` as the last RequestId seen by the current tool call (see [`with_request_id`]).
pub fn note_request_id(id: Option<String>) {
    if id.is_some() {
        let _ = LAST_REQUEST_ID.try_with(|c| *c.borrow_mut() = id);
    }
}

/// The shared client. Clone freely: clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: LazyHttp,
    endpoint: Url,
    credentials: Arc<Provider>,
    settings: UpstreamSettings,
    ceiling: rate_limit::Ceiling,
}

/// Builds the one HTTP client of the process: rustls with the system's CA store, pooled. It
/// never follows redirects, and no request (STS and ECS metadata ones included) outlives
/// `request_timeout`.
pub fn build_http(settings: &UpstreamSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sysom-mcp/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// The HTTPS client, built off the start-up path: building it reads and parses the whole
/// system CA store (hundreds of certificates, a bundle and a hashed directory on most hosts),
/// which on a busy 2-core host took most of the cold start when it ran beside it (issue 16).
/// Nothing builds it at start: the server calls [`LazyHttp::warm_up`] once it is ready and
/// [`WARM_UP_DELAY`] has passed, and the warm-up thread runs at a lower priority. A call that
/// comes first builds it itself; a call that comes while the warm-up builds it waits for that
/// one build (`OnceLock`): it is never built twice.
#[derive(Clone)]
pub struct LazyHttp {
    settings: UpstreamSettings,
    cell: Arc<std::sync::OnceLock<reqwest::Client>>,
}

/// How long after readiness the client is built in the background: the first requests of a
/// (socket-activated) start are answered before the CA store is read.
pub const WARM_UP_DELAY: Duration = Duration::from_secs(1);

/// How much nicer than the rest of the process the warm-up thread runs.
const WARM_UP_NICENESS: i32 = 10;

impl LazyHttp {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Self {
            settings: settings.clone(),
            cell: Arc::default(),
        }
    }

    pub fn get(&self) -> &reqwest::Client {
        self.cell.get_or_init(|| {
            tracing::debug!("building the HTTPS client (reading the CA store)");
            let client = build_http(&self.settings);
            tracing::debug!("HTTPS client built");
            client
        })
    }

    /// Whether the client has been built (by a call or the warm-up).
    pub fn is_built(&self) -> bool {
        self.cell.get().is_some()
    }

    /// Builds the client on a low-priority thread of its own (no-op once built).
    pub fn warm_up(&self) {
        if self.is_built() {
            return;
        }
        let lazy = self.clone();
        let _ = std::thread::Builder::new()
            .name("sysom-https-init".into())
            .spawn(move || {
                lower_this_threads_priority(WARM_UP_NICENESS);
                lazy.get();
            });
    }
}

/// Raises the calling thread's nice value by `by` (Linux: a thread's own priority), so that
/// building the client yields to request handling. Raising one's nice value needs no
/// privilege; failure only leaves the priority as it was.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_this_threads_priority(by: i32) {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: getpriority/setpriority take plain integers and touch no memory of ours;
    // PRIO_PROCESS with a thread id addresses that one thread on Linux.
    unsafe {
        nix::errno::Errno::clear();
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && nix::errno::Errno::last_raw() != 0 {
            return;
        }
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19));
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority(_by: i32) {}

impl Client {
    pub fn new(
        http: LazyHttp,
        endpoint: Url,
        credentials: Arc<Provider>,
        settings: UpstreamSettings,
    ) -> Self {
        Self {
            http,
            endpoint,
            credentials,
            ceiling: rate_limit::Ceiling::shared(settings.max_requests_per_second),
            settings,
        }
    }

    pub fn credentials(&self) -> &Provider {
        &self.credentials
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Builds the HTTPS client in the background now (see [`LazyHttp::warm_up`]).
    pub fn warm_up(&self) {
        self.http.warm_up();
    }

    /// Whether the HTTPS client has been built.
    pub fn http_built(&self) -> bool {
        self.http.is_built()
    }

    /// Calls `op` and returns its JSON body. HTTP errors become [`UpstreamError::Api`] with the
    /// gateway's Code, Message and RequestId; GETs are retried as the module comment says.
    pub async fn call(
        &self,
        op: &Operation,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let mut attempt = 0;
        loop {
            let result = self.call_once(op, query, body).await;
            match result {
                Err(e) if attempt < self.settings.max_retries && e.may_retry(op.method) => {
                    attempt += 1;
                    let delay = backoff(attempt);
                    tracing::debug!(
                        action = op.action,
                        attempt,
                        code = e.code(),
                        ?delay,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        op: &Operation,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let key = self.credentials.get(self.http.get()).await?;
        self.ceiling.admit().await;
        let request = SignedRequest {
            action: op.action,
            version: ops::API_VERSION,
            method: op.method.as_reqwest(),
            path: op.path,
            query,
            body,
        };
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            self.settings.request_timeout,
            request.send(
                self.http.get(),
                &self.endpoint,
                &key,
                self.settings.max_response_bytes,
            ),
        )
        .await;
        let (status, text) = match sent {
            Err(_elapsed) => return Err(UpstreamError::Deadline(self.settings.request_timeout)),
            Ok(Err(SendError::TooLarge(limit))) => return Err(UpstreamError::TooLarge { limit }),
            Ok(Err(SendError::Http(e))) => return Err(self.transport_error(e, started.elapsed())),
            Ok(Ok(answer)) => answer,
        };
        if status.is_redirection() {
            return Err(UpstreamError::Redirected {
                status: status.as_u16(),
            });
        }
        let result = interpret(status, &text);
        note_request_id(match &result {
            Ok(body) => request_id_of(body),
            Err(e) => e.request_id().map(str::to_string),
        });
        result
    }

    fn transport_error(&self, e: reqwest::Error, elapsed: Duration) -> UpstreamError {
        if e.is_timeout() && elapsed >= self.settings.request_timeout {
            UpstreamError::Deadline(self.settings.request_timeout)
        } else if e.is_timeout() && !e.is_connect() {
            UpstreamError::Timeout(self.settings.read_timeout)
        } else {
            // The innermost cause says the useful part ("connection refused", DNS, TLS).
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = s.to_string();
                source = s.source();
            }
            UpstreamError::Connect {
                endpoint: redacted_url(&self.endpoint),
                message: redact_password(&message, &self.endpoint),
                unsent: e.is_connect(),
            }
        }
    }
}

/// `url` without its password: error results go to MCP clients, and an endpoint URL may carry
/// credentials for a proxy in front of the OpenAPI.
pub fn redacted_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("REDACTED"));
    }
    shown.to_string()
}

/// `text` with every occurrence of `url`'s password (raw or percent-encoded) replaced.
fn redact_password(text: &str, url: &Url) -> String {
    let Some(encoded) = url.password().filter(|p| !p.is_empty()) else {
        return text.to_string();
    };
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    text.replace(encoded, "REDACTED")
        .replace(decoded.as_ref(), "REDACTED")
}

/// Turns a status and body into a JSON value or an error carrying the gateway's fields.
fn interpret(status: StatusCode, text: &str) -> Result<Value, UpstreamError> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    if status.is_success() {
        return parsed.ok_or_else(|| UpstreamError::Malformed {
            status: status.as_u16(),
            snippet: snippet(text),
        });
    }
    let json = parsed.unwrap_or(Value::Null);
    Err(UpstreamError::Api {
        status: status.as_u16(),
        code: field(&json, &["Code", "code"])
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP{}", status.as_u16())),
        message: field(&json, &["Message", "message"])
            .map(str::to_string)
            .unwrap_or_else(|| snippet(text)),
        request_id: request_id_of(&json),
    })
}

/// Exponential backoff with equal jitter: between half and all of 200 ms, 400 ms, 800 ms …,
/// capped at 3 s.
fn backoff(attempt: u32) -> Duration {
    let cap = (200u64 << attempt.min(4)).min(3000);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_code_message_and_request_id() {
        let err = interpret(
            StatusCode::FORBIDDEN,
            r#"{"RequestId":"RID-1","Code":"Forbidden.NoPermission","Message":"no"}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), "Forbidden.NoPermission");
        assert_eq!(err.request_id(), Some("RID-1"));
        assert_eq!(
            err.to_string(),
            "Error: Forbidden.NoPermission code: 403, no request id: RID-1"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn throttling_and_5xx_are_retryable() {
        let t = interpret(StatusCode::BAD_REQUEST, r#"{"Code":"Throttling.User"}"#).unwrap_err();
        assert!(t.is_retryable());
        let s = interpret(StatusCode::BAD_GATEWAY, "<html>").unwrap_err();
        assert!(s.is_retryable());
        assert_eq!(s.code(), "HTTP502");
    }

    #[test]
    fn a_post_is_retried_only_when_it_never_left() {
        let refused = |unsent| UpstreamError::Connect {
            endpoint: "http://127.0.0.1:1/".into(),
            message: "connection refused".into(),
            unsent,
        };
        assert!(refused(true).may_retry(ops::OpMethod::Post));
        assert!(!refused(false).may_retry(ops::OpMethod::Post));
        assert!(refused(false).may_retry(ops::OpMethod::Get));
        let throttled = interpret(StatusCode::BAD_REQUEST, r#"{"Code":"Throttling.User"}"#);
        assert!(!throttled.unwrap_err().may_retry(ops::OpMethod::Post));
        assert!(!UpstreamError::Timeout(Duration::from_secs(1)).may_retry(ops::OpMethod::Post));
    }

    #[test]
    fn malformed_success_body_is_an_error() {
        let e = interpret(StatusCode::OK, "{not json").unwrap_err();
        assert!(matches!(e, UpstreamError::Malformed { .. }));
        assert!(e.to_string().contains("{not json"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..10 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(3));
            assert!(d >= Duration::from_millis(100));
        }
    }
}
