//! A session stream: `punktfunk-control`'s [`HostSession`] negotiates with the client, and the
//! orchestrator ([`crate::session::Session`]) runs what it resolved.
//!
//! The steps: [`admit`] (paired, or the host is open), [`policy`] (what this host offers, narrowed
//! to what media accepts), then [`Driver::run`] feeds client messages to the state machine and
//! carries out its actions until the session ends, and [`Driver::finish`] tears it down.

use std::net::{IpAddr, SocketAddr};

use punktfunk_control::error::{CODE_INTERNAL, CODE_PAIRING_REQUIRED, CODE_PROTOCOL};
use punktfunk_control::host::{HostAction, HostPolicy, HostSession, ResolvedSession};
use punktfunk_control::keys::Direction;
use punktfunk_dataplane::{PacingChoice, PacingMode};
use punktfunk_proto::control::{
    ClientMessage, GamepadKind, ProbeResult, VideoPayload, client_message,
};
use punktfunk_proto::input::PadKind;
use punktfunk_quic::RecvError;
use tokio::task::JoinSet;

use super::{Reader, Stream, close, error_msg};
use crate::config::Source;
use crate::media::{self, MediaEvent};
use crate::session::{ProbeStats, Protocol, Session, SessionEvent, SessionSpec};
use crate::stream::now_ns;

/// Why a session ended, for the log.
struct End(String);

/// Runs the session that `first` (a `Hello`) began.
pub(super) async fn run(mut s: Stream, reader: Reader, first: ClientMessage) {
    if !admit(&mut s).await {
        return;
    }
    let id = s.host.next_session_id();
    let pacing = decide_pacing(&s).await;
    let mut policy = policy(&s, id).await;
    policy.pacing = punktfunk_control::keys::pacing_to_proto(pacing);
    let pacing = match pacing {
        PacingMode::KernelFq => PacingChoice::Kernel,
        PacingMode::UserSpace | PacingMode::Off => PacingChoice::UserSpace,
    };
    let machine = match HostSession::new(policy) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e.0, "invalid session policy (check [fec] in transport.toml)");
            let m = error_msg(CODE_INTERNAL, format!("host misconfigured: {}", e.0));
            s.refuse(m, close::PROTOCOL, "policy").await;
            return;
        }
    };
    let pads = pads(&first);
    let mut driver = Driver {
        s,
        reader,
        machine,
        live: None,
        probes: JoinSet::new(),
        pads,
        input: None,
        pacing,
    };
    let end = driver.run(first).await;
    driver.finish(end).await;
}

/// Whether this client may stream; an unpaired one is told how to pair and refused.
async fn admit(s: &mut Stream) -> bool {
    if s.host.may_stream(&s.fp) {
        return true;
    }
    tracing::warn!(client = %s.fp.short(), remote = %s.conn.remote_address(), "refused an unpaired client");
    let m = error_msg(
        CODE_PAIRING_REQUIRED,
        format!(
            "this host requires pairing: run `punktfunkctl pair` on {} and then `punktfunk-client pair --pin <PIN> <host>`",
            s.host.host_name
        ),
    );
    s.refuse(m, close::PAIRING_REQUIRED, "pairing required")
        .await;
    false
}

/// How this client's video will be paced (the route to it: `fq` or not), decided before the
/// `Welcome` that tells the client; the video sender is then started with this decision.
async fn decide_pacing(s: &Stream) -> PacingMode {
    let peer = s.conn.remote_address().ip();
    let (mode, why) =
        tokio::task::spawn_blocking(move || punktfunk_dataplane::pacing_for_peer(peer))
            .await
            .unwrap_or((
                PacingMode::UserSpace,
                Some("the pacing probe failed".into()),
            ));
    tracing::info!(client = %s.fp.short(), pacing = %mode, why = why.as_deref().unwrap_or(""), "video pacing");
    mode
}

/// What this host offers the session: its configuration, narrowed to what media accepts.
async fn policy(s: &Stream, id: u64) -> HostPolicy {
    let host = &s.host;
    let local_ip = s
        .conn
        .local_ip()
        .unwrap_or_else(|| host.config.bind.parse().unwrap_or(IpAddr::from([0u8; 16])));
    let mut policy = HostPolicy::new(
        host.host_name.clone(),
        SocketAddr::new(local_ip, 0).to_string(),
        id,
    );
    policy.max_bitrate_kbps = host.config.max_bitrate_kbps;
    policy.max_probe_kbps = host.config.max_bitrate_kbps;
    policy.fec = host.config.fec.to_proto();
    match host.config.source {
        Source::Synthetic => {
            // Verifiable bytes, not a bitstream, and no audio.
            policy.payload = VideoPayload::Synthetic;
            policy.audio = None;
        }
        Source::Test | Source::Compositor => {
            policy.payload = VideoPayload::Encoded;
            if let Some(dir) = &host.runtime_dir {
                media::limits(dir).await.apply(&mut policy);
            }
        }
    }
    policy
}

/// The pads the Hello brings, for the session's input seat (at most
/// `punktfunk-input`'s limit; unknown kinds become Xbox pads).
fn pads(hello: &ClientMessage) -> Vec<PadKind> {
    let Some(client_message::Msg::Hello(h)) = &hello.msg else {
        return Vec::new();
    };
    h.gamepads
        .iter()
        .take(MAX_PADS)
        .map(|k| match GamepadKind::try_from(*k) {
            Ok(GamepadKind::Dualsense) => PadKind::Dualsense,
            _ => PadKind::Xbox,
        })
        .collect()
}

/// Pads one seat may have (punktfunk-input refuses more).
const MAX_PADS: usize = punktfunk_proto::limits::MAX_SEAT_PADS;

/// A negotiated session stream and what runs for it.
struct Driver {
    s: Stream,
    reader: Reader,
    machine: HostSession,
    live: Option<Session>,
    probes: JoinSet<ProbeStats>,
    /// The client's pads, for its input seat.
    pads: Vec<PadKind>,
    /// The input datagram pump (punktfunk/1 ⇄ the session's seat).
    input: Option<tokio::task::JoinHandle<()>>,
    /// Who paces the video (told to the client in `Welcome.pacing`).
    pacing: PacingChoice,
}

impl Driver {
    /// Feeds messages to the state machine and carries out its actions until the session ends.
    async fn run(&mut self, first: ClientMessage) -> End {
        let mut msg = first;
        loop {
            let actions = match self.machine.on_message(now_ns(), msg) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(client = %self.s.fp.short(), error = %e, "protocol error; ending the session");
                    let m = HostSession::error_message(&e);
                    self.s.refuse(m, close::PROTOCOL, "protocol error").await;
                    return End(format!("protocol error: {e}"));
                }
            };
            for action in actions {
                if let Err(end) = self.act(action).await {
                    return end;
                }
            }
            msg = match self.next_message().await {
                Ok(m) => m,
                Err(end) => return end,
            };
        }
    }

    /// Carries out one action of the state machine.
    async fn act(&mut self, action: HostAction) -> Result<(), End> {
        let client = self.s.fp.short();
        match action {
            HostAction::Send(m) => self
                .s
                .send(&m)
                .await
                .map_err(|e| End(format!("send failed: {e}")))?,
            HostAction::StartStream(resolved) | HostAction::StartProbeSession(resolved) => {
                self.start(resolved).await?
            }
            HostAction::Reconfigure { mode, bitrate_kbps } => {
                if let Some(l) = &self.live {
                    l.reconfigure(mode, bitrate_kbps);
                    tracing::info!(%client, bitrate_kbps, "reconfigured");
                }
            }
            HostAction::Keyframe { lost_frame } => {
                if let Some(l) = &self.live {
                    l.keyframe();
                    tracing::debug!(%client, lost_frame, "keyframe requested");
                }
            }
            HostAction::StartProbe { kbps, duration_ms } => self.start_probe(kbps, duration_ms),
            HostAction::Stats(s) => {
                tracing::debug!(%client, frames = s.frames_received, lost = s.frames_lost, "client stats");
            }
            HostAction::RefInvalidate {
                first_frame,
                last_frame,
            } => {
                // Reference invalidation is not in the media API (yet): an IDR repairs the same
                // loss, at a higher cost.
                if let Some(l) = &self.live {
                    l.keyframe();
                }
                tracing::debug!(%client, first_frame, last_frame, "reference invalidation");
            }
            HostAction::Close { reason } => {
                let _ = self.s.send.finish();
                return Err(End(format!("session closed: {reason}")));
            }
        }
        Ok(())
    }

    /// Hands the resolved session to the orchestrator; a refusal is told to the client.
    async fn start(&mut self, r: ResolvedSession) -> Result<(), End> {
        let key = punktfunk_quic::export_key(&self.s.conn, r.session_id, Direction::HostToClient)
            .map_err(|e| End(e.to_string()))?;
        let conn = self.s.conn.clone();
        let output = (r.mode.width, r.mode.height);
        let spec = SessionSpec {
            protocol: Protocol::Native,
            id: r.session_id,
            client_name: r.client_name,
            fingerprint: self.s.fp,
            client_addr: SocketAddr::new(self.s.conn.remote_address().ip(), r.data_port),
            mode: r.mode,
            codec: r.codec,
            bitrate_kbps: r.bitrate_kbps,
            audio: r.audio.is_some(),
            probe_only: r.probe_only,
            data_plane: r.data_plane,
            pads: self.pads.clone(),
            key,
            end: std::sync::Arc::new(move |reason| {
                conn.close(close::UNPAIRED.into(), reason.as_bytes())
            }),
            video_packetizer: None,
            audio_packetizer: None,
            pacing: self.pacing,
            app: r.app,
            compositor: r.compositor,
        };
        match Session::start(&self.s.host, spec).await {
            Ok(mut l) => {
                if let Some(port) = l.take_seat_port() {
                    let conn = self.s.conn.clone();
                    self.input = Some(tokio::spawn(super::input::pump(conn, port, output)));
                }
                self.live = Some(l);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(client = %self.s.fp.short(), code = e.code, "session refused: {}", e.message);
                let m = error_msg(e.code, e.message.clone());
                self.s.refuse(m, close::REFUSED, e.code).await;
                Err(End(e.message))
            }
        }
    }

    fn start_probe(&mut self, kbps: u32, duration_ms: u32) {
        let Some(l) = &self.live else { return };
        let key = punktfunk_quic::export_key(&self.s.conn, l.id(), Direction::HostToClient);
        match key
            .map_err(|e| e.to_string())
            .and_then(|key| l.start_probe(key, kbps, duration_ms).map_err(|e| e.message))
        {
            Ok(task) => {
                self.probes.spawn(task);
            }
            Err(e) => tracing::warn!("speed test failed to start: {e}"),
        }
    }

    /// The next client message; meanwhile, report finished speed tests and a media refusal.
    async fn next_message(&mut self) -> Result<ClientMessage, End> {
        loop {
            tokio::select! {
                m = self.reader.next() => return match m {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(End("client finished the stream".into())),
                    Err(RecvError::Malformed(e)) => {
                        let m = error_msg(CODE_PROTOCOL, format!("malformed control message: {e}"));
                        self.s.refuse(m, close::PROTOCOL, "malformed").await;
                        Err(End(format!("malformed message: {e}")))
                    }
                    Err(e @ RecvError::Lost(_)) => Err(End(e.to_string())),
                },
                ev = session_event(&mut self.live) => match ev {
                    SessionEvent::Media(ev) => self.on_media_event(ev).await?,
                    SessionEvent::ClientGone { refused } => {
                        return Err(End(format!(
                            "the client's data port is closed ({refused} sends refused): the client is gone"
                        )));
                    }
                },
                Some(done) = self.probes.join_next() => {
                    if let Ok(stats) = done {
                        let m = self.machine.probe_finished(probe_result(stats));
                        self.s.send(&m).await.map_err(|e| End(format!("send failed: {e}")))?;
                    }
                }
            }
        }
    }

    /// A refused restart ends the session with media's reason; a refused reconfiguration
    /// tells the client what still holds.
    async fn on_media_event(&mut self, ev: MediaEvent) -> Result<(), End> {
        match ev {
            MediaEvent::Refused(e) => {
                let m = error_msg(e.client_code(), e.to_string());
                self.s.refuse(m, close::REFUSED, e.client_code()).await;
                Err(End(e.to_string()))
            }
            MediaEvent::Kept {
                mode,
                bitrate_kbps,
                reason,
            } => {
                tracing::info!(client = %self.s.fp.short(), bitrate_kbps, %reason, "told the client its reconfiguration was refused");
                match self.machine.reconfigure_refused(mode, bitrate_kbps) {
                    Some(m) => self
                        .s
                        .send(&m)
                        .await
                        .map_err(|e| End(format!("send failed: {e}"))),
                    None => Ok(()),
                }
            }
        }
    }

    /// Stops whatever runs for the session and logs why it ended.
    async fn finish(mut self, end: End) {
        self.probes.abort_all();
        if let Some(input) = self.input.take() {
            input.abort();
        }
        let client = self.s.fp.short();
        match self.live.take() {
            Some(l) => {
                let stats = l.stop(&self.s.host).await;
                tracing::info!(%client, reason = %end.0, frames_sent = stats.frames_sent, packets = stats.packets_sent, send_drops = stats.send_drop_packets, queue_drops = stats.frames_dropped_queue, "session ended");
            }
            None => tracing::info!(%client, reason = %end.0, "session ended before streaming"),
        }
    }
}

/// The next event of the running session; never before it runs.
async fn session_event(live: &mut Option<Session>) -> SessionEvent {
    match live {
        Some(l) => l.event().await,
        None => std::future::pending().await,
    }
}

fn probe_result(s: ProbeStats) -> ProbeResult {
    ProbeResult {
        packets_sent: s.packets_sent,
        bytes_sent: s.bytes_sent,
        send_drops: s.send_drops,
        duration_ms: s.duration_ms,
    }
}
