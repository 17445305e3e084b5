//! The TOML configuration file, mirrored field by field. Every key is optional; unknown keys are
//! rejected (with the key's name and position) because a typo silently ignored is a setting
//! silently lost.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub access: AccessSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub diagnosis: DiagnosisSection,
    #[serde(default)]
    pub credentials: CredentialsSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub local: LocalSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    pub root: Option<PathBuf>,
    pub tools: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub stateless: Option<bool>,
    pub idle_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub sse_keep_alive_secs: Option<u64>,
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub token_files: Option<Vec<PathBuf>>,
    pub allow_unauthenticated: Option<bool>,
    pub metrics_require_token: Option<bool>,
    pub oauth_issuer: Option<String>,
    pub oauth_resource: Option<String>,
    pub oauth_jwks_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    pub allowed_hosts: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_clients: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_sessions: Option<usize>,
    pub session_idle_timeout_secs: Option<u64>,
    pub max_connections_per_ip: Option<usize>,
    pub calls_per_minute: Option<usize>,
    pub concurrent_diagnoses: Option<usize>,
    pub header_read_timeout_secs: Option<u64>,
    pub connection_idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_response_bytes: Option<usize>,
    pub max_retries: Option<u32>,
    pub max_requests_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisSection {
    pub timeout_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub source_marker: Option<String>,
    pub poll_max_interval_ms: Option<u64>,
    pub detach_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub ecs_role_name: Option<String>,
    pub sts_endpoint: Option<String>,
    pub ecs_metadata_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    pub target: Option<String>,
    pub level: Option<String>,
}

/// Parses a configuration file's text. The error text names the offending key and line, but
/// never quotes the file: a secret pasted into it by mistake must not reach the journal.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| redacted_error(&e, text, ""))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        redacted_error(e.inner(), text, if key == "." { "" } else { &key })
    })
}

/// toml's `Display` shows the offending source line, and serde's messages quote the offending
/// value (`invalid type: string "…"`). Keep the message with quoted values elided, plus the
/// position.
fn redacted_error(e: &toml::de::Error, text: &str, key: &str) -> String {
    let message = elide_quoted(e.message().trim());
    let message = if key.is_empty() {
        message
    } else {
        format!("{key}: {message}")
    };
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

/// `s` with the content of every "double-quoted" part replaced by `…`. Hand-written: it is six
/// lines, and no crate does exactly this.
fn elide_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, part) in s.split('"').enumerate() {
        // Odd-numbered parts are inside quotes.
        out.push_str(if i % 2 == 1 { "…" } else { part });
        out.push('"');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_valid() {
        let cfg = parse("").unwrap();
        assert!(cfg.endpoint.is_none());
        assert!(cfg.server.port.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[server]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn parse_errors_never_quote_the_value_or_the_line() {
        for text in [
            "[server]\nport = \"LTAIsecret-hunter2\"\n",
            "access_key_secret = LTAIsecret-hunter2\n",
            "[upstream]\nmax_retries = 1\naccess_key_secret = \"LTAIsecret-hunter2\"\n",
            "endpoint = \"https://x\"\nendpoint = \"LTAIsecret-hunter2\"\n",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("line"), "{err}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse("[server]\nport = \"x\"\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
    }
}
