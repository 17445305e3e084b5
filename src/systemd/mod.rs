//! systemd integration: socket activation (`socket_activation`), readiness, status and the
//! watchdog (`notify`), signals, status line and idle exit (`supervise`), SIGHUP (`reload`).

pub(crate) mod notify;
pub(crate) mod reload;
pub(crate) mod socket_activation;
pub(crate) mod supervise;
