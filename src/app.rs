//! The program's wiring: pick the mode, take sockets before the runtime starts, load the
//! configuration, set up logging, then serve stdio or HTTP until told to stop. Exit statuses
//! are decided here and only here.

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::{
    check,
    config::{self, Command, Config, Opts, ServerArgs},
    credentials::{self, Provider},
    http::{self, Listener, State, auth::Tokens},
    logging, metrics,
    systemd::{activation, notify},
    tools::{Services, SysomServer, activation::Cache},
    upstream,
};

/// Exit statuses: 0 ok, 1 runtime failure, 2 usage or configuration error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Config = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

fn fail(code: Exit, message: impl std::fmt::Display) -> Exit {
    eprintln!("sysom-mcp: {message}");
    code
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let opts = Opts::parse();
    let exit = match opts.command {
        Some(Command::Check) => check::run(&opts.server),
        Some(Command::Proxy { url, token_file }) => crate::proxy::run(url, token_file),
        Some(Command::Token { action }) => crate::auth::command::run(action, &opts.server),
        None => serve(opts.server),
    };
    exit.into()
}

/// Builds what the tools use from a configuration: credentials, the HTTP client, the upstream.
pub fn build_services(config: &Config, activation: Option<Arc<Cache>>) -> Services {
    let provider = Arc::new(Provider::from_settings(
        &config.credentials,
        &config::process_env,
    ));
    let http = upstream::build_http(&config.upstream);
    let client = upstream::Client::new(
        http,
        config.endpoint.clone(),
        provider,
        config.upstream.clone(),
    );
    let mut services = Services::new(client, config.diagnosis.clone(), activation);
    services.local_root = config.local.root.clone();
    services.tool_set = config.local.tools;
    services
}

/// Installs the process-wide rustls crypto provider (needed before any HTTPS client or server).
pub fn install_crypto() {
    // reqwest and tokio-rustls share one rustls crypto provider; `ring` builds everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn serve(args: ServerArgs) -> Exit {
    let inherited = match activation::take() {
        Ok(s) => s,
        Err(e) => return fail(Exit::Config, format_args!("socket activation: {e}")),
    };
    if args.stdio && inherited.is_some() {
        return fail(
            Exit::Config,
            "--stdio was given but systemd passed listening sockets; drop --stdio or the socket unit",
        );
    }
    let http_mode = args.sse || args.streamable_http || (!args.stdio && inherited.is_some());
    let config = match config::load(&args, &config::process_env) {
        Ok(c) => c,
        Err(e) => return fail(Exit::Config, e),
    };
    let note = logging::init(&config.logging);
    install_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sysom-mcp")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                Exit::Failure,
                format_args!("cannot start the async runtime: {e}"),
            );
        }
    };
    tracing::info!(config = %config::describe_path(&config.config_path), "{note}");
    runtime.block_on(async move {
        if http_mode {
            serve_http(args, config, inherited).await
        } else {
            serve_stdio(config).await
        }
    })
}

async fn serve_stdio(config: Config) -> Exit {
    use rmcp::ServiceExt;
    let services = build_services(&config, None);
    if !services.upstream.credentials().is_configured() {
        tracing::warn!("no SysOM credentials configured; tools will answer with what to set");
    }
    let server = SysomServer::new(services);
    let running = match server.serve(rmcp::transport::stdio()).await {
        Ok(r) => r,
        Err(e) => {
            return fail(
                Exit::Failure,
                format_args!("MCP handshake on stdio failed: {e}"),
            );
        }
    };
    let ct = running.cancellation_token();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        ct.cancel();
    });
    match running.waiting().await {
        Ok(_) => Exit::Ok,
        Err(e) => fail(Exit::Failure, format_args!("stdio session failed: {e}")),
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Turns inherited or freshly bound sockets into tokio listeners.
async fn listeners(
    config: &Config,
    inherited: Option<Vec<activation::Inherited>>,
) -> Result<Vec<Listener>, String> {
    match inherited {
        Some(sockets) => sockets
            .into_iter()
            .map(|s| match s {
                activation::Inherited::Tcp(l) => {
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    tokio::net::TcpListener::from_std(l)
                        .map(Listener::Tcp)
                        .map_err(|e| e.to_string())
                }
                activation::Inherited::Unix(l) => {
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    tokio::net::UnixListener::from_std(l)
                        .map(Listener::Unix)
                        .map_err(|e| e.to_string())
                }
            })
            .collect(),
        None => {
            let host = config
                .server
                .host
                .trim_start_matches('[')
                .trim_end_matches(']');
            let addr = format!(
                "{}:{}",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                },
                config.server.port
            );
            tokio::net::TcpListener::bind(&addr)
                .await
                .map(|l| vec![Listener::Tcp(l)])
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        }
    }
}

/// True when every listener only accepts local connections.
fn loopback_only(listeners: &[Listener]) -> bool {
    listeners.iter().all(|l| match l {
        Listener::Tcp(t) => t
            .local_addr()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false),
        Listener::Unix(_) => true,
    })
}

/// The client tokens the configuration names, plus `$CREDENTIALS_DIRECTORY/mcp-tokens`.
pub fn load_tokens(config: &Config) -> Result<Tokens, String> {
    let dir = credentials::credentials_dir(&config::process_env);
    Tokens::load(&config.auth.token_files, dir.as_deref())
}

fn load_tls(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    config.tls.as_ref().map(http::tls::load).transpose()
}

async fn serve_http(
    args: ServerArgs,
    config: Config,
    inherited: Option<Vec<activation::Inherited>>,
) -> Exit {
    let activated = inherited.is_some();
    let listeners = match listeners(&config, inherited).await {
        Ok(l) => l,
        Err(e) => return fail(Exit::Failure, e),
    };
    let tokens = match load_tokens(&config) {
        Ok(t) => t,
        Err(e) => return fail(Exit::Config, e),
    };
    let loopback = loopback_only(&listeners);
    if tokens.is_empty() && !config.auth.allow_unauthenticated && !loopback {
        return fail(
            Exit::Config,
            "refusing to serve on a non-loopback address without a bearer token. Put tokens (one per \
             line) in a file and pass --token-file FILE (or SYSOM_MCP_TOKEN_FILE); the packaged \
             service reads /etc/sysom-mcp/credentials/mcp-tokens (create it with mode 0600). Or opt \
             out explicitly with --allow-unauthenticated.",
        );
    }
    let tls = match load_tls(&config) {
        Ok(t) => t,
        Err(e) => return fail(Exit::Config, e),
    };
    let addresses: Vec<String> = listeners.iter().map(Listener::describe).collect();
    let addresses = addresses.join(", ");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = SysomServer::new(build_services(&config, None));
    if !server.credentials_configured() {
        tracing::warn!("no SysOM credentials configured; tools will answer with what to set");
    }
    tracing::info!(
        listen = %addresses, path = %config.server.path, tokens = tokens.len(), tls = tls.is_some(),
        stateless = config.server.stateless, activated,
        "serving MCP over {scheme} (legacy SSE and Streamable HTTP)"
    );
    let grace = config.server.shutdown_grace;
    let idle_timeout = config.server.idle_timeout;
    let state = State::new(config, tokens, tls, server.clone(), loopback);
    let stop = CancellationToken::new();

    notify::ready(&format!("serving on {addresses}"));
    if let Some(interval) = notify::spawn_watchdog() {
        tracing::info!(?interval, "systemd watchdog enabled");
    }
    tokio::spawn(status_updates(state.clone(), addresses.clone()));
    tokio::spawn(signals(
        args,
        state.clone(),
        server,
        stop.clone(),
        addresses,
    ));
    match (idle_timeout, activated) {
        (Some(idle), true) => {
            tokio::spawn(idle_exit(state.clone(), idle, stop.clone()));
        }
        (Some(_), false) => {
            tracing::warn!("--idle-timeout only applies under socket activation; ignored")
        }
        _ => {}
    }
    http::serve(state, listeners, stop, grace).await;
    tracing::info!("stopped");
    Exit::Ok
}

/// Keeps systemd's status line current.
async fn status_updates(state: Arc<State>, addresses: String) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let line = format!(
            "serving on {addresses}; {} open sessions; {} tool calls running",
            state.session_count().await,
            metrics::running_tool_calls()
        );
        if line != last {
            notify::status(&line);
            last = line;
        }
    }
}

/// Exits after `idle` without any connection; systemd's socket starts us again on demand.
async fn idle_exit(state: Arc<State>, idle: Duration, stop: CancellationToken) {
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500).min(idle)).await;
        if state.open_connections() > 0 || metrics::running_tool_calls() > 0 {
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= idle {
            tracing::info!(?idle, "idle; exiting until the next connection");
            stop.cancel();
            return;
        }
    }
}

async fn signals(
    args: ServerArgs,
    state: Arc<State>,
    server: SysomServer,
    stop: CancellationToken,
    addresses: String,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    let term = wait_for_stop_signal();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = &mut term => {
                tracing::info!("stop requested; draining");
                stop.cancel();
                return;
            }
            _ = hup.recv() => {
                notify::reloading();
                reload(&args, &state, &server).await;
                notify::ready(&format!("serving on {addresses}"));
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// How long a reload may take before it is reported as stuck and abandoned.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// Reload threads may pile up behind a hung mount; past this many, SIGHUP is refused.
const MAX_RELOADS_RUNNING: usize = 4;
static RELOADS_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a reload read and built, ready to be swapped in.
struct Reloaded {
    config: Config,
    tokens: Tokens,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: Services,
}

/// Re-reads the configuration, tokens, TLS certificates and credentials. All or nothing: if
/// any part is invalid, the old configuration stays and the error is logged.
///
/// The reading happens on a thread of its own, not on the runtime: a path that blocks (a FIFO,
/// a hung NFS or FUSE mount) must not freeze the server. A reload that has not finished after
/// [`RELOAD_DEADLINE`] is reported and abandoned; its thread is left to finish or hang alone.
pub async fn reload(args: &ServerArgs, state: &State, server: &SysomServer) {
    use std::sync::atomic::Ordering;
    let running = RELOADS_RUNNING.load(Ordering::SeqCst);
    if running >= MAX_RELOADS_RUNNING {
        tracing::error!(
            running,
            "reload refused: earlier reloads are still blocked reading their files; keeping the \
             previous configuration"
        );
        return;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let args = args.clone();
    let had_tokens = !state.tokens.load().is_empty();
    let cache = server.activation_cache();
    RELOADS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("sysom-reload".into())
        .spawn(move || {
            let result = read_reload(&args, had_tokens, cache);
            RELOADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        RELOADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(error = %e, "reload rejected: cannot start its thread");
        return;
    }
    let result = match tokio::time::timeout(RELOAD_DEADLINE, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the reload thread panicked".to_string()),
        Err(_) => {
            tracing::error!(
                deadline = ?RELOAD_DEADLINE,
                "reload abandoned: reading the configuration, token or TLS files did not finish in \
                 time (a FIFO or a hung mount?); keeping the previous configuration"
            );
            return;
        }
    };
    match result {
        Ok(new) => {
            let old = state.config.load();
            if old.server.host != new.config.server.host
                || old.server.port != new.config.server.port
            {
                tracing::warn!("listen address changes need a restart (or a socket unit change)");
            }
            server.replace_services(new.services);
            tracing::info!(
                tokens = new.tokens.len(),
                tls = new.tls.is_some(),
                "configuration reloaded"
            );
            state.tokens.store(Arc::new(new.tokens));
            state.tls.store(Arc::new(new.tls));
            state.config.store(Arc::new(new.config));
        }
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; keeping the previous configuration")
        }
    }
}

/// The blocking half of [`reload`]: every file read and every object built from them.
fn read_reload(args: &ServerArgs, had_tokens: bool, cache: Arc<Cache>) -> Result<Reloaded, String> {
    let config = config::load(args, &config::process_env).map_err(|e| e.to_string())?;
    let tokens = load_tokens(&config)?;
    // Emptying the token list must not silently switch authentication off (on loopback,
    // behind a local reverse proxy, that would open the server).
    if tokens.is_empty() && had_tokens {
        return Err(
            "the new token list is empty; keeping the current tokens (to run without \
                    tokens, restart the service)"
                .to_string(),
        );
    }
    let tls = load_tls(&config)?;
    let services = build_services(&config, Some(cache));
    Ok(Reloaded {
        config,
        tokens,
        tls,
        services,
    })
}
