//! Logging: to the systemd journal (structured fields) when stderr is the journal or when asked,
//! otherwise to stderr. Never to stdout: in stdio mode stdout carries only MCP messages.

use std::os::fd::AsFd;

use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogSettings, LogTarget};

/// True when `JOURNAL_STREAM` names the file stderr is connected to (systemd sets it so a
/// service can tell that its stderr goes to the journal).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber. Returns a note about the destination, logged once set up.
pub fn init(settings: &LogSettings) -> String {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|e| {
        eprintln!(
            "sysom-mcp: invalid log level {:?} ({e}); using info",
            settings.level
        );
        EnvFilter::new("info")
    });
    let want_journal = match settings.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => stderr_is_journal(),
    };
    if want_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                // INFO is "informational" (6), not journald-layer's default "notice" (5), and
                // fields keep their own names so `journalctl SYSOM_TOOL=memgraph` matches.
                let mappings = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                let layer = layer
                    .with_field_prefix(None)
                    .with_priority_mappings(mappings)
                    .with_syslog_identifier("sysom-mcp".into());
                tracing_subscriber::registry()
                    .with(layer.with_filter(filter))
                    .init();
                return "logging to the systemd journal".into();
            }
            Err(e) => {
                init_stderr(filter);
                return format!("journald unavailable ({e}); logging to stderr");
            }
        }
    }
    init_stderr(filter);
    "logging to stderr".into()
}

fn init_stderr(filter: EnvFilter) {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter),
        )
        .init();
}
