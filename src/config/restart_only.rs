//! What SIGHUP can change and what needs a restart. Restart-only settings are built into the
//! listener, the rmcp services or the logger at start; a reload keeps their start-up values
//! everywhere (so both HTTP transports agree), and names each one it could not apply.

use super::Config;

/// Copies every restart-only setting of `running` into `new` and returns the keys whose
/// value differed, for the journal ("needs a restart").
pub fn carry_over(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    // One line per setting: key, then the field (on both configurations).
    macro_rules! keep {
        ($key:literal, $($field:tt).+) => {
            if running.$($field).+ != new.$($field).+ {
                kept.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    // Bound or inherited once: the listening socket and its path.
    keep!("server.host", server.host);
    keep!("server.port", server.port);
    keep!("server.path", server.path);
    // Built into the rmcp services and session managers at start.
    keep!("server.stateless", server.stateless);
    keep!("server.sse_keep_alive_secs", server.sse_keep_alive);
    keep!("server.max_body_bytes", server.max_body_bytes);
    keep!("SYSOM_MCP_ROUTE_ID", server.route_id);
    keep!(
        "limits.session_idle_timeout_secs",
        limits.session_idle_timeout
    );
    // Read once by the supervisor tasks.
    keep!("server.idle_timeout_secs", server.idle_timeout);
    keep!("server.shutdown_grace_secs", server.shutdown_grace);
    // The subscriber is installed once per process.
    keep!("logging.target", logging.target);
    keep!("logging.level", logging.level);
    // The prepared tools/list answers are built at start.
    keep!("local.tools", local.tools);
    kept
}

#[cfg(test)]
mod tests {
    use super::super::{ServerArgs, file, resolve};
    use super::*;

    fn config(toml: &str) -> Config {
        resolve(
            &ServerArgs::default(),
            file::parse(toml).unwrap(),
            None,
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn restart_only_keys_keep_their_start_values_and_are_named() {
        let running = config("[server]\nport = 7140\n");
        let mut new = config(
            "[server]\nport = 7141\nsse_keep_alive_secs = 3\n[logging]\nlevel = \"debug\"\n\
             [limits]\nmax_sessions = 5\n[upstream]\nmax_retries = 4\n",
        );
        let kept = carry_over(&running, &mut new);
        assert_eq!(
            kept,
            ["server.port", "server.sse_keep_alive_secs", "logging.level"]
        );
        assert_eq!(new.server.port, 7140);
        assert_eq!(new.server.sse_keep_alive, running.server.sse_keep_alive);
        assert_eq!(new.logging.level, running.logging.level);
        // Reloadable settings take their new values.
        assert_eq!(new.limits.max_sessions, 5);
        assert_eq!(new.upstream.max_retries, 4);
        assert!(carry_over(&running, &mut config("")).is_empty());
    }
}
