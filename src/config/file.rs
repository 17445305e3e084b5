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
    pub max_retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisSection {
    pub timeout_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
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

/// Parses a configuration file's text. The error text names the offending key and line.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
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
    fn wrong_type_is_named() {
        let err = parse("[server]\nport = \"x\"\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
    }
}
