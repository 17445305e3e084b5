//! Makes `systemctl reload` synchronous. `Type=notify` with `ExecReload=kill -HUP` returns as
//! soon as the signal is sent, so a script that reloads and then tests the new tokens races the
//! server (`Type=notify-reload` would wait, but needs systemd 253; Debian 12 has 252, RHEL 9
//! has 252). So the unit's `ExecReload=` runs `sysom-mcp reload`, which removes the status file,
//! signals the main process and waits until the server writes the outcome of that reload into
//! it. No library does this: it is a two-party protocol private to this unit.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::config;

/// File name of the outcome of the last reload, in the service's `$RUNTIME_DIRECTORY`.
pub(crate) const STATUS_FILE: &str = "reload-status";
/// How often `sysom-mcp reload` looks for the outcome.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Where the server writes reload outcomes: the first `$RUNTIME_DIRECTORY` entry (systemd's
/// `RuntimeDirectory=`), or nowhere when not run by such a unit.
fn status_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dirs = env("RUNTIME_DIRECTORY")?;
    let first = dirs.split(':').next().filter(|d| !d.is_empty())?;
    Some(Path::new(first).join(STATUS_FILE))
}

/// Server side: records how a SIGHUP ended (`Ok` or the reason it was rejected). Written to a
/// temporary name and renamed, so the waiting side never reads half a line.
pub(crate) fn record(outcome: &Result<(), String>) {
    let Some(path) = status_path(&config::process_env) else {
        return;
    };
    let line = match outcome {
        Ok(()) => "ok\n".to_string(),
        // One line: the reason is the logged error text, which never holds a secret.
        Err(reason) => format!("rejected: {}\n", reason.replace('\n', " ")),
    };
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot record the reload outcome");
    }
}

/// Client side (`sysom-mcp reload`): signals `pid` with SIGHUP and waits up to `timeout` for
/// the server to record the outcome in `status_file`. Ok when the reload applied.
pub(crate) fn signal_and_wait(
    pid: i32,
    status_file: &Path,
    timeout: Duration,
) -> Result<(), String> {
    use nix::{sys::signal, unistd::Pid};
    if pid <= 1 {
        return Err(format!("--pid {pid} is not a server process"));
    }
    match std::fs::remove_file(status_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", status_file.display())),
    }
    signal::kill(Pid::from_raw(pid), signal::Signal::SIGHUP)
        .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    let started = Instant::now();
    loop {
        match std::fs::read_to_string(status_file) {
            Ok(text) => {
                let line = text.trim_end();
                return if line == "ok" {
                    Ok(())
                } else {
                    Err(line.strip_prefix("rejected: ").unwrap_or(line).to_string())
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", status_file.display())),
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "the server (pid {pid}) did not confirm the reload within {timeout:?}; see \
                 `journalctl -u sysom-mcp`"
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_path_uses_the_first_runtime_directory() {
        let env = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/a:/run/b".to_string());
        assert_eq!(
            status_path(&env),
            Some(PathBuf::from("/run/a/reload-status"))
        );
        assert_eq!(status_path(&|_| None), None);
        assert_eq!(status_path(&|_| Some(String::new())), None);
    }

    #[test]
    fn waiting_without_a_server_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid ignores nothing: use a child that ignores SIGHUP instead of signalling us.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' HUP; sleep 5"])
            .spawn()
            .unwrap();
        let err = signal_and_wait(
            child.id() as i32,
            &dir.path().join(STATUS_FILE),
            Duration::from_millis(200),
        )
        .unwrap_err();
        child.kill().ok();
        child.wait().ok();
        assert!(err.contains("did not confirm the reload"), "{err}");
        assert!(signal_and_wait(1, &dir.path().join(STATUS_FILE), Duration::ZERO).is_err());
    }
}
