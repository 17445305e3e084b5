//! Activation tools: check whether SysOM is activated for the account (`role_exist`), and
//! activate it — only after the user agreed, as the description tells the model.
//! Positive checks are cached for an hour, so the check costs one call per session without
//! hiding a later deactivation forever. The cache is keyed by what the upstream confirmed — the
//! account behind the credentials at that endpoint — not by the client's `uid`, which is never
//! sent upstream (keying by it let any client grow the cache without bound).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Effect, ToolDef,
    envelope::{BasicResult, fetch},
    tool,
};
use crate::auth::Scope;
use crate::upstream::ops;

const CACHE_TTL: Duration = Duration::from_secs(3600);

/// At most this many accounts are remembered. One server normally serves one account; the
/// bound only matters when reloads keep changing credentials (STS rotation, role changes).
const CACHE_MAX_ENTRIES: usize = 64;

/// account (endpoint and credential identity) → when activation was last confirmed.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<String, Instant>>);

impl Cache {
    fn is_fresh(&self, account: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(account).is_some_and(|t| t.elapsed() < CACHE_TTL)
    }
    fn confirm(&self, account: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.elapsed() < CACHE_TTL);
        if map.len() >= CACHE_MAX_ENTRIES && !map.contains_key(account) {
            let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(account.to_string(), Instant::now());
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The cache key of the account the services' credentials speak for.
fn account_key(s: &super::Services) -> String {
    format!(
        "{}|{}",
        s.upstream.endpoint(),
        s.upstream.credentials().account()
    )
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct UidParams {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
}

const CONSOLE: &str = "https://alinux.console.aliyun.com";

fn role_exist(body: &Value) -> Option<bool> {
    body.pointer("/data/role_exist").and_then(Value::as_bool)
}

pub(super) fn tools() -> Vec<ToolDef> {
    vec![
        tool::<UidParams, BasicResult, _, _>(
            "initial_sysom",
            "Activate SysOM for the user's account (free; installs nothing on any machine). Before calling \
             it you MUST ask the user: \"Shall I activate SysOM for you? It is free and activation costs \
             nothing.\" Call it only after a clear yes. Returns code Success when SysOM is activated.",
            ops::INITIAL_SYSOM.action,
            Effect::Idempotent,
            Scope::Admin,
            |s, _uid, _ctx| async move {
                let body = json!({"check_only": false, "source": "mcp"});
                let o = fetch(&s.upstream, &ops::INITIAL_SYSOM, &[], Some(&body)).await;
                if !o.ok() {
                    return BasicResult {
                        code: o.code.clone(),
                        message: format!(
                            "Activating SysOM failed: {}. You can activate it at {CONSOLE}.",
                            o.message
                        ),
                        data: Value::Null,
                    };
                }
                s.activation.confirm(&account_key(&s));
                BasicResult {
                    code: o.code.clone(),
                    message: "SysOM is activated.".into(),
                    data: json!({"initialed": true, "role_exist": role_exist(&o.body)}),
                }
            },
        ),
        tool::<UidParams, BasicResult, _, _>(
            "check_sysom_initialed",
            "Check whether SysOM is activated for the user's account; call it once when the user first \
             uses SysOM tools. If data.initialed is true, continue without checking again. If it is false, \
             ask the user whether to activate SysOM (free, installs nothing); call initial_sysom only if \
             they agree, otherwise stop and point them to https://alinux.console.aliyun.com. This tool \
             never activates anything.",
            ops::INITIAL_SYSOM.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, _uid, _ctx| async move {
                if s.activation.is_fresh(&account_key(&s)) {
                    return BasicResult {
                        code: "Success".into(),
                        message: "SysOM is activated (cached answer).".into(),
                        data: json!({"initialed": true, "from_cache": true}),
                    };
                }
                let body = json!({"check_only": true, "source": "mcp"});
                let o = fetch(&s.upstream, &ops::INITIAL_SYSOM, &[], Some(&body)).await;
                if !o.ok() {
                    return BasicResult {
                        code: o.code.clone(),
                        message: format!("Checking SysOM activation failed: {}", o.message),
                        data: json!({"initialed": false, "from_cache": false}),
                    };
                }
                if role_exist(&o.body) == Some(true) {
                    s.activation.confirm(&account_key(&s));
                    BasicResult {
                        code: "Success".into(),
                        message: "SysOM is activated.".into(),
                        data: json!({"initialed": true, "from_cache": false}),
                    }
                } else {
                    BasicResult {
                        code: "NotInitialed".into(),
                        message: format!(
                            "SysOM is not activated for this account. Ask the user whether to activate it \
                             (free, installs nothing); call initial_sysom only if they agree, otherwise \
                             point them to {CONSOLE}."
                        ),
                        data: json!({"initialed": false, "from_cache": false}),
                    }
                }
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_confirms_per_account() {
        let c = Cache::default();
        assert!(!c.is_fresh("1"));
        c.confirm("1");
        assert!(c.is_fresh("1"));
        assert!(!c.is_fresh("2"));
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let c = Cache::default();
        for i in 0..CACHE_MAX_ENTRIES * 3 {
            c.confirm(&i.to_string());
        }
        assert_eq!(c.len(), CACHE_MAX_ENTRIES);
        assert!(!c.is_fresh("0"));
        assert!(c.is_fresh(&(CACHE_MAX_ENTRIES * 3 - 1).to_string()));
    }

    #[test]
    fn role_exist_is_read_from_data() {
        assert_eq!(
            role_exist(&json!({"data": {"role_exist": false}})),
            Some(false)
        );
        assert_eq!(role_exist(&json!({"data": null})), None);
    }
}
