//! The audit trail: one structured record per tool call and per refused request, saying who
//! (principal), from where (client address, transport), what (tool, arguments with secrets and
//! URL query strings redacted), whether it was allowed (scope decision) and how it ended
//! (outcome code, duration, upstream RequestId). Never a token or a key.
//!
//! Records go to the journal with `SYSOM_AUDIT=1` (`journalctl -u sysom-mcp SYSOM_AUDIT=1 -o
//! json`) whatever the log level, or, without journald, to stderr as one JSON object per line
//! with the same field names.

use std::{io::Write, sync::OnceLock, time::SystemTime};

use serde_json::{Map, Value, json};

use crate::auth::Principal;

/// The tracing target of audit events (journald mode); the log filter never drops it.
pub const TARGET: &str = "sysom_audit";

/// Where records go; set once by `logging::init`. Unset (tests, `check`): stderr.
static SINK: OnceLock<Sink> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Whether the request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The principal holds the scope the tool needs.
    Allowed,
    /// Authenticated, but without the scope the tool needs.
    DeniedScope,
    /// No valid credential.
    DeniedAuth,
    /// Over a per-principal limit.
    RateLimited,
    /// A session id that belongs to another principal (or to nobody).
    DeniedSession,
    /// A request that needs a client capability the client did not declare.
    DeniedCapability,
    /// A request outside what the server accepts (e.g. too many task ids).
    InvalidParams,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::DeniedScope => "denied_scope",
            Self::DeniedAuth => "denied_auth",
            Self::RateLimited => "rate_limited",
            Self::DeniedSession => "denied_session",
            Self::DeniedCapability => "denied_capability",
            Self::InvalidParams => "invalid_params",
        }
    }
}

/// One audit record. Empty strings are left out of the output.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub principal: String,
    /// token, oauth, anonymous, stdio; empty when unauthenticated.
    pub auth: &'static str,
    pub client: String,
    /// stdio, streamable_http, sse.
    pub transport: &'static str,
    pub tool: String,
    /// The scope the tool needs (empty for requests that are not tool calls).
    pub scope: &'static str,
    pub decision: Option<Decision>,
    /// The tool's result code, or the HTTP status of a refused request.
    pub outcome: String,
    pub duration_ms: u64,
    pub request_id: String,
    pub task_id: String,
    pub upstream_action: &'static str,
    /// Redacted arguments (see [`redact`]).
    pub args: Option<Value>,
    pub message: String,
}

/// Argument names whose values are never recorded.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "credential",
        "authorization",
        "signature",
        "accesskey",
        "access_key",
        "apikey",
        "api_key",
        "cookie",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A URL's query string (presigned OSS links carry signatures and STS tokens there) and
/// userinfo are cut; other strings stay.
fn redact_string(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.has_host() => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let mut out = u.to_string();
            if had_query {
                out.push_str("?[redacted]");
            }
            out
        }
        _ => s.to_string(),
    }
}

/// Arguments as recorded: values of secret-named keys replaced, URLs without query strings.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        Value::from("[redacted]")
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_string(s)),
        other => other.clone(),
    }
}

impl Record {
    /// A record about `principal` (name and how it authenticated).
    pub fn by(principal: &Principal) -> Self {
        Self {
            principal: principal.name.clone(),
            auth: principal.kind.as_str(),
            ..Self::default()
        }
    }

    /// A refused request: who (if known), what was decided, the HTTP status, and why.
    pub fn refusal(
        principal: &Principal,
        decision: Decision,
        transport: &'static str,
        outcome: &str,
        message: &str,
    ) -> Self {
        Self {
            transport,
            decision: Some(decision),
            outcome: outcome.to_string(),
            message: message.to_string(),
            ..Self::by(principal)
        }
    }

    /// The record as journal-style fields (also the JSON-lines keys).
    pub fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("SYSOM_AUDIT".into(), json!("1"));
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), Value::from(v));
            }
        };
        put("SYSOM_PRINCIPAL", &self.principal);
        put("SYSOM_AUTH", self.auth);
        put("SYSOM_CLIENT_ADDR", &self.client);
        put("SYSOM_TRANSPORT", self.transport);
        put("SYSOM_TOOL", &self.tool);
        put("SYSOM_SCOPE", self.scope);
        put(
            "SYSOM_SCOPE_DECISION",
            self.decision.map(Decision::as_str).unwrap_or(""),
        );
        put("SYSOM_RESULT_CODE", &self.outcome);
        put("SYSOM_REQUEST_ID", &self.request_id);
        put("SYSOM_TASK_ID", &self.task_id);
        put("SYSOM_UPSTREAM_ACTION", self.upstream_action);
        m.insert(
            "SYSOM_DURATION_MS".into(),
            Value::from(self.duration_ms.to_string()),
        );
        if let Some(args) = &self.args {
            m.insert("SYSOM_ARGS".into(), Value::from(redact(args).to_string()));
        }
        m
    }

    /// Emits the record to the configured sink.
    pub fn emit(&self) {
        match SINK.get().copied().unwrap_or(Sink::Stderr) {
            Sink::Journald => {
                let f = self.fields();
                let get = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
                tracing::info!(
                    target: TARGET,
                    sysom_audit = 1,
                    sysom_principal = get("SYSOM_PRINCIPAL"),
                    sysom_auth = get("SYSOM_AUTH"),
                    sysom_client_addr = get("SYSOM_CLIENT_ADDR"),
                    sysom_transport = get("SYSOM_TRANSPORT"),
                    sysom_tool = get("SYSOM_TOOL"),
                    sysom_scope = get("SYSOM_SCOPE"),
                    sysom_scope_decision = get("SYSOM_SCOPE_DECISION"),
                    sysom_result_code = get("SYSOM_RESULT_CODE"),
                    sysom_request_id = get("SYSOM_REQUEST_ID"),
                    sysom_task_id = get("SYSOM_TASK_ID"),
                    sysom_upstream_action = get("SYSOM_UPSTREAM_ACTION"),
                    sysom_duration_ms = self.duration_ms,
                    sysom_args = get("SYSOM_ARGS"),
                    "{}", self.message
                );
            }
            Sink::Stderr => {
                let mut f = self.fields();
                let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                f.insert("TIMESTAMP".into(), Value::from(now));
                f.insert("MESSAGE".into(), Value::from(self.message.as_str()));
                let line = Value::Object(f).to_string();
                // One write per record so concurrent records do not interleave.
                let _ = std::io::stderr()
                    .lock()
                    .write_all(format!("{line}\n").as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_query_strings_are_redacted() {
        let args = json!({
            "vmcoreUrl": "https://bucket.oss.aliyuncs.com/core.gz?OSSAccessKeyId=AK&Signature=sig&security-token=STS",
            "debuginfoUrl": "https://user:pw@example.com/d.rpm",
            "access_key_secret": "hunter2",
            "nested": [{"Authorization": "Bearer abc", "instance": "i-123"}],
            "count": 3,
        });
        let out = redact(&args);
        let text = out.to_string();
        for secret in [
            "AK",
            "Signature=",
            "STS",
            "hunter2",
            "Bearer abc",
            "pw@",
            "user:",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            out["vmcoreUrl"],
            "https://bucket.oss.aliyuncs.com/core.gz?[redacted]"
        );
        assert_eq!(out["nested"][0]["instance"], "i-123");
        assert_eq!(out["count"], 3);
        assert_eq!(out["access_key_secret"], "[redacted]");
    }

    #[test]
    fn fields_carry_the_audit_marker_and_skip_empty_values() {
        let r = Record {
            principal: "ci".into(),
            auth: "token",
            transport: "streamable_http",
            tool: "memgraph".into(),
            scope: "sysom:diagnose",
            decision: Some(Decision::DeniedScope),
            outcome: "403".into(),
            args: Some(json!({"instance": "i-1"})),
            ..Record::default()
        };
        let f = r.fields();
        assert_eq!(f["SYSOM_AUDIT"], "1");
        assert_eq!(f["SYSOM_SCOPE_DECISION"], "denied_scope");
        assert_eq!(f["SYSOM_ARGS"], r#"{"instance":"i-1"}"#);
        assert!(!f.contains_key("SYSOM_REQUEST_ID"));
    }
}
