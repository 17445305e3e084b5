//! What runs beside the HTTP server under systemd: stop and reload signals, the status line,
//! and idle exit under socket activation.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{notify, reload, reload_ack};
use crate::{config::ServerArgs, http::State, metrics, tools::SysomServer};

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// SIGTERM/SIGINT cancel `stop`; SIGHUP reloads the configuration.
pub(crate) async fn signals(
    args: ServerArgs,
    state: Arc<State>,
    server: SysomServer,
    stop: CancellationToken,
    addresses: String,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    let term = stop_requested();
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
                let outcome = reload::reload(&args, &state, &server).await;
                reload_ack::record(&outcome);
                notify::ready(&format!("serving on {addresses}"));
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Keeps systemd's status line current.
pub(crate) async fn status_updates(state: Arc<State>, addresses: String) {
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
pub(crate) async fn idle_exit(state: Arc<State>, idle: Duration, stop: CancellationToken) {
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
