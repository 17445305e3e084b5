//! sd_notify for `Type=notify`: READY, STATUS, RELOADING, STOPPING, and the watchdog.
//! Without `NOTIFY_SOCKET` every call is a no-op, so the same binary runs anywhere.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells systemd a reload started; must be followed by [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd we are draining, and that it may take `grace` (plus a margin).
pub fn stopping(grace: Duration) {
    let usec = (grace + Duration::from_secs(5))
        .as_micros()
        .min(u32::MAX as u128) as u32;
    send(&[
        NotifyState::Stopping,
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status("draining: finishing running tool calls"),
    ]);
}

/// Starts the watchdog pinger if systemd asked for one (`WATCHDOG_USEC`). It runs as a task on
/// the async runtime, so the pings stop when the runtime stops making progress, and systemd
/// restarts a hung service.
pub fn spawn_watchdog() -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // After a stall, one ping once progress resumes — not a burst for every missed tick.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
    Some(interval)
}
