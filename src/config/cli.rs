//! Command-line flags. Every server flag can also come from an environment variable (clap's
//! `env`), so "env beats file" and "flag beats env" both fall out of one `Option` per setting.
//! Defaults are applied later, in `config::resolve`, so an unset flag never hides the file.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

const CREDENTIALS_HELP: &str = "\
CREDENTIALS (environment or $CREDENTIALS_DIRECTORY files; never in the config file):
  OPENAPI_TYPE                 access_key (default) | sts | ram_role_arn | ecs_ram_role
  OPENAPI_ACCESS_KEY_ID, ACCESS_KEY_ID             file: access-key-id
  OPENAPI_ACCESS_KEY_SECRET, ACCESS_KEY_SECRET     file: access-key-secret
  OPENAPI_SECURITY_TOKEN, SECURITY_TOKEN           file: security-token   (type sts)
  OPENAPI_ROLE_ARN, ROLE_ARN                       file: role-arn         (type ram_role_arn)
  ECS_RAM_ROLE                 ECS instance RAM role name (type ecs_ram_role; discovered if unset)
  SYSOM_STS_ENDPOINT           STS endpoint for AssumeRole (default https://sts.aliyuncs.com)
  SYSOM_ECS_METADATA_ENDPOINT  ECS metadata service (default http://100.100.100.200)
  DASHSCOPE_API_KEY            accepted and ignored: sysom-mcp never calls an LLM
  CREDENTIALS_DIRECTORY        set by systemd LoadCredential=; also holds `mcp-tokens` and
                               `task-keys` (MCP task handle keys, newest first)
  SYSOM_MCP_TASK_KEY_FILE      task key file instead of the task-keys credential (re-read on reload)
  SYSOM_MCP_ROUTE_ID           this instance's name, the prefix of its legacy SSE session ids
                               (for load balancers; 1-32 of A-Za-z0-9_-)
Bearer tokens for MCP clients: `NAME SCOPES sha256:HEX` lines (made by `sysom-mcp token new`) in
each --token-file and in $CREDENTIALS_DIRECTORY/mcp-tokens; every listed token is accepted
(rotation). A line with a single word is a plain token of the old format (every scope).

Precedence: built-in defaults < config file < environment < flags.
Signals: SIGHUP reloads config, tokens, TLS certificates and credentials; SIGTERM drains and exits.
Exit status: 0 ok, 1 runtime failure or `check` found problems, 2 usage or configuration error.";

/// The clap command with every resolver default shown in its flag's help, from
/// [`super::defaults`] (one constant per default; `resolve` applies the same constants).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    super::defaults::help_defaults()
        .into_iter()
        .fold(Opts::command(), |cmd, (id, default)| {
            cmd.mut_arg(id, |arg| {
                let shown = |text: Option<&clap::builder::StyledStr>| {
                    format!(
                        "{} [default: {default}]",
                        text.map(|t| t.to_string()).unwrap_or_default()
                    )
                };
                let help = shown(arg.get_help());
                let arg = match arg.get_long_help() {
                    Some(long) => {
                        let long = shown(Some(long));
                        arg.long_help(long)
                    }
                    None => arg,
                };
                arg.help(help)
            })
        })
}

/// Parses the process's command line (exits with status 2 on a usage error, as clap does).
/// The matches are kept so `check` can tell a flag from an environment variable.
pub fn parse() -> (Opts, clap::ArgMatches) {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    let opts = Opts::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (opts, matches)
}

/// The command line as typed.
#[derive(Debug, Parser)]
#[command(
    name = "sysom-mcp",
    version,
    about = "MCP server for Alibaba Cloud SysOM OS diagnoses (memory, IO, network, scheduling, crash)",
    after_long_help = CREDENTIALS_HELP,
    group(ArgGroup::new("mode").args(["stdio", "sse", "streamable_http"]).multiple(false)),
)]
pub struct Opts {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, test credentials and the endpoint with one harmless signed call,
    /// and report socket/unit state. Exit 0 when everything is usable, 1 otherwise.
    Check,
    /// Serve MCP on stdio and forward every message to a remote sysom-mcp (Streamable HTTP,
    /// falling back to legacy SSE), for clients that only speak stdio.
    Proxy {
        /// Remote endpoint, e.g. https://mcp.example.com/mcp/unified
        url: String,
        /// File holding the bearer token to send (first non-comment line).
        #[arg(long, env = "SYSOM_MCP_PROXY_TOKEN_FILE", value_name = "PATH")]
        token_file: Option<PathBuf>,
    },
    /// Reload a running server and wait for the outcome (the unit's `ExecReload=`): sends SIGHUP
    /// to --pid and waits until the server records in --status-file whether the new
    /// configuration applied. Exit 0 when it did, 1 when it was rejected or not confirmed.
    Reload {
        /// The server's process id (`$MAINPID` in the unit).
        #[arg(long, value_name = "PID")]
        pid: i32,
        /// Where the server records the outcome: `reload-status` in its `$RUNTIME_DIRECTORY`.
        #[arg(long, value_name = "PATH")]
        status_file: PathBuf,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout_secs: u64,
    },
    /// Named bearer tokens with scopes (the tokens file keeps only their SHA-256).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token: prints it once on stdout and appends its name, scopes and hash to the
    /// tokens file (created with mode 0600). Reload the service to use it.
    New {
        /// Principal name shown in logs and the audit trail (letters, digits, . _ - @)
        name: String,
        /// Scope to grant: read, diagnose or admin (repeatable or comma-separated)
        #[arg(
            long = "scope",
            required = true,
            value_delimiter = ',',
            value_name = "SCOPE"
        )]
        scopes: Vec<String>,
        /// Tokens file to append to [default: the first --token-file, else
        /// /etc/sysom-mcp/credentials/mcp-tokens]
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// List token names and scopes (never the tokens or their hashes).
    List {
        /// Tokens file to list [default: every configured one]
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// Flags shared by `serve` (the default) and `check`.
#[derive(Debug, Args, Default, Clone)]
pub struct ServerArgs {
    /// Serve MCP on stdin/stdout (the default without LISTEN_FDS, as in the original server).
    #[arg(global = true, long)]
    pub stdio: bool,
    /// Serve over HTTP. Legacy HTTP+SSE and Streamable HTTP are both served on --path.
    #[arg(global = true, long)]
    pub sse: bool,
    /// Serve over HTTP (same server as --sse; the flag is kept for compatibility).
    #[arg(global = true, long)]
    pub streamable_http: bool,

    /// Configuration file (TOML). A missing default file is fine; a missing explicit one is an error.
    #[arg(global = true, long, env = "SYSOM_MCP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to bind when not socket-activated
    #[arg(global = true, long, env = "SYSOM_MCP_HOST")]
    pub host: Option<String>,
    /// Port to bind when not socket-activated
    #[arg(global = true, long, env = "SYSOM_MCP_PORT")]
    pub port: Option<u16>,
    /// HTTP path of the MCP endpoint
    #[arg(global = true, long, env = "SYSOM_MCP_PATH")]
    pub path: Option<String>,
    /// Never create sessions: every request is served statelessly (for load balancers).
    #[arg(global = true, long, env = "SYSOM_MCP_STATELESS", num_args = 0..=1, default_missing_value = "true")]
    pub stateless: Option<bool>,
    /// Exit after this many seconds without connections (socket activation restarts it)
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_IDLE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub idle_timeout: Option<u64>,
    /// Seconds in-flight tool calls get to finish on SIGTERM
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_SHUTDOWN_GRACE",
        value_name = "SECONDS"
    )]
    pub shutdown_grace: Option<u64>,
    /// Seconds between SSE keep-alive comments
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_SSE_KEEP_ALIVE",
        value_name = "SECONDS"
    )]
    pub sse_keep_alive: Option<u64>,
    /// Largest accepted request body
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<usize>,

    /// File of bearer tokens, one per line (repeatable; env: `:`-separated list)
    #[arg(
        long,
        env = "SYSOM_MCP_TOKEN_FILE",
        value_delimiter = ':',
        value_name = "PATH"
    )]
    pub token_file: Vec<PathBuf>,
    /// Serve without bearer tokens even on a non-loopback address (explicit opt-out).
    #[arg(global = true, long, env = "SYSOM_MCP_ALLOW_UNAUTHENTICATED", num_args = 0..=1, default_missing_value = "true")]
    pub allow_unauthenticated: Option<bool>,
    /// Require a bearer token on /metrics too [default: false]
    #[arg(global = true, long, env = "SYSOM_MCP_METRICS_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_auth: Option<bool>,
    /// OAuth authorization server (its `iss`) whose JWT access tokens are accepted
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_OAUTH_ISSUER",
        value_name = "URL"
    )]
    pub oauth_issuer: Option<String>,
    /// This server's canonical URI, the audience OAuth tokens must name (RFC 8707)
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_OAUTH_RESOURCE",
        value_name = "URL"
    )]
    pub oauth_resource: Option<String>,
    /// JWKS URL of the OAuth issuer [default: from the issuer's metadata]
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_OAUTH_JWKS_URI",
        value_name = "URL"
    )]
    pub oauth_jwks_uri: Option<String>,

    /// Accepted Host header values, comma-separated; `*` = any [default: localhost, IP
    /// addresses, the configured host and the system hostname]
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Accepted Origin header values besides same-origin ones, comma-separated; `*` = any
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Client networks allowed to connect, CIDRs comma-separated (empty: any)
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_ALLOWED_CLIENTS",
        value_delimiter = ','
    )]
    pub allowed_clients: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For is believed, CIDRs comma-separated
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Maximum concurrent MCP sessions (SSE + Streamable HTTP)
    #[arg(global = true, long, env = "SYSOM_MCP_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Close sessions idle for this many seconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_SESSION_IDLE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub session_idle_timeout: Option<u64>,
    /// Maximum open connections per client IP
    #[arg(global = true, long, env = "SYSOM_MCP_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Tool calls per minute one principal (token name, OAuth subject) may make
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_MAX_CALLS_PER_MINUTE",
        value_name = "N"
    )]
    pub max_calls_per_minute: Option<usize>,
    /// Diagnoses one principal may run at once
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_MAX_CONCURRENT_DIAGNOSES",
        value_name = "N"
    )]
    pub max_concurrent_diagnoses: Option<usize>,
    /// Seconds a client has to send a request's headers, and then its body
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_HEADER_READ_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub header_read_timeout: Option<u64>,
    /// Close a connection with no request in flight for this many seconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_CONNECTION_IDLE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub connection_idle_timeout: Option<u64>,

    /// PEM certificate chain: serve HTTPS (HTTP/2 via ALPN)
    #[arg(
        long,
        env = "SYSOM_MCP_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(
        long,
        env = "SYSOM_MCP_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// SysOM OpenAPI endpoint URL
    #[arg(global = true, long, env = "SYSOM_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Upstream connect timeout in milliseconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_CONNECT_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub connect_timeout_ms: Option<u64>,
    /// Upstream read timeout in milliseconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_READ_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub read_timeout_ms: Option<u64>,
    /// Total time one upstream request may take, body included, in milliseconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_REQUEST_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub request_timeout_ms: Option<u64>,
    /// Largest upstream response body accepted, in bytes
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_MAX_RESPONSE_BYTES",
        value_name = "BYTES"
    )]
    pub max_response_bytes: Option<usize>,
    /// Retries of GET operations on throttling and 5xx
    #[arg(global = true, long, env = "SYSOM_MCP_MAX_RETRIES")]
    pub max_retries: Option<u32>,
    /// Ceiling on upstream requests per second, all calls together; 0 = none
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_MAX_REQUESTS_PER_SECOND",
        value_name = "N"
    )]
    pub max_requests_per_second: Option<u32>,
    /// Seconds a diagnosis may run before TaskTimeout
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_DIAGNOSIS_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub diagnosis_timeout: Option<u64>,
    /// First poll interval of GetDiagnosisResult in milliseconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_POLL_INTERVAL_MS",
        value_name = "MS"
    )]
    pub poll_interval_ms: Option<u64>,
    /// Key of the "mcp" marker written into every InvokeDiagnosis params object
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_DIAGNOSIS_SOURCE_MARKER",
        value_name = "KEY"
    )]
    pub diagnosis_source_marker: Option<String>,
    /// Longest poll interval once polling has backed off, milliseconds
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_POLL_MAX_INTERVAL_MS",
        value_name = "MS"
    )]
    pub poll_max_interval_ms: Option<u64>,
    /// Seconds a diagnosis keeps polling after its callers went away without cancelling
    #[arg(
        global = true,
        long,
        env = "SYSOM_MCP_DETACH_GRACE_SECS",
        value_name = "SECONDS"
    )]
    pub detach_grace_secs: Option<u64>,

    /// Log destination: auto (journald when stderr is the journal), stderr or journald
    #[arg(
        global = true,
        long = "log",
        env = "SYSOM_MCP_LOG",
        value_name = "TARGET"
    )]
    pub log_target: Option<String>,
    /// Log level or filter, e.g. info, debug, sysom_mcp=trace (env: RUST_LOG)
    #[arg(global = true, long, env = "RUST_LOG", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Directory the local diagnosis tools read /proc, /sys and /dev/kmsg under
    #[arg(global = true, long, env = "SYSOM_MCP_LOCAL_ROOT", value_name = "DIR")]
    pub local_root: Option<PathBuf>,
    /// Tools to list: auto (local tools, plus the cloud tools when credentials are configured at
    /// start), all, cloud or local
    #[arg(global = true, long, env = "SYSOM_MCP_TOOLS", value_name = "SET")]
    pub tools: Option<String>,
}
