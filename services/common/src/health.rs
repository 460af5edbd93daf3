//! The state behind every daemon's `Health` call and its systemd STATUS line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use punktfunk_proto::common::HealthReply;
use tokio::sync::watch;

/// Serving flag, uptime and the one-line status, shared by the gRPC service and the main loop
/// (which forwards every status change to systemd).
#[derive(Debug)]
pub struct Health {
    name: &'static str,
    started: Instant,
    serving: AtomicBool,
    status: watch::Sender<String>,
}

impl Health {
    /// Health of daemon `name`: not serving yet, status `starting`, uptime from now.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            serving: AtomicBool::new(false),
            status: watch::Sender::new("starting".to_string()),
        }
    }

    /// The daemon's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sets the human status line (shown by `systemctl --user status` and `punktfunkctl status`).
    pub fn set_status(&self, line: impl Into<String>) {
        let line = line.into();
        self.status.send_if_modified(|cur| {
            if *cur == line {
                return false;
            }
            *cur = line;
            true
        });
    }

    /// The current status line.
    pub fn status(&self) -> String {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status line change.
    pub fn subscribe(&self) -> watch::Receiver<String> {
        self.status.subscribe()
    }

    /// Sets whether the daemon serves its API.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Whether the daemon serves its API.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// The gRPC `Health` answer: serving flag, version, uptime and status line.
    pub fn reply(&self) -> HealthReply {
        HealthReply {
            serving: self.serving(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            status: self.status(),
            name: self.name.to_string(),
            pid: std::process::id(),
        }
    }
}
