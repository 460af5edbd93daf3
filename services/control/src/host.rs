//! The host's state machine of one session stream.
//!
//! The shell reads frames with [`crate::framing::FrameDecoder`], feeds each `ClientMessage`
//! to [`HostSession::on_message`] with the current `CLOCK_MONOTONIC` time and performs the
//! returned [`HostAction`]s in order:
//!
//! ```text
//! match session.on_message(now_ns, msg) {
//!     Ok(actions) => for a in actions { match a {
//!         HostAction::Send(m) => write framed m,
//!         HostAction::StartStream(s) => start compositor/encoder/data plane for s,
//!         HostAction::Close { .. } => flush sends, close the connection, stop,
//!         ... } }
//!     Err(e) => { send HostSession::error_message(&e); close the connection }
//! }
//! ```
//!
//! # Rules
//!
//! * The first message must be `Hello`; a second `Hello` is an error. Pairing messages on the
//!   session stream, an empty/unknown `oneof`, and anything after the session closed are
//!   errors (`Err(ProtocolError)`).
//! * Refusals of a well-formed `Hello` are *not* errors: the host answers
//!   `Error { code, message }` and closes (`Ok([Send(Error), Close])`):
//!   `unsupported-version` (`Hello.version != 1`), `unsupported-mode`, `unsupported-codec`.
//! * **Mode: width and height are refused, not clamped**, when outside
//!   [`MIN_WIDTH`]×[`MIN_HEIGHT`] ..= `policy.max_mode` or odd (4:2:0 encoders need even
//!   sizes): the host streams at native client resolution and never scales, so silently
//!   handing out another size would be wrong. The refresh rate is clamped to
//!   [`MIN_REFRESH_MHZ`] ..= `policy.max_mode.refresh_mhz` (a rate, harmless to lower); 0 is
//!   refused. A missing mode is refused.
//! * Bitrate: clamped to `policy.min_bitrate_kbps ..= policy.max_bitrate_kbps` (by default
//!   [`MIN_BITRATE_KBPS`] ..= [`MAX_BITRATE_KBPS`]); 0 means `policy.default_bitrate_kbps`.
//! * Codec: the **host's** most preferred codec among those the client offers (the client
//!   lists what it can decode; the host knows what its encoders cost: a host without a hardware
//!   HEVC encoder puts H.264 first); unknown values ignored.
//! * Audio: enabled if the client asks and the host has audio; channels = min(client, host)
//!   (0 = host's), sample rate = host's.
//! * `Reconfigure`: a missing mode / zero bitrate keeps the current value; an unacceptable mode
//!   is not applied (no error: the session goes on); the host always answers `reconfigured`
//!   with what is in effect afterwards, and emits [`HostAction::Reconfigure`] only on change.
//! * `ProbeRequest`: `target_kbps` clamped to `policy.min_bitrate_kbps ..= policy.max_probe_kbps`,
//!   `duration_ms` to [`MIN_PROBE_MS`] ..= [`MAX_PROBE_MS`]; a second request while one runs
//!   is an error. The shell reports with [`HostSession::probe_finished`].
//! * `Stats` more often than `policy.min_stats_interval_ns` (100 ms) are dropped (counted).
//! * `Hello.probe_only` (a speed test): mode and codec are not required (a missing or
//!   unacceptable mode becomes [`PROBE_ONLY_MODE`], no common codec falls back to the host's
//!   first); the host answers `Welcome` and [`HostAction::StartProbeSession`] instead of
//!   `StartStream`; `Reconfigure`, `KeyframeRequest` and `RefInvalidate` are errors then.
//! * `ClockProbe` is answered at once with `host_recv_ns = host_send_ns = now_ns`.

use crate::PROTOCOL_VERSION;
use crate::error::{
    CODE_UNSUPPORTED_CODEC, CODE_UNSUPPORTED_MODE, CODE_UNSUPPORTED_VERSION, ProtocolError,
    error_message,
};
use crate::keys::{fec_to_wire, frame_interval_ns};
use crate::pairing::{MAX_NAME_LEN, bounded};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{
    AudioConfig, ClientMessage, ClockEcho, ClockProbe, FecConfig, Hello, HostMessage, Pacing,
    ProbeRequest, ProbeResult, Reconfigure, Stats, VideoPayload, Welcome, client_message,
    host_message,
};
use punktfunk_wire::{ConfigError, DataPlaneConfig};

pub use punktfunk_proto::limits::{
    DEFAULT_BITRATE_KBPS, MAX_BITRATE_KBPS, MAX_HEIGHT, MAX_REFRESH_MHZ, MAX_WIDTH,
    MIN_BITRATE_KBPS, MIN_HEIGHT, MIN_REFRESH_MHZ, MIN_WIDTH,
};
/// Shortest bandwidth probe.
pub const MIN_PROBE_MS: u32 = 100;
/// Longest bandwidth probe: 10 s.
pub const MAX_PROBE_MS: u32 = 10_000;
/// The mode reported for a probe-only session whose `Hello` carried no usable mode.
pub const PROBE_ONLY_MODE: Mode = Mode {
    width: MIN_WIDTH,
    height: MIN_HEIGHT,
    refresh_mhz: 60_000,
};
/// Longest compositor name accepted.
pub const MAX_COMPOSITOR_LEN: usize = 64;
/// Longest `Hello.app` title accepted (in bytes).
pub const MAX_APP_LEN: usize = 256;

/// What the host offers and allows. Build with [`HostPolicy::new`] and adjust fields.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPolicy {
    /// Sent in `Welcome.host_name`.
    pub host_name: String,
    /// Codecs the host can encode, most preferred first: the first one the client also offers
    /// is chosen, and the first entry is used for probe-only sessions without a common codec.
    pub codecs: Vec<Codec>,
    /// Lower bitrate clamp (≥ [`MIN_BITRATE_KBPS`]).
    pub min_bitrate_kbps: u32,
    /// Upper bitrate clamp (≤ [`MAX_BITRATE_KBPS`]).
    pub max_bitrate_kbps: u32,
    /// Bitrate for `bitrate_kbps = 0` (clamped too).
    pub default_bitrate_kbps: u32,
    /// Upper bound of probe rates (≤ [`MAX_BITRATE_KBPS`]); defaults to `max_bitrate_kbps`.
    pub max_probe_kbps: u32,
    /// Largest mode (each of width, height, refresh is a separate bound).
    pub max_mode: Mode,
    /// Data-plane parameters offered in `Welcome.fec`.
    pub fec: FecConfig,
    /// `host:port` the data plane comes from (`Welcome.data_addr`).
    pub data_addr: String,
    /// Audio the host can deliver (`channels`, `sample_rate`), or `None` without audio.
    pub audio: Option<AudioConfig>,
    /// `Welcome.session_id` (also the TLS exporter context, see [`crate::keys`]).
    pub session_id: u64,
    /// What the video frames carry (`Welcome.payload`): encoded AUs, or the synthetic
    /// generator's verifiable bytes.
    pub payload: VideoPayload,
    /// How this host paces the client's video (`Welcome.pacing`): the shell decides it for
    /// the client's route before the session (punktfunk-dataplane's `pacing_for_peer`) and
    /// starts the video sender with the same decision. Default: unspecified.
    pub pacing: Pacing,
    /// `Stats` arriving sooner than this after the last accepted one are dropped.
    pub min_stats_interval_ns: u64,
}

impl HostPolicy {
    /// Defaults: H.265 then H.264, 500 kbit/s ..= 2 Gbit/s (20 Mbit/s default), up to
    /// 7680×4320 @ 500 Hz, [`DataPlaneConfig::default`] FEC, stereo 48 kHz audio, Stats at most
    /// every 100 ms.
    pub fn new(
        host_name: impl Into<String>,
        data_addr: impl Into<String>,
        session_id: u64,
    ) -> Self {
        Self {
            host_name: host_name.into(),
            codecs: vec![Codec::Hevc, Codec::H264],
            min_bitrate_kbps: MIN_BITRATE_KBPS,
            max_bitrate_kbps: MAX_BITRATE_KBPS,
            default_bitrate_kbps: DEFAULT_BITRATE_KBPS,
            max_probe_kbps: MAX_BITRATE_KBPS,
            max_mode: Mode {
                width: MAX_WIDTH,
                height: MAX_HEIGHT,
                refresh_mhz: MAX_REFRESH_MHZ,
            },
            fec: crate::keys::wire_to_fec(&DataPlaneConfig::default()),
            data_addr: data_addr.into(),
            audio: Some(AudioConfig {
                enabled: true,
                channels: punktfunk_proto::limits::AUDIO_CHANNELS,
                sample_rate: punktfunk_proto::limits::AUDIO_RATE,
            }),
            session_id,
            payload: VideoPayload::Encoded,
            pacing: Pacing::Unspecified,
            min_stats_interval_ns: 100_000_000,
        }
    }

    /// Checks the policy (the shell's configuration, so errors here are bugs or bad config).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.host_name.is_empty() || self.host_name.len() > MAX_NAME_LEN {
            return Err(PolicyError("host_name must be 1..=128 bytes".into()));
        }
        if self.codecs.is_empty() || self.codecs.contains(&Codec::Unspecified) {
            return Err(PolicyError("codecs must be non-empty and specified".into()));
        }
        if self.min_bitrate_kbps < MIN_BITRATE_KBPS
            || self.max_bitrate_kbps > MAX_BITRATE_KBPS
            || self.min_bitrate_kbps > self.max_bitrate_kbps
        {
            return Err(PolicyError(format!(
                "bitrate bounds must satisfy {MIN_BITRATE_KBPS} <= min <= max <= {MAX_BITRATE_KBPS}"
            )));
        }
        if self.max_probe_kbps < self.min_bitrate_kbps || self.max_probe_kbps > MAX_BITRATE_KBPS {
            return Err(PolicyError(format!(
                "max_probe_kbps must be in min_bitrate_kbps..={MAX_BITRATE_KBPS}"
            )));
        }
        let m = &self.max_mode;
        if !(MIN_WIDTH..=MAX_WIDTH).contains(&m.width)
            || !(MIN_HEIGHT..=MAX_HEIGHT).contains(&m.height)
            || !(MIN_REFRESH_MHZ..=MAX_REFRESH_MHZ).contains(&m.refresh_mhz)
        {
            return Err(PolicyError(format!(
                "max_mode must be within {MIN_WIDTH}x{MIN_HEIGHT}@{}Hz ..= {MAX_WIDTH}x{MAX_HEIGHT}@{}Hz",
                MIN_REFRESH_MHZ / 1000,
                MAX_REFRESH_MHZ / 1000
            )));
        }
        for r in [MIN_REFRESH_MHZ, m.refresh_mhz] {
            let interval = frame_interval_ns(r).unwrap_or(0);
            fec_to_wire(&self.fec, interval).map_err(|e| PolicyError(format!("fec: {e}")))?;
        }
        if self.data_addr.is_empty() {
            return Err(PolicyError("data_addr must be set".into()));
        }
        if let Some(a) = &self.audio
            && (a.channels == 0 || a.channels > 8 || a.sample_rate == 0)
        {
            return Err(PolicyError(
                "audio needs 1..=8 channels and a sample rate".into(),
            ));
        }
        Ok(())
    }
}

/// A [`HostPolicy`] is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid host policy: {0}")]
pub struct PolicyError(pub String);

/// Everything the host resolved from a valid `Hello`: what to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSession {
    /// `Welcome.session_id` (TLS exporter context for the data-plane keys).
    pub session_id: u64,
    /// `Hello.client_name`.
    pub client_name: String,
    /// The mode to stream (refresh clamped).
    pub mode: Mode,
    /// The chosen codec.
    pub codec: Codec,
    /// The clamped bitrate (kbit/s).
    pub bitrate_kbps: u32,
    /// Audio to send, or `None`.
    pub audio: Option<AudioConfig>,
    /// `Hello.compositor`, or `None` for the host default.
    pub compositor: Option<String>,
    /// `Hello.app`, or `None` for the desktop (nothing launched).
    pub app: Option<String>,
    /// UDP port on the client's address to send the data plane to.
    pub data_port: u16,
    /// The data-plane parameters (FEC as offered, frame interval of `mode`).
    pub data_plane: DataPlaneConfig,
    /// `Hello.probe_only`: a speed test, no media (see [`HostAction::StartProbeSession`]).
    pub probe_only: bool,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum HostAction {
    /// Write this message to the session stream.
    Send(HostMessage),
    /// Start the session's media and data plane.
    StartStream(ResolvedSession),
    /// A probe-only session (`Hello.probe_only`, a speed test): set up the data-plane
    /// destination and keys, start no compositor or media. Only `ProbeRequest`, `ClockProbe`,
    /// `Stats` and `Goodbye` are accepted afterwards.
    StartProbeSession(ResolvedSession),
    /// Change mode and/or bitrate of the running stream (already validated and clamped).
    Reconfigure {
        /// The new mode.
        mode: Mode,
        /// The new bitrate (kbit/s).
        bitrate_kbps: u32,
    },
    /// Force a keyframe (the client lost `lost_frame`).
    Keyframe {
        /// First frame the client could not reconstruct.
        lost_frame: u64,
    },
    /// Invalidate reference frames `first_frame..=last_frame` (`first_frame <= last_frame`).
    RefInvalidate {
        /// First lost frame.
        first_frame: u64,
        /// Last lost frame.
        last_frame: u64,
    },
    /// Run a bandwidth probe on the data plane, then call [`HostSession::probe_finished`].
    StartProbe {
        /// Target rate (kbit/s), clamped.
        kbps: u32,
        /// Duration (ms), clamped to [`MIN_PROBE_MS`]..=[`MAX_PROBE_MS`].
        duration_ms: u32,
    },
    /// The client's receive statistics (rate-bounded).
    Stats(Stats),
    /// End the session: flush what was sent, close the connection.
    Close {
        /// Why (the client's Goodbye reason, or the refusal).
        reason: String,
    },
}

#[derive(Clone, Debug)]
enum State {
    AwaitHello,
    Streaming(Box<ResolvedSession>),
    Closed,
}

/// Host side of one session stream. See the module docs for the rules.
#[derive(Clone, Debug)]
pub struct HostSession {
    policy: HostPolicy,
    state: State,
    messages: u64,
    stats_dropped: u64,
    last_stats_ns: Option<u64>,
    probe_until_ns: Option<u64>,
}

fn send(msg: host_message::Msg) -> HostAction {
    HostAction::Send(HostMessage { msg: Some(msg) })
}

impl HostSession {
    /// A session waiting for `Hello`. Fails if the policy is invalid.
    pub fn new(policy: HostPolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        Ok(Self {
            policy,
            state: State::AwaitHello,
            messages: 0,
            stats_dropped: 0,
            last_stats_ns: None,
            probe_until_ns: None,
        })
    }

    /// The `Error` message to send before closing on a [`ProtocolError`].
    pub fn error_message(err: &ProtocolError) -> HostMessage {
        error_message(err.code(), err.to_string())
    }

    /// The policy in force.
    pub fn policy(&self) -> &HostPolicy {
        &self.policy
    }

    /// The running session (after `Welcome`), with the current mode and bitrate.
    pub fn resolved(&self) -> Option<&ResolvedSession> {
        match &self.state {
            State::Streaming(r) => Some(r),
            _ => None,
        }
    }

    /// True after `Goodbye`, a refusal or an error.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Client messages handled so far (including rejected ones).
    pub fn messages_received(&self) -> u64 {
        self.messages
    }

    /// `Stats` messages dropped by the rate bound.
    pub fn stats_dropped(&self) -> u64 {
        self.stats_dropped
    }

    /// The shell finished the probe started by [`HostAction::StartProbe`]: returns the
    /// `ProbeResult` to send and allows the next probe.
    pub fn probe_finished(&mut self, result: ProbeResult) -> HostMessage {
        self.probe_until_ns = None;
        HostMessage {
            msg: Some(host_message::Msg::ProbeResult(result)),
        }
    }

    /// Handles one message from the client. `now_ns` is the host's `CLOCK_MONOTONIC`.
    pub fn on_message(
        &mut self,
        now_ns: u64,
        msg: ClientMessage,
    ) -> Result<Vec<HostAction>, ProtocolError> {
        self.messages = self.messages.saturating_add(1);
        let r = self.dispatch(now_ns, msg);
        if r.is_err() {
            self.state = State::Closed;
        }
        r
    }

    fn dispatch(
        &mut self,
        now_ns: u64,
        msg: ClientMessage,
    ) -> Result<Vec<HostAction>, ProtocolError> {
        use client_message::Msg;
        if let State::Closed = self.state {
            return Err(ProtocolError::Closed);
        }
        let Some(msg) = msg.msg else {
            return Err(ProtocolError::EmptyMessage);
        };
        if let Msg::PairStart(_) | Msg::PairConfirm(_) = msg {
            return Err(ProtocolError::PairingOnSessionStream);
        }
        match (&self.state, msg) {
            (State::Closed, _) => Err(ProtocolError::Closed),
            (State::AwaitHello, Msg::Hello(h)) => Ok(self.on_hello(h)),
            (State::AwaitHello, _) => Err(ProtocolError::ExpectedHelloFirst),
            (State::Streaming(_), Msg::Hello(_)) => Err(ProtocolError::DuplicateHello),
            (
                State::Streaming(r),
                Msg::Reconfigure(_) | Msg::KeyframeRequest(_) | Msg::RefInvalidate(_),
            ) if r.probe_only => Err(ProtocolError::Unexpected(
                "stream control in a probe-only session",
            )),
            (State::Streaming(_), Msg::Reconfigure(r)) => Ok(self.on_reconfigure(r)),
            (State::Streaming(_), Msg::KeyframeRequest(k)) => Ok(vec![HostAction::Keyframe {
                lost_frame: k.lost_frame,
            }]),
            (State::Streaming(_), Msg::RefInvalidate(r)) => {
                if r.first_frame > r.last_frame {
                    return Err(ProtocolError::invalid(
                        "RefInvalidate",
                        format!(
                            "first_frame {} > last_frame {}",
                            r.first_frame, r.last_frame
                        ),
                    ));
                }
                Ok(vec![HostAction::RefInvalidate {
                    first_frame: r.first_frame,
                    last_frame: r.last_frame,
                }])
            }
            (State::Streaming(_), Msg::ClockProbe(p)) => Ok(vec![Self::echo(now_ns, &p)]),
            (State::Streaming(_), Msg::ProbeRequest(p)) => self.on_probe(now_ns, p),
            (State::Streaming(_), Msg::Stats(s)) => Ok(self.on_stats(now_ns, s)),
            (State::Streaming(_), Msg::Goodbye(g)) => {
                self.state = State::Closed;
                Ok(vec![HostAction::Close {
                    reason: bounded(&g.reason),
                }])
            }
            (State::Streaming(_), Msg::PairStart(_) | Msg::PairConfirm(_)) => {
                Err(ProtocolError::PairingOnSessionStream)
            }
        }
    }

    fn echo(now_ns: u64, p: &ClockProbe) -> HostAction {
        send(host_message::Msg::ClockEcho(ClockEcho {
            round: p.round,
            client_send_ns: p.client_send_ns,
            host_recv_ns: now_ns,
            host_send_ns: now_ns,
        }))
    }

    fn refuse(&mut self, code: &str, message: String) -> Vec<HostAction> {
        self.state = State::Closed;
        vec![
            HostAction::Send(error_message(code, message.clone())),
            HostAction::Close { reason: message },
        ]
    }

    fn clamp_bitrate(&self, kbps: u32) -> u32 {
        let kbps = if kbps == 0 {
            self.policy.default_bitrate_kbps
        } else {
            kbps
        };
        kbps.clamp(self.policy.min_bitrate_kbps, self.policy.max_bitrate_kbps)
    }

    /// Validates a requested mode: Ok(resolved) or Err(human reason).
    fn resolve_mode(&self, m: Option<&Mode>) -> Result<Mode, String> {
        let Some(m) = m else {
            return Err("no mode requested".into());
        };
        let max = &self.policy.max_mode;
        if m.width < MIN_WIDTH
            || m.height < MIN_HEIGHT
            || m.width > max.width
            || m.height > max.height
        {
            return Err(format!(
                "mode {}x{} is outside what this host serves ({MIN_WIDTH}x{MIN_HEIGHT} to {}x{})",
                m.width, m.height, max.width, max.height
            ));
        }
        if m.width % 2 != 0 || m.height % 2 != 0 {
            return Err(format!(
                "mode {}x{} has an odd dimension",
                m.width, m.height
            ));
        }
        if m.refresh_mhz == 0 {
            return Err("refresh rate 0".into());
        }
        Ok(Mode {
            width: m.width,
            height: m.height,
            refresh_mhz: m.refresh_mhz.clamp(MIN_REFRESH_MHZ, max.refresh_mhz),
        })
    }

    fn data_plane(&self, mode: &Mode) -> Result<DataPlaneConfig, ConfigError> {
        fec_to_wire(
            &self.policy.fec,
            frame_interval_ns(mode.refresh_mhz).unwrap_or(0),
        )
    }

    fn on_hello(&mut self, h: Hello) -> Vec<HostAction> {
        if h.version != PROTOCOL_VERSION {
            return self.refuse(
                CODE_UNSUPPORTED_VERSION,
                format!(
                    "this host speaks punktfunk/{PROTOCOL_VERSION} only (client asked for version {})",
                    h.version
                ),
            );
        }
        if h.client_name.is_empty()
            || h.client_name.len() > MAX_NAME_LEN
            || h.client_name.chars().any(char::is_control)
        {
            return self.refuse(
                crate::error::CODE_PROTOCOL,
                format!(
                    "Hello.client_name must be 1..={MAX_NAME_LEN} bytes without control characters"
                ),
            );
        }
        let data_port = match u16::try_from(h.data_port) {
            Ok(p) if p != 0 => p,
            _ => {
                return self.refuse(
                    crate::error::CODE_PROTOCOL,
                    format!("Hello.data_port must be 1..=65535 (got {})", h.data_port),
                );
            }
        };
        let compositor = if h.compositor.is_empty() {
            None
        } else if h.compositor.len() <= MAX_COMPOSITOR_LEN
            && h.compositor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            Some(h.compositor.clone())
        } else {
            return self.refuse(
                crate::error::CODE_PROTOCOL,
                format!(
                    "Hello.compositor must be at most {MAX_COMPOSITOR_LEN} characters of [A-Za-z0-9._-]"
                ),
            );
        };
        let app = if h.app.is_empty() {
            None
        } else if h.app.len() <= MAX_APP_LEN && !h.app.chars().any(char::is_control) {
            Some(h.app.clone())
        } else {
            return self.refuse(
                crate::error::CODE_PROTOCOL,
                format!("Hello.app must be at most {MAX_APP_LEN} bytes with no control characters"),
            );
        };
        let mode = match self.resolve_mode(h.mode.as_ref()) {
            Ok(m) => m,
            Err(_) if h.probe_only => PROBE_ONLY_MODE,
            Err(why) => return self.refuse(CODE_UNSUPPORTED_MODE, why),
        };
        let offered: Vec<Codec> = h
            .codecs
            .iter()
            .filter_map(|&c| Codec::try_from(c).ok())
            .collect();
        let codec = self
            .policy
            .codecs
            .iter()
            .copied()
            .find(|c| offered.contains(c))
            .or_else(|| {
                h.probe_only
                    .then(|| self.policy.codecs.first().copied())
                    .flatten()
            });
        let Some(codec) = codec else {
            let host: Vec<&str> = self.policy.codecs.iter().map(|c| c.as_str_name()).collect();
            return self.refuse(
                CODE_UNSUPPORTED_CODEC,
                format!("no codec in common: this host offers {}", host.join(", ")),
            );
        };
        let bitrate_kbps = self.clamp_bitrate(h.bitrate_kbps);
        let audio = match (&h.audio, &self.policy.audio) {
            (Some(c), Some(host)) if c.enabled => Some(AudioConfig {
                enabled: true,
                channels: if c.channels == 0 {
                    host.channels
                } else {
                    c.channels.min(host.channels)
                },
                sample_rate: host.sample_rate,
            }),
            _ => None,
        };
        let data_plane = match self.data_plane(&mode) {
            Ok(d) => d,
            Err(e) => {
                return self.refuse(
                    crate::error::CODE_PROTOCOL,
                    format!("host data-plane config: {e}"),
                );
            }
        };
        let resolved = ResolvedSession {
            session_id: self.policy.session_id,
            client_name: h.client_name,
            mode,
            codec,
            bitrate_kbps,
            audio,
            compositor,
            app,
            data_port,
            data_plane,
            probe_only: h.probe_only,
        };
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            host_name: self.policy.host_name.clone(),
            mode: Some(mode),
            codec: codec as i32,
            bitrate_kbps,
            audio: Some(audio.unwrap_or_default()),
            data_addr: self.policy.data_addr.clone(),
            fec: Some(self.policy.fec),
            session_id: self.policy.session_id,
            payload: self.policy.payload as i32,
            pacing: self.policy.pacing as i32,
        };
        self.state = State::Streaming(Box::new(resolved.clone()));
        let start = if resolved.probe_only {
            HostAction::StartProbeSession(resolved)
        } else {
            HostAction::StartStream(resolved)
        };
        vec![send(host_message::Msg::Welcome(welcome)), start]
    }

    fn on_reconfigure(&mut self, r: Reconfigure) -> Vec<HostAction> {
        let State::Streaming(cur) = &self.state else {
            return Vec::new();
        };
        let (cur_mode, cur_bitrate) = (cur.mode, cur.bitrate_kbps);
        let mode = match &r.mode {
            None => cur_mode,
            Some(m) => match self.resolve_mode(Some(m)) {
                Ok(m) if self.data_plane(&m).is_ok() => m,
                _ => cur_mode,
            },
        };
        let bitrate_kbps = if r.bitrate_kbps == 0 {
            cur_bitrate
        } else {
            self.clamp_bitrate(r.bitrate_kbps)
        };
        let mut actions = Vec::with_capacity(2);
        if mode != cur_mode || bitrate_kbps != cur_bitrate {
            let data_plane = self.data_plane(&mode);
            if let State::Streaming(cur) = &mut self.state {
                cur.mode = mode;
                cur.bitrate_kbps = bitrate_kbps;
                if let Ok(d) = data_plane {
                    cur.data_plane = d;
                }
            }
            actions.push(HostAction::Reconfigure { mode, bitrate_kbps });
        }
        actions.push(send(host_message::Msg::Reconfigured(Reconfigure {
            mode: Some(mode),
            bitrate_kbps,
        })));
        actions
    }

    /// The shell could not apply the last [`HostAction::Reconfigure`] (media refused that
    /// mode or bitrate); `mode` and `bitrate_kbps` are what still holds. Returns the
    /// `Reconfigured` message that tells the client so (None outside a stream).
    pub fn reconfigure_refused(&mut self, mode: Mode, bitrate_kbps: u32) -> Option<HostMessage> {
        let data_plane = self.data_plane(&mode);
        let State::Streaming(cur) = &mut self.state else {
            return None;
        };
        cur.mode = mode;
        cur.bitrate_kbps = bitrate_kbps;
        if let Ok(d) = data_plane {
            cur.data_plane = d;
        }
        Some(HostMessage {
            msg: Some(host_message::Msg::Reconfigured(Reconfigure {
                mode: Some(mode),
                bitrate_kbps,
            })),
        })
    }

    fn on_probe(&mut self, now_ns: u64, p: ProbeRequest) -> Result<Vec<HostAction>, ProtocolError> {
        if self.probe_until_ns.is_some_and(|t| now_ns < t) {
            return Err(ProtocolError::ProbeInProgress);
        }
        let kbps = p
            .target_kbps
            .clamp(self.policy.min_bitrate_kbps, self.policy.max_probe_kbps);
        let duration_ms = p.duration_ms.clamp(MIN_PROBE_MS, MAX_PROBE_MS);
        self.probe_until_ns = Some(now_ns.saturating_add(u64::from(duration_ms) * 1_000_000));
        Ok(vec![HostAction::StartProbe { kbps, duration_ms }])
    }

    fn on_stats(&mut self, now_ns: u64, s: Stats) -> Vec<HostAction> {
        if let Some(last) = self.last_stats_ns
            && now_ns.saturating_sub(last) < self.policy.min_stats_interval_ns
        {
            self.stats_dropped = self.stats_dropped.saturating_add(1);
            return Vec::new();
        }
        self.last_stats_ns = Some(now_ns);
        vec![HostAction::Stats(s)]
    }
}
