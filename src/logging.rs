//! Logging: to the systemd journal (structured fields) when stderr is the journal or when asked,
//! otherwise to stderr. Never to stdout: in stdio mode stdout carries only MCP messages.

use std::os::fd::AsFd;

use tracing::{Event, Level, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{FilterExt as _, filter_fn},
    layer::{Context, Filter, SubscriberExt},
    util::SubscriberInitExt,
};

use crate::{
    audit,
    config::{LogSettings, LogTarget},
};

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
                // Audit records are kept whatever the log level.
                let filter = filter_fn(|m| m.target() == audit::TARGET).or(filter);
                tracing_subscriber::registry()
                    .with(layer.with_filter(filter.and(QuietDrain)))
                    .init();
                audit::set_sink(audit::Sink::Journald);
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
    audit::set_sink(audit::Sink::Stderr);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter.and(QuietDrain)),
        )
        .init();
}

/// rmcp logs `ERROR failed to send pending response during drain` when a call finishes after
/// its client went away, which is what a client cancelling a 2026-07-28 request does (it closes
/// the stream). Nobody is waiting for that response, so it is not an error in our logs: this
/// filter drops that one event. (tracing has no way to lower another crate's event level.)
#[derive(Debug, Clone, Copy)]
struct QuietDrain;

const DRAIN_MESSAGE: &str = "failed to send pending response during drain";

impl<S> Filter<S> for QuietDrain {
    fn enabled(&self, _meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if meta.target() != "rmcp::service" || *meta.level() != Level::ERROR {
            return true;
        }
        let mut message = MessageIs(DRAIN_MESSAGE, false);
        event.record(&mut message);
        !message.1
    }
}

/// Records whether an event's `message` equals the expected text.
struct MessageIs(&'static str, bool);

impl tracing::field::Visit for MessageIs {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.1 = format!("{value:?}") == self.0;
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.1 = value == self.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer collecting what the fmt layer prints.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_drain_error_of_a_cancelled_call_is_not_logged_other_errors_are() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_filter(EnvFilter::new("info").and(QuietDrain)),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rmcp::service", error = %"Transport closed", "{DRAIN_MESSAGE}");
            tracing::error!(target: "rmcp::service", "response send task failed during drain");
            tracing::error!(target: "sysom_mcp", "{DRAIN_MESSAGE}");
            tracing::info!(target: "rmcp::service", "serve finished");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text.contains("rmcp::service: failed to send pending"),
            "{text}"
        );
        assert!(
            text.contains("response send task failed during drain"),
            "{text}"
        );
        assert!(text.contains("sysom_mcp: failed to send pending"), "{text}");
        assert!(text.contains("serve finished"), "{text}");
    }
}
