//! The host's shared state: identity, paired clients, the pairing window, live sessions, and
//! the one-line status systemd and `punktfunkctl status` show.
//!
//! # Locking
//!
//! Every piece of shared state sits behind its own `std::sync::Mutex`, private to this module.
//! Each is taken by exactly one method of [`Host`], for a few statements, and released before
//! that method returns: no method calls another `Host` method (or anything else that could
//! lock) while it holds a guard, and no guard can be held across an `.await` (std guards are
//! `!Send`, so a spawned task that tried would not compile). Callers never see a guard. That is
//! the whole design against the deadlock class of issue #9 (a tokio guard kept alive through a
//! `match` while its arm re-entered the same lock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use punktfunk_common::health::Health;
use punktfunk_proto::common::Mode;
use punktfunk_proto::transport::ClientSession;
use punktfunk_tls::{Fingerprint, Identity};

use crate::config::{PairingMode, TransportConfig};
use crate::pairing::{
    ArmedPin, PairedClient, PairedStore, PairingWindow, StoreError, WindowClosed,
};
use crate::session::Protocol;

/// A live client session, as far as the rest of the host needs to know.
pub struct SessionEntry {
    pub protocol: Protocol,
    pub client_name: String,
    pub fingerprint: Fingerprint,
    pub mode: Mode,
    pub bitrate_kbps: u32,
    pub frames_sent: Arc<AtomicU64>,
    pub started: Instant,
    /// Ends the session from outside (unpair): its protocol shell closes the connection.
    pub end: Arc<dyn Fn(&str) + Send + Sync>,
    /// The video sender's pacing mode now (None: no video sender, e.g. a speed test).
    pub pacing: PacingProbe,
}

/// Reads a session's video pacing mode (kernel pacing may fall back to user space at run time).
pub type PacingProbe = Arc<dyn Fn() -> Option<punktfunk_dataplane::PacingMode> + Send + Sync>;

pub struct Host {
    pub config: TransportConfig,
    pub host_name: String,
    pub identity: Identity,
    pub health: Arc<Health>,
    /// `$XDG_RUNTIME_DIR`, where the other daemons' sockets live (None: not set, and then no
    /// source but the synthetic one works).
    pub runtime_dir: Option<std::path::PathBuf>,
    paired: Mutex<PairedStore>,
    window: Mutex<PairingWindow>,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    listen: OnceLock<SocketAddr>,
    pairing_failures: AtomicU64,
    next_session: AtomicU64,
    /// A protocol shell's addition to the status line (GameStream: a pairing waits for its PIN).
    note: Mutex<Option<String>>,
}

/// Takes a lock; a poisoned one (a panic elsewhere while holding it) still holds valid data
/// for everything kept here, so it is recovered rather than propagated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Host {
    pub fn new(
        config: TransportConfig,
        host_name: String,
        identity: Identity,
        health: Arc<Health>,
        paired: PairedStore,
        runtime_dir: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            config,
            host_name,
            identity,
            health,
            runtime_dir,
            paired: Mutex::new(paired),
            window: Mutex::new(PairingWindow::default()),
            sessions: Mutex::new(HashMap::new()),
            listen: OnceLock::new(),
            pairing_failures: AtomicU64::new(0),
            next_session: AtomicU64::new(rand::random::<u32>() as u64),
            note: Mutex::new(None),
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Records where punktfunk/1 listens (once, at start).
    pub fn set_listen(&self, addr: SocketAddr) {
        let _ = self.listen.set(addr);
    }

    /// Whether `fp` may stream (paired, or the host is explicitly open).
    pub fn may_stream(&self, fp: &Fingerprint) -> bool {
        self.config.pairing == PairingMode::Open || lock(&self.paired).is_paired(fp)
    }

    /// Whether `fp` is a paired client (whatever the pairing mode).
    pub fn is_paired(&self, fp: &Fingerprint) -> bool {
        lock(&self.paired).is_paired(fp)
    }

    /// Sets (or clears) a shell's addition to the status line; call `refresh_status` after.
    pub fn set_note(&self, note: Option<String>) {
        *lock(&self.note) = note;
    }

    /// Arms a fresh PIN (replacing any armed one).
    pub fn arm_pairing(&self, pin: String, now: Instant, ttl: Duration) -> ArmedPin {
        lock(&self.window).arm(pin, now, ttl)
    }

    /// Takes the armed PIN for one attempt (the window closes, right or wrong).
    pub fn take_pin(&self, now: Instant) -> Result<String, WindowClosed> {
        lock(&self.window).take(now)
    }

    /// Stores a newly paired client; memory changes only once the file is written.
    pub fn add_paired(
        &self,
        fp: Fingerprint,
        name: &str,
        protocol: &str,
    ) -> Result<PairedClient, StoreError> {
        lock(&self.paired).add(fp, name, protocol)
    }

    /// Removes a paired client (stored first) and closes its live sessions; returns the client
    /// and how many sessions were ended.
    pub fn unpair(&self, who: &str) -> Result<(Fingerprint, PairedClient, usize), StoreError> {
        let (fp, client) = lock(&self.paired).remove(who)?;
        let ended = self.end_sessions_of(&fp, "unpaired on the host");
        Ok((fp, client, ended))
    }

    pub fn paired_clients(&self) -> Vec<PairedClient> {
        lock(&self.paired).list()
    }

    /// Counts and logs a failed pairing attempt (shown in the status line).
    pub fn pairing_failed(&self, remote: SocketAddr, client: &str, reason: &str) {
        let n = self.pairing_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(%remote, client, reason, failed_attempts = n, "pairing attempt failed");
        // (No lock is held here: refreshing takes each one on its own.)
        self.refresh_status();
    }

    pub fn pairing_failures(&self) -> u64 {
        self.pairing_failures.load(Ordering::Relaxed)
    }

    pub fn insert_session(&self, id: u64, entry: SessionEntry) {
        lock(&self.sessions).insert(id, entry);
    }

    pub fn remove_session(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }

    /// Closes every session of `fp`; returns how many.
    pub fn end_sessions_of(&self, fp: &Fingerprint, reason: &str) -> usize {
        // Collected first: the callbacks run with no lock held.
        let ends: Vec<_> = lock(&self.sessions)
            .values()
            .filter(|s| s.fingerprint == *fp)
            .map(|s| s.end.clone())
            .collect();
        for end in &ends {
            end(reason);
        }
        ends.len()
    }

    pub fn session_infos(&self) -> Vec<ClientSession> {
        lock(&self.sessions)
            .values()
            .map(|s| ClientSession {
                client_name: s.client_name.clone(),
                fingerprint: s.fingerprint.to_hex(),
                protocol: s.protocol.as_str().into(),
                mode: Some(s.mode),
                bitrate_kbps: s.bitrate_kbps,
                frames_sent: s.frames_sent.load(Ordering::Relaxed),
                uptime_s: s.started.elapsed().as_secs(),
            })
            .collect()
    }

    /// Recomputes the status line from the current state (each lock taken on its own).
    pub fn refresh_status(&self) {
        let streaming: Vec<String> = lock(&self.sessions)
            .values()
            .map(|s| {
                let mut what = format!("{} {}x{}", s.client_name, s.mode.width, s.mode.height);
                if let Some(p) = (s.pacing)() {
                    what.push_str(&format!(" (pacing {p})"));
                }
                what
            })
            .collect();
        let armed = lock(&self.window).remaining(Instant::now());
        let mut line = status_line(
            &streaming,
            self.listen.get().copied(),
            self.config.pairing,
            armed,
            self.pairing_failures(),
        );
        if let Some(note) = lock(&self.note).as_deref() {
            line.push_str("; ");
            line.push_str(note);
        }
        self.health.set_status(line);
    }
}

/// The one human line: what the host does, how pairing stands, failed attempts so far.
fn status_line(
    streaming: &[String],
    listen: Option<SocketAddr>,
    pairing: PairingMode,
    armed: Option<Duration>,
    failures: u64,
) -> String {
    let mut line = match (streaming.len(), listen) {
        (0, Some(addr)) => format!("idle: listening on {addr}"),
        (0, None) => "idle".to_string(),
        (1, _) => format!("streaming to {}", streaming[0]),
        (n, _) => format!("streaming to {n} clients: {}", streaming.join(", ")),
    };
    line.push_str(match pairing {
        PairingMode::Required => " (pairing required)",
        PairingMode::Open => " (OPEN: unpaired clients may stream)",
    });
    if let Some(left) = armed {
        line.push_str(&format!("; pairing armed, {} s left", left.as_secs()));
    }
    match failures {
        0 => {}
        1 => line.push_str("; 1 failed pairing attempt"),
        n => line.push_str(&format!("; {n} failed pairing attempts")),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_counts_failed_pairing_attempts() {
        let addr: SocketAddr = "[::]:9777".parse().unwrap();
        let quiet = status_line(&[], Some(addr), PairingMode::Required, None, 0);
        assert_eq!(quiet, "idle: listening on [::]:9777 (pairing required)");
        let line = status_line(
            &["deck 1280x720".into()],
            Some(addr),
            PairingMode::Required,
            Some(Duration::from_secs(42)),
            3,
        );
        assert_eq!(
            line,
            "streaming to deck 1280x720 (pairing required); pairing armed, 42 s left; 3 failed pairing attempts"
        );
    }
}
