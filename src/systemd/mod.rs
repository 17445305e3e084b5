//! systemd integration: socket activation (`activation`), readiness, status, reload and the
//! watchdog (`notify`).

pub mod activation;
pub mod notify;
