//! Prometheus metrics (`/metrics`): HTTP requests by route and status, tool calls by tool and
//! result code with latency histograms, open sessions, running tool calls, upstream errors.
//! Process-wide statics, as small daemons do: every part of the server can record without
//! threading a handle through.

use std::{
    sync::{
        LazyLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOnly {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: String,
}

struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_seconds: Family<ToolOnly, Histogram>,
    sessions: Family<TransportLabels, Gauge>,
    running: Gauge,
    upstream_errors: Family<ToolLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sysom_mcp");
    let http_requests = Family::<HttpLabels, Counter>::default();
    registry.register(
        "http_requests",
        "HTTP requests by route and status",
        http_requests.clone(),
    );
    let tool_calls = Family::<ToolLabels, Counter>::default();
    registry.register(
        "tool_calls",
        "Tool calls by tool and result code",
        tool_calls.clone(),
    );
    let tool_seconds = Family::<ToolOnly, Histogram>::new_with_constructor(|| {
        Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 150.0])
    });
    registry.register(
        "tool_call_duration_seconds",
        "Tool call latency",
        tool_seconds.clone(),
    );
    let sessions = Family::<TransportLabels, Gauge>::default();
    registry.register(
        "open_sessions",
        "Open MCP sessions by transport",
        sessions.clone(),
    );
    let running = Gauge::default();
    registry.register(
        "tool_calls_running",
        "Tool calls in progress",
        running.clone(),
    );
    let upstream_errors = Family::<ToolLabels, Counter>::default();
    registry.register(
        "upstream_errors",
        "Failed tool results by tool and SysOM error code",
        upstream_errors.clone(),
    );
    Metrics {
        registry,
        http_requests,
        tool_calls,
        tool_seconds,
        sessions,
        running,
        upstream_errors,
    }
});

/// Counts one HTTP response.
pub fn record_http(route: &str, status: u16) {
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.to_string(),
            status,
        })
        .inc();
}

/// Counts one finished tool call with its result code and latency.
pub fn record_tool_call(tool: &str, code: &str, took: Duration) {
    let labels = ToolLabels {
        tool: tool.to_string(),
        code: code.to_string(),
    };
    METRICS.tool_calls.get_or_create(&labels).inc();
    if code != "Success" {
        METRICS.upstream_errors.get_or_create(&labels).inc();
    }
    METRICS
        .tool_seconds
        .get_or_create(&ToolOnly {
            tool: tool.to_string(),
        })
        .observe(took.as_secs_f64());
}

static RUNNING: AtomicI64 = AtomicI64::new(0);

/// Marks a tool call as running for as long as it lives.
pub struct ToolRunning;

impl ToolRunning {
    pub fn start() -> Self {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        METRICS.running.inc();
        Self
    }
}

impl Drop for ToolRunning {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
        METRICS.running.dec();
    }
}

/// Tool calls currently running (for the systemd status line and draining).
pub fn running_tool_calls() -> i64 {
    RUNNING.load(Ordering::Relaxed)
}

/// Adjusts the open-session gauge of one transport.
pub fn sessions_changed(transport: &str, delta: i64) {
    METRICS
        .sessions
        .get_or_create(&TransportLabels {
            transport: transport.to_string(),
        })
        .inc_by(delta);
}

/// Sets the open-session gauge of a transport whose sessions are counted elsewhere.
pub fn set_sessions(transport: &str, open: usize) {
    METRICS
        .sessions
        .get_or_create(&TransportLabels {
            transport: transport.to_string(),
        })
        .set(open as i64);
}

/// The text exposition of all metrics.
pub fn render() -> String {
    let mut out = String::new();
    encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_show_up_in_the_exposition() {
        record_http("/healthz", 200);
        record_tool_call("memgraph", "TaskTimeout", Duration::from_millis(30));
        let text = render();
        assert!(
            text.contains("sysom_mcp_http_requests_total{route=\"/healthz\",status=\"200\"}"),
            "{text}"
        );
        assert!(
            text.contains("sysom_mcp_tool_calls_total{tool=\"memgraph\",code=\"TaskTimeout\"}")
        );
        assert!(
            text.contains(
                "sysom_mcp_upstream_errors_total{tool=\"memgraph\",code=\"TaskTimeout\"}"
            )
        );
        assert!(text.contains("sysom_mcp_tool_call_duration_seconds_bucket"));
    }
}
