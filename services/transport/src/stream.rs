//! The data plane of one client session: a dataplane [`Sender`] to the client's UDP port and,
//! while the synthetic source is configured, the thread that feeds it — one frame per frame
//! interval, each wrapped in the AU envelope with its stage timestamps.
//!
//! Per-frame work is on plain threads (the feed here, the send thread in punktfunk-dataplane);
//! the session's async task only steers it: bitrate changes and keyframe requests go through
//! atomics the feed reads once per frame.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use punktfunk_dataplane::{Frame, Sender, SenderConfig, SenderStats};
use punktfunk_wire::au::{AuTiming, FLAG_DISCONTINUITY, FLAG_KEYFRAME};
use punktfunk_wire::synthetic::{self, SyntheticConfig, SyntheticSource};

/// CLOCK_MONOTONIC in nanoseconds (the clock every stage timestamp uses).
pub use punktfunk_dataplane::sys::monotonic_ns as now_ns;

/// Knobs the session task turns while the feed runs.
#[derive(Debug)]
pub struct FeedControl {
    pub bitrate_bps: AtomicU64,
    pub force_keyframe: AtomicBool,
    pub frames_sent: Arc<AtomicU64>,
    stop: AtomicBool,
}

/// A running data plane: sender + synthetic feed.
pub struct DataPlane {
    sender: Arc<Sender>,
    control: Arc<FeedControl>,
    feed: Option<JoinHandle<()>>,
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
    /// Starts a sender with `cfg` and the synthetic source at `feed.bitrate_bps`/`feed.fps`
    /// for `limit` (None: until stopped).
    pub fn start(
        socket: UdpSocket,
        cfg: SenderConfig,
        feed: SyntheticConfig,
        limit: Option<Duration>,
        frames_sent: Arc<AtomicU64>,
    ) -> Result<Self, DataPlaneError> {
        let kind = cfg.kind;
        let sender = Arc::new(Sender::spawn(socket, cfg)?);
        tracing::info!(mode = ?sender.mode(), sndbuf = ?sender.sndbuf(), ?kind, "data plane started");
        let control = Arc::new(FeedControl {
            bitrate_bps: AtomicU64::new(feed.bitrate_bps),
            force_keyframe: AtomicBool::new(false),
            frames_sent,
            stop: AtomicBool::new(false),
        });
        let (s, c) = (sender.clone(), control.clone());
        let thread = std::thread::Builder::new()
            .name("pf-synth-feed".into())
            .spawn(move || run_feed(&s, &c, feed, limit))?;
        Ok(Self {
            sender,
            control,
            feed: Some(thread),
        })
    }

    pub fn control(&self) -> &FeedControl {
        &self.control
    }

    /// Waits for a time-limited feed to finish (speed tests).
    pub fn join_feed(&mut self) {
        if let Some(t) = self.feed.take() {
            let _ = t.join();
        }
    }

    /// Stops feeding and sending; returns the final sender counters.
    pub fn stop(mut self) -> SenderStats {
        self.control.stop.store(true, Ordering::Relaxed);
        self.join_feed();
        // Dropping `self` releases the sender; its thread ends once the last frame is out.
        self.sender.stats()
    }
}

impl Drop for DataPlane {
    /// Only tells the feed thread to stop (it exits after its current frame); never waits.
    /// [`DataPlane::stop`] joins it.
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

/// One frame per interval, generated, enveloped and handed to the sender without blocking.
fn run_feed(sender: &Sender, ctl: &FeedControl, base: SyntheticConfig, limit: Option<Duration>) {
    let interval = Duration::from_nanos(1_000_000_000 / u64::from(base.fps.max(1)));
    let start = Instant::now();
    let mut scratch = Vec::new();
    let mut index: u64 = 0;
    let mut dropped_before = false;
    let mut shaper = SyntheticSource::new(base);
    let mut shaper_bitrate = base.bitrate_bps;
    while !ctl.stop.load(Ordering::Relaxed) {
        let due = start + interval * u32::try_from(index).unwrap_or(u32::MAX);
        if let Some(limit) = limit
            && due.duration_since(start) >= limit
        {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let bitrate = ctl.bitrate_bps.load(Ordering::Relaxed);
        if bitrate != shaper_bitrate {
            shaper = SyntheticSource::new(SyntheticConfig {
                bitrate_bps: bitrate,
                ..base
            });
            shaper_bitrate = bitrate;
        }
        let captured_ns = now_ns();
        let (mut len, mut keyframe) = shaper.frame_shape(index);
        if ctl.force_keyframe.swap(false, Ordering::Relaxed) && !keyframe {
            keyframe = true;
            len = (len * base.keyframe_factor.max(1) as usize).min(base.max_frame_bytes);
        }
        let encode_start_ns = now_ns();
        synthetic::fill(index, len, &mut scratch);
        let encode_end_ns = now_ns();
        let mut data = Vec::with_capacity(punktfunk_wire::au::ENVELOPE_LEN + scratch.len());
        let mut flags = if keyframe { FLAG_KEYFRAME } else { 0 };
        if dropped_before {
            flags |= FLAG_DISCONTINUITY;
        }
        AuTiming {
            flags,
            captured_ns,
            encode_start_ns,
            encode_end_ns,
            handed_ns: now_ns(),
        }
        .push_to(&mut data);
        data.extend_from_slice(&scratch);
        match sender.try_send(Frame::new(index, keyframe, data)) {
            Ok(()) => {
                dropped_before = false;
                ctl.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // The send thread is behind: this frame is lost; the next one says so, and a
                // real encoder would be asked for a keyframe (the synthetic source has none to
                // depend on).
                dropped_before = true;
                tracing::debug!(index, error = ?e, "frame dropped at the send queue");
            }
        }
        index += 1;
    }
}
