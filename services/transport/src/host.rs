//! The host's shared state: identity, paired clients, the pairing window, live sessions, and
//! the one-line status systemd and `punktfunkctl status` show.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use punktfunk_common::health::Health;
use punktfunk_proto::common::Mode;
use punktfunk_proto::transport::ClientSession;
use punktfunk_tls::{Fingerprint, Identity};
use tokio::sync::Mutex;

use crate::config::{PairingMode, TransportConfig};
use crate::pairing::{PairedStore, PairingWindow};

/// QUIC application close codes (also shown to the client).
pub mod close {
    pub const PROTOCOL: u32 = 1;
    pub const PAIRING_REQUIRED: u32 = 2;
    pub const UNPAIRED: u32 = 3;
    pub const PAIRING_FAILED: u32 = 4;
}

/// A live client session, as far as the rest of the host needs to know.
pub struct SessionEntry {
    pub client_name: String,
    pub fingerprint: Fingerprint,
    pub mode: Mode,
    pub bitrate_kbps: u32,
    pub frames_sent: Arc<AtomicU64>,
    pub started: Instant,
    pub conn: quinn::Connection,
}

pub struct Host {
    pub config: TransportConfig,
    pub host_name: String,
    pub identity: Identity,
    pub health: Arc<Health>,
    pub paired: Mutex<PairedStore>,
    pub window: Mutex<PairingWindow>,
    pub sessions: Mutex<HashMap<u64, SessionEntry>>,
    pub listen: Mutex<Option<SocketAddr>>,
    /// `$XDG_RUNTIME_DIR`, where the other daemons' sockets live (None: not set, and then no
    /// source but the synthetic one works).
    pub runtime_dir: Option<std::path::PathBuf>,
    next_session: AtomicU64,
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
            paired: Mutex::new(paired),
            window: Mutex::new(PairingWindow::default()),
            sessions: Mutex::new(HashMap::new()),
            listen: Mutex::new(None),
            runtime_dir,
            next_session: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `fp` may stream (paired, or the host is explicitly open).
    pub async fn may_stream(&self, fp: &Fingerprint) -> bool {
        self.config.pairing == PairingMode::Open || self.paired.lock().await.is_paired(fp)
    }

    /// Closes every session of `fp`; returns how many.
    pub async fn end_sessions_of(&self, fp: &Fingerprint, reason: &str) -> usize {
        let sessions = self.sessions.lock().await;
        let mut n = 0;
        for s in sessions.values().filter(|s| s.fingerprint == *fp) {
            s.conn.close(close::UNPAIRED.into(), reason.as_bytes());
            n += 1;
        }
        n
    }

    pub async fn session_infos(&self) -> Vec<ClientSession> {
        self.sessions
            .lock()
            .await
            .values()
            .map(|s| ClientSession {
                client_name: s.client_name.clone(),
                fingerprint: s.fingerprint.to_hex(),
                protocol: "punktfunk/1".into(),
                mode: Some(s.mode),
                bitrate_kbps: s.bitrate_kbps,
                frames_sent: s.frames_sent.load(Ordering::Relaxed),
                uptime_s: s.started.elapsed().as_secs(),
            })
            .collect()
    }

    /// Recomputes the status line from the current state.
    pub async fn refresh_status(&self) {
        let listen = *self.listen.lock().await;
        let streaming: Vec<String> = {
            let sessions = self.sessions.lock().await;
            sessions
                .values()
                .map(|s| format!("{} {}x{}", s.client_name, s.mode.width, s.mode.height))
                .collect()
        };
        let armed = self.window.lock().await.remaining(Instant::now());
        let mut line = match (streaming.len(), listen) {
            (0, Some(addr)) => format!("idle: listening on {addr}"),
            (0, None) => "idle".to_string(),
            (1, _) => format!("streaming to {}", streaming[0]),
            (n, _) => format!("streaming to {n} clients: {}", streaming.join(", ")),
        };
        line.push_str(match self.config.pairing {
            PairingMode::Required => " (pairing required)",
            PairingMode::Open => " (OPEN: unpaired clients may stream)",
        });
        if let Some(left) = armed {
            line.push_str(&format!("; pairing armed, {} s left", left.as_secs()));
        }
        self.health.set_status(line);
    }
}
