//! The program's wiring, and the root of the module graph: pick the mode, take sockets before
//! the runtime starts, load the configuration, set up logging, then serve stdio or HTTP until
//! told to stop. Every mode returns `Result<(), StartError>`; the exit status follows from it.

use std::{process::ExitCode, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    auth, check,
    config::{self, Command, Config, ServerArgs},
    exit::{Exit, StartError},
    http::{self, Listener, State},
    logging, proxy,
    systemd::{notify, reload_ack, socket_activation, supervise},
    tools::{Services, SysomServer},
};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // reqwest and tokio-rustls share one process-wide rustls crypto provider, needed before
    // any HTTPS client or server; `ring` builds everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (opts, matches) = config::cli::parse();
    let result = match opts.command {
        Some(Command::Check) => check::run(&opts.server, &matches),
        Some(Command::Proxy { url, token_file }) => proxy::run(url, token_file),
        Some(Command::Token { action }) => auth::command::run(action, &opts.server),
        Some(Command::Reload {
            pid,
            status_file,
            timeout_secs,
        }) => reload_ack::signal_and_wait(pid, &status_file, Duration::from_secs(timeout_secs))
            .map_err(StartError::ReloadFailed),
        None => serve(opts.server),
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("sysom-mcp: {e}");
            e.exit().into()
        }
    }
}

fn serve(args: ServerArgs) -> Result<(), StartError> {
    // SAFETY: `serve` runs first thing in `main`, before the runtime or any thread exists.
    #[allow(unsafe_code)]
    let inherited = unsafe { socket_activation::take() }.map_err(StartError::SocketActivation)?;
    if args.stdio && inherited.is_some() {
        return Err(StartError::StdioWithSockets);
    }
    let http_mode = args.sse || args.streamable_http || (!args.stdio && inherited.is_some());
    let config = config::load(&args, &config::process_env)?;
    let note = logging::init(&config.logging);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sysom-mcp")
        .build()
        .map_err(StartError::Runtime)?;
    tracing::info!(config = %config::describe_path(&config.config_path), "{note}");
    runtime.block_on(async move {
        if http_mode {
            serve_http(args, config, inherited).await
        } else {
            serve_stdio(config).await
        }
    })
}

async fn serve_stdio(config: Config) -> Result<(), StartError> {
    use rmcp::ServiceExt;
    let services = Services::from_config(&config, None).map_err(StartError::TaskKeys)?;
    if !services.upstream.credentials().is_configured() {
        tracing::warn!("no SysOM credentials configured; tools will answer with what to set");
    }
    let server = SysomServer::new(services);
    let server_warm_up = server.clone();
    // Pipes (how MCP clients start a stdio server) are read and written on the event loop,
    // on descriptions of their own, instead of a blocking-pool thread hop per read and write
    // (bench/results.md: 16 context switches a call); anything else gets rmcp's stdio().
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| StartError::StdioHandshake(e.to_string()))?;
    // The handshake is done: the HTTPS client can be built now, off the start-up path.
    server_warm_up.warm_up_after(crate::upstream::WARM_UP_DELAY);
    let ct = running.cancellation_token();
    tokio::spawn(async move {
        supervise::stop_requested().await;
        ct.cancel();
    });
    running
        .waiting()
        .await
        .map(drop)
        .map_err(|e| StartError::StdioSession(e.to_string()))
}

/// Turns inherited or freshly bound sockets into tokio listeners.
async fn listeners(
    config: &Config,
    inherited: Option<Vec<socket_activation::Inherited>>,
) -> Result<Vec<Listener>, String> {
    match inherited {
        Some(sockets) => sockets
            .into_iter()
            .map(|s| match s {
                socket_activation::Inherited::Tcp(l) => {
                    l.set_nonblocking(true).map_err(|e| e.to_string())?;
                    tokio::net::TcpListener::from_std(l)
                        .map(Listener::Tcp)
                        .map_err(|e| e.to_string())
                }
                socket_activation::Inherited::Unix(l) => {
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

async fn serve_http(
    args: ServerArgs,
    config: Config,
    inherited: Option<Vec<socket_activation::Inherited>>,
) -> Result<(), StartError> {
    let activated = inherited.is_some();
    let listeners = listeners(&config, inherited)
        .await
        .map_err(StartError::Listen)?;
    let auth = auth::authenticate::Authenticator::from_config(&config, None)
        .map_err(StartError::Tokens)?;
    let loopback = http::loopback_only(&listeners);
    if auth.is_empty() && !config.auth.allow_unauthenticated && !loopback {
        return Err(StartError::NoTokenBeyondLoopback);
    }
    let tls = http::tls::from_config(&config).map_err(StartError::Tls)?;
    let addresses: Vec<String> = listeners.iter().map(Listener::describe).collect();
    let addresses = addresses.join(", ");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let services = Services::from_config(&config, None).map_err(StartError::TaskKeys)?;
    tracing::info!(
        keys = ?services.task_keys.key_ids(),
        "task handles sealed with {}",
        services.task_key_origin.describe()
    );
    let server = SysomServer::new(services);
    if !server.credentials_configured() {
        tracing::warn!("no SysOM credentials configured; tools will answer with what to set");
    }
    tracing::info!(
        listen = %addresses, path = %config.server.path, tokens = auth.tokens.len(),
        oauth = auth.oauth.is_some(), tls = tls.is_some(),
        stateless = config.server.stateless, activated,
        "serving MCP over {scheme} (legacy SSE and Streamable HTTP)"
    );
    let grace = config.server.shutdown_grace;
    let idle_timeout = config.server.idle_timeout;
    if auth.tokens.plain_count() > 0 {
        tracing::warn!(
            plain = auth.tokens.plain_count(),
            "the tokens file holds plain tokens of the old format (every scope); replace them \
             with `sysom-mcp token new NAME --scope …`"
        );
    }
    let state = State::new(config, auth, tls, server.clone(), loopback);
    let stop = CancellationToken::new();

    notify::ready(&format!("serving on {addresses}"));
    // Ready: the upstream HTTPS client (the CA store) is built in the background from now on.
    server.warm_up_after(crate::upstream::WARM_UP_DELAY);
    if let Some(interval) = notify::spawn_watchdog() {
        tracing::info!(?interval, "systemd watchdog enabled");
    }
    tokio::spawn(supervise::status_updates(state.clone(), addresses.clone()));
    tokio::spawn(supervise::signals(
        args,
        state.clone(),
        server,
        stop.clone(),
        addresses,
    ));
    match (idle_timeout, activated) {
        (Some(idle), true) => {
            tokio::spawn(supervise::idle_exit(state.clone(), idle, stop.clone()));
        }
        (Some(_), false) => {
            tracing::warn!("--idle-timeout only applies under socket activation; ignored")
        }
        _ => {}
    }
    http::serve(state, listeners, stop, grace).await;
    tracing::info!("stopped");
    Ok(())
}
