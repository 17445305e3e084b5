//! SIGHUP: re-read the configuration, tokens, TLS certificates and credentials.

use std::{sync::Arc, time::Duration};

use crate::{
    auth::authenticate::Authenticator,
    config::{self, Config, ServerArgs},
    http::{State, tls},
    tools::{Services, SysomServer, activation::Cache},
};

/// How long a reload may take before it is reported as stuck and abandoned.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// Reload threads may pile up behind a hung mount; past this many, SIGHUP is refused.
const MAX_RELOADS_RUNNING: usize = 4;
static RELOADS_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a reload read and built, ready to be swapped in.
struct Reloaded {
    config: Config,
    /// Restart-only keys whose new value was not applied.
    kept: Vec<&'static str>,
    auth: Authenticator,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: Services,
}

/// Re-reads the configuration, tokens, TLS certificates and credentials. All or nothing: if
/// any part is invalid, the old configuration stays and the error is logged.
///
/// The reading happens on a thread of its own, not on the runtime: a path that blocks (a FIFO,
/// a hung NFS or FUSE mount) must not freeze the server. A reload that has not finished after
/// [`RELOAD_DEADLINE`] is reported and abandoned; its thread is left to finish or hang alone.
/// Returns why a reload was rejected, for `sysom-mcp reload` (see `reload_ack`).
pub(crate) async fn reload(
    args: &ServerArgs,
    state: &State,
    server: &SysomServer,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let running = RELOADS_RUNNING.load(Ordering::SeqCst);
    if running >= MAX_RELOADS_RUNNING {
        let reason = "reload refused: earlier reloads are still blocked reading their files; \
                      keeping the previous configuration";
        tracing::error!(running, "{reason}");
        return Err(reason.to_string());
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let args = args.clone();
    let had_tokens = !state.auth.load().tokens.is_empty();
    let previous = state.auth.load_full();
    let running_config = state.config.load_full();
    let cache = server.activation_cache();
    RELOADS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("sysom-reload".into())
        .spawn(move || {
            let result = read_reload(&args, had_tokens, &previous, &running_config, cache);
            RELOADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        RELOADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(error = %e, "reload rejected: cannot start its thread");
        return Err(format!("cannot start the reload thread: {e}"));
    }
    let result = match tokio::time::timeout(RELOAD_DEADLINE, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the reload thread panicked".to_string()),
        Err(_) => {
            let reason = "reload abandoned: reading the configuration, token or TLS files did \
                          not finish in time (a FIFO or a hung mount?); keeping the previous \
                          configuration";
            tracing::error!(deadline = ?RELOAD_DEADLINE, "{reason}");
            return Err(reason.to_string());
        }
    };
    match result {
        Ok(new) => {
            for key in &new.kept {
                tracing::warn!(
                    key,
                    "{key} changed but needs a restart (systemctl restart sysom-mcp; the listen \
                     address is the socket unit's); keeping its start-up value"
                );
            }
            let task_keys = new.services.task_keys.key_ids();
            server.replace_services(new.services);
            server.set_limits(&new.config.limits);
            tracing::info!(
                tokens = new.auth.tokens.len(),
                oauth = new.auth.oauth.is_some(),
                ?task_keys,
                tls = new.tls.is_some(),
                "configuration reloaded"
            );
            state.auth.store(Arc::new(new.auth));
            state.tls.store(Arc::new(new.tls));
            state.config.store(Arc::new(new.config));
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; keeping the previous configuration");
            Err(e)
        }
    }
}

/// The blocking half of [`reload`]: every file read and every object built from them.
fn read_reload(
    args: &ServerArgs,
    had_tokens: bool,
    previous: &Authenticator,
    running: &Config,
    cache: Arc<Cache>,
) -> Result<Reloaded, String> {
    let mut config = config::load(args, &config::process_env).map_err(|e| e.to_string())?;
    let kept = config::restart_only::carry_over(running, &mut config);
    let auth = Authenticator::from_config(&config, Some(previous))?;
    // Emptying the token list must not silently switch authentication off (on loopback,
    // behind a local reverse proxy, that would open the server).
    if auth.tokens.is_empty() && had_tokens {
        return Err(
            "the new token list is empty; keeping the current tokens (to run without \
                    tokens, restart the service)"
                .to_string(),
        );
    }
    let tls = tls::from_config(&config)?;
    let services = Services::from_config(&config, Some(cache))?;
    Ok(Reloaded {
        config,
        kept,
        auth,
        tls,
        services,
    })
}
