//! Alibaba Cloud credentials: static AccessKeys, STS tokens, AssumeRole (RAM role ARN) and the ECS
//! instance RAM role. Secrets live in [`Secret`], whose `Debug` and `Display` never show the value,
//! so a secret cannot reach a log line or an error message by accident.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tokio::sync::Mutex;

pub use crate::signed_request::AccessKey;
use crate::{
    config::{CredentialKind, CredentialSettings, EnvLookup},
    secret::Secret,
    signed_request::SignedRequest,
};

/// Why no credentials could be produced. Messages name what the admin should set.
#[derive(Debug, thiserror::Error, Clone)]
pub enum CredentialError {
    #[error(
        "no SysOM credentials configured: set ACCESS_KEY_ID and ACCESS_KEY_SECRET (or OPENAPI_ACCESS_KEY_ID/OPENAPI_ACCESS_KEY_SECRET), or put access-key-id and access-key-secret files in the systemd credentials directory; {detail}"
    )]
    Missing { detail: String },
    #[error("fetching temporary credentials failed: {0}")]
    Fetch(String),
}

/// Where a credential value came from, for `sysom-mcp check`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub name: &'static str,
    pub source: String,
}

/// Reads one credential: environment variables first (in order), then `$CREDENTIALS_DIRECTORY/file`.
fn lookup(
    env: EnvLookup<'_>,
    names: &[&'static str],
    creds_dir: Option<&Path>,
    file: &'static str,
    origins: &mut Vec<Origin>,
) -> Option<String> {
    for name in names {
        if let Some(v) = env(name) {
            origins.push(Origin {
                name: file,
                source: format!("environment {name}"),
            });
            return Some(v.trim().to_string());
        }
    }
    let path = creds_dir?.join(file);
    let text = std::fs::read_to_string(&path).ok()?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return None;
    }
    origins.push(Origin {
        name: file,
        source: format!("credential file {}", path.display()),
    });
    Some(value)
}

/// Cached temporary credentials and when to fetch new ones.
struct Cached {
    key: AccessKey,
    refresh_at: SystemTime,
}

enum Source {
    Missing(String),
    Static(AccessKey),
    AssumeRole {
        base: AccessKey,
        role_arn: String,
        session_name: String,
        endpoint: url::Url,
    },
    EcsRole {
        role: Option<String>,
        endpoint: url::Url,
    },
}

/// Produces credentials for each upstream call, fetching and caching temporary ones.
pub struct Provider {
    kind: CredentialKind,
    source: Source,
    cache: Mutex<Option<Cached>>,
    pub origins: Vec<Origin>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// The credentials directory systemd gives a unit with `LoadCredential=`.
pub fn credentials_dir(env: EnvLookup<'_>) -> Option<PathBuf> {
    env("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

impl Provider {
    /// Builds the provider the settings ask for. Missing values are not an error here: the
    /// server still starts and every tool call explains what to set.
    pub fn from_settings(settings: &CredentialSettings, env: EnvLookup<'_>) -> Self {
        let dir = credentials_dir(env);
        let dir = dir.as_deref();
        let mut origins = Vec::new();
        let id = lookup(
            env,
            &["OPENAPI_ACCESS_KEY_ID", "ACCESS_KEY_ID"],
            dir,
            "access-key-id",
            &mut origins,
        );
        let secret = lookup(
            env,
            &["OPENAPI_ACCESS_KEY_SECRET", "ACCESS_KEY_SECRET"],
            dir,
            "access-key-secret",
            &mut origins,
        );
        let token = lookup(
            env,
            &["OPENAPI_SECURITY_TOKEN", "SECURITY_TOKEN"],
            dir,
            "security-token",
            &mut origins,
        );
        let role_arn = lookup(
            env,
            &["OPENAPI_ROLE_ARN", "ROLE_ARN"],
            dir,
            "role-arn",
            &mut origins,
        )
        .or_else(|| settings.role_arn.clone());

        let pair = match (id, secret) {
            (Some(id), Some(secret)) => Ok(AccessKey {
                id,
                secret: Secret::new(secret),
                security_token: None,
            }),
            (None, None) => Err("neither the AccessKey ID nor the secret is set".to_string()),
            (Some(_), None) => Err("the AccessKey ID is set but the secret is not".to_string()),
            (None, Some(_)) => Err("the AccessKey secret is set but the ID is not".to_string()),
        };
        let source = match settings.kind {
            CredentialKind::AccessKey => match pair {
                Ok(key) => Source::Static(key),
                Err(detail) => Source::Missing(detail),
            },
            CredentialKind::Sts => match (pair, token) {
                (Ok(mut key), Some(token)) => {
                    key.security_token = Some(Secret::new(token));
                    Source::Static(key)
                }
                (Ok(_), None) => Source::Missing(
                    "OPENAPI_TYPE=sts needs SECURITY_TOKEN (or OPENAPI_SECURITY_TOKEN, or a security-token credential file)"
                        .into(),
                ),
                (Err(detail), _) => Source::Missing(detail),
            },
            CredentialKind::RamRoleArn => match (pair, role_arn) {
                (Ok(base), Some(role_arn)) => Source::AssumeRole {
                    base,
                    role_arn,
                    session_name: settings.role_session_name.clone(),
                    endpoint: settings.sts_endpoint.clone(),
                },
                (Ok(_), None) => Source::Missing(
                    "OPENAPI_TYPE=ram_role_arn needs ROLE_ARN (or OPENAPI_ROLE_ARN, a role-arn credential file, or credentials.role_arn)"
                        .into(),
                ),
                (Err(detail), _) => Source::Missing(detail),
            },
            CredentialKind::EcsRamRole => Source::EcsRole {
                role: settings.ecs_role_name.clone(),
                endpoint: settings.ecs_metadata_endpoint.clone(),
            },
        };
        Self {
            kind: settings.kind,
            source,
            cache: Mutex::new(None),
            origins,
        }
    }

    /// Which account the upstream answers for (the AccessKey ID, the role ARN, or the ECS role):
    /// answers about "this account", such as whether SysOM is activated, are keyed by it.
    pub fn account(&self) -> String {
        match &self.source {
            Source::Missing(_) => String::new(),
            Source::Static(key) => key.id.clone(),
            Source::AssumeRole { role_arn, .. } => role_arn.clone(),
            Source::EcsRole { role, endpoint } => {
                format!("ecs:{}@{endpoint}", role.as_deref().unwrap_or("*"))
            }
        }
    }

    /// HMAC-SHA256 of `label` under the long-lived AccessKey secret (static, or the base key of
    /// AssumeRole), for keys derived from it; `None` without one. The secret never leaves here.
    pub fn derive_key(&self, label: &[u8]) -> Option<Vec<u8>> {
        use hmac::Mac;
        let base = match &self.source {
            Source::Static(key) | Source::AssumeRole { base: key, .. } => key,
            Source::Missing(_) | Source::EcsRole { .. } => return None,
        };
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(base.secret.expose().as_bytes()).ok()?;
        mac.update(label);
        Some(mac.finalize().into_bytes().to_vec())
    }

    /// Whether credentials are configured at all (not whether they work).
    pub fn is_configured(&self) -> bool {
        !matches!(self.source, Source::Missing(_))
    }

    /// Returns credentials for one call, refreshing temporary ones shortly before they expire.
    pub async fn get(&self, http: &reqwest::Client) -> Result<AccessKey, CredentialError> {
        match &self.source {
            Source::Missing(detail) => Err(CredentialError::Missing {
                detail: format!("{detail} (OPENAPI_TYPE={})", self.kind.as_str()),
            }),
            Source::Static(key) => Ok(key.clone()),
            Source::AssumeRole { .. } | Source::EcsRole { .. } => {
                let mut cache = self.cache.lock().await;
                if let Some(c) = cache.as_ref()
                    && SystemTime::now() < c.refresh_at
                {
                    return Ok(c.key.clone());
                }
                let (key, expires) = self.fetch(http).await?;
                *cache = Some(Cached {
                    key: key.clone(),
                    refresh_at: refresh_time(expires),
                });
                Ok(key)
            }
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(AccessKey, SystemTime), CredentialError> {
        match &self.source {
            Source::AssumeRole {
                base,
                role_arn,
                session_name,
                endpoint,
            } => assume_role(http, base, role_arn, session_name, endpoint).await,
            Source::EcsRole { role, endpoint } => ecs_role(http, role.as_deref(), endpoint).await,
            _ => unreachable!("only temporary sources are fetched"),
        }
    }
}

/// Refresh five minutes before expiry, or halfway for very short lifetimes.
fn refresh_time(expires: SystemTime) -> SystemTime {
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let margin = Duration::from_secs(300).min(left / 2);
    expires - margin
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TempCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

impl TempCredentials {
    fn into_key(self) -> Result<(AccessKey, SystemTime), CredentialError> {
        let expires = humantime::parse_rfc3339_weak(&self.expiration).map_err(|e| {
            CredentialError::Fetch(format!("bad Expiration {:?}: {e}", self.expiration))
        })?;
        Ok((
            AccessKey {
                id: self.access_key_id,
                secret: Secret::new(self.access_key_secret),
                security_token: Some(Secret::new(self.security_token)),
            },
            expires,
        ))
    }
}

async fn assume_role(
    http: &reqwest::Client,
    base: &AccessKey,
    role_arn: &str,
    session_name: &str,
    endpoint: &url::Url,
) -> Result<(AccessKey, SystemTime), CredentialError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        credentials: Option<TempCredentials>,
        code: Option<String>,
        message: Option<String>,
    }
    let query = vec![
        ("RoleArn".to_string(), role_arn.to_string()),
        ("RoleSessionName".to_string(), session_name.to_string()),
        ("DurationSeconds".to_string(), "3600".to_string()),
    ];
    let request = SignedRequest {
        action: "AssumeRole",
        version: "2015-04-01",
        method: reqwest::Method::POST,
        path: "/",
        query: &query,
        body: None,
    };
    let (status, text) = request
        .send(http, endpoint, base, STS_MAX_ANSWER_BYTES)
        .await
        .map_err(|e| CredentialError::Fetch(format!("STS AssumeRole: {e}")))?;
    let reply: Reply = serde_json::from_str(&text).map_err(|_| {
        CredentialError::Fetch(format!(
            "STS AssumeRole answered HTTP {status} with non-JSON"
        ))
    })?;
    match reply.credentials {
        Some(c) if status.is_success() => c.into_key(),
        _ => Err(CredentialError::Fetch(format!(
            "STS AssumeRole failed: HTTP {status} {} {}",
            reply.code.unwrap_or_default(),
            reply.message.unwrap_or_default()
        ))),
    }
}

/// An AssumeRole answer is well under a kilobyte; anything near this is not STS.
const STS_MAX_ANSWER_BYTES: usize = 1024 * 1024;

const ECS_CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";

async fn ecs_role(
    http: &reqwest::Client,
    role: Option<&str>,
    endpoint: &url::Url,
) -> Result<(AccessKey, SystemTime), CredentialError> {
    let fail = |what: &str, e: &dyn fmt::Display| {
        CredentialError::Fetch(format!("ECS metadata service ({endpoint}) {what}: {e}"))
    };
    // IMDSv2: a session token hardens against SSRF; fall back to v1 if the service has none.
    let token = match http
        .put(
            endpoint
                .join("/latest/api/token")
                .map_err(|e| fail("url", &e))?,
        )
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "300")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        _ => None,
    };
    let get = |path: String| {
        let mut req = http.get(endpoint.join(&path).expect("metadata paths are valid"));
        if let Some(t) = &token {
            req = req.header("X-aliyun-ecs-metadata-token", t);
        }
        req
    };
    let role = match role {
        Some(r) => r.to_string(),
        None => {
            let resp = get(ECS_CREDENTIALS_PATH.to_string())
                .send()
                .await
                .map_err(|e| fail("role discovery", &e))?;
            if !resp.status().is_success() {
                return Err(fail(
                    "role discovery",
                    &format!(
                        "HTTP {}: is a RAM role attached to this instance?",
                        resp.status()
                    ),
                ));
            }
            let text = resp.text().await.map_err(|e| fail("role discovery", &e))?;
            text.lines()
                .next()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| fail("role discovery", &"no RAM role attached to this instance"))?
                .to_string()
        }
    };
    let resp = get(format!("{ECS_CREDENTIALS_PATH}{role}"))
        .send()
        .await
        .map_err(|e| fail("credentials", &e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail("credentials", &e))?;
    if !status.is_success() {
        return Err(fail(
            "credentials",
            &format!("HTTP {status} for role {role}"),
        ));
    }
    let creds: TempCredentials = serde_json::from_str(&text)
        .map_err(|_| fail("credentials", &"answer is not the expected JSON"))?;
    creds.into_key()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServerArgs, file, resolve};

    fn settings(env: EnvLookup<'_>) -> CredentialSettings {
        resolve(
            &ServerArgs::default(),
            file::FileConfig::default(),
            None,
            env,
        )
        .unwrap()
        .credentials
    }

    #[test]
    fn secret_is_redacted_everywhere() {
        let key = AccessKey {
            id: "AKID".into(),
            secret: Secret::new("very-secret"),
            security_token: Some(Secret::new("tok-secret")),
        };
        let shown = format!("{key:?} {}", key.secret);
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
        assert!(shown.contains("AKID"));
    }

    #[test]
    fn openapi_alias_wins_over_plain_name() {
        let env = |k: &str| match k {
            "OPENAPI_ACCESS_KEY_ID" => Some("A1".to_string()),
            "ACCESS_KEY_ID" => Some("A2".to_string()),
            "ACCESS_KEY_SECRET" => Some("S".to_string()),
            _ => None,
        };
        let p = Provider::from_settings(&settings(&env), &env);
        match &p.source {
            Source::Static(k) => assert_eq!(k.id, "A1"),
            _ => panic!("expected static credentials"),
        }
    }

    #[test]
    fn files_in_credentials_directory_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("access-key-id"), "AKFILE\n").unwrap();
        std::fs::write(dir.path().join("access-key-secret"), "SFILE\n").unwrap();
        let d = dir.path().to_string_lossy().to_string();
        let env = move |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| d.clone());
        let p = Provider::from_settings(&settings(&env), &env);
        match &p.source {
            Source::Static(k) => {
                assert_eq!(k.id, "AKFILE");
                assert_eq!(k.secret.expose(), "SFILE");
            }
            _ => panic!("expected static credentials"),
        }
        assert!(
            p.origins
                .iter()
                .any(|o| o.source.contains("credential file"))
        );
    }

    #[test]
    fn missing_credentials_explain_what_to_set() {
        let env = |_: &str| None;
        let p = Provider::from_settings(&settings(&env), &env);
        assert!(!p.is_configured());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(p.get(&reqwest::Client::new())).unwrap_err();
        assert!(err.to_string().contains("ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn sts_without_token_is_missing() {
        let env = |k: &str| match k {
            "OPENAPI_TYPE" => Some("sts".to_string()),
            "ACCESS_KEY_ID" => Some("A".to_string()),
            "ACCESS_KEY_SECRET" => Some("S".to_string()),
            _ => None,
        };
        let p = Provider::from_settings(&settings(&env), &env);
        assert!(!p.is_configured());
    }

    #[test]
    fn refresh_happens_before_expiry() {
        let expires = SystemTime::now() + Duration::from_secs(3600);
        let at = refresh_time(expires);
        assert!(at < expires - Duration::from_secs(299));
        let soon = SystemTime::now() + Duration::from_secs(60);
        assert!(refresh_time(soon) < soon);
    }
}
