//! The session orchestrator: one client session's resources and their lifetimes, whatever
//! protocol the client speaks.
//!
//! A protocol shell (today [`crate::native`], punktfunk/1 over QUIC; GameStream next) admits a
//! client, negotiates with it, and then hands the orchestrator a [`SessionSpec`]: who, where
//! the data plane goes, the negotiated mode/codec/bitrate/audio, and the data-plane key it
//! derived its own way. [`Session::start`] brings up the data-plane senders and what feeds
//! them (punktfunk-media's stream under its supervisor, or the synthetic generator), and
//! registers the session with the [`Host`] under its id and protocol, so that `unpair`,
//! `punktfunkctl sessions` and the status line work alike for every protocol. The shell then
//! steers it ([`Session::keyframe`], [`Session::reconfigure`], [`Session::start_probe`]),
//! listens for what happened ([`Session::refused`]), and ends it ([`Session::stop`]).
//!
//! The input seat joins the resources here ([`crate::input::SeatLink`]): opened at start,
//! reopened by its link when punktfunk-input restarts, closed at stop. The compositor output
//! (`source = "compositor"`) is started here at the client's mode and then belongs to media's
//! supervisor ([`crate::media`]): a new mode moves the stream to a new output, and the session's
//! end stops the output of the moment once media has stopped capturing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use punktfunk_control::error::CODE_INTERNAL;
use punktfunk_dataplane::{PacingChoice, PacingMode, Sender, SenderConfig, SenderStats};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::media::SourceKind as MediaSource;
use punktfunk_tls::Fingerprint;
use punktfunk_wire::synthetic::SyntheticConfig;
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};

use crate::config::Source;
use crate::gone::{self, PortWatch};
use crate::host::{Host, PacingProbe, SessionEntry};
use crate::input::{SeatLink, SeatPort, SeatSpec};
use crate::media::{self, MediaError, MediaEvent, MediaPlan, MediaSession, Outputs};
use crate::output::{AppChoice, Output};
use crate::pump::PumpShared;
use crate::stream::{DataPlane, connect_socket};

/// The protocols a client may speak; sessions carry theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// punktfunk/1 over QUIC (the native client).
    Native,
    /// GameStream (stock Moonlight clients).
    GameStream,
}

impl Protocol {
    /// The name `punktfunkctl sessions` and the paired-clients file show.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => punktfunk_control::PROTOCOL_NAME,
            Protocol::GameStream => "gamestream",
        }
    }
}

/// Why a session could not start, as the client is told: a machine-readable `Error.code` (one
/// of `punktfunk_control::error`'s) and a human message.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: CODE_INTERNAL,
            message: message.into(),
        }
    }
}

impl From<MediaError> for Refusal {
    fn from(e: MediaError) -> Self {
        Self {
            code: e.client_code(),
            message: e.to_string(),
        }
    }
}

/// What a protocol shell negotiated and asks the orchestrator to run.
pub struct SessionSpec {
    pub protocol: Protocol,
    pub id: u64,
    pub client_name: String,
    pub fingerprint: Fingerprint,
    /// Where the data plane goes: the client's address and data port.
    pub client_addr: SocketAddr,
    pub mode: Mode,
    pub codec: Codec,
    pub bitrate_kbps: u32,
    pub audio: bool,
    /// A speed-test-only session: senders come with each probe, no media.
    pub probe_only: bool,
    pub data_plane: DataPlaneConfig,
    /// The pads of the client's input seat, by index.
    pub pads: Vec<punktfunk_proto::input::PadKind>,
    /// The host-to-client data-plane key (the shell derives it: punktfunk/1 from the TLS
    /// exporter).
    pub key: SessionKey,
    /// Ends the session from outside (unpair): the shell closes its connection with `reason`.
    pub end: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
    /// The video packetizer of a protocol other than punktfunk/1 (GameStream's RTP + FEC);
    /// `None`: punktfunk/1's, from `data_plane` and `key`. Frames reach it with the AU
    /// envelope in front, as punktfunk/1's.
    pub video_packetizer: Option<Box<dyn punktfunk_wire::Packetize>>,
    /// Likewise for audio, with the address audio goes to when it is not `client_addr`
    /// (GameStream learns each stream's address from that stream's pings).
    pub audio_packetizer: Option<(Box<dyn punktfunk_wire::Packetize>, SocketAddr)>,
    /// The app to run in the client's output (`Hello.app`; `None`: the desktop) and the
    /// client's compositor choice; used when the host streams a compositor.
    pub app: Option<String>,
    pub compositor: Option<String>,
    /// Who paces the video: punktfunk/1 decides before its `Welcome` (which tells the client)
    /// and passes `Kernel` or `UserSpace`; GameStream leaves it to the sender (`Auto`).
    pub pacing: PacingChoice,
}

/// Samples the video sender's refusals every [`gone::SAMPLE_INTERVAL`] until the watch says
/// the client is gone; never without a video sender.
async fn watch_port(video: Option<Arc<Sender>>, watch: &mut PortWatch) -> u64 {
    let Some(video) = video else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(gone::SAMPLE_INTERVAL).await;
        watch.handle_sample(punktfunk_clock::monotonic_ns(), video.stats().refused);
        if let Some(refused) = watch.poll_gone() {
            return refused;
        }
    }
}

/// What a finished speed test sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub send_drops: u64,
    pub duration_ms: u32,
}

/// A running session's resources.
pub struct Session {
    id: u64,
    client_addr: SocketAddr,
    bind_ip: IpAddr,
    data_plane: DataPlaneConfig,
    fps: u32,
    /// What feeds the video sender: nothing for a speed-test-only session.
    feed: Feed,
    /// Where the next speed test's sender starts its sequence (one key per session and kind:
    /// a restarted sequence would reuse AES-GCM nonces).
    probe_sequence: Arc<AtomicU64>,
    /// The client's input seat (none for a speed test, or without a runtime dir).
    seat: Option<SeatLink>,
    /// The seat's port until the protocol shell takes it.
    seat_port: Option<SeatPort>,
    /// Watches the video sender's refused sends: a killed client's closed data port.
    port_watch: PortWatch,
}

/// What a running session reports to its protocol shell.
#[derive(Debug)]
pub enum SessionEvent {
    /// Media's supervisor reported (a final refusal, a refused reconfiguration).
    Media(MediaEvent),
    /// The client's data port refuses our datagrams (ICMP port-unreachable): its process is
    /// gone. `refused`: the sends refused within the watch's window.
    ClientGone { refused: u64 },
}

enum Feed {
    None,
    /// The data-plane generator (sender + feed thread).
    Synthetic(DataPlane),
    /// punktfunk-media's stream, pumped into these senders.
    Media {
        media: MediaSession,
        video: Arc<Sender>,
        audio: Option<Arc<Sender>>,
    },
}

impl Session {
    /// Brings the session's data plane and media up and registers it with the host.
    pub async fn start(host: &Arc<Host>, mut spec: SessionSpec) -> Result<Self, Refusal> {
        let bind_ip: IpAddr = host
            .config
            .bind
            .parse()
            .map_err(|e| Refusal::internal(format!("bind address: {e}")))?;
        let fps = spec.mode.refresh_mhz.div_ceil(1000).max(1);
        let frames_sent = Arc::new(AtomicU64::new(0));
        let feed = if spec.probe_only {
            Feed::None
        } else if host.config.source == Source::Synthetic {
            start_synthetic(&spec, bind_ip, fps, frames_sent.clone())?
        } else {
            start_media(host, &mut spec, bind_ip, frames_sent.clone()).await?
        };
        tracing::info!(
            client = %spec.client_name, fingerprint = %spec.fingerprint.short(), protocol = spec.protocol.as_str(),
            mode = %format!("{}x{}@{}", spec.mode.width, spec.mode.height, fps),
            codec = spec.codec.as_str_name(), bitrate_kbps = spec.bitrate_kbps, audio = spec.audio,
            probe_only = spec.probe_only, "session started"
        );
        let (seat, seat_port) = match (&host.runtime_dir, spec.probe_only) {
            (Some(dir), false) => {
                let (link, port) = SeatLink::start(
                    dir.clone(),
                    SeatSpec {
                        client_name: spec.client_name.clone(),
                        output: (spec.mode.width, spec.mode.height),
                        pads: spec.pads.clone(),
                    },
                );
                (Some(link), Some(port))
            }
            _ => (None, None),
        };
        let session = Self {
            id: spec.id,
            client_addr: spec.client_addr,
            bind_ip,
            data_plane: spec.data_plane,
            fps,
            feed,
            probe_sequence: Arc::new(AtomicU64::new(0)),
            seat,
            seat_port,
            port_watch: PortWatch::default(),
        };
        // Registered before anything can end the session, so teardown (which removes the
        // entry) always finds it.
        host.insert_session(
            spec.id,
            SessionEntry {
                protocol: spec.protocol,
                client_name: spec.client_name,
                fingerprint: spec.fingerprint,
                mode: spec.mode,
                bitrate_kbps: spec.bitrate_kbps,
                frames_sent,
                started: Instant::now(),
                end: spec.end,
                pacing: session.video_pacing(),
            },
        );
        host.refresh_status();
        Ok(session)
    }

    /// Reads the video sender's pacing mode while it runs (for the status line); it holds
    /// the sender weakly, so stopping the session is not held up by it.
    fn video_pacing(&self) -> PacingProbe {
        let sender = match &self.feed {
            Feed::None => None,
            Feed::Synthetic(dp) => dp.sender().as_ref().map(Arc::downgrade),
            Feed::Media { video, .. } => Some(Arc::downgrade(video)),
        };
        Arc::new(move || -> Option<PacingMode> {
            sender.as_ref()?.upgrade().map(|s| s.pacing_mode())
        })
    }

    /// The session id (also the TLS exporter context of punktfunk/1's keys).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The input seat's port (once): the protocol shell feeds it the client's input and sends
    /// its feedback to the client.
    pub fn take_seat_port(&mut self) -> Option<SeatPort> {
        self.seat_port.take()
    }

    pub fn keyframe(&self) {
        match &self.feed {
            Feed::Synthetic(dp) => dp.force_keyframe(),
            Feed::Media { media, .. } => media.send(media::Command::Keyframe),
            Feed::None => {}
        }
    }

    pub fn reconfigure(&self, mode: Mode, bitrate_kbps: u32) {
        match &self.feed {
            Feed::Synthetic(dp) => dp.set_bitrate(bitrate_kbps),
            Feed::Media { media, .. } => media.send(media::Command::Reconfigure {
                bitrate_kbps,
                mode: Some(mode),
            }),
            Feed::None => {}
        }
    }

    /// The next thing to tell the protocol shell: media's supervisor reported, or the client's
    /// data port closed. Cancel-safe (the watch's state lives in the session).
    pub async fn event(&mut self) -> SessionEvent {
        let Self {
            feed, port_watch, ..
        } = self;
        let video = match feed {
            Feed::Synthetic(dp) => dp.sender(),
            Feed::Media { video, .. } => Some(video.clone()),
            Feed::None => None,
        };
        let media = async {
            match feed {
                Feed::Media { media, .. } => media.event().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = media => SessionEvent::Media(ev),
            refused = watch_port(video, port_watch) => SessionEvent::ClientGone { refused },
        }
    }

    /// Ends the session: deregisters it, stops media and the pumps, drains and stops the
    /// senders (off the async workers); returns the video sender's totals.
    pub async fn stop(self, host: &Host) -> SenderStats {
        host.remove_session(self.id);
        // The seat first: the client's devices go away at once.
        if let Some(seat) = self.seat {
            seat.stop().await;
        }
        let stats = match self.feed {
            Feed::Synthetic(dp) => tokio::task::spawn_blocking(move || dp.stop())
                .await
                .unwrap_or_default(),
            Feed::Media {
                media,
                video,
                audio,
            } => {
                // Pumps first (they hold sender clones), then the senders drain and stop;
                // media's supervisor stops the output once nothing captures it.
                media.stop().await;
                tokio::task::spawn_blocking(move || {
                    if let Some(a) = audio.and_then(|a| Arc::try_unwrap(a).ok()) {
                        a.shutdown();
                    }
                    Arc::try_unwrap(video)
                        .map(Sender::shutdown)
                        .unwrap_or_else(|v| v.stats())
                })
                .await
                .unwrap_or_default()
            }
            Feed::None => SenderStats::default(),
        };
        host.refresh_status();
        // The session's threads and buffers are gone: hand their memory back to the kernel.
        let _ = tokio::task::spawn_blocking(punktfunk_common::alloc::trim).await;
        stats
    }

    /// Sends probe packets at `kbps` for `duration_ms` through the real data plane, keyed with
    /// `key` (the probe direction's key); the future returns what was sent.
    pub fn start_probe(
        &self,
        key: SessionKey,
        kbps: u32,
        duration_ms: u32,
    ) -> Result<impl Future<Output = ProbeStats> + Send + 'static, Refusal> {
        let socket = connect_socket(self.bind_ip, self.client_addr)
            .map_err(|e| Refusal::internal(format!("speed test socket: {e}")))?;
        let feed = SyntheticConfig {
            bitrate_bps: u64::from(kbps) * 1000,
            fps: self.fps,
            keyframe_every: u32::MAX,
            keyframe_factor: 1,
            max_frame_bytes: max_payload(&self.data_plane),
        };
        // As many frames as fit in the test's duration at the session's frame rate.
        let frames = (u64::from(duration_ms) * u64::from(self.fps)).div_ceil(1000);
        let sequence = self.probe_sequence.clone();
        let mut cfg = SenderConfig::new(self.data_plane, key, StreamKind::Probe);
        cfg.first_sequence = sequence.load(Ordering::Relaxed);
        // A probe measures throughput, not latency: a deeper queue rides out a scheduler
        // hiccup of the send thread instead of counting it as a send drop.
        cfg.options.queue_frames = 8;
        let sent = Arc::new(AtomicU64::new(0));
        let mut dp = DataPlane::start(socket, cfg, feed, Some(frames), sent)
            .map_err(|e| Refusal::internal(e.to_string()))?;
        Ok(async move {
            tokio::task::spawn_blocking(move || {
                dp.join_feed();
                // Let the send thread drain its queue before counting.
                std::thread::sleep(Duration::from_millis(50));
                let s = dp.stop();
                sequence.store(s.next_sequence, Ordering::Relaxed);
                ProbeStats {
                    packets_sent: s.packets_sent,
                    bytes_sent: s.bytes_sent,
                    send_drops: s.send_drop_packets + s.frames_dropped_queue,
                    duration_ms,
                }
            })
            .await
            .unwrap_or_default()
        })
    }
}

/// The largest frame payload a feed may produce (the AU envelope rides in the frame too).
fn max_payload(cfg: &DataPlaneConfig) -> usize {
    (cfg.max_frame_bytes as usize).saturating_sub(punktfunk_wire::au::ENVELOPE_LEN)
}

/// The data-plane generator's verifiable bytes at the negotiated rate (no encoder, no audio).
fn start_synthetic(
    spec: &SessionSpec,
    bind_ip: IpAddr,
    fps: u32,
    frames_sent: Arc<AtomicU64>,
) -> Result<Feed, Refusal> {
    let socket = connect_socket(bind_ip, spec.client_addr)
        .map_err(|e| Refusal::internal(format!("data-plane socket: {e}")))?;
    let feed = SyntheticConfig {
        bitrate_bps: u64::from(spec.bitrate_kbps) * 1000,
        fps,
        max_frame_bytes: max_payload(&spec.data_plane),
        ..SyntheticConfig::default()
    };
    let mut cfg = SenderConfig::new(spec.data_plane, spec.key.clone(), StreamKind::Video);
    cfg.options.kernel_pacing = spec.pacing;
    let dp = DataPlane::start(socket, cfg, feed, None, frames_sent)
        .map_err(|e| Refusal::internal(e.to_string()))?;
    Ok(Feed::Synthetic(dp))
}

/// Senders for video (paced) and audio (unpaced: 5 ms Opus packets go out at once), and the
/// media stream feeding them.
async fn start_media(
    host: &Arc<Host>,
    spec: &mut SessionSpec,
    bind_ip: IpAddr,
    frames_sent: Arc<AtomicU64>,
) -> Result<Feed, Refusal> {
    let runtime_dir = host.runtime_dir.clone().ok_or_else(|| {
        Refusal::internal(
            "XDG_RUNTIME_DIR is not set, so the media worker cannot be reached (run the host as a systemd user service)",
        )
    })?;
    let socket = |what: &str| {
        connect_socket(bind_ip, spec.client_addr)
            .map_err(|e| Refusal::internal(format!("{what} socket: {e}")))
    };
    let mut video_cfg = SenderConfig::new(spec.data_plane, spec.key.clone(), StreamKind::Video);
    video_cfg.options.kernel_pacing = spec.pacing;
    let video = match spec.video_packetizer.take() {
        Some(p) => Sender::spawn_with(socket("video")?, video_cfg.options(), p),
        None => Sender::spawn(socket("video")?, video_cfg),
    };
    let video = Arc::new(video.map_err(|e| Refusal::internal(e.to_string()))?);
    let audio = if spec.audio {
        let mut cfg = SenderConfig::new(
            punktfunk_control::keys::audio_data_plane(&spec.data_plane),
            spec.key.clone(),
            StreamKind::Audio,
        );
        cfg.options.pacing = None;
        cfg.options.queue_frames = 32;
        let sender = match spec.audio_packetizer.take() {
            Some((p, addr)) => {
                let socket = connect_socket(bind_ip, addr)
                    .map_err(|e| Refusal::internal(format!("audio socket: {e}")))?;
                Sender::spawn_with(socket, cfg.options(), p)
            }
            None => Sender::spawn(socket("audio")?, cfg),
        }
        .map_err(|e| Refusal::internal(format!("cannot start the audio data plane: {e}")))?;
        Some((Arc::new(sender), Arc::new(PumpShared::default())))
    } else {
        None
    };
    let plan = MediaPlan {
        source: host
            .config
            .source
            .media_source()
            .unwrap_or(MediaSource::Test),
        mode: spec.mode,
        codec: spec.codec,
        bitrate_kbps: spec.bitrate_kbps,
        audio: audio.is_some(),
        output: None,
    };
    let outputs = Outputs {
        video: video.clone(),
        video_state: Arc::new(PumpShared {
            frames_sent,
            ..Default::default()
        }),
        audio: audio.clone(),
    };
    let output = if host.config.source == Source::Compositor {
        let (app, compositor) = (spec.app.clone(), spec.compositor.clone());
        Some(start_output(&runtime_dir, spec.mode, &spec.client_name, app, compositor).await?)
    } else {
        None
    };
    let plan = MediaPlan {
        output: output.clone(),
        ..plan
    };
    let media = match MediaSession::start(runtime_dir, plan, outputs).await {
        Ok(m) => m,
        Err(e) => {
            if let Some(output) = output {
                output.stop().await;
            }
            return Err(e.into());
        }
    };
    Ok(Feed::Media {
        media,
        video,
        audio: audio.map(|(s, _)| s),
    })
}

/// The client's compositor output at its mode, with the app it asked for.
async fn start_output(
    runtime_dir: &std::path::Path,
    mode: Mode,
    client_name: &str,
    app: Option<String>,
    compositor: Option<String>,
) -> Result<Output, Refusal> {
    let dir = punktfunk_common::paths::config_dir()
        .map_err(|e| Refusal::internal(format!("the apps file's directory: {e}")))?;
    let apps = punktfunk_common::apps::Apps::load(&dir)
        .map_err(|e| Refusal::internal(format!("{e} (fix or remove it)")))?;
    let app = AppChoice::resolve(&apps, app.as_deref(), compositor.as_deref())?;
    Output::start(runtime_dir, mode, client_name, &app).await
}
