//! The result envelopes the original server returned, kept field for field so existing prompts
//! and agents keep working. Business failures are results (`isError: false`) whose `code` says
//! what went wrong; only invalid arguments are tool errors.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::upstream::UpstreamError;

/// What a diagnosis tool returns.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(description = "Diagnosis result envelope")]
pub struct DiagnosisResult {
    /// Success, TaskCreateFailed, TaskExecuteFailed, TaskTimeout, ResultParseFailed, GetResultFailed or Cancelled
    pub code: String,
    pub message: String,
    pub data: Value,
    /// The SysOM diagnosis task id, empty if no task was created
    pub task_id: String,
    /// The parsed diagnosis report
    pub result: Map<String, Value>,
}

/// `list_all_instances` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AllInstancesResult {
    /// Success or Error
    pub code: String,
    pub message: String,
    pub data: Value,
    pub total: Option<i64>,
    /// Pagination cursor; non-empty means more data
    #[serde(rename = "nextToken")]
    pub next_token: Option<String>,
    #[serde(rename = "maxResults")]
    pub max_results: Option<i64>,
    #[serde(rename = "requestId")]
    pub request_id: Option<String>,
}

/// `list_clusters` and `list_pods_of_instance` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PagedResult {
    /// Success or Error
    pub code: String,
    pub message: String,
    pub data: Value,
    pub total: Option<i64>,
    #[serde(rename = "RequestId")]
    pub request_id: Option<String>,
}

/// `list_instances` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InstancesResult {
    /// Success or Error
    pub code: String,
    pub message: String,
    pub data: Value,
    pub total: Option<i64>,
    pub request_id: Option<String>,
}

/// Crash-agent and activation results.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BasicResult {
    /// Success, or the failure code
    pub code: String,
    pub message: String,
    pub data: Value,
}

pub const SUCCESS: &str = "Success";

/// Keywords that mean "SysOM is not activated or the credential lacks permission".
const PERMISSION_KEYWORDS: &[&str] = &[
    "权限",
    "permission",
    "没有权限",
    "权限不足",
    "access denied",
    "forbidden",
    "unauthorized",
    "未授权",
    "未开通",
    "未启用",
    "未激活",
    "entitynotexist.role",
    "role not exists",
    "aliyunserviceroleforsysom",
    "connect failed",
];

pub const PERMISSION_HINT: &str = "[Permission problem] SysOM may not be activated for this \
account, or the credential lacks permission. Activating SysOM is free and installs nothing: \
open https://alinux.console.aliyun.com/ , or ask the user whether to activate it and, only if \
they agree, call the initial_sysom tool.";

/// Appends the permission hint when `message` looks like a permission failure.
pub fn with_permission_hint(message: String) -> String {
    let lower = message.to_lowercase();
    if PERMISSION_KEYWORDS.iter().any(|k| lower.contains(k)) {
        format!("{message} {PERMISSION_HINT}")
    } else {
        message
    }
}

/// The user-facing text of an upstream failure, with the hint where it applies.
pub fn describe(err: &UpstreamError) -> String {
    with_permission_hint(format!("Calling the SysOM OpenAPI failed: {err}"))
}

/// `code` and `message` of a 2xx body whose `code` is not Success.
pub fn business_failure(body: &Value) -> Option<(String, String)> {
    let code = body.get("code").and_then(Value::as_str).unwrap_or("");
    if code == SUCCESS {
        return None;
    }
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("SysOM answered without a success code")
        .to_string();
    Some((
        if code.is_empty() {
            "Error".into()
        } else {
            code.to_string()
        },
        with_permission_hint(message),
    ))
}

/// An upstream call reduced to what every simple (non-diagnosis) envelope needs.
pub struct Outcome {
    pub code: String,
    pub message: String,
    /// The JSON body on success or business failure; `Null` when the call itself failed.
    pub body: Value,
    pub request_id: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == SUCCESS
    }
    pub fn data(&self) -> Value {
        self.body.get("data").cloned().unwrap_or(Value::Null)
    }
    pub fn total(&self) -> Option<i64> {
        self.body.get("total").and_then(Value::as_i64)
    }
    pub fn basic(&self) -> BasicResult {
        BasicResult {
            code: self.code.clone(),
            message: self.message.clone(),
            data: self.data(),
        }
    }
}

impl From<Outcome> for PagedResult {
    fn from(o: Outcome) -> Self {
        Self {
            data: o.data(),
            total: o.total(),
            code: o.code,
            message: o.message,
            request_id: o.request_id,
        }
    }
}

impl From<Outcome> for InstancesResult {
    fn from(o: Outcome) -> Self {
        Self {
            data: o.data(),
            total: o.total(),
            code: o.code,
            message: o.message,
            request_id: o.request_id,
        }
    }
}

/// Calls one operation and classifies the answer as success, business failure or call failure.
/// `failure_code` is the code a failed call gets (the original used "Error").
pub async fn fetch(
    upstream: &crate::upstream::Client,
    op: &crate::upstream::Operation,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Outcome {
    match upstream.call(op, query, body).await {
        Ok(body) => {
            let request_id = crate::upstream::request_id_of(&body);
            let (code, message) = business_failure(&body).unwrap_or_else(|| {
                (
                    SUCCESS.into(),
                    body.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            });
            Outcome {
                code,
                message,
                body,
                request_id,
            }
        }
        Err(e) => Outcome {
            code: "Error".into(),
            message: describe(&e),
            body: Value::Null,
            request_id: e.request_id().map(str::to_string),
        },
    }
}

/// Turns a parameter struct into query pairs: nulls dropped, numbers and booleans as text,
/// and the fields in `skip` left out (they are MCP-side only, like `uid`).
pub fn query_from<T: Serialize>(params: &T, skip: &[&str]) -> Vec<(String, String)> {
    let Ok(Value::Object(map)) = serde_json::to_value(params) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_hint_matches_case_insensitively() {
        assert!(with_permission_hint("Forbidden.NoPermission".into()).contains("initial_sysom"));
        assert!(with_permission_hint("用户未开通服务".into()).contains("alinux.console"));
        assert_eq!(with_permission_hint("disk full".into()), "disk full");
    }

    #[test]
    fn business_failure_reads_code_and_message() {
        let ok = serde_json::json!({"code": "Success", "message": ""});
        assert!(business_failure(&ok).is_none());
        let bad = serde_json::json!({"code": "InvalidParam", "message": "bad instance"});
        assert_eq!(
            business_failure(&bad),
            Some(("InvalidParam".into(), "bad instance".into()))
        );
    }
}
