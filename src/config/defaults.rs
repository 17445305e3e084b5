//! Every built-in default and every bound, once. [`super::resolve`] applies them and
//! [`help_defaults`] shows them in `--help`, so the help text cannot drift from what runs.

use std::ops::RangeInclusive;

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 7140;
pub const PATH: &str = "/mcp/unified";
/// 0 = never exit for idleness.
pub const IDLE_TIMEOUT_SECS: u64 = 0;
pub const SHUTDOWN_GRACE_SECS: u64 = 10;
pub const SSE_KEEP_ALIVE_SECS: u64 = 15;
pub const MAX_BODY_BYTES: usize = 4 << 20;
pub const MAX_SESSIONS: usize = 1000;
pub const SESSION_IDLE_TIMEOUT_SECS: u64 = 1800;
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// hyper's own default for HTTP/1 headers.
pub const HEADER_READ_TIMEOUT_SECS: u64 = 30;
pub const CONNECTION_IDLE_TIMEOUT_SECS: u64 = 120;
/// Per principal; 0 = unlimited.
pub const CALLS_PER_MINUTE: usize = 0;
/// Per principal; 0 = unlimited.
pub const CONCURRENT_DIAGNOSES: usize = 0;
/// The SysOM OpenAPI endpoint the original server always used.
pub const ENDPOINT: &str = "https://sysom.cn-hangzhou.aliyuncs.com";
pub const CONNECT_TIMEOUT_MS: u64 = 2000;
pub const READ_TIMEOUT_MS: u64 = 10_000;
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
pub const MAX_RETRIES: u32 = 2;
pub const MAX_REQUESTS_PER_SECOND: u32 = 50;
/// The original server's 150 s wait for a diagnosis.
pub const DIAGNOSIS_TIMEOUT_SECS: u64 = 150;
pub const POLL_INTERVAL_MS: u64 = 1000;
pub const POLL_MAX_INTERVAL_MS: u64 = 10_000;
pub const DETACH_GRACE_SECS: u64 = 120;
/// The key of the `"mcp"` marker in InvokeDiagnosis `params` (SysOM strips the older `source`).
pub const SOURCE_MARKER: &str = "__sysom_diagnosis_source";
pub const LOG_TARGET: &str = "auto";
/// rmcp logs every session start and end at info; that is noise in a server's journal.
pub const LOG_LEVEL: &str = "info,rmcp=warn";
pub const LOCAL_ROOT: &str = "/";
pub const TOOLS: &str = "auto";

// Bounds. Beyond them a value is a typo, and a huge one would overflow `Instant + Duration`
// at run time (a panic) instead of failing at start with exit status 2.
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
pub const IDLE_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 0..=30 * DAY;
/// systemd's TimeoutStopSec= must stay above it; an hour is already far more than a drain needs.
pub const SHUTDOWN_GRACE_SECS_RANGE: RangeInclusive<u64> = 0..=HOUR;
pub const SSE_KEEP_ALIVE_SECS_RANGE: RangeInclusive<u64> = 1..=HOUR;
pub const SESSION_IDLE_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=30 * DAY;
pub const HEADER_READ_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=HOUR;
pub const CONNECTION_IDLE_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=DAY;
/// Upstream timeouts, in milliseconds: at least 1 ms, at most an hour.
pub const UPSTREAM_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 1..=HOUR * 1000;
pub const MAX_RETRIES_RANGE: RangeInclusive<u32> = 0..=10;
/// A diagnosis the backend has not finished in a day is not going to finish.
pub const DIAGNOSIS_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=DAY;
pub const POLL_INTERVAL_MS_RANGE: RangeInclusive<u64> = 10..=HOUR * 1000;
pub const DETACH_GRACE_SECS_RANGE: RangeInclusive<u64> = 0..=DAY;
/// Request and upstream response bodies: at least 1 KiB, at most 1 GiB (the unit's
/// MemoryMax= is 256M; a larger cap could only be reached by running out of memory).
pub const BODY_BYTES_RANGE: RangeInclusive<usize> = 1024..=1 << 30;

/// `(argument id, default as shown)` for every flag whose default is applied by `resolve`,
/// appended to the flag's help as `[default: …]`.
pub fn help_defaults() -> Vec<(&'static str, String)> {
    vec![
        ("host", HOST.into()),
        ("port", PORT.to_string()),
        ("path", PATH.into()),
        ("idle_timeout", format!("{IDLE_TIMEOUT_SECS} = never")),
        ("shutdown_grace", SHUTDOWN_GRACE_SECS.to_string()),
        ("sse_keep_alive", SSE_KEEP_ALIVE_SECS.to_string()),
        ("max_body_bytes", MAX_BODY_BYTES.to_string()),
        ("max_sessions", MAX_SESSIONS.to_string()),
        (
            "session_idle_timeout",
            SESSION_IDLE_TIMEOUT_SECS.to_string(),
        ),
        ("max_connections_per_ip", MAX_CONNECTIONS_PER_IP.to_string()),
        ("header_read_timeout", HEADER_READ_TIMEOUT_SECS.to_string()),
        (
            "connection_idle_timeout",
            CONNECTION_IDLE_TIMEOUT_SECS.to_string(),
        ),
        (
            "max_calls_per_minute",
            format!("{CALLS_PER_MINUTE} = unlimited"),
        ),
        (
            "max_concurrent_diagnoses",
            format!("{CONCURRENT_DIAGNOSES} = unlimited"),
        ),
        ("endpoint", ENDPOINT.into()),
        ("connect_timeout_ms", CONNECT_TIMEOUT_MS.to_string()),
        ("read_timeout_ms", READ_TIMEOUT_MS.to_string()),
        ("request_timeout_ms", REQUEST_TIMEOUT_MS.to_string()),
        ("max_response_bytes", MAX_RESPONSE_BYTES.to_string()),
        ("max_retries", MAX_RETRIES.to_string()),
        (
            "max_requests_per_second",
            MAX_REQUESTS_PER_SECOND.to_string(),
        ),
        ("diagnosis_timeout", DIAGNOSIS_TIMEOUT_SECS.to_string()),
        ("poll_interval_ms", POLL_INTERVAL_MS.to_string()),
        ("diagnosis_source_marker", SOURCE_MARKER.into()),
        ("poll_max_interval_ms", POLL_MAX_INTERVAL_MS.to_string()),
        ("detach_grace_secs", DETACH_GRACE_SECS.to_string()),
        ("log_target", LOG_TARGET.into()),
        ("log_level", LOG_LEVEL.into()),
        ("local_root", LOCAL_ROOT.into()),
        ("tools", TOOLS.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{ServerArgs, file, resolve};

    #[test]
    fn every_flag_shows_its_default_exactly_once() {
        let mut cmd = super::super::cli::command();
        let help = cmd.render_long_help().to_string();
        for (id, default) in super::help_defaults() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("listed flag exists");
            let text = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
            assert_eq!(text.matches("[default:").count(), 1, "{id}: {text}");
            assert!(
                text.ends_with(&format!("[default: {default}]")),
                "{id}: {text}"
            );
        }
        // Wrapped to the terminal width, but there.
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains("[default: info,rmcp=warn]"), "{help}");
    }

    #[test]
    fn out_of_range_durations_are_configuration_errors_naming_the_key() {
        let no_env = |_: &str| None;
        for (toml, key) in [
            (
                "[diagnosis]\ntimeout_secs = 18446744073709551615\n",
                "diagnosis.timeout_secs",
            ),
            (
                "[server]\nshutdown_grace_secs = 100000000\n",
                "server.shutdown_grace_secs",
            ),
            (
                "[server]\nsse_keep_alive_secs = 0\n",
                "server.sse_keep_alive_secs",
            ),
            (
                "[upstream]\nread_timeout_ms = 0\n",
                "upstream.read_timeout_ms",
            ),
            (
                "[diagnosis]\ndetach_grace_secs = 99999999999\n",
                "diagnosis.detach_grace_secs",
            ),
            (
                "[limits]\nsession_idle_timeout_secs = 18446744073709551615\n",
                "limits.session_idle_timeout_secs",
            ),
        ] {
            let err = resolve(
                &ServerArgs::default(),
                file::parse(toml).unwrap(),
                None,
                &no_env,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(key) && err.contains("out of range"),
                "{toml}: {err}"
            );
        }
        let args = ServerArgs {
            diagnosis_timeout: Some(u64::MAX),
            ..Default::default()
        };
        let err = resolve(&args, file::FileConfig::default(), None, &no_env).unwrap_err();
        assert!(err.to_string().contains("diagnosis.timeout_secs"), "{err}");
    }
}
