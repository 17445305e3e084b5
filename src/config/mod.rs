//! Configuration: what the user typed (`cli`), what the file says (`file`), and the single
//! resolved [`Config`] the rest of the program reads. Precedence is written once, in
//! [`resolve`]: built-in defaults < file < environment < flags (clap folds env into the flags).

pub mod cli;
pub mod defaults;
pub mod file;
pub mod restart_only;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use url::Url;

pub use cli::{Command, Opts, ServerArgs, TokenAction};

/// Where the configuration file lives when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sysom-mcp/config.toml";
pub use defaults::ENDPOINT as DEFAULT_ENDPOINT;

/// A configuration problem, always naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Every setting, resolved and validated. Cheap to clone; replaced whole on SIGHUP.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_path: Option<PathBuf>,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub access: AccessSettings,
    pub limits: LimitSettings,
    pub tls: Option<TlsSettings>,
    pub endpoint: Url,
    pub upstream: UpstreamSettings,
    pub diagnosis: DiagnosisSettings,
    pub credentials: CredentialSettings,
    pub logging: LogSettings,
    pub local: LocalSettings,
}

/// The local diagnosis engine and which tools are listed.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Where /proc, /sys and /dev/kmsg are read (`/` on a live host).
    pub root: PathBuf,
    pub tools: ToolSet,
}

/// Which tools `tools/list` shows. Every tool stays callable whatever is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSet {
    /// The local tools, plus the 21 cloud tools when credentials are configured at start: a
    /// server without credentials lists only tools that work.
    Auto,
    All,
    Cloud,
    Local,
}

impl ToolSet {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "all" => Self::All,
            "cloud" => Self::Cloud,
            "local" => Self::Local,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub stateless: bool,
    pub idle_timeout: Option<Duration>,
    pub shutdown_grace: Duration,
    pub sse_keep_alive: Duration,
    pub max_body_bytes: usize,
    /// `SYSOM_MCP_ROUTE_ID`: the prefix of this instance's legacy SSE session ids, which a
    /// load balancer reads to send a session's POSTs to the instance holding its stream.
    pub route_id: Option<String>,
}

/// The environment variable naming this instance for legacy SSE routing.
pub const ROUTE_ID_ENV: &str = "SYSOM_MCP_ROUTE_ID";

/// A route id goes into URLs and proxy maps: 1–32 of `A-Za-z0-9_-`.
fn route_id(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let ok = (1..=32).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(Some(raw))
    } else {
        Err(invalid(
            ROUTE_ID_ENV,
            "must be 1 to 32 letters, digits, '-' or '_'",
        ))
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub token_files: Vec<PathBuf>,
    pub allow_unauthenticated: bool,
    pub metrics_require_token: bool,
    /// The OAuth authorization server whose access tokens are accepted beside static tokens.
    pub oauth: Option<OAuthSettings>,
}

/// What the configuration says about the OAuth authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// This server's canonical URI: the audience every token must name (RFC 8707).
    pub resource: String,
    /// The JWKS URL; discovered from the issuer's metadata when unset.
    pub jwks_uri: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Clock skew tolerated on OAuth `exp` and `nbf`.
pub const OAUTH_LEEWAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_clients: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub max_sessions: usize,
    pub session_idle_timeout: Duration,
    pub max_connections_per_ip: usize,
    /// Tool calls per minute per principal (0 = unlimited).
    pub calls_per_minute: usize,
    /// Concurrent diagnoses per principal (0 = unlimited).
    pub concurrent_diagnoses: usize,
    /// A client must send a request's headers (and then its body) within this; on HTTP/1.1 it
    /// also bounds a keep-alive connection's wait for its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 included).
    pub connection_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Deadline of one whole request (connect, headers and body): a peer that drip-feeds its
    /// body never trips the read timeout.
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub max_retries: u32,
    /// Ceiling on upstream requests per second for the whole process; 0 = none.
    pub max_requests_per_second: u32,
}

#[derive(Debug, Clone)]
pub struct DiagnosisSettings {
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// The key of the `"mcp"` marker in InvokeDiagnosis `params` (SysOM strips older keys).
    pub source_marker: String,
    /// The longest gap between two polls once the schedule has backed off (never below
    /// `poll_interval`).
    pub poll_max_interval: Duration,
    /// How long a diagnosis whose every caller went away (without cancelling) keeps polling,
    /// so a reconnecting caller gets its result instead of starting a new task.
    pub detach_grace: Duration,
}

/// The marker key the SysOM backend and its own CLI expect (sysom-openapi.md, section 5).
pub use defaults::SOURCE_MARKER as DEFAULT_SOURCE_MARKER;

/// How AccessKeys are obtained; the secrets themselves are read by `credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    AccessKey,
    Sts,
    RamRoleArn,
    EcsRamRole,
}

impl CredentialKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "access_key" => Some(Self::AccessKey),
            "sts" => Some(Self::Sts),
            "ram_role_arn" => Some(Self::RamRoleArn),
            "ecs_ram_role" => Some(Self::EcsRamRole),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessKey => "access_key",
            Self::Sts => "sts",
            Self::RamRoleArn => "ram_role_arn",
            Self::EcsRamRole => "ecs_ram_role",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CredentialSettings {
    pub kind: CredentialKind,
    pub role_arn: Option<String>,
    pub role_session_name: String,
    pub ecs_role_name: Option<String>,
    pub sts_endpoint: Url,
    pub ecs_metadata_endpoint: Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Auto,
    Stderr,
    Journald,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub target: LogTarget,
    pub level: String,
}

impl ServerSettings {
    /// True when the bind address only accepts local connections.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// Whether `host` (an IP or a name) only reaches this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    match trimmed.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => trimmed.eq_ignore_ascii_case("localhost"),
    }
}

/// Reads the environment through a function so tests can feed their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads and parses the config file `args` points at (or the default one, if it exists).
pub fn read_file(args: &ServerArgs) -> Result<(Option<PathBuf>, file::FileConfig), ConfigError> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => file::parse(&text)
            .map(|f| (Some(path.clone()), f))
            .map_err(|message| ConfigError::Parse { path, message }),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            Ok((None, file::FileConfig::default()))
        }
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Loads the file and merges it with the flags/environment in `args`.
pub fn load(args: &ServerArgs, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let (path, file) = read_file(args)?;
    resolve(args, file, path, env)
}

fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

fn pick_list<T: Clone>(flag: &[T], file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

/// `value` if it lies in `range`; otherwise an error naming the key and the range.
fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            key,
            format!(
                "{value} is out of range (from {} to {})",
                range.start(),
                range.end()
            ),
        ))
    }
}

fn parse_url(key: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| invalid(key, format!("{raw:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{raw:?} must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}

/// An OAuth URL: https, or http to a loopback address (a local issuer in tests).
fn parse_oauth_url(key: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = parse_url(key, raw)?;
    let loopback = url.host_str().is_some_and(is_loopback_host);
    if url.scheme() != "https" && !loopback {
        return Err(invalid(
            key,
            format!("{raw:?} must be https:// (http:// only to a loopback address)"),
        ));
    }
    Ok(url)
}

fn oauth_settings(
    issuer: Option<String>,
    resource: Option<String>,
    jwks_uri: Option<String>,
) -> Result<Option<OAuthSettings>, ConfigError> {
    let Some(issuer) = issuer.filter(|s| !s.is_empty()) else {
        if resource.is_some() || jwks_uri.is_some() {
            return Err(invalid(
                "auth.oauth_issuer",
                "auth.oauth_resource or auth.oauth_jwks_uri is set but the issuer is not",
            ));
        }
        return Ok(None);
    };
    parse_oauth_url("auth.oauth_issuer", &issuer)?;
    let Some(resource) = resource.filter(|s| !s.is_empty()) else {
        return Err(invalid(
            "auth.oauth_resource",
            "an OAuth issuer needs this server's canonical URI as the audience tokens must name \
             (e.g. https://mcp.example.com/mcp/unified)",
        ));
    };
    let parsed = parse_url("auth.oauth_resource", &resource)?;
    if parsed.fragment().is_some() || parsed.query().is_some() {
        return Err(invalid(
            "auth.oauth_resource",
            "the canonical URI has no query or fragment (RFC 8707)",
        ));
    }
    if let Some(j) = &jwks_uri {
        parse_oauth_url("auth.oauth_jwks_uri", j)?;
    }
    Ok(Some(OAuthSettings {
        issuer,
        resource,
        jwks_uri,
        leeway: OAUTH_LEEWAY,
    }))
}

fn parse_cidrs(key: &'static str, raw: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    raw.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(key, format!("{s:?} is not an IP address or CIDR")))
        })
        .collect()
}

fn clean_list(raw: Vec<String>) -> Vec<String> {
    raw.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Merges flags/env over the file over defaults, then validates every value.
pub fn resolve(
    args: &ServerArgs,
    file: file::FileConfig,
    config_path: Option<PathBuf>,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let path = pick(args.path.clone(), file.server.path, defaults::PATH.into());
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || path.contains(['?', '#'])
    {
        return Err(invalid(
            "server.path",
            format!("{path:?} must start with '/', not end with '/', and have no query"),
        ));
    }
    let server = ServerSettings {
        host: pick(args.host.clone(), file.server.host, defaults::HOST.into()),
        port: pick(args.port, file.server.port, defaults::PORT),
        path,
        stateless: pick(args.stateless, file.server.stateless, false),
        idle_timeout: Some(bounded(
            "server.idle_timeout_secs",
            pick(
                args.idle_timeout,
                file.server.idle_timeout_secs,
                defaults::IDLE_TIMEOUT_SECS,
            ),
            defaults::IDLE_TIMEOUT_SECS_RANGE,
        )?)
        .filter(|s| *s > 0)
        .map(Duration::from_secs),
        shutdown_grace: Duration::from_secs(bounded(
            "server.shutdown_grace_secs",
            pick(
                args.shutdown_grace,
                file.server.shutdown_grace_secs,
                defaults::SHUTDOWN_GRACE_SECS,
            ),
            defaults::SHUTDOWN_GRACE_SECS_RANGE,
        )?),
        sse_keep_alive: Duration::from_secs(bounded(
            "server.sse_keep_alive_secs",
            pick(
                args.sse_keep_alive,
                file.server.sse_keep_alive_secs,
                defaults::SSE_KEEP_ALIVE_SECS,
            ),
            defaults::SSE_KEEP_ALIVE_SECS_RANGE,
        )?),
        max_body_bytes: bounded(
            "server.max_body_bytes",
            pick(
                args.max_body_bytes,
                file.server.max_body_bytes,
                defaults::MAX_BODY_BYTES,
            ),
            defaults::BODY_BYTES_RANGE,
        )?,
        route_id: route_id(env(ROUTE_ID_ENV))?,
    };

    let auth = AuthSettings {
        token_files: pick_list(&args.token_file, file.auth.token_files),
        allow_unauthenticated: pick(
            args.allow_unauthenticated,
            file.auth.allow_unauthenticated,
            false,
        ),
        metrics_require_token: pick(args.metrics_auth, file.auth.metrics_require_token, false),
        oauth: oauth_settings(
            args.oauth_issuer.clone().or(file.auth.oauth_issuer),
            args.oauth_resource.clone().or(file.auth.oauth_resource),
            args.oauth_jwks_uri.clone().or(file.auth.oauth_jwks_uri),
        )?,
    };

    let access = AccessSettings {
        allowed_hosts: clean_list(pick_list(&args.allowed_hosts, file.access.allowed_hosts)),
        allowed_origins: clean_list(pick_list(
            &args.allowed_origins,
            file.access.allowed_origins,
        )),
        allowed_clients: parse_cidrs(
            "access.allowed_clients",
            &pick_list(&args.allowed_clients, file.access.allowed_clients),
        )?,
        trusted_proxies: parse_cidrs(
            "access.trusted_proxies",
            &pick_list(&args.trusted_proxies, file.access.trusted_proxies),
        )?,
    };

    let limits = LimitSettings {
        max_sessions: pick(
            args.max_sessions,
            file.limits.max_sessions,
            defaults::MAX_SESSIONS,
        ),
        session_idle_timeout: Duration::from_secs(bounded(
            "limits.session_idle_timeout_secs",
            pick(
                args.session_idle_timeout,
                file.limits.session_idle_timeout_secs,
                defaults::SESSION_IDLE_TIMEOUT_SECS,
            ),
            defaults::SESSION_IDLE_TIMEOUT_SECS_RANGE,
        )?),
        max_connections_per_ip: pick(
            args.max_connections_per_ip,
            file.limits.max_connections_per_ip,
            defaults::MAX_CONNECTIONS_PER_IP,
        ),
        calls_per_minute: pick(
            args.max_calls_per_minute,
            file.limits.calls_per_minute,
            defaults::CALLS_PER_MINUTE,
        ),
        concurrent_diagnoses: pick(
            args.max_concurrent_diagnoses,
            file.limits.concurrent_diagnoses,
            defaults::CONCURRENT_DIAGNOSES,
        ),
        header_read_timeout: Duration::from_secs(bounded(
            "limits.header_read_timeout_secs",
            pick(
                args.header_read_timeout,
                file.limits.header_read_timeout_secs,
                defaults::HEADER_READ_TIMEOUT_SECS,
            ),
            defaults::HEADER_READ_TIMEOUT_SECS_RANGE,
        )?),
        connection_idle_timeout: Duration::from_secs(bounded(
            "limits.connection_idle_timeout_secs",
            pick(
                args.connection_idle_timeout,
                file.limits.connection_idle_timeout_secs,
                defaults::CONNECTION_IDLE_TIMEOUT_SECS,
            ),
            defaults::CONNECTION_IDLE_TIMEOUT_SECS_RANGE,
        )?),
    };
    if limits.max_sessions == 0 {
        return Err(invalid("limits.max_sessions", "must be at least 1"));
    }
    if limits.max_connections_per_ip == 0 {
        return Err(invalid(
            "limits.max_connections_per_ip",
            "must be at least 1",
        ));
    }

    let tls = match (
        args.tls_cert.clone().or(file.tls.cert),
        args.tls_key.clone().or(file.tls.key),
    ) {
        (Some(cert), Some(key)) => Some(TlsSettings { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("tls.key", "tls.cert is set but tls.key is not")),
        (None, Some(_)) => return Err(invalid("tls.cert", "tls.key is set but tls.cert is not")),
    };

    let endpoint = parse_url(
        "endpoint",
        &pick(
            args.endpoint.clone(),
            file.endpoint,
            DEFAULT_ENDPOINT.into(),
        ),
    )?;

    let upstream = UpstreamSettings {
        connect_timeout: Duration::from_millis(bounded(
            "upstream.connect_timeout_ms",
            pick(
                args.connect_timeout_ms,
                file.upstream.connect_timeout_ms,
                defaults::CONNECT_TIMEOUT_MS,
            ),
            defaults::UPSTREAM_TIMEOUT_MS_RANGE,
        )?),
        read_timeout: Duration::from_millis(bounded(
            "upstream.read_timeout_ms",
            pick(
                args.read_timeout_ms,
                file.upstream.read_timeout_ms,
                defaults::READ_TIMEOUT_MS,
            ),
            defaults::UPSTREAM_TIMEOUT_MS_RANGE,
        )?),
        request_timeout: Duration::from_millis(bounded(
            "upstream.request_timeout_ms",
            pick(
                args.request_timeout_ms,
                file.upstream.request_timeout_ms,
                defaults::REQUEST_TIMEOUT_MS,
            ),
            defaults::UPSTREAM_TIMEOUT_MS_RANGE,
        )?),
        max_response_bytes: bounded(
            "upstream.max_response_bytes",
            pick(
                args.max_response_bytes,
                file.upstream.max_response_bytes,
                defaults::MAX_RESPONSE_BYTES,
            ),
            defaults::BODY_BYTES_RANGE,
        )?,
        max_retries: bounded(
            "upstream.max_retries",
            pick(
                args.max_retries,
                file.upstream.max_retries,
                defaults::MAX_RETRIES,
            ),
            defaults::MAX_RETRIES_RANGE,
        )?,
        max_requests_per_second: pick(
            args.max_requests_per_second,
            file.upstream.max_requests_per_second,
            defaults::MAX_REQUESTS_PER_SECOND,
        ),
    };

    let diagnosis = DiagnosisSettings {
        timeout: Duration::from_secs(bounded(
            "diagnosis.timeout_secs",
            pick(
                args.diagnosis_timeout,
                file.diagnosis.timeout_secs,
                defaults::DIAGNOSIS_TIMEOUT_SECS,
            ),
            defaults::DIAGNOSIS_TIMEOUT_SECS_RANGE,
        )?),
        poll_interval: Duration::from_millis(bounded(
            "diagnosis.poll_interval_ms",
            pick(
                args.poll_interval_ms,
                file.diagnosis.poll_interval_ms,
                defaults::POLL_INTERVAL_MS,
            ),
            defaults::POLL_INTERVAL_MS_RANGE,
        )?),
        source_marker: pick(
            args.diagnosis_source_marker.clone(),
            file.diagnosis.source_marker,
            DEFAULT_SOURCE_MARKER.into(),
        ),
        poll_max_interval: Duration::from_millis(bounded(
            "diagnosis.poll_max_interval_ms",
            pick(
                args.poll_max_interval_ms,
                file.diagnosis.poll_max_interval_ms,
                defaults::POLL_MAX_INTERVAL_MS,
            ),
            defaults::POLL_INTERVAL_MS_RANGE,
        )?),
        detach_grace: Duration::from_secs(bounded(
            "diagnosis.detach_grace_secs",
            pick(
                args.detach_grace_secs,
                file.diagnosis.detach_grace_secs,
                defaults::DETACH_GRACE_SECS,
            ),
            defaults::DETACH_GRACE_SECS_RANGE,
        )?),
    };
    if diagnosis.source_marker.trim().is_empty() {
        return Err(invalid("diagnosis.source_marker", "must not be empty"));
    }

    let kind_raw = env("OPENAPI_TYPE")
        .or(file.credentials.kind)
        .unwrap_or_else(|| "access_key".into());
    let kind = CredentialKind::parse(kind_raw.trim()).ok_or_else(|| {
        invalid(
            "credentials.type (OPENAPI_TYPE)",
            format!("{kind_raw:?} is not one of access_key, sts, ram_role_arn, ecs_ram_role"),
        )
    })?;
    let credentials = CredentialSettings {
        kind,
        role_arn: file.credentials.role_arn,
        role_session_name: file
            .credentials
            .role_session_name
            .unwrap_or_else(|| "sysom-mcp".into()),
        ecs_role_name: env("ECS_RAM_ROLE").or(file.credentials.ecs_role_name),
        sts_endpoint: parse_url(
            "credentials.sts_endpoint (SYSOM_STS_ENDPOINT)",
            &env("SYSOM_STS_ENDPOINT")
                .or(file.credentials.sts_endpoint)
                .unwrap_or_else(|| "https://sts.aliyuncs.com".into()),
        )?,
        ecs_metadata_endpoint: parse_url(
            "credentials.ecs_metadata_endpoint (SYSOM_ECS_METADATA_ENDPOINT)",
            &env("SYSOM_ECS_METADATA_ENDPOINT")
                .or(file.credentials.ecs_metadata_endpoint)
                .unwrap_or_else(|| "http://100.100.100.200".into()),
        )?,
    };

    let target_raw = pick(
        args.log_target.clone(),
        file.logging.target,
        defaults::LOG_TARGET.into(),
    );
    let target = match target_raw.as_str() {
        "auto" => LogTarget::Auto,
        "stderr" => LogTarget::Stderr,
        "journald" => LogTarget::Journald,
        other => {
            return Err(invalid(
                "logging.target (--log)",
                format!("{other:?} is not one of auto, stderr, journald"),
            ));
        }
    };
    let logging = LogSettings {
        target,
        level: pick(
            args.log_level.clone(),
            file.logging.level,
            defaults::LOG_LEVEL.into(),
        ),
    };

    let tools_raw = pick(args.tools.clone(), file.local.tools, defaults::TOOLS.into());
    let local = LocalSettings {
        root: pick(
            args.local_root.clone(),
            file.local.root,
            PathBuf::from(defaults::LOCAL_ROOT),
        ),
        tools: ToolSet::parse(&tools_raw)
            .ok_or_else(|| invalid("local.tools", "must be auto, all, cloud or local"))?,
    };
    if !local.root.is_dir() {
        return Err(invalid("local.root", "must be an existing directory"));
    }

    Ok(Config {
        config_path,
        server,
        auth,
        access,
        limits,
        tls,
        endpoint,
        upstream,
        diagnosis,
        credentials,
        logging,
        local,
    })
}

/// The process environment as an [`EnvLookup`]; empty values count as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether `path` is the config file actually read.
pub fn describe_path(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map(Path::display)
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("(none; {DEFAULT_CONFIG_PATH} absent)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve_with(args: &ServerArgs, toml: &str) -> Result<Config, ConfigError> {
        resolve(args, file::parse(toml).unwrap(), None, &no_env)
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = resolve_with(&ServerArgs::default(), "").unwrap();
        assert_eq!(cfg.server.port, 7140);
        assert_eq!(cfg.server.host, "127.0.0.1");
        assert_eq!(cfg.server.path, "/mcp/unified");
        assert_eq!(
            cfg.endpoint.as_str(),
            "https://sysom.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(cfg.diagnosis.timeout, Duration::from_secs(150));
        assert_eq!(cfg.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.upstream.read_timeout, Duration::from_secs(10));
        assert_eq!(cfg.credentials.kind, CredentialKind::AccessKey);
    }

    #[test]
    fn file_beats_defaults() {
        let cfg = resolve_with(&ServerArgs::default(), "[server]\nport = 8000\n").unwrap();
        assert_eq!(cfg.server.port, 8000);
    }

    #[test]
    fn flag_or_env_beats_file() {
        // clap folds the environment into the same field as the flag.
        let args = ServerArgs {
            port: Some(9000),
            ..Default::default()
        };
        let cfg = resolve_with(&args, "[server]\nport = 8000\n").unwrap();
        assert_eq!(cfg.server.port, 9000);
    }

    #[test]
    fn credential_env_beats_file() {
        let env = |k: &str| (k == "OPENAPI_TYPE").then(|| "sts".to_string());
        let file = file::parse("[credentials]\ntype = \"ram_role_arn\"\n").unwrap();
        let cfg = resolve(&ServerArgs::default(), file, None, &env).unwrap();
        assert_eq!(cfg.credentials.kind, CredentialKind::Sts);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = resolve_with(&ServerArgs::default(), "endpoint = \"ftp://x\"\n").unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let err = resolve_with(
            &ServerArgs::default(),
            "[access]\nallowed_clients = [\"nope\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("access.allowed_clients"), "{err}");
        let err = resolve_with(&ServerArgs::default(), "[server]\npath = \"mcp\"\n").unwrap_err();
        assert!(err.to_string().contains("server.path"), "{err}");
        let err =
            resolve_with(&ServerArgs::default(), "[credentials]\ntype = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("credentials.type"), "{err}");
    }

    #[test]
    fn route_ids_are_short_url_safe_names() {
        assert_eq!(route_id(None).unwrap(), None);
        assert_eq!(
            route_id(Some("7141".into())).unwrap().as_deref(),
            Some("7141")
        );
        assert!(route_id(Some("eu_west-2".into())).is_ok());
        for bad in ["a.b", "a&sessionId=x", "x y", &"x".repeat(33)] {
            let err = route_id(Some(bad.to_string())).unwrap_err().to_string();
            assert!(err.contains(ROUTE_ID_ENV), "{err}");
        }
    }

    #[test]
    fn cidrs_accept_plain_addresses_and_v6() {
        let cfg = resolve_with(
            &ServerArgs::default(),
            "[access]\nallowed_clients = [\"10.0.0.0/8\", \"::1\", \"fd00::/8\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.access.allowed_clients.len(), 3);
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("::1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("0.0.0.0"));
        assert!(!is_loopback_host("192.0.2.1"));
    }
}
