//! The punktfunk/1 QUIC endpoint: a thin shell around `punktfunk-control`'s state machines.
//!
//! Every bidirectional stream a client opens is either a **pairing** stream (first message
//! `PairStart`) or a **session** stream (first message `Hello`). Bytes go through the bounded
//! `FrameDecoder`; whatever the state machines reject ends that stream — and the connection —
//! with a clear `Error` message, never the daemon. A client that is not paired never gets past
//! `Hello`: it is told how to pair and no data-plane socket is ever opened towards it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use punktfunk_control::framing::{self, FrameDecoder};
use punktfunk_control::host::{HostAction, HostPolicy, HostSession};
use punktfunk_control::keys::{self, Direction};
use punktfunk_control::pairing::{PairingError, PairingHost, PairingHostStep};
use punktfunk_proto::control::{
    ClientMessage, HostMessage, ProbeResult, client_message, host_message,
};

use punktfunk_tls::{Fingerprint, peer_fingerprint};
use punktfunk_wire::StreamKind;
use punktfunk_wire::synthetic::SyntheticConfig;

use crate::config::SourceKind;
use crate::host::{Host, SessionEntry, close};
use crate::media::{self, MediaPlan, MediaSession, Outputs};
use crate::pump::PumpShared;
use crate::stream::{DataPlane, connect_socket};
use punktfunk_dataplane::{Sender, SenderConfig};
use punktfunk_proto::control::VideoPayload;
use punktfunk_proto::media::SourceKind as MediaSource;

const READ_CHUNK: usize = 16 * 1024;

/// Binds the endpoint; the returned future serves it until the endpoint is closed.
pub fn bind(host: &Host) -> Result<quinn::Endpoint, String> {
    let crypto = host.identity.server_config().map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_millis(host.config.idle_timeout_ms);
    transport.max_idle_timeout(Some(
        idle.try_into().map_err(|e| format!("idle timeout: {e}"))?,
    ));
    // A client opens one session stream and, rarely, a pairing stream.
    transport.max_concurrent_bidi_streams(4u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let ip: IpAddr = host
        .config
        .bind
        .parse()
        .map_err(|e| format!("bind address: {e}"))?;
    let addr = SocketAddr::new(ip, host.config.port);
    quinn::Endpoint::server(server, addr).map_err(|e| {
        format!("cannot listen on UDP {addr}: {e} (is another punktfunk-transport running? set `port` in transport.toml)")
    })
}

/// Accepts connections until the endpoint closes.
pub async fn serve(host: Arc<Host>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let host = host.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(host, conn).await,
                Err(e) => tracing::debug!(%remote, error = %e, "QUIC handshake failed"),
            }
        });
    }
}

async fn connection(host: Arc<Host>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(fp) = peer_fingerprint(&conn) else {
        conn.close(close::PROTOCOL.into(), b"a client certificate is required");
        return;
    };
    tracing::debug!(%remote, client = %fp.short(), "connection");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (host, conn) = (host.clone(), conn.clone());
                tokio::spawn(async move { stream(host, conn, fp, send, recv).await });
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection ended");
                return;
            }
        }
    }
}

/// Reads messages off a QUIC stream through the bounded decoder.
struct Reader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder<ClientMessage>,
    ready: std::collections::VecDeque<ClientMessage>,
    buf: Vec<u8>,
}

enum ReadError {
    /// The peer finished the stream.
    Finished,
    /// The connection or stream broke (client gone, idle timeout, reset).
    Lost(String),
    /// The bytes are not valid framed protobuf.
    Malformed(String),
}

impl Reader {
    fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(),
            ready: Default::default(),
            buf: vec![0; READ_CHUNK],
        }
    }

    async fn next(&mut self) -> Result<ClientMessage, ReadError> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(m);
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => {
                    let msgs = self
                        .decoder
                        .push(&self.buf[..n])
                        .map_err(|e| ReadError::Malformed(e.to_string()))?;
                    self.ready.extend(msgs);
                }
                Ok(None) => {
                    return match self.decoder.finish() {
                        Ok(()) => Err(ReadError::Finished),
                        Err(e) => Err(ReadError::Malformed(e.to_string())),
                    };
                }
                Err(e) => return Err(ReadError::Lost(e.to_string())),
            }
        }
    }
}

async fn send_msg(send: &mut quinn::SendStream, msg: &HostMessage) -> Result<(), String> {
    let bytes = framing::encode_to_vec(msg).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

fn error_msg(code: &str, message: impl Into<String>) -> HostMessage {
    HostMessage {
        msg: Some(host_message::Msg::Error(punktfunk_proto::control::Error {
            message: message.into(),
            code: code.to_string(),
        })),
    }
}

/// Sends a final error, finishes the stream and closes the connection with `code`.
async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    msg: HostMessage,
    code: u32,
    reason: &str,
) {
    let _ = send_msg(send, &msg).await;
    let _ = send.finish();
    // Let the error reach the client before the close frame overtakes it.
    let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    conn.close(code.into(), reason.as_bytes());
}

async fn stream(
    host: Arc<Host>,
    conn: quinn::Connection,
    fp: Fingerprint,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = Reader::new(recv);
    let first = match reader.next().await {
        Ok(m) => m,
        Err(ReadError::Malformed(e)) => {
            refuse(
                &conn,
                &mut send,
                error_msg(
                    punktfunk_control::error::CODE_PROTOCOL,
                    format!("malformed control message: {e}"),
                ),
                close::PROTOCOL,
                "malformed",
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    match first.msg {
        Some(client_message::Msg::PairStart(_)) => {
            pairing(host, conn, fp, send, reader, first).await
        }
        Some(client_message::Msg::Hello(_)) => session(host, conn, fp, send, reader, first).await,
        _ => {
            let m = error_msg(
                punktfunk_control::error::CODE_PROTOCOL,
                "the first message on a stream must be Hello (a session) or PairStart (pairing)",
            );
            refuse(
                &conn,
                &mut send,
                m,
                close::PROTOCOL,
                "expected Hello or PairStart",
            )
            .await;
        }
    }
}

/// Ends a failed pairing attempt with the ceremony's own words.
async fn refuse_pairing(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    host: &Host,
    e: &PairingError,
) {
    let m = e.to_host_message(&host.host_name);
    refuse(conn, send, m, close::PAIRING_FAILED, "pairing failed").await;
}

async fn pairing(
    host: Arc<Host>,
    conn: quinn::Connection,
    fp: Fingerprint,
    mut send: quinn::SendStream,
    mut reader: Reader,
    first: ClientMessage,
) {
    let remote = conn.remote_address();
    let client_name = match &first.msg {
        Some(client_message::Msg::PairStart(p)) => p.client_name.clone(),
        _ => String::new(),
    };
    let failed = |reason: &str| host.pairing_failed(remote, &client_name, reason);
    // One attempt per armed PIN: taking it closes the window, right or wrong. The status line
    // is refreshed after the window's lock is released (Host never nests its locks).
    let taken = host.take_pin(Instant::now());
    host.refresh_status();
    let pin = match taken {
        Ok(pin) => pin,
        Err(closed) => {
            failed(&closed.to_string());
            host.refresh_status();
            let m = PairingError::Rejected(closed.to_string()).to_host_message(&host.host_name);
            refuse(
                &conn,
                &mut send,
                m,
                close::PAIRING_FAILED,
                "pairing not armed",
            )
            .await;
            return;
        }
    };
    let mut machine = match PairingHost::new(
        &pin,
        host.identity.fingerprint.0,
        fp.0,
        host.host_name.clone(),
    ) {
        Ok(m) => m,
        Err(e) => {
            failed(&e.to_string());
            refuse_pairing(&conn, &mut send, &host, &e).await;
            return;
        }
    };
    let mut msg = first;
    loop {
        match machine.on_message(msg) {
            Ok(PairingHostStep::Reply(reply)) => {
                if send_msg(&mut send, &reply).await.is_err() {
                    failed("the client left during the ceremony");
                    return;
                }
            }
            Ok(PairingHostStep::Paired { reply, client }) => {
                finish_pairing(&host, &conn, &mut send, reply, client).await;
                return;
            }
            Err(e) => {
                failed(&e.to_string());
                refuse_pairing(&conn, &mut send, &host, &e).await;
                return;
            }
        }
        msg = match reader.next().await {
            Ok(m) => m,
            Err(ReadError::Malformed(e)) => {
                failed(&format!("malformed pairing message: {e}"));
                let m = PairingError::Rejected(format!("malformed pairing message: {e}"))
                    .to_host_message(&host.host_name);
                refuse(&conn, &mut send, m, close::PAIRING_FAILED, "malformed").await;
                return;
            }
            Err(_) => {
                failed("the client left during the ceremony");
                return;
            }
        };
    }
}

/// Stores a client whose ceremony succeeded, then tells it so; a failed write refuses it
/// (nothing was admitted: the store changes memory only after the file is written).
async fn finish_pairing(
    host: &Host,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reply: HostMessage,
    client: punktfunk_control::pairing::Paired,
) {
    let client_fp = Fingerprint(client.client_fp);
    match host.add_paired(client_fp, &client.client_name, "punktfunk/1") {
        Ok(c) => {
            tracing::info!(client = %c.name, fingerprint = %client_fp.short(), "paired");
            let _ = send_msg(send, &reply).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
        Err(e) => {
            tracing::error!(client = %client.client_name, "pairing not stored: {e}");
            let m = PairingError::Rejected(format!("the host could not store the pairing: {e}"))
                .to_host_message(&host.host_name);
            refuse(conn, send, m, close::PAIRING_FAILED, "store failed").await;
        }
    }
}

async fn session(
    host: Arc<Host>,
    conn: quinn::Connection,
    fp: Fingerprint,
    mut send: quinn::SendStream,
    mut reader: Reader,
    first: ClientMessage,
) {
    if !host.may_stream(&fp) {
        tracing::warn!(client = %fp.short(), remote = %conn.remote_address(), "refused an unpaired client");
        let m = error_msg(
            "pairing-required",
            format!(
                "this host requires pairing: run `punktfunkctl pair` on {} and then `punktfunk-client pair --pin <PIN> <host>`",
                host.host_name
            ),
        );
        refuse(
            &conn,
            &mut send,
            m,
            close::PAIRING_REQUIRED,
            "pairing required",
        )
        .await;
        return;
    }
    let session_id = host.next_session_id();
    let local_ip = conn
        .local_ip()
        .unwrap_or_else(|| host.config.bind.parse().unwrap_or(IpAddr::from([0u8; 16])));
    let mut policy = HostPolicy::new(
        host.host_name.clone(),
        SocketAddr::new(local_ip, 0).to_string(),
        session_id,
    );
    policy.max_bitrate_kbps = host.config.max_bitrate_kbps;
    policy.max_probe_kbps = host.config.max_bitrate_kbps;
    policy.fec = punktfunk_proto::control::FecConfig {
        shard_bytes: host.config.fec.shard_bytes,
        max_data_shards: host.config.fec.max_data_shards,
        parity_permille: host.config.fec.parity_permille,
        parity_floor: host.config.fec.parity_floor,
        max_frame_bytes: host.config.fec.max_frame_bytes,
        frames_in_flight: host.config.fec.frames_in_flight,
    };
    match host.config.source {
        SourceKind::Synthetic => {
            // Verifiable bytes, not a bitstream, and no audio.
            policy.payload = VideoPayload::Synthetic;
            policy.audio = None;
        }
        SourceKind::Test | SourceKind::Compositor => {
            policy.payload = VideoPayload::Encoded;
            if let Some(dir) = &host.runtime_dir {
                media::limits(dir).await.apply(&mut policy);
            }
        }
    }
    let mut machine = match HostSession::new(policy) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e.0, "invalid session policy (check [fec] in transport.toml)");
            refuse(
                &conn,
                &mut send,
                error_msg(
                    punktfunk_control::error::CODE_INTERNAL,
                    format!("host misconfigured: {}", e.0),
                ),
                close::PROTOCOL,
                "policy",
            )
            .await;
            return;
        }
    };
    let mut live: Option<Live> = None;
    let mut probes = tokio::task::JoinSet::new();
    let mut msg = first;
    let end_reason: String = 'session: loop {
        let actions = match machine.on_message(crate::stream::now_ns(), msg) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(client = %fp.short(), error = %e, "protocol error; ending the session");
                let m = HostSession::error_message(&e);
                refuse(&conn, &mut send, m, close::PROTOCOL, "protocol error").await;
                break 'session format!("protocol error: {e}");
            }
        };
        for action in actions {
            match action {
                HostAction::Send(m) => {
                    if let Err(e) = send_msg(&mut send, &m).await {
                        break 'session format!("send failed: {e}");
                    }
                }
                HostAction::StartStream(resolved) | HostAction::StartProbeSession(resolved) => {
                    match start_stream(&host, &conn, fp, &resolved).await {
                        Ok((l, entry)) => {
                            // Registered before anything can end the session, so teardown
                            // (which removes the entry) always finds it.
                            host.insert_session(l.session_id, entry);
                            live = Some(l);
                            host.refresh_status();
                        }
                        Err(e) => {
                            tracing::warn!(client = %fp.short(), code = e.code, "session refused: {}", e.message);
                            refuse(
                                &conn,
                                &mut send,
                                error_msg(e.code, e.message.clone()),
                                close::REFUSED,
                                e.code,
                            )
                            .await;
                            break 'session e.message;
                        }
                    }
                }
                HostAction::Reconfigure { mode, bitrate_kbps } => {
                    if let Some(l) = &live {
                        l.reconfigure(mode, bitrate_kbps);
                        tracing::info!(client = %fp.short(), bitrate_kbps, "reconfigured");
                    }
                }
                HostAction::Keyframe { lost_frame } => {
                    if let Some(l) = &live {
                        l.keyframe();
                        tracing::debug!(client = %fp.short(), lost_frame, "keyframe requested");
                    }
                }
                HostAction::StartProbe { kbps, duration_ms } => {
                    if let Some(l) = &live {
                        match l.start_probe(&conn, kbps, duration_ms) {
                            Ok(task) => {
                                probes.spawn(task);
                            }
                            Err(e) => tracing::warn!("speed test failed to start: {e}"),
                        }
                    }
                }
                HostAction::Stats(s) => {
                    tracing::debug!(client = %fp.short(), frames = s.frames_received, lost = s.frames_lost, "client stats");
                }
                HostAction::RefInvalidate {
                    first_frame,
                    last_frame,
                } => {
                    // Reference invalidation is not in the media API (yet): an IDR repairs
                    // the same loss, at a higher cost.
                    if let Some(l) = &live {
                        l.keyframe();
                    }
                    tracing::debug!(client = %fp.short(), first_frame, last_frame, "reference invalidation");
                }
                HostAction::Close { reason } => {
                    let _ = send.finish();
                    break 'session format!("session closed: {reason}");
                }
            }
        }
        // Wait for the next message, or a finished speed test to report.
        msg = loop {
            tokio::select! {
                m = reader.next() => match m {
                    Ok(m) => break m,
                    Err(ReadError::Malformed(e)) => {
                        let m = error_msg(punktfunk_control::error::CODE_PROTOCOL, format!("malformed control message: {e}"));
                        refuse(&conn, &mut send, m, close::PROTOCOL, "malformed").await;
                        break 'session format!("malformed message: {e}");
                    }
                    Err(ReadError::Finished) => break 'session "client finished the stream".into(),
                    Err(ReadError::Lost(e)) => break 'session format!("connection lost: {e}"),
                },
                e = media_refused(&mut live) => {
                    let m = error_msg(e.client_code(), e.to_string());
                    refuse(&conn, &mut send, m, close::REFUSED, e.client_code()).await;
                    break 'session e.to_string();
                }
                Some(done) = probes.join_next() => {
                    if let Ok(result) = done {
                        let m = machine.probe_finished(result);
                        if let Err(e) = send_msg(&mut send, &m).await {
                            break 'session format!("send failed: {e}");
                        }
                    }
                }
            }
        };
    };
    probes.abort_all();
    if let Some(l) = live {
        let stats = l.stop(&host).await;
        tracing::info!(client = %fp.short(), reason = %end_reason, frames_sent = stats.frames_sent, packets = stats.packets_sent, send_drops = stats.send_drop_packets, queue_drops = stats.frames_dropped_queue, "session ended");
    } else {
        tracing::info!(client = %fp.short(), reason = %end_reason, "session ended before streaming");
    }
    host.refresh_status();
    // A session's threads and buffers are gone: hand their memory back to the kernel.
    let _ = tokio::task::spawn_blocking(punktfunk_common::alloc::trim).await;
}

/// Why a session could not start, as the client is told: a machine-readable `Error.code` (one
/// of `punktfunk_control::error`'s) and a human message.
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn internal(message: impl Into<String>) -> Self {
        Self {
            code: punktfunk_control::error::CODE_INTERNAL,
            message: message.into(),
        }
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self::internal(message)
    }
}

impl From<media::MediaError> for Refusal {
    fn from(e: media::MediaError) -> Self {
        Self {
            code: e.client_code(),
            message: e.to_string(),
        }
    }
}

/// Resolves when media refused to restart this session's stream; never without one.
async fn media_refused(live: &mut Option<Live>) -> media::MediaError {
    match live.as_mut().map(|l| &mut l.source) {
        Some(Feed::Media { media, .. }) => media.refused().await,
        _ => std::future::pending().await,
    }
}

/// A streaming session's resources.
struct Live {
    session_id: u64,
    client_ip: IpAddr,
    data_port: u16,
    bind_ip: IpAddr,
    data_plane_cfg: punktfunk_wire::DataPlaneConfig,
    fps: u32,
    /// What feeds the video sender: nothing for a speed-test-only session.
    source: Feed,
    /// Where the next speed test's sender starts its sequence (one key per session and kind:
    /// a restarted sequence would reuse AES-GCM nonces).
    probe_sequence: Arc<AtomicU64>,
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

impl Live {
    fn keyframe(&self) {
        match &self.source {
            Feed::Synthetic(dp) => dp
                .control()
                .force_keyframe
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Feed::Media { media, .. } => media.send(media::Command::Keyframe),
            Feed::None => {}
        }
    }

    fn reconfigure(&self, mode: punktfunk_proto::common::Mode, bitrate_kbps: u32) {
        match &self.source {
            Feed::Synthetic(dp) => dp.control().bitrate_bps.store(
                u64::from(bitrate_kbps) * 1000,
                std::sync::atomic::Ordering::Relaxed,
            ),
            Feed::Media { media, .. } => media.send(media::Command::Reconfigure {
                bitrate_kbps,
                mode: Some(mode),
            }),
            Feed::None => {}
        }
    }

    async fn stop(self, host: &Host) -> punktfunk_dataplane::SenderStats {
        host.remove_session(self.session_id);
        match self.source {
            Feed::Synthetic(dp) => tokio::task::spawn_blocking(move || dp.stop())
                .await
                .unwrap_or_default(),
            Feed::Media {
                media,
                video,
                audio,
            } => {
                // Pumps first (they hold sender clones), then the senders drain and stop.
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
            Feed::None => Default::default(),
        }
    }

    /// Sends probe packets through the real data plane; the task returns what was sent.
    fn start_probe(
        &self,
        conn: &quinn::Connection,
        kbps: u32,
        duration_ms: u32,
    ) -> Result<impl std::future::Future<Output = ProbeResult> + Send + 'static, String> {
        let key = export_key(conn, self.session_id, Direction::HostToClient)?;
        let socket = connect_socket(
            self.bind_ip,
            SocketAddr::new(self.client_ip, self.data_port),
        )
        .map_err(|e| e.to_string())?;
        let feed = SyntheticConfig {
            bitrate_bps: u64::from(kbps) * 1000,
            fps: self.fps,
            keyframe_every: u32::MAX,
            keyframe_factor: 1,
            max_frame_bytes: self.data_plane_cfg.max_frame_bytes as usize
                - punktfunk_wire::au::ENVELOPE_LEN,
        };
        let limit = Duration::from_millis(duration_ms.into());
        let sequence = self.probe_sequence.clone();
        let mut cfg = SenderConfig::new(self.data_plane_cfg, key, StreamKind::Probe);
        cfg.first_sequence = sequence.load(std::sync::atomic::Ordering::Relaxed);
        // A probe measures throughput, not latency: a deeper queue rides out a scheduler
        // hiccup of the send thread instead of counting it as a send drop.
        cfg.queue_frames = 8;
        let mut dp = DataPlane::start(socket, cfg, feed, Some(limit), Arc::new(AtomicU64::new(0)))?;
        Ok(async move {
            tokio::task::spawn_blocking(move || {
                dp.join_feed();
                // Let the send thread drain its queue before counting.
                std::thread::sleep(Duration::from_millis(50));
                let s = dp.stop();
                sequence.store(s.next_sequence, std::sync::atomic::Ordering::Relaxed);
                ProbeResult {
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

fn export_key(
    conn: &quinn::Connection,
    session_id: u64,
    dir: Direction,
) -> Result<punktfunk_wire::SessionKey, String> {
    let mut material = [0u8; keys::KEY_MATERIAL_LEN];
    conn.export_keying_material(
        &mut material,
        dir.exporter_label(),
        &keys::exporter_context(session_id),
    )
    .map_err(|_| "TLS exporter failed".to_string())?;
    keys::session_key_from_material(&material).map_err(|e| format!("key material: {e:?}"))
}

async fn start_stream(
    host: &Arc<Host>,
    conn: &quinn::Connection,
    fp: Fingerprint,
    resolved: &punktfunk_control::host::ResolvedSession,
) -> Result<(Live, SessionEntry), Refusal> {
    let session_id = resolved.session_id;
    let mode = resolved.mode;
    let fps = mode.refresh_mhz.div_ceil(1000).max(1);
    let data_plane_cfg = resolved.data_plane;
    let bind_ip: IpAddr = host.config.bind.parse().map_err(|e| format!("bind: {e}"))?;
    let client_ip = conn.remote_address().ip();
    let data_port = resolved.data_port;
    let client_addr = SocketAddr::new(client_ip, data_port);
    let frames_sent = Arc::new(AtomicU64::new(0));
    let source = if resolved.probe_only {
        Feed::None
    } else if host.config.source == SourceKind::Synthetic {
        let key = export_key(conn, session_id, Direction::HostToClient)?;
        let socket = connect_socket(bind_ip, client_addr).map_err(|e| e.to_string())?;
        let feed = SyntheticConfig {
            bitrate_bps: u64::from(resolved.bitrate_kbps) * 1000,
            fps,
            max_frame_bytes: data_plane_cfg.max_frame_bytes as usize
                - punktfunk_wire::au::ENVELOPE_LEN,
            ..SyntheticConfig::default()
        };
        Feed::Synthetic(DataPlane::start(
            socket,
            SenderConfig::new(data_plane_cfg, key, StreamKind::Video),
            feed,
            None,
            frames_sent.clone(),
        )?)
    } else {
        start_media(
            host,
            conn,
            resolved,
            client_addr,
            bind_ip,
            frames_sent.clone(),
        )
        .await?
    };
    let entry = SessionEntry {
        client_name: resolved.client_name.clone(),
        fingerprint: fp,
        mode,
        bitrate_kbps: resolved.bitrate_kbps,
        frames_sent,
        started: Instant::now(),
        conn: conn.clone(),
    };
    tracing::info!(
        client = %resolved.client_name, fingerprint = %fp.short(), mode = %format!("{}x{}@{}", mode.width, mode.height, fps),
        codec = resolved.codec.as_str_name(), bitrate_kbps = resolved.bitrate_kbps, audio = resolved.audio.is_some(),
        probe_only = resolved.probe_only, "session started"
    );
    Ok((
        Live {
            session_id,
            client_ip,
            data_port,
            bind_ip,
            data_plane_cfg,
            fps,
            source,
            probe_sequence: Arc::new(AtomicU64::new(0)),
        },
        entry,
    ))
}

/// Senders for video (paced) and audio (unpaced: 5 ms Opus packets go out at once), and the
/// media stream feeding them.
async fn start_media(
    host: &Arc<Host>,
    conn: &quinn::Connection,
    resolved: &punktfunk_control::host::ResolvedSession,
    client_addr: SocketAddr,
    bind_ip: IpAddr,
    frames_sent: Arc<AtomicU64>,
) -> Result<Feed, Refusal> {
    let runtime_dir = host.runtime_dir.clone().ok_or_else(|| {
        Refusal::internal(
            "XDG_RUNTIME_DIR is not set, so the media worker cannot be reached (run the host as a systemd user service)",
        )
    })?;
    let key = export_key(conn, resolved.session_id, Direction::HostToClient)?;
    let video_socket = connect_socket(bind_ip, client_addr).map_err(|e| e.to_string())?;
    let video = Arc::new(
        Sender::spawn(
            video_socket,
            SenderConfig::new(resolved.data_plane, key.clone(), StreamKind::Video),
        )
        .map_err(|e| Refusal::internal(format!("cannot start the data plane: {e}")))?,
    );
    let video_state = Arc::new(PumpShared {
        frames_sent,
        ..Default::default()
    });
    let audio = match resolved.audio {
        Some(_) => {
            let socket = connect_socket(bind_ip, client_addr).map_err(|e| e.to_string())?;
            let mut cfg = SenderConfig::new(
                keys::audio_data_plane(&resolved.data_plane),
                key,
                StreamKind::Audio,
            );
            cfg.pacing = None;
            cfg.queue_frames = 32;
            let sender = Sender::spawn(socket, cfg).map_err(|e| {
                Refusal::internal(format!("cannot start the audio data plane: {e}"))
            })?;
            Some((Arc::new(sender), Arc::new(PumpShared::default())))
        }
        None => None,
    };
    let plan = MediaPlan {
        source: match host.config.source {
            SourceKind::Test => MediaSource::Test,
            _ => MediaSource::Pipewire,
        },
        mode: resolved.mode,
        codec: resolved.codec,
        bitrate_kbps: resolved.bitrate_kbps,
        audio: audio.is_some(),
    };
    let outputs = Outputs {
        video: video.clone(),
        video_state,
        audio: audio.clone(),
    };
    let media = MediaSession::start(runtime_dir, plan, outputs).await?;
    Ok(Feed::Media {
        media,
        video,
        audio: audio.map(|(s, _)| s),
    })
}
