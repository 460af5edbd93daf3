//! The synthetic data plane of one client session: a dataplane [`Sender`] to the client's UDP
//! port and punktfunk-dataplane's synthetic feed driving it — one frame per frame interval,
//! each wrapped in the AU envelope with its stage timestamps (the `synthetic` source and the
//! speed test).
//!
//! Per-frame work is on plain threads (the feed and the send thread, both in
//! punktfunk-dataplane); the session's async task only steers it: bitrate changes and keyframe
//! requests go through the feed's atomics, read once per frame.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use punktfunk_dataplane::feed::{FeedConfig, SyntheticFeed};
use punktfunk_dataplane::{Sender, SenderConfig, SenderStats};
use punktfunk_wire::synthetic::SyntheticConfig;

/// CLOCK_MONOTONIC in nanoseconds (the clock every stage timestamp uses).
pub use punktfunk_clock::monotonic_ns as now_ns;

/// A running data plane: sender + synthetic feed.
pub struct DataPlane {
    sender: Option<Arc<Sender>>,
    feed: Option<SyntheticFeed>,
}

/// A UDP socket from our side (`bind_ip`, any port) connected to the client's data port.
pub fn connect_socket(bind_ip: std::net::IpAddr, client: SocketAddr) -> std::io::Result<UdpSocket> {
    let local = match (bind_ip, client) {
        // A dual-stack "::" talking to an IPv4 client binds the IPv4 wildcard.
        (std::net::IpAddr::V6(v6), SocketAddr::V4(_)) if v6.is_unspecified() => {
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
        (ip, _) => SocketAddr::new(ip, 0),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(client)?;
    Ok(socket)
}

/// Why a data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cannot start the data plane: {0}")]
    Sender(#[from] punktfunk_dataplane::SenderError),
    #[error("cannot start the feed thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl DataPlane {
    /// Starts a sender with `cfg` and the synthetic feed at `source.bitrate_bps`/`source.fps`
    /// for `frames` frames (None: until stopped), each in the AU envelope.
    pub fn start(
        socket: UdpSocket,
        cfg: SenderConfig,
        source: SyntheticConfig,
        frames: Option<u64>,
        frames_sent: Arc<AtomicU64>,
    ) -> Result<Self, DataPlaneError> {
        let kind = cfg.kind;
        let sender = Arc::new(Sender::spawn(socket, cfg)?);
        tracing::info!(mode = ?sender.mode(), sndbuf = ?sender.sndbuf(), ?kind, "data plane started");
        let feed_cfg = FeedConfig {
            envelope: true,
            ..FeedConfig::realtime(source, frames)
        };
        let feed = SyntheticFeed::spawn_counting(sender.clone(), feed_cfg, frames_sent)?;
        Ok(Self {
            sender: Some(sender),
            feed: Some(feed),
        })
    }

    /// Makes the feed's next frame a keyframe (a client asked for one).
    pub fn force_keyframe(&self) {
        if let Some(f) = &self.feed {
            f.control().force_keyframe.store(true, Ordering::Relaxed);
        }
    }

    /// Sizes the feed's next frames for `bitrate_kbps`.
    pub fn set_bitrate(&self, bitrate_kbps: u32) {
        if let Some(f) = &self.feed {
            f.control()
                .bitrate_bps
                .store(u64::from(bitrate_kbps) * 1000, Ordering::Relaxed);
        }
    }

    /// The video sender (its counters are read while it runs).
    pub fn sender(&self) -> Option<Arc<Sender>> {
        self.sender.clone()
    }

    /// Waits for a frame-limited feed to finish (speed tests). Blocks: off the async workers.
    pub fn join_feed(&mut self) {
        if let Some(f) = self.feed.take() {
            f.join();
        }
    }

    /// Stops feeding, drains and stops the sender; returns its final counters. Blocks: off
    /// the async workers.
    pub fn stop(mut self) -> SenderStats {
        if let Some(f) = self.feed.take() {
            f.stop();
        }
        // The feed thread held the only other clone of the sender.
        match self.sender.take().map(Arc::try_unwrap) {
            Some(Ok(s)) => s.shutdown(),
            Some(Err(s)) => s.stats(),
            None => SenderStats::default(),
        }
    }
}
