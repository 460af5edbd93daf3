//! The client's state machine of one session stream.
//!
//! ```text
//! let mut s = ClientSession::new(request);
//! send(s.hello());
//! for each HostMessage m read from the stream:
//!     match s.on_message(now_ns(), m) {
//!         Ok(actions) => for a in actions { match a {
//!             ClientAction::Send(m) => write framed m (ClockProbes, sent at once),
//!             ClientAction::Welcomed(w) => derive keys, open the data plane (w.data_addr, w.fec),
//!             ClientAction::ClockSynced(est) => use est.to_client_time(..) for latency,
//!             ClientAction::Closed { .. } => close the connection, stop,
//!             ... } }
//!         Err(e) => { send s.goodbye(&e.to_string()); close }
//!     }
//! ```
//!
//! After `Welcome` the session runs [`CLOCK_ROUNDS`] clock rounds by itself: it sends
//! `ClockProbe { round: 0 }` with the `Welcomed` action and each further probe as soon as the
//! previous echo arrives (stamped with the `now_ns` of that call — pass a fresh timestamp).
//! After the last echo it reports [`ClientAction::ClockSynced`] with the minimum-RTT estimate.
//! Use [`ClientSession::resync`] to run the rounds again later.

use crate::PROTOCOL_VERSION;
use crate::clock::{CLOCK_ROUNDS, ClockEstimate, ClockSample, ClockSync};
use crate::error::ProtocolError;
use crate::keys::{fec_to_wire, frame_interval_ns};
use crate::pairing::bounded;
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{
    AudioConfig, ClientMessage, ClockEcho, ClockProbe, Goodbye, Hello, HostMessage,
    KeyframeRequest, ProbeRequest, ProbeResult, Reconfigure, RefInvalidate, Stats, Welcome,
    client_message, host_message,
};
use punktfunk_wire::DataPlaneConfig;

/// What the client asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRequest {
    /// Our name (shown by the host).
    pub name: String,
    /// The native mode of our display.
    pub mode: Mode,
    /// Codecs we can decode, most preferred first.
    pub codecs: Vec<Codec>,
    /// Requested bitrate (kbit/s, 0 = host default).
    pub bitrate_kbps: u32,
    /// Audio we want (`None` = no audio).
    pub audio: Option<AudioConfig>,
    /// UDP port we receive the data plane on.
    pub data_port: u16,
    /// Compositor choice, `None` = host default.
    pub compositor: Option<String>,
    /// The app to run in our output, by title (`None`: the desktop).
    pub app: Option<String>,
    /// A speed test only (`Hello.probe_only`): the host starts no stream.
    pub probe_only: bool,
    /// The pads we bring (`Hello.gamepads`), by index.
    pub gamepads: Vec<punktfunk_proto::control::GamepadKind>,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientAction {
    /// Write this message to the session stream.
    Send(ClientMessage),
    /// The host accepted; `Welcome` is validated (version, codec among ours, mode, FEC).
    /// [`ClientSession::data_plane`] has the data-plane config from now on.
    Welcomed(Welcome),
    /// Clock synchronisation finished: `host = client + offset_ns`, ± `rtt_ns / 2`.
    ClockSynced(ClockEstimate),
    /// The host's answer to our `ProbeRequest`.
    ProbeResult(ProbeResult),
    /// What the host put in effect after our `Reconfigure`.
    Reconfigured(Reconfigure),
    /// The session is over (host `Goodbye` or `Error`); close the connection.
    Closed {
        /// The host's words (its `Error.message` or `Goodbye.reason`).
        reason: String,
        /// The host's `Error.code`, or `None` for a `Goodbye`.
        code: Option<String>,
    },
}

#[derive(Clone, Debug)]
enum State {
    Start,
    AwaitWelcome,
    Running,
    Closed,
}

/// Client side of one session stream.
#[derive(Clone, Debug)]
pub struct ClientSession {
    req: ClientRequest,
    state: State,
    welcome: Option<Welcome>,
    data_plane: Option<DataPlaneConfig>,
    /// Outstanding probe: (round, client_send_ns).
    clock_pending: Option<(u32, u64)>,
    clock: ClockSync,
    clock_done: Option<ClockEstimate>,
    probe_pending: bool,
}

fn send(m: client_message::Msg) -> ClientAction {
    ClientAction::Send(ClientMessage { msg: Some(m) })
}

impl ClientSession {
    /// A session that has not said `Hello` yet.
    pub fn new(req: ClientRequest) -> Self {
        Self {
            req,
            state: State::Start,
            welcome: None,
            data_plane: None,
            clock_pending: None,
            clock: ClockSync::new(),
            clock_done: None,
            probe_pending: false,
        }
    }

    /// The `Hello` to send first.
    pub fn hello(&mut self) -> ClientMessage {
        if let State::Start = self.state {
            self.state = State::AwaitWelcome;
        }
        let r = &self.req;
        ClientMessage {
            msg: Some(client_message::Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
                client_name: r.name.clone(),
                mode: Some(r.mode),
                codecs: r.codecs.iter().map(|&c| c as i32).collect(),
                bitrate_kbps: r.bitrate_kbps,
                audio: r.audio,
                compositor: r.compositor.clone().unwrap_or_default(),
                app: r.app.clone().unwrap_or_default(),
                data_port: u32::from(r.data_port),
                probe_only: r.probe_only,
                gamepads: r.gamepads.iter().map(|&g| g as i32).collect(),
            })),
        }
    }

    /// The host's `Welcome`, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// The validated data-plane config (FEC from `Welcome`, frame interval of its mode).
    pub fn data_plane(&self) -> Option<&DataPlaneConfig> {
        self.data_plane.as_ref()
    }

    /// The clock estimate of the last completed synchronisation.
    pub fn clock(&self) -> Option<ClockEstimate> {
        self.clock_done
    }

    /// True after the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Starts another [`CLOCK_ROUNDS`]-round synchronisation: the first probe to send, or
    /// `None` if not running or one is already in progress.
    pub fn resync(&mut self, now_ns: u64) -> Option<ClientMessage> {
        if !matches!(self.state, State::Running) || self.clock_pending.is_some() {
            return None;
        }
        self.clock = ClockSync::new();
        self.clock_pending = Some((0, now_ns));
        Some(Self::probe_msg(0, now_ns))
    }

    fn probe_msg(round: u32, now_ns: u64) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::ClockProbe(ClockProbe {
                round,
                client_send_ns: now_ns,
            })),
        }
    }

    /// A `Reconfigure` request (`None`/0 keep the current value).
    pub fn reconfigure(&self, mode: Option<Mode>, bitrate_kbps: u32) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::Reconfigure(Reconfigure {
                mode,
                bitrate_kbps,
            })),
        }
    }

    /// A `KeyframeRequest`.
    pub fn keyframe_request(&self, lost_frame: u64) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::KeyframeRequest(KeyframeRequest {
                lost_frame,
            })),
        }
    }

    /// A `RefInvalidate` (the range is ordered for you).
    pub fn ref_invalidate(&self, first_frame: u64, last_frame: u64) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::RefInvalidate(RefInvalidate {
                first_frame: first_frame.min(last_frame),
                last_frame: first_frame.max(last_frame),
            })),
        }
    }

    /// A `ProbeRequest`, or `None` while a probe is outstanding or before `Welcome`.
    pub fn probe_request(&mut self, target_kbps: u32, duration_ms: u32) -> Option<ClientMessage> {
        if self.probe_pending || !matches!(self.state, State::Running) {
            return None;
        }
        self.probe_pending = true;
        Some(ClientMessage {
            msg: Some(client_message::Msg::ProbeRequest(ProbeRequest {
                target_kbps,
                duration_ms,
            })),
        })
    }

    /// A `Stats` report (the host drops reports closer than 100 ms apart).
    pub fn stats(&self, stats: Stats) -> ClientMessage {
        ClientMessage {
            msg: Some(client_message::Msg::Stats(stats)),
        }
    }

    /// A `Goodbye`; the session counts as closed afterwards.
    pub fn goodbye(&mut self, reason: &str) -> ClientMessage {
        self.state = State::Closed;
        ClientMessage {
            msg: Some(client_message::Msg::Goodbye(Goodbye {
                reason: reason.to_owned(),
            })),
        }
    }

    /// Handles one message from the host. `now_ns` is the client's `CLOCK_MONOTONIC`.
    pub fn on_message(
        &mut self,
        now_ns: u64,
        msg: HostMessage,
    ) -> Result<Vec<ClientAction>, ProtocolError> {
        let r = self.dispatch(now_ns, msg);
        if r.is_err() {
            self.state = State::Closed;
        }
        r
    }

    fn dispatch(
        &mut self,
        now_ns: u64,
        msg: HostMessage,
    ) -> Result<Vec<ClientAction>, ProtocolError> {
        use host_message::Msg;
        if let State::Closed = self.state {
            return Err(ProtocolError::Closed);
        }
        let Some(msg) = msg.msg else {
            return Err(ProtocolError::EmptyMessage);
        };
        match (&self.state, msg) {
            (State::Closed, _) => Err(ProtocolError::Closed),
            (_, Msg::PairChallenge(_) | Msg::PairResult(_)) => {
                Err(ProtocolError::PairingOnSessionStream)
            }
            (_, Msg::Error(e)) => {
                self.state = State::Closed;
                Ok(vec![ClientAction::Closed {
                    reason: bounded(&e.message),
                    code: Some(bounded(&e.code)),
                }])
            }
            (_, Msg::Goodbye(g)) => {
                self.state = State::Closed;
                Ok(vec![ClientAction::Closed {
                    reason: bounded(&g.reason),
                    code: None,
                }])
            }
            (State::Start, _) => Err(ProtocolError::Unexpected("host message before Hello")),
            (State::AwaitWelcome, Msg::Welcome(w)) => self.on_welcome(now_ns, w),
            (State::AwaitWelcome, _) => Err(ProtocolError::ExpectedWelcomeFirst),
            (State::Running, Msg::Welcome(_)) => Err(ProtocolError::DuplicateWelcome),
            (State::Running, Msg::ClockEcho(e)) => self.on_echo(now_ns, e),
            (State::Running, Msg::ProbeResult(p)) => {
                if !self.probe_pending {
                    return Err(ProtocolError::Unexpected(
                        "ProbeResult without ProbeRequest",
                    ));
                }
                self.probe_pending = false;
                Ok(vec![ClientAction::ProbeResult(p)])
            }
            (State::Running, Msg::Reconfigured(r)) => {
                let Some(mode) = r.mode else {
                    return Err(ProtocolError::invalid("Reconfigure.mode", "missing"));
                };
                if let Some(w) = &mut self.welcome {
                    w.mode = Some(mode);
                    w.bitrate_kbps = r.bitrate_kbps;
                }
                if let (Some(d), Some(i)) =
                    (&mut self.data_plane, frame_interval_ns(mode.refresh_mhz))
                {
                    let mut n = *d;
                    n.frame_interval_ns = i;
                    if n.validate().is_ok() {
                        *d = n;
                    }
                }
                Ok(vec![ClientAction::Reconfigured(r)])
            }
        }
    }

    fn on_welcome(&mut self, now_ns: u64, w: Welcome) -> Result<Vec<ClientAction>, ProtocolError> {
        if w.version != PROTOCOL_VERSION {
            return Err(ProtocolError::invalid(
                "Welcome.version",
                format!("expected {PROTOCOL_VERSION}, got {}", w.version),
            ));
        }
        if !self.req.probe_only
            && !Codec::try_from(w.codec).is_ok_and(|c| self.req.codecs.contains(&c))
        {
            return Err(ProtocolError::invalid(
                "Welcome.codec",
                "not one we offered",
            ));
        }
        let mode = w
            .mode
            .ok_or_else(|| ProtocolError::invalid("Welcome.mode", "missing"))?;
        let interval = frame_interval_ns(mode.refresh_mhz)
            .ok_or_else(|| ProtocolError::invalid("Welcome.mode", "refresh rate 0"))?;
        if mode.width == 0 || mode.height == 0 {
            return Err(ProtocolError::invalid("Welcome.mode", "zero size"));
        }
        let fec = w
            .fec
            .ok_or_else(|| ProtocolError::invalid("Welcome.fec", "missing"))?;
        let data_plane = fec_to_wire(&fec, interval)
            .map_err(|e| ProtocolError::invalid("Welcome.fec", e.to_string()))?;
        if w.data_addr.is_empty() || w.data_addr.len() > 256 {
            return Err(ProtocolError::invalid(
                "Welcome.data_addr",
                "empty or too long",
            ));
        }
        self.state = State::Running;
        self.data_plane = Some(data_plane);
        self.welcome = Some(w.clone());
        self.clock = ClockSync::new();
        self.clock_pending = Some((0, now_ns));
        Ok(vec![
            ClientAction::Welcomed(w),
            ClientAction::Send(Self::probe_msg(0, now_ns)),
        ])
    }

    fn on_echo(&mut self, now_ns: u64, e: ClockEcho) -> Result<Vec<ClientAction>, ProtocolError> {
        let Some((round, sent)) = self.clock_pending else {
            return Err(ProtocolError::Unexpected("ClockEcho without ClockProbe"));
        };
        if e.round != round || e.client_send_ns != sent {
            return Err(ProtocolError::invalid(
                "ClockEcho",
                format!(
                    "echo of round {} does not match the probe of round {round}",
                    e.round
                ),
            ));
        }
        // An inconsistent sample (host timestamps reversed, …) is counted and skipped.
        let _ = self.clock.add(ClockSample {
            client_send_ns: e.client_send_ns,
            host_recv_ns: e.host_recv_ns,
            host_send_ns: e.host_send_ns,
            client_recv_ns: now_ns,
        });
        let next = round + 1;
        if next < CLOCK_ROUNDS {
            self.clock_pending = Some((next, now_ns));
            return Ok(vec![send(client_message::Msg::ClockProbe(ClockProbe {
                round: next,
                client_send_ns: now_ns,
            }))]);
        }
        self.clock_pending = None;
        match self.clock.best() {
            Some(est) => {
                self.clock_done = Some(est);
                Ok(vec![ClientAction::ClockSynced(est)])
            }
            None => Err(ProtocolError::invalid(
                "ClockEcho",
                format!("no consistent clock sample in {CLOCK_ROUNDS} rounds"),
            )),
        }
    }
}
