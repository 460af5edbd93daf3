//! A launched GameStream session's shells: `/launch` state, RTSP on TCP (one request per
//! connection, answered by the core's `RtspSession`, then closed), the UDP ping ports, and the
//! ENet control stream (rusty_enet, a pure-Rust port of ENet 1.3, the wire protocol
//! moonlight-common-c speaks) decrypted by the core's `ControlSession`.
//!
//! The first video ping of an announced launch starts the orchestrator's session (media at the
//! negotiated mode, the core's video packetizer, the paced sender; see [`super::media`]); IDR
//! requests reach its encoder; `/cancel` or the client's ENet disconnect stops it. Audio goes
//! to where the audio pings come from (without its FEC parity yet, see [`super::media`]).
//! Input is decoded, counted and mapped into the session's seat by [`super::input`] (pads as
//! Moonlight announces them); the seat's rumble goes back over the control stream. The
//! client's FEC status reports and IDR/RFI requests are counted ([`VideoCounters`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punktfunk_gamestream::control::{
    ClientMessage, ControlSession, FecStatus, HostMessage, TERMINATION_GRACEFUL,
};
use punktfunk_gamestream::http::{LaunchMode, SessionKeys};
use punktfunk_gamestream::input::InputEvent;
use punktfunk_gamestream::rtsp::{self, RtspConfig, RtspEvent, RtspResponse, RtspSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::input::{GsInputMapper, rumble_message};
use super::{GameStream, lock, now};
use crate::input::SeatInput;

/// Clients connected over ENet at once (one stream per client; a few spares for retries).
const MAX_CONTROL_PEERS: usize = 8;
/// How long an RTSP connection may take to send its request.
const RTSP_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the ENet loop runs when nothing arrives (ACK latency feeds the client's RTT).
const ENET_TICK: Duration = Duration::from_millis(2);
/// How often the status line's input and video counters are refreshed while clients stream.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What `/launch` set up, until `/cancel`.
pub struct Launch {
    pub app_id: u32,
    pub mode: Option<LaunchMode>,
    pub keys: SessionKeys,
    pub connect_data: u32,
    /// The paired client that launched.
    pub client: punktfunk_tls::Fingerprint,
    ping_payload: [u8; 16],
    /// Where the client's audio pings come from (audio goes there).
    audio_addr: Mutex<Option<SocketAddr>>,
    rtsp: Mutex<RtspSession>,
    /// The stream, once the first video ping arrived (`Starting` while it comes up).
    session: Mutex<Streaming>,
    /// The client's input on its way into the seat.
    input: Mutex<LaunchInput>,
}

/// A launch's input: the mapper (from the first input packet on, so pads announced before the
/// stream starts are known when its seat opens) and the seat's queue once the stream runs.
#[derive(Default)]
struct LaunchInput {
    mapper: Option<GsInputMapper>,
    seat: Option<tokio::sync::mpsc::Sender<SeatInput>>,
}

enum Streaming {
    Idle,
    Starting,
    Running(Box<crate::session::Session>),
}

impl Launch {
    /// A launch offering `codecs`, with fresh ping payload and connect data.
    pub fn new(
        gs: &GameStream,
        app_id: u32,
        mode: Option<LaunchMode>,
        keys: SessionKeys,
        codecs: punktfunk_gamestream::xml::CodecSupport,
        client: punktfunk_tls::Fingerprint,
    ) -> Self {
        let connect_data = rtsp::new_connect_data();
        let ping_payload = rtsp::new_ping_payload();
        let cfg = RtspConfig {
            audio_port: gs.ports.audio(),
            video_port: gs.ports.video(),
            control_port: gs.ports.control(),
            session_token: format!("{:016X}", rand::random::<u64>()),
            ping_payload,
            connect_data,
            codecs,
            surround: false,
            // Control stream v2 and audio encryption, as Sunshine; video encryption is not
            // offered (spec §11.7: safe to omit).
            encryption_supported: rtsp::encryption::CONTROL_V2 | rtsp::encryption::AUDIO,
            encryption_requested: rtsp::encryption::CONTROL_V2,
            encryption_mandatory: false,
            feature_flags: 0,
        };
        Self {
            app_id,
            mode,
            keys,
            connect_data,
            client,
            ping_payload,
            audio_addr: Mutex::new(None),
            rtsp: Mutex::new(RtspSession::new(cfg)),
            session: Mutex::new(Streaming::Idle),
            input: Mutex::new(LaunchInput::default()),
        }
    }

    /// Asks the running stream's encoder for an IDR; whether the client will get one (a
    /// starting stream's first frame is an IDR; without a stream there is nothing to answer).
    fn keyframe(&self) -> bool {
        match &*lock(&self.session) {
            Streaming::Running(s) => {
                s.keyframe();
                true
            }
            Streaming::Starting => true,
            Streaming::Idle => false,
        }
    }

    /// The pads the seat should open with (those announced so far).
    fn pads(&self) -> Vec<punktfunk_proto::input::PadKind> {
        lock(&self.input)
            .mapper
            .as_ref()
            .map(GsInputMapper::pads)
            .unwrap_or_default()
    }

    /// The stream's seat is up: input goes into `seat` from now on. `opened_with` are the pads
    /// the seat was opened with; if more were announced meanwhile, the seat reopens with them.
    fn attach_seat(
        &self,
        seat: tokio::sync::mpsc::Sender<SeatInput>,
        opened_with: &[punktfunk_proto::input::PadKind],
    ) {
        let mut input = lock(&self.input);
        let pads = input
            .mapper
            .as_ref()
            .map(GsInputMapper::pads)
            .unwrap_or_default();
        if pads != opened_with {
            let _ = seat.try_send(SeatInput::Pads(pads));
        }
        input.seat = Some(seat);
    }

    /// Maps one input packet into the seat (counted as without a seat before the stream's seat
    /// is up, or when its queue is full).
    fn input(&self, e: &InputEvent, counters: &InputCounters) {
        let Some(output) = lock(&self.rtsp)
            .stream_config()
            .map(|c| (c.width, c.height))
        else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut input = lock(&self.input);
        let input = &mut *input;
        let mapped = input
            .mapper
            .get_or_insert_with(|| GsInputMapper::new(output))
            .map(e, now());
        let Some(seat) = &input.seat else {
            if mapped.event.is_some() {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        for entry in mapped.into_inputs() {
            let is_event = matches!(entry, SeatInput::Event(_));
            match seat.try_send(entry) {
                Ok(()) if is_event => {
                    counters.to_seat.fetch_add(1, Ordering::Relaxed);
                }
                Ok(()) => {}
                Err(_) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The control message for a seat's feedback, if Moonlight has one for it.
    fn feedback_message(&self, f: &punktfunk_proto::seat::SeatFeedback) -> Option<HostMessage> {
        rumble_message(f, lock(&self.input).mapper.as_ref()?)
    }

    /// Stops the stream, if one runs (media goes idle).
    pub async fn stop(&self, host: &crate::host::Host) {
        let running = std::mem::replace(&mut *lock(&self.session), Streaming::Idle);
        if let Streaming::Running(s) = running {
            let stats = s.stop(host).await;
            tracing::info!(?stats, "GameStream stream stopped");
        }
    }

    /// ANNOUNCE's stream configuration, once negotiated.
    fn control_v2(&self) -> Option<bool> {
        lock(&self.rtsp).stream_config().map(|c| c.control_v2)
    }
}

/// Input events from GameStream clients, by kind, and how many went into a seat.
#[derive(Default)]
pub struct InputCounters {
    pub keyboard: AtomicU64,
    pub mouse: AtomicU64,
    pub gamepad: AtomicU64,
    pub other: AtomicU64,
    /// Seat events queued to the session's seat.
    pub to_seat: AtomicU64,
    /// Events that had no seat to go to (before the stream started) or found its queue full.
    pub dropped: AtomicU64,
}

impl InputCounters {
    fn count(&self, e: &InputEvent) {
        let c = match e {
            InputEvent::Key { .. } | InputEvent::Text(_) => &self.keyboard,
            InputEvent::MouseMove { .. }
            | InputEvent::MousePosition { .. }
            | InputEvent::MouseButton { .. }
            | InputEvent::Scroll { .. }
            | InputEvent::HScroll { .. } => &self.mouse,
            InputEvent::Gamepad(_)
            | InputEvent::GamepadArrival { .. }
            | InputEvent::GamepadTouch { .. }
            | InputEvent::GamepadMotion { .. }
            | InputEvent::GamepadBattery { .. } => &self.gamepad,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether any event arrived yet.
    pub fn any(&self) -> bool {
        [&self.keyboard, &self.mouse, &self.gamepad, &self.other]
            .iter()
            .any(|c| c.load(Ordering::Relaxed) > 0)
    }

    /// For the status line.
    pub fn summary(&self) -> String {
        format!(
            "GameStream input: {} keyboard, {} mouse, {} gamepad events, {} queued for the seat, {} without one",
            self.keyboard.load(Ordering::Relaxed),
            self.mouse.load(Ordering::Relaxed),
            self.gamepad.load(Ordering::Relaxed),
            self.to_seat.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// How the client's video fared, from its control messages: FEC status reports (moonlight-common-c
/// sends one for every FEC block it had to repair or gave up on) and IDR/RFI requests (sent for
/// frames it could not rebuild).
#[derive(Default)]
pub struct VideoCounters {
    /// Data shards the client rebuilt from parity.
    pub fec_recovered_shards: AtomicU64,
    /// FEC blocks the client repaired.
    pub fec_recovered_blocks: AtomicU64,
    /// FEC blocks with too few shards to repair.
    pub fec_lost_blocks: AtomicU64,
    /// IDR requests and reference-frame invalidations received.
    pub idr_requests: AtomicU64,
    /// Of those, the ones a running stream's encoder was asked to answer with an IDR.
    pub idr_answered: AtomicU64,
}

impl VideoCounters {
    fn fec_status(&self, f: &FecStatus) {
        let (data, parity) = (u64::from(f.received_data), u64::from(f.received_parity));
        let total = u64::from(f.total_data);
        if data >= total {
            return;
        }
        if data + parity >= total {
            self.fec_recovered_shards
                .fetch_add(total - data, Ordering::Relaxed);
            self.fec_recovered_blocks.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fec_lost_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether there is anything to show.
    pub fn any(&self) -> bool {
        [
            &self.fec_recovered_blocks,
            &self.fec_lost_blocks,
            &self.idr_requests,
        ]
        .iter()
        .any(|c| c.load(Ordering::Relaxed) > 0)
    }

    /// For the status line.
    pub fn summary(&self) -> String {
        format!(
            "GameStream video: FEC recovered {} shards in {} blocks, {} blocks lost, {} IDR requests ({} answered)",
            self.fec_recovered_shards.load(Ordering::Relaxed),
            self.fec_recovered_blocks.load(Ordering::Relaxed),
            self.fec_lost_blocks.load(Ordering::Relaxed),
            self.idr_requests.load(Ordering::Relaxed),
            self.idr_answered.load(Ordering::Relaxed),
        )
    }
}

/// Serves RTSP until the listener fails: each connection carries one request.
pub async fn serve_rtsp(gs: Arc<GameStream>, listener: TcpListener) {
    loop {
        let Ok((mut tcp, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let gs = gs.clone();
        tokio::spawn(async move {
            let response =
                match tokio::time::timeout(RTSP_READ_TIMEOUT, read_request(&mut tcp)).await {
                    Ok(Ok(req)) => answer(&gs, &req),
                    Ok(Err(status)) => RtspResponse::error(status, 0),
                    Err(_) => return,
                };
            let _ = tcp.write_all(&response.to_bytes()).await;
            let _ = tcp.shutdown().await;
            tracing::debug!(%remote, status = response.status, "RTSP answered");
        });
    }
}

/// Reads one complete request (bounded by the core's head and body limits).
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Result<rtsp::RtspRequest, u16> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        match rtsp::parse_request(&buf) {
            Ok(Some((req, _))) => return Ok(req),
            Ok(None) => {}
            Err(_) => return Err(400),
        }
        if buf.len() > rtsp::MAX_HEAD + rtsp::MAX_BODY {
            return Err(400);
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn answer(gs: &GameStream, req: &rtsp::RtspRequest) -> RtspResponse {
    let Some(launch) = gs.current_launch() else {
        // No launch: nothing to set up (Sunshine answers 503 here too).
        return RtspResponse::error(503, req.cseq());
    };
    let (response, event) = lock(&launch.rtsp).handle(req);
    if let Some(RtspEvent::Announced(cfg)) = &event {
        tracing::info!(
            mode = %format!("{}x{}@{}", cfg.width, cfg.height, cfg.fps),
            codec = ?cfg.codec, packet_size = cfg.packet_size,
            audio_encryption = cfg.audio_encryption, "GameStream session announced"
        );
    }
    response
}

/// Binds the video and audio ping ports. A v2 ping (the launch's 16-byte ping payload, then a
/// counter) on the video port tells where the client receives video (spec §6.1); the first one
/// of an announced launch starts the stream. The audio port's pings tell where audio goes.
pub fn bind_ping_ports(gs: &Arc<GameStream>, ip: IpAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    for (port, video) in [(gs.ports.video(), true), (gs.ports.audio(), false)] {
        let socket = UdpSocket::bind(SocketAddr::new(ip, port))?;
        let gs = gs.clone();
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name(format!("gs-ping-{port}"))
            .spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let Some((payload, _)) = rtsp::parse_ping(&buf[..n]) else {
                        continue;
                    };
                    if video {
                        on_video_ping(&gs, &runtime, &payload, from);
                    } else if let Some(l) =
                        gs.current_launch().filter(|l| l.ping_payload == payload)
                    {
                        lock(&l.audio_addr).get_or_insert(from);
                    }
                }
            })?;
    }
    Ok(())
}

fn on_video_ping(
    gs: &Arc<GameStream>,
    runtime: &tokio::runtime::Handle,
    payload: &[u8],
    from: SocketAddr,
) {
    let Some(launch) = gs.current_launch().filter(|l| l.ping_payload == payload) else {
        return;
    };
    let Some(cfg) = lock(&launch.rtsp).stream_config().cloned() else {
        return;
    };
    {
        let mut s = lock(&launch.session);
        if !matches!(*s, Streaming::Idle) {
            return;
        }
        *s = Streaming::Starting;
    }
    let gs = gs.clone();
    runtime.spawn(async move {
        let end_gs = gs.clone();
        let end: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |reason: &str| {
            tracing::info!(reason, "GameStream session ended from outside");
            let gs = end_gs.clone();
            tokio::spawn(async move { gs.cancel().await });
        });
        let audio_addr = *lock(&launch.audio_addr);
        let pads = launch.pads();
        let started = super::media::start_session(
            &gs.host,
            &cfg,
            from,
            audio_addr,
            &launch.keys,
            super::media::StreamClient {
                fingerprint: launch.client,
                pads: pads.clone(),
                app_id: launch.app_id,
            },
            end,
        )
        .await;
        let mut s = lock(&launch.session);
        match started {
            Ok(mut session) => {
                tracing::info!(client = %from, "GameStream stream started");
                if let Some(port) = session.take_seat_port() {
                    launch.attach_seat(port.events, &pads);
                    tokio::spawn(forward_feedback(gs.clone(), port.feedback));
                }
                *s = Streaming::Running(Box::new(session));
            }
            Err(e) => {
                tracing::warn!(
                    code = e.code,
                    "GameStream stream did not start: {}",
                    e.message
                );
                *s = Streaming::Idle;
            }
        }
    });
}

/// Hands the seat's feedback to the ENet thread until the seat's link ends.
async fn forward_feedback(
    gs: Arc<GameStream>,
    mut feedback: tokio::sync::mpsc::Receiver<punktfunk_proto::seat::SeatFeedback>,
) {
    while let Some(f) = feedback.recv().await {
        let Some(msg) = gs.current_launch().and_then(|l| l.feedback_message(&f)) else {
            continue;
        };
        let sent = lock(&gs.control)
            .as_ref()
            .is_some_and(|tx| tx.send(ControlCommand::Send(msg)).is_ok());
        if !sent {
            break;
        }
    }
}

/// Commands for the ENet thread.
pub enum ControlCommand {
    /// Send the graceful termination (0x0109) to every connected client and disconnect it.
    TerminateAll,
    /// Send a message (feedback) to every connected client.
    Send(HostMessage),
}

/// Starts the ENet control server on its own thread.
pub fn start_control(
    gs: Arc<GameStream>,
    ip: IpAddr,
) -> anyhow::Result<std::sync::mpsc::Sender<ControlCommand>> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, gs.ports.control()))?;
    let host = rusty_enet::Host::new(
        socket,
        rusty_enet::HostSettings {
            peer_limit: MAX_CONTROL_PEERS,
            // (The default channel limit is ENet's maximum, 255: Moonlight opens 48.)
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("ENet host: {e:?}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gs-control".into())
        .spawn(move || control_loop(gs, host, rx))?;
    Ok(tx)
}

type EnetHost = rusty_enet::Host<UdpSocket>;

fn control_loop(
    gs: Arc<GameStream>,
    mut host: EnetHost,
    commands: std::sync::mpsc::Receiver<ControlCommand>,
) {
    let mut sessions: HashMap<rusty_enet::PeerID, ControlSession> = HashMap::new();
    let mut status_at = std::time::Instant::now();
    loop {
        if !sessions.is_empty() && status_at.elapsed() >= STATUS_EVERY {
            // The counters the control stream feeds, in the status line while clients stream.
            gs.refresh_status();
            status_at = std::time::Instant::now();
        }
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                ControlCommand::TerminateAll => terminate_all(&mut host, &mut sessions),
                ControlCommand::Send(msg) => send_all(&mut host, &mut sessions, &msg),
            }
        }
        match host.service() {
            Ok(Some(event)) => on_event(&gs, event.no_ref(), &mut host, &mut sessions),
            Ok(None) => std::thread::sleep(ENET_TICK),
            Err(e) => {
                tracing::warn!(error = ?e, "ENet service failed");
                std::thread::sleep(ENET_TICK);
            }
        }
    }
}

fn on_event(
    gs: &GameStream,
    event: rusty_enet::EventNoRef,
    host: &mut EnetHost,
    sessions: &mut HashMap<rusty_enet::PeerID, ControlSession>,
) {
    match event {
        rusty_enet::EventNoRef::Connect { peer, data } => {
            // Bind the peer to the launch whose connect data it sent (spec §8.1).
            let launch = gs
                .current_launch()
                .filter(|l| l.connect_data == data)
                .and_then(|l| Some((l.keys.rikey, l.control_v2()?)));
            match launch {
                Some((rikey, v2)) => {
                    tracing::info!("GameStream control stream connected");
                    sessions.insert(peer, ControlSession::new(&rikey, v2, now()));
                }
                None => {
                    tracing::info!("ENet connect with unknown connect data refused");
                    host.peer_mut(peer).disconnect_now(0);
                }
            }
        }
        rusty_enet::EventNoRef::Receive { peer, packet, .. } => {
            let Some(s) = sessions.get_mut(&peer) else {
                return;
            };
            match s.handle_packet(now(), packet.data()) {
                Ok(ClientMessage::Input(e)) => {
                    gs.input.count(&e);
                    if let Some(l) = gs.current_launch() {
                        l.input(&e, &gs.input);
                    }
                }
                Ok(ClientMessage::IdrRequest | ClientMessage::RefInvalidation { .. }) => {
                    // RFI is not advertised; an IDR answers both.
                    gs.video.idr_requests.fetch_add(1, Ordering::Relaxed);
                    if gs.current_launch().is_some_and(|l| l.keyframe()) {
                        gs.video.idr_answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(ClientMessage::FecStatus(f)) => gs.video.fec_status(&f),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "control packet dropped"),
            }
        }
        rusty_enet::EventNoRef::Disconnect { peer, .. } => {
            if sessions.remove(&peer).is_some() {
                // The client left (quit or lost): the stream stops, the app stays launched
                // (spec §8.4: Moonlight may resume it).
                tracing::info!("GameStream control stream disconnected");
                if let Some(l) = gs.current_launch() {
                    let host = gs.host.clone();
                    gs.runtime.spawn(async move { l.stop(&host).await });
                }
            }
        }
    }
}

fn send_all(
    host: &mut EnetHost,
    sessions: &mut HashMap<rusty_enet::PeerID, ControlSession>,
    msg: &HostMessage,
) {
    for (peer, s) in sessions.iter_mut() {
        match s.seal(msg) {
            Ok(bytes) => {
                let _ = host
                    .peer_mut(*peer)
                    .send(0, &rusty_enet::Packet::reliable(bytes.as_slice()));
            }
            Err(e) => tracing::debug!(error = %e, "control message not sealed"),
        }
    }
    host.flush();
}

fn terminate_all(host: &mut EnetHost, sessions: &mut HashMap<rusty_enet::PeerID, ControlSession>) {
    for (peer, mut s) in sessions.drain() {
        if let Ok(bytes) = s.seal(&HostMessage::Termination(TERMINATION_GRACEFUL)) {
            let p = host.peer_mut(peer);
            let _ = p.send(0, &rusty_enet::Packet::reliable(bytes.as_slice()));
            p.disconnect_later(0);
        }
    }
    host.flush();
}
