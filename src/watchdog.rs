//! systemd's watchdog: when the unit sets `WatchdogSec=`, systemd passes
//! `WATCHDOG_USEC` and restarts the service unless it hears `WATCHDOG=1`
//! that often. [`spawn`] pings at half the interval from a task of its own.
//!
//! The ping says the process and its runtime are alive, not that a message
//! is moving: the loop may rightly wait in IDLE for minutes, and a stuck
//! IMAP or SMTP step is bounded by its own timeout.

use std::time::Duration;

/// Starts pinging when systemd asked for it; returns the interval used.
pub fn spawn() -> Option<Duration> {
    let every = sd_notify::watchdog_enabled()? / 2;
    let every = every.max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::debug!(error = %e, "watchdog ping failed");
            }
        }
    });
    tracing::debug!(every_ms = every.as_millis() as u64, "watchdog pings on");
    Some(every)
}
