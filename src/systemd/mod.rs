//! systemd integration: socket activation (`socket_activation`), readiness, status and the
//! watchdog (`notify`), signals, status line and idle exit (`supervise`), SIGHUP (`reload`), and the
//! handshake that makes `systemctl reload` wait for it (`reload_ack`).

pub(crate) mod notify;
pub(crate) mod reload;
pub(crate) mod reload_ack;
pub(crate) mod socket_activation;
pub(crate) mod supervise;
