//! sd-notify: READY, STATUS, WATCHDOG and STOPPING to the service manager.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so daemons run by hand too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to systemd; failures are logged once, never fatal (systemd may be gone at shutdown).
#[derive(Debug, Default)]
pub struct Notifier {
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; it logs the first failed notification only.
    pub fn new() -> Self {
        Self::default()
    }

    /// `READY=1` together with the first status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=<one human line>`, shown by `systemctl --user status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1` with a last status line.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

/// How often to ping: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises; `None` when
/// systemd runs no watchdog for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
