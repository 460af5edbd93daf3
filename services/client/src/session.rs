//! The client's commands: discover, pair, stream, speed-test.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use punktfunk_control::client::{ClientAction, ClientRequest, ClientSession};
use punktfunk_control::clock::ClockEstimate;
use punktfunk_control::keys::{self, Direction};
use punktfunk_control::pairing::{PairingClient, PairingClientStep, PairingError};
use punktfunk_dataplane::{Receiver, ReceiverConfig, RxEvent};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{AudioConfig, ClientMessage, Stats, VideoPayload, Welcome};
use punktfunk_tls::{Fingerprint, Identity, peer_fingerprint};
use punktfunk_wire::StreamKind;
use punktfunk_wire::au::{FLAG_DISCONTINUITY, FLAG_KEYFRAME};

use crate::audio::{self, AudioOutcome, AudioPacket};
use crate::conn::{self, Control};
use crate::decode::{self, DecodeOutcome, DecoderConfig, DecoderHandle, Picture, VideoCodec};
use crate::frames_out::{self, FrameRow};
use crate::known_hosts::{KnownHost, KnownHosts};
use crate::outcome::{ClientError, Failure};
use crate::report::{self, SavedFrame, SpeedReport, StreamReport};
use crate::snapshot;
use crate::verify::{self, Payload, RxRecord, Verified};

use punktfunk_dataplane::sys::monotonic_ns as now_ns;

/// Parses `WxH@Hz` (Hz may have decimals: `1920x1080@59.94`).
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    let bad = || format!("mode `{s}` is not WxH@Hz (e.g. 1280x720@60)");
    let (wh, hz) = s.split_once('@').ok_or_else(bad)?;
    let (w, h) = wh.split_once('x').ok_or_else(bad)?;
    let hz: f64 = hz.parse().map_err(|_| bad())?;
    if !(1.0..=1000.0).contains(&hz) {
        return Err(bad());
    }
    Ok(Mode {
        width: w.parse().map_err(|_| bad())?,
        height: h.parse().map_err(|_| bad())?,
        refresh_mhz: (hz * 1000.0).round() as u32,
    })
}

pub async fn discover(timeout_ms: u64, json: bool) -> Result<(), String> {
    let timeout = Duration::from_millis(timeout_ms);
    let hosts = tokio::task::spawn_blocking(move || punktfunk_discovery::browse(timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("mDNS browse failed: {e}"))?;
    if json {
        let v = serde_json::json!({ "hosts": hosts });
        println!("{v}");
        return Ok(());
    }
    if hosts.is_empty() {
        println!(
            "no punktfunk host answered within {timeout_ms} ms (is the host on this network, with UDP 5353 open?)"
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<28} {:<9} FINGERPRINT",
        "NAME", "ADDRESS", "PAIRING"
    );
    for h in hosts {
        let addr = h
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(h.addresses.first())
            .map(|a| SocketAddr::new(*a, h.port).to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<28} {:<9} {}",
            h.instance,
            addr,
            h.pairing.to_string(),
            &h.fingerprint_hex[..16.min(h.fingerprint_hex.len())]
        );
    }
    Ok(())
}

pub async fn pair(dir: &Path, name: &str, pin: &str, host: &str) -> Result<(), String> {
    pair_within(dir, name, pin, host, conn::REPLY_TIMEOUT).await
}

/// [`pair`], giving up when the host does not answer a pairing message within `reply_timeout`.
async fn pair_within(
    dir: &Path,
    name: &str,
    pin: &str,
    host: &str,
    reply_timeout: Duration,
) -> Result<(), String> {
    punktfunk_control::pairing::validate_pin(pin).map_err(|e| e.to_string())?;
    let identity = Identity::load_or_create(dir, "client", name).map_err(|e| e.to_string())?;
    let addr = conn::resolve(host)?;
    // Unpinned on purpose: the ceremony itself authenticates the host's fingerprint.
    let (_endpoint, connection) = conn::connect(addr, &identity, None).await?;
    let host_fp = peer_fingerprint(&connection).ok_or("the host presented no certificate")?;
    let (mut machine, start) = PairingClient::start(pin, name, identity.fingerprint.0, host_fp.0)
        .map_err(|e| e.to_string())?;
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&PairingClient::start_message(start)).await?;
    loop {
        let msg = ctl
            .reply_within(reply_timeout, "the pairing request")
            .await?
            .ok_or("the host closed the pairing stream without an answer")?;
        match machine.on_message(msg) {
            Ok(PairingClientStep::Reply(reply)) => ctl.send(&reply).await?,
            Ok(PairingClientStep::Paired(paired)) => {
                let mut known = KnownHosts::open(dir)?;
                known.remember(KnownHost {
                    alias: host.to_string(),
                    address: addr.to_string(),
                    host_name: paired.host_name.clone(),
                    fingerprint: Fingerprint(paired.host_fp).to_hex(),
                })?;
                let _ = ctl.send.finish();
                connection.close(0u32.into(), b"paired");
                println!(
                    "paired with {} ({}), fingerprint {}",
                    paired.host_name,
                    addr,
                    Fingerprint(paired.host_fp).short()
                );
                return Ok(());
            }
            Err(PairingError::WrongPin) => {
                connection.close(4u32.into(), b"wrong pin");
                return Err("wrong PIN: the host's pairing window is closed now; run `punktfunkctl pair` on the host again".into());
            }
            Err(e) => {
                connection.close(4u32.into(), b"pairing failed");
                return Err(pairing_failed(&e));
            }
        }
    }
}

/// A failed ceremony in words: a refusal says so itself ("the host refused pairing: …"),
/// anything else gets the "pairing failed" context once.
fn pairing_failed(e: &PairingError) -> String {
    match e {
        PairingError::Rejected(_) => e.to_string(),
        other => format!("pairing failed: {other}"),
    }
}

fn data_socket(remote: SocketAddr) -> Result<UdpSocket, String> {
    let bind = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket =
        UdpSocket::bind(bind).map_err(|e| format!("cannot open the data-plane socket: {e}"))?;
    // Grown before Hello: the host streams right after Welcome, and a keyframe is larger than
    // the default receive buffer (the receive loop starts a moment later).
    use std::os::fd::AsRawFd;
    let _ = punktfunk_dataplane::sys::grow_buffer(
        socket.as_raw_fd(),
        punktfunk_dataplane::sys::BufferDir::Receive,
        32 << 20,
    );
    Ok(socket)
}

fn export_key(
    connection: &quinn::Connection,
    session_id: u64,
) -> Result<punktfunk_wire::SessionKey, String> {
    let mut material = [0u8; keys::KEY_MATERIAL_LEN];
    connection
        .export_keying_material(
            &mut material,
            Direction::HostToClient.exporter_label(),
            &keys::exporter_context(session_id),
        )
        .map_err(|_| "TLS exporter failed".to_string())?;
    keys::session_key_from_material(&material).map_err(|e| format!("key material: {e:?}"))
}

/// A connected, welcomed session.
struct Open {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    ctl: Control,
    session: ClientSession,
    welcome: Welcome,
    socket: UdpSocket,
    host_verified: bool,
    /// CLOCK_MONOTONIC ns when connecting began (the zero of `first_frame_ms`).
    connect_started_ns: u64,
}

/// What the `Hello` asks for.
struct Ask<'a> {
    mode: Mode,
    bitrate: u32,
    probe_only: bool,
    audio: bool,
    codecs: &'a [Codec],
}

async fn open_session(
    dir: &Path,
    name: &str,
    host: &str,
    ask: Ask<'_>,
) -> Result<Open, ClientError> {
    let Ask {
        mode,
        bitrate,
        probe_only,
        audio,
        codecs,
    } = ask;
    let identity = Identity::load_or_create(dir, "client", name).map_err(|e| e.to_string())?;
    let addr = conn::resolve(host)?;
    let known = KnownHosts::open(dir)?;
    let pinned = known.find(host, &addr.to_string()).map(|(fp, _)| fp);
    let connect_started_ns = now_ns();
    let (endpoint, connection) = conn::connect(addr, &identity, pinned).await?;
    let socket = data_socket(addr)?;
    let data_port = socket.local_addr().map_err(|e| e.to_string())?.port();
    let mut session = ClientSession::new(ClientRequest {
        name: name.to_string(),
        mode,
        codecs: codecs.to_vec(),
        bitrate_kbps: bitrate,
        // The host's format for the native client: 48 kHz stereo Opus in 5 ms packets.
        audio: audio.then_some(AudioConfig {
            enabled: true,
            channels: 2,
            sample_rate: 48_000,
        }),
        data_port,
        compositor: None,
        probe_only,
    });
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&session.hello()).await?;
    loop {
        let msg = ctl
            .reply("the session request")
            .await?
            .ok_or("the host closed the session without answering")?;
        let mut welcomed = None;
        // Every action of the batch counts: the first clock probe follows the Welcome.
        for action in session
            .on_message(now_ns(), msg)
            .map_err(|e| format!("protocol error from the host: {e}"))?
        {
            match action {
                ClientAction::Welcomed(welcome) => welcomed = Some(welcome),
                ClientAction::Closed { reason, code } => {
                    return Err(ClientError::coded(
                        format!("the host refused the session: {reason}"),
                        code,
                    ));
                }
                ClientAction::Send(m) => ctl.send(&m).await?,
                _ => {}
            }
        }
        if let Some(welcome) = welcomed {
            if pinned.is_none() {
                tracing::warn!(
                    "streaming from a host this client has not paired with: its identity is not verified"
                );
            }
            return Ok(Open {
                connection,
                _endpoint: endpoint,
                ctl,
                session,
                welcome,
                socket,
                host_verified: pinned.is_some(),
                connect_started_ns,
            });
        }
    }
}

/// The codecs this client decodes, most preferred first.
pub const DEFAULT_CODECS: [Codec; 2] = [Codec::Hevc, Codec::H264];

/// Parses `--codec`: `h264` or `hevc` (also `h265`) asks for that codec only.
pub fn parse_codec(s: &str) -> Result<Codec, String> {
    match s.to_ascii_lowercase().as_str() {
        "h264" | "avc" => Ok(Codec::H264),
        "hevc" | "h265" => Ok(Codec::Hevc),
        _ => Err(format!("codec `{s}` is not h264 or hevc")),
    }
}

/// What `stream` was asked to do (the CLI's flags).
pub struct StreamOptions {
    pub duration: f64,
    pub mode: Mode,
    pub bitrate: u32,
    /// Codecs offered in `Hello`, most preferred first.
    pub codecs: Vec<Codec>,
    pub json: bool,
    /// Decode the video (`--decode`).
    pub decode: bool,
    /// Write one decoded picture here (`--save-frame`, needs `decode`).
    pub save_frame: Option<PathBuf>,
    /// Write one CSV row per received frame here (`--frames-out`).
    pub frames_out: Option<PathBuf>,
    /// Ask the host for audio (default; `--no-audio` clears it).
    pub audio: bool,
}

/// Counters the receive callback updates.
#[derive(Default)]
struct RxCounters {
    video_frames: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
    audio_lost: AtomicU64,
}

/// What the per-frame threads returned when the stream ended.
struct Collected {
    verified: Verified,
    decoded: Option<DecodeOutcome>,
    audio: Option<AudioOutcome>,
}

/// Ends a session that cannot go on before streaming began.
async fn refuse(open: &mut Open, why: String) -> ClientError {
    let bye = open.session.goodbye("client cannot use this stream");
    let _ = open.ctl.send(&bye).await;
    let _ = open.ctl.send.finish();
    open.connection.close(0u32.into(), b"done");
    why.into()
}

/// Streams, verifies and measures; prints the report whatever happened (refused, lost, video
/// stopped: then with its `error`) and returns the exit code's reason.
pub async fn stream(
    dir: &Path,
    name: &str,
    host: &str,
    opts: &StreamOptions,
) -> Result<(), Failure> {
    let report = run_stream(dir, name, host, opts)
        .await
        .unwrap_or_else(|e| StreamReport::failed(host, e));
    print_stream(&report, opts.json);
    report.outcome()
}

/// One `stream` run. `Err`: it failed before it could measure (refused, unreachable, a local
/// fault); an interrupted stream is a report with its `error` set.
async fn run_stream(
    dir: &Path,
    name: &str,
    host: &str,
    opts: &StreamOptions,
) -> Result<StreamReport, ClientError> {
    if opts.decode {
        decode::preload()?;
    }
    let ask = Ask {
        mode: opts.mode,
        bitrate: opts.bitrate,
        probe_only: false,
        audio: opts.audio,
        codecs: &opts.codecs,
    };
    let mut open = open_session(dir, name, host, ask).await?;
    let data_plane = *open
        .session
        .data_plane()
        .ok_or("the host sent no data-plane configuration")?;
    let key = export_key(&open.connection, open.welcome.session_id)?;
    let payload = match VideoPayload::try_from(open.welcome.payload) {
        Ok(VideoPayload::Encoded) => Payload::Encoded,
        // UNSPECIFIED: a host from before Welcome.payload, which only had the synthetic source.
        _ => Payload::Synthetic,
    };
    let codec = match Codec::try_from(open.welcome.codec) {
        Ok(Codec::H264) => Some(VideoCodec::H264),
        Ok(Codec::Hevc) => Some(VideoCodec::Hevc),
        _ => None,
    };
    let shown_mode = open.welcome.mode.unwrap_or(opts.mode);
    let decoder = if opts.decode {
        let keep_picture = opts.save_frame.as_ref().map(|_| {
            // The middle of the run by picture count (a short run keeps its last picture).
            (opts.duration.max(0.0) * f64::from(shown_mode.refresh_mhz) / 1000.0 / 2.0) as u64
        });
        let started = match (payload, codec) {
            (Payload::Synthetic, _) => Err(
                "--decode: this host streams the synthetic source, which is not a bitstream \
                 (Welcome.payload); configure its media source to decode"
                    .to_string(),
            ),
            (Payload::Encoded, None) => Err(format!(
                "--decode: the host's codec ({}) is not one this client decodes (H.264, HEVC)",
                open.welcome.codec
            )),
            (Payload::Encoded, Some(codec)) => decode::spawn(DecoderConfig {
                codec,
                keep_picture,
            }),
        };
        match started {
            Ok(d) => Some(d),
            Err(e) => return Err(refuse(&mut open, e).await),
        }
    } else {
        None
    };
    let audio_cfg = open.welcome.audio.filter(|a| a.enabled && opts.audio);
    let mut rx_cfg = ReceiverConfig::new(StreamKind::Video, data_plane, key);
    let audio = match &audio_cfg {
        Some(a) => {
            rx_cfg
                .streams
                .push((StreamKind::Audio, keys::audio_data_plane(&data_plane)));
            Some(audio::spawn(a.channels, a.sample_rate)?)
        }
        None => None,
    };
    let (audio_tx, audio_thread) = audio.unzip();
    let (decode_tx, decoder) = decoder.unzip();

    let (frames_tx, frames_rx) = mpsc::sync_channel::<RxRecord>(1024);
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let verify_lost_tx = lost_tx.clone();
    let verifier = verify::spawn(frames_rx, payload, decode_tx, move |index| {
        let _ = verify_lost_tx.send(index);
    })?;
    let counters = Arc::new(RxCounters::default());
    let c = counters.clone();
    let socket = open.socket.try_clone().map_err(|e| e.to_string())?;
    let receiver = Receiver::spawn(socket, &rx_cfg, move |ev| match ev {
        RxEvent::Frame(f) if f.kind == StreamKind::Audio => {
            let packet = AudioPacket {
                frame: f.data.to_vec(),
            };
            if audio_tx
                .as_ref()
                .is_some_and(|tx| tx.try_send(packet).is_err())
            {
                c.audio_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        RxEvent::Frame(f) => {
            c.video_frames.fetch_add(1, Ordering::Relaxed);
            let rec = RxRecord {
                index: f.index,
                data: f.data.to_vec(),
                first_arrival_ns: f.first_arrival_ns,
                delivered_ns: f.delivered_ns,
            };
            if frames_tx.try_send(rec).is_err() {
                // Dropped here, the frame breaks the decoder's reference chain like a loss.
                c.overflow.fetch_add(1, Ordering::Relaxed);
                let _ = lost_tx.send(f.index);
            }
        }
        RxEvent::Lost {
            kind: StreamKind::Audio,
            ..
        } => {
            c.audio_lost.fetch_add(1, Ordering::Relaxed);
        }
        RxEvent::Skipped {
            kind: StreamKind::Audio,
            count,
            ..
        } => {
            c.audio_lost.fetch_add(count, Ordering::Relaxed);
        }
        RxEvent::Lost { index, .. } => {
            c.lost.fetch_add(1, Ordering::Relaxed);
            let _ = lost_tx.send(index);
        }
        RxEvent::Skipped { first, count, .. } => {
            c.lost.fetch_add(count, Ordering::Relaxed);
            let _ = lost_tx.send(first);
        }
    })
    .map_err(|e| format!("cannot start the receiver: {e}"))?;

    let started = Instant::now();
    let stream_started_ns = now_ns();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(opts.duration.max(0.0));
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut clock: Option<ClockEstimate> = None;
    let mut keyframe_requests = 0u64;
    let end: Result<(), ClientError> = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break Ok(()),
            m = open.ctl.next() => {
                let msg = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => break Err("the host closed the session".into()),
                    Err(e) => break Err(e),
                };
                let actions = match open.session.on_message(now_ns(), msg) {
                    Ok(a) => a,
                    Err(e) => break Err(format!("protocol error from the host: {e}").into()),
                };
                let mut closed = None;
                for a in actions {
                    match a {
                        ClientAction::Send(m) => { let _ = open.ctl.send(&m).await; }
                        ClientAction::ClockSynced(c) => clock = Some(c),
                        ClientAction::Closed { reason, code } => closed = Some((reason, code)),
                        _ => {}
                    }
                }
                if let Some((reason, code)) = closed {
                    break Err(ClientError::coded(format!("the host ended the session: {reason}"), code));
                }
            }
            Some(index) = lost_rx.recv() => {
                keyframe_requests += 1;
                let _ = open.ctl.send(&open.session.keyframe_request(index)).await;
            }
            _ = stats_tick.tick() => {
                let s = receiver.stats();
                let stats = Stats {
                    frames_received: counters.video_frames.load(Ordering::Relaxed),
                    frames_lost: counters.lost.load(Ordering::Relaxed),
                    fec_recovered_shards: s.wire.recovered_shards,
                    bytes_received: s.bytes,
                    ..Default::default()
                };
                let _ = open.ctl.send(&open.session.stats(stats)).await;
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let ended_ns = now_ns();
    let goodbye: ClientMessage = open.session.goodbye("done");
    let _ = open.ctl.send(&goodbye).await;
    let _ = open.ctl.send.finish();
    // Stopping the receiver drops its senders; each thread then drains and finishes in turn.
    let (rx_stats, _) = receiver.stop();
    let collected = tokio::task::spawn_blocking(move || -> Result<Collected, String> {
        let verified = verifier
            .join()
            .map_err(|_| "the verifier thread panicked")?;
        let decoded = decoder.map(DecoderHandle::join).transpose()?;
        let audio = audio_thread
            .map(|t| {
                t.join()
                    .map_err(|_| "the audio thread panicked".to_string())
            })
            .transpose()?;
        Ok(Collected {
            verified,
            decoded,
            audio,
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    open.connection.close(0u32.into(), b"done");

    let offset = clock.or_else(|| open.session.clock());
    let est = offset.unwrap_or(ClockEstimate {
        offset_ns: 0,
        rtt_ns: 0,
    });
    let Collected {
        verified,
        decoded,
        audio,
    } = collected;
    let pictures: HashMap<u64, &Picture> = decoded
        .iter()
        .flat_map(|d| d.pictures.iter().map(|p| (p.index, p)))
        .collect();
    let mut stages: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for info in &verified.infos {
        let st = info
            .timing
            .map(|t| report::frame_stages(&t, info.first_arrival_ns, info.delivered_ns, &est))
            .unwrap_or_default();
        let pic = pictures.get(&info.index);
        let decode_us = pic.map(|p| report::us(p.decoded_ns, p.reassembled_ns));
        let captured = info
            .timing
            .map(|t| t.captured_ns)
            .filter(|&c| c != 0)
            .map(|c| est.to_client_time(c));
        let mut add = |k: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                stages.entry(k).or_default().push(v);
            }
        };
        if info.verified {
            add("encode", st.encode);
            add("capture_to_handed", st.capture_to_handed);
            add("handed_to_first_packet", st.handed_to_first_packet);
            add(
                "first_packet_to_reassembled",
                st.first_packet_to_reassembled,
            );
            add("capture_to_reassembled", st.capture_to_reassembled);
        }
        add("decode", decode_us);
        add(
            "capture_to_decoded",
            pic.zip(captured).map(|(p, c)| report::us(p.decoded_ns, c)),
        );
        if opts.frames_out.is_some() {
            rows.push(FrameRow {
                index: info.index,
                keyframe: info.flags & FLAG_KEYFRAME != 0,
                discontinuity: info.flags & FLAG_DISCONTINUITY != 0,
                bytes: info.bytes,
                capture_to_reassembled_us: st.capture_to_reassembled,
                encode_us: st.encode,
                capture_to_handed_us: st.capture_to_handed,
                handed_to_first_packet_us: st.handed_to_first_packet,
                first_packet_to_reassembled_us: st.first_packet_to_reassembled,
                decode_us,
                counter: pic.and_then(|p| p.counter),
            });
        }
    }
    let latency_us = stages
        .into_iter()
        .filter_map(|(k, mut v)| report::stage(&mut v).map(|s| (k, s)))
        .collect();
    let first_frame_ms = verified
        .first_delivered_ns
        .map(|d| d.saturating_sub(open.connect_started_ns) as f64 / 1e6);
    let counter = decoded
        .as_ref()
        .map(|d| decode::summarise_counters(&d.pictures));
    let mut artefact_error = None;
    let saved_frame = match (&opts.save_frame, decoded.as_ref()) {
        (Some(path), Some(d)) => match &d.kept {
            Some(k) => match snapshot::save_png(path, k) {
                Ok(()) => Some(SavedFrame {
                    file: path.display().to_string(),
                    frame: k.index,
                    counter: k.counter,
                    width: k.width,
                    height: k.height,
                }),
                Err(e) => {
                    artefact_error = Some(e);
                    None
                }
            },
            None => {
                artefact_error = Some("--save-frame: no picture was decoded".into());
                None
            }
        },
        _ => None,
    };
    if let Some(path) = &opts.frames_out
        && let Err(e) = frames_out::write_file(path, &rows)
    {
        artefact_error.get_or_insert(e);
    }
    let trailing = verify::trailing_gap(verified.last, stream_started_ns, ended_ns);
    let mut report = StreamReport {
        host: host.to_string(),
        mode: open.welcome.mode.as_ref().map(mode_name),
        bitrate_kbps: Some(open.welcome.bitrate_kbps),
        duration_s: elapsed,
        frames_received: verified.frames,
        frames_verified: verified.ok,
        verify_failures: verified.failures + counters.overflow.load(Ordering::Relaxed),
        frames_lost: counters.lost.load(Ordering::Relaxed),
        keyframe_requests,
        fec_recovered_shards: rx_stats.wire.recovered_shards,
        goodput_mbps: verified.bytes as f64 * 8.0 / elapsed.max(1e-9) / 1e6,
        first_frame_ms,
        skew_corrected: offset.is_some(),
        clock_offset_us: offset.map(|c| c.offset_ns as f64 / 1e3),
        clock_rtt_us: offset.map(|c| c.rtt_ns as f64 / 1e3),
        host_verified: open.host_verified,
        payload: Some(payload.name()),
        codec: codec
            .filter(|_| payload == Payload::Encoded)
            .map(VideoCodec::name),
        keyframes: verified.keyframes,
        discontinuities: verified.discontinuities,
        gaps: verified.gaps.clone(),
        decoded_frames: decoded.as_ref().map(|d| d.decoded),
        decoded_fraction: decoded
            .as_ref()
            .map(|d| d.decoded as f64 / verified.frames.max(1) as f64),
        decode_errors: decoded.as_ref().map(|d| d.errors + d.unmatched),
        decode_skipped: decoded
            .as_ref()
            .map(|d| d.skipped + verified.decoder_overflow),
        decoder_restarts: decoded.as_ref().map(|d| d.restarts),
        counter_first: counter.as_ref().and_then(|c| c.first),
        counter_last: counter.as_ref().and_then(|c| c.last),
        counter_strictly_increasing: counter.as_ref().map(|c| c.strictly_increasing),
        counter_resets: counter.as_ref().map(|c| c.resets),
        counter_unreadable: counter.as_ref().map(|c| c.unreadable),
        saved_frame,
        audio_packets: audio.as_ref().map(|a| a.packets),
        audio_decoded: audio.as_ref().map(|a| a.decoded),
        audio_decode_errors: audio.as_ref().map(|a| a.decode_errors),
        audio_lost: audio
            .as_ref()
            .map(|_| counters.audio_lost.load(Ordering::Relaxed)),
        audio_rms: audio.as_ref().and_then(|a| a.rms),
        latency_us,
        ..Default::default()
    };
    report.conclude(end, trailing, artefact_error);
    Ok(report)
}

/// `WxH@Hz` (Hz without trailing zeros: `1920x1080@59.94`).
fn mode_name(m: &Mode) -> String {
    format!(
        "{}x{}@{}",
        m.width,
        m.height,
        f64::from(m.refresh_mhz) / 1000.0
    )
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn print_stream(r: &StreamReport, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
        return;
    }
    if let Some(e) = &r.error {
        println!(
            "error {e}{}",
            r.error_code
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    let Some(mode) = &r.mode else {
        // No Welcome: nothing was measured.
        return;
    };
    println!(
        "host {}  {}  {} kbit/s  {:.1} s",
        r.host,
        mode,
        r.bitrate_kbps.unwrap_or(0),
        r.duration_s
    );
    println!(
        "frames {} received, {} verified, {} failed, {} lost ({} keyframe requests), {} shards recovered by FEC",
        r.frames_received,
        r.frames_verified,
        r.verify_failures,
        r.frames_lost,
        r.keyframe_requests,
        r.fec_recovered_shards
    );
    println!(
        "payload {}{}, {} keyframes, {} discontinuities",
        r.payload.unwrap_or("-"),
        r.codec.map(|c| format!(" ({c})")).unwrap_or_default(),
        r.keyframes,
        r.discontinuities
    );
    println!(
        "goodput {:.2} Mbit/s, first frame {} ms, clock {}",
        r.goodput_mbps,
        r.first_frame_ms
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".into()),
        match (r.clock_offset_us, r.clock_rtt_us) {
            (Some(o), Some(rtt)) => format!("offset {o:.1} µs (rtt {rtt:.1} µs)"),
            _ => "not synchronised".into(),
        }
    );
    if let Some(d) = r.decoded_frames {
        println!(
            "decoded {}/{} ({:.1} %), {} decode errors, {} frames skipped waiting for a keyframe",
            d,
            r.frames_received,
            100.0 * r.decoded_fraction.unwrap_or(0.0),
            r.decode_errors.unwrap_or(0),
            r.decode_skipped.unwrap_or(0)
        );
        let range = match (r.counter_first, r.counter_last) {
            (Some(a), Some(b)) => format!("{a}..{b}"),
            _ => "unreadable".into(),
        };
        println!(
            "counter {range}, strictly increasing {} ({} resets at discontinuities, {} unreadable)",
            yes_no(r.counter_strictly_increasing.unwrap_or(false)),
            r.counter_resets.unwrap_or(0),
            r.counter_unreadable.unwrap_or(0)
        );
    }
    if let Some(s) = &r.saved_frame {
        println!(
            "saved frame {} ({}x{}, counter {}) to {}",
            s.frame,
            s.width,
            s.height,
            s.counter.map_or_else(|| "-".into(), |c| c.to_string()),
            s.file
        );
    }
    if let Some(p) = r.audio_packets {
        println!(
            "audio {} packets, {} decoded, {} errors, {} lost, rms {}",
            p,
            r.audio_decoded.unwrap_or(0),
            r.audio_decode_errors.unwrap_or(0),
            r.audio_lost.unwrap_or(0),
            r.audio_rms
                .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
        );
    }
    if r.gaps.is_empty() {
        println!("gaps none");
    } else {
        let list: Vec<String> = r
            .gaps
            .iter()
            .map(|g| {
                format!(
                    "{}: {:.1} ms{}{}",
                    g.after_frame.map_or_else(
                        || "from the start".to_string(),
                        |f| format!("after frame {f}")
                    ),
                    g.ms,
                    if g.discontinuity {
                        " (discontinuity)"
                    } else {
                        ""
                    },
                    if g.trailing {
                        " (trailing: to the end of the run)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        println!("gaps {}", list.join("; "));
    }
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "latency (µs)", "p50", "p99", "max"
    );
    for (k, s) in &r.latency_us {
        println!("{k:<30} {:>10.1} {:>10.1} {:>10.1}", s.p50, s.p99, s.max);
    }
}

pub async fn speed_test(
    dir: &Path,
    name: &str,
    host: &str,
    kbps: u32,
    ms: u32,
    json: bool,
) -> Result<(), String> {
    let mode = Mode {
        width: 1280,
        height: 720,
        refresh_mhz: 60_000,
    };
    let ask = Ask {
        mode,
        bitrate: kbps.clamp(500, 2_000_000),
        probe_only: true,
        audio: false,
        codecs: &DEFAULT_CODECS,
    };
    let mut open = open_session(dir, name, host, ask).await?;
    let data_plane = *open
        .session
        .data_plane()
        .ok_or("the host sent no data-plane configuration")?;
    let key = export_key(&open.connection, open.welcome.session_id)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let b2 = bytes.clone();
    let socket = open.socket.try_clone().map_err(|e| e.to_string())?;
    let receiver = Receiver::spawn(
        socket,
        &ReceiverConfig::new(StreamKind::Probe, data_plane, key),
        move |ev| {
            if let RxEvent::Frame(f) = ev {
                b2.fetch_add(f.data.len() as u64, Ordering::Relaxed);
            }
        },
    )
    .map_err(|e| format!("cannot start the receiver: {e}"))?;
    let req = open
        .session
        .probe_request(kbps, ms)
        .ok_or("a probe is already running")?;
    open.ctl.send(&req).await?;
    let probe_wait = Duration::from_millis(u64::from(ms)) + conn::REPLY_TIMEOUT;
    let result = loop {
        let msg = open
            .ctl
            .reply_within(probe_wait, "the bandwidth probe")
            .await?
            .ok_or("the host closed the session during the probe")?;
        let mut got = None;
        for a in open
            .session
            .on_message(now_ns(), msg)
            .map_err(|e| format!("protocol error: {e}"))?
        {
            match a {
                ClientAction::Send(m) => open.ctl.send(&m).await?,
                ClientAction::ProbeResult(r) => got = Some(r),
                ClientAction::Closed { reason, .. } => {
                    return Err(format!("the host ended the session: {reason}"));
                }
                _ => {}
            }
        }
        if let Some(r) = got {
            break r;
        }
    };
    // The last packets may still be in flight behind the result.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rx, _) = receiver.stop();
    let _ = open
        .ctl
        .send(&open.session.goodbye("speed test done"))
        .await;
    let _ = open.ctl.send.finish();
    open.connection.close(0u32.into(), b"done");
    let duration_ms = result.duration_ms.max(1);
    let goodput = bytes.load(Ordering::Relaxed) as f64 * 8.0 / (f64::from(duration_ms) / 1e3) / 1e6;
    let report = SpeedReport {
        host: host.to_string(),
        target_kbps: kbps,
        duration_ms,
        packets_sent: result.packets_sent,
        packets_received: rx.datagrams,
        loss_percent: if result.packets_sent == 0 {
            0.0
        } else {
            100.0 * (1.0 - (rx.datagrams as f64 / result.packets_sent as f64).min(1.0))
        },
        send_drops: result.send_drops,
        goodput_mbps: goodput,
        percent_of_target: 100.0 * goodput * 1e3 / f64::from(kbps.max(1)),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "speed test to {}: target {} kbit/s for {} ms → goodput {:.1} Mbit/s ({:.1} % of target), loss {:.2} %, send drops {}",
            report.host,
            report.target_kbps,
            report.duration_ms,
            report.goodput_mbps,
            report.percent_of_target,
            report.loss_percent,
            report.send_drops
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{self, Behaviour};

    #[test]
    fn modes_parse() {
        let m = super::parse_mode("1920x1080@59.94").unwrap();
        assert_eq!((m.width, m.height, m.refresh_mhz), (1920, 1080, 59_940));
        assert!(super::parse_mode("1920x1080").is_err());
        assert!(super::parse_mode("axb@60").is_err());
    }

    /// A test never waits long for an answer that does not come.
    const LIVENESS: Duration = Duration::from_secs(15);

    fn ask() -> Ask<'static> {
        Ask {
            mode: parse_mode("1280x720@60").unwrap(),
            bitrate: 20_000,
            probe_only: false,
            audio: false,
            codecs: &DEFAULT_CODECS,
        }
    }

    #[tokio::test]
    async fn pairing_gives_up_on_a_host_that_does_not_answer() {
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(&dir.path().join("host"), Behaviour::Silent);
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let attempt = pair_within(&client, "deck", "123456", &addr, Duration::from_millis(500));
        let err = tokio::time::timeout(LIVENESS, attempt)
            .await
            .expect("the client gave up by itself")
            .expect_err("no answer is no pairing");
        assert!(
            err.contains("did not answer the pairing request within 0.5 s"),
            "{err}"
        );
        assert!(
            err.contains("punktfunkctl status"),
            "says what to do: {err}"
        );
    }

    #[tokio::test]
    async fn a_host_that_only_closes_is_reported_with_its_reason_and_code() {
        // The host refuses and closes; its Error message never arrived, its close frame did.
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(
            &dir.path().join("host"),
            Behaviour::Close(2, "pairing required"),
        );
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let opened = open_session(&client, "deck", &addr, ask());
        let err = match tokio::time::timeout(LIVENESS, opened)
            .await
            .expect("an answer")
        {
            Ok(_) => panic!("a closed connection is not a session"),
            Err(e) => e,
        };
        assert_eq!(err.code.as_deref(), Some("pairing-required"), "{err}");
        assert!(
            err.message.contains("pairing required") && err.message.contains("punktfunkctl pair"),
            "{err}"
        );
        assert!(!err.message.contains("connection lost"), "{err}");
    }

    #[tokio::test]
    async fn a_pairing_refused_by_a_close_frame_shows_the_hosts_reason() {
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(
            &dir.path().join("host"),
            Behaviour::Close(4, "pairing not armed"),
        );
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let attempt = pair(&client, "deck", "123456", &addr);
        let err = tokio::time::timeout(LIVENESS, attempt)
            .await
            .expect("an answer")
            .expect_err("refused");
        assert!(
            err.contains("the host closed the connection: pairing not armed (pairing-failed)"),
            "{err}"
        );
    }

    #[test]
    fn a_pairing_refusal_is_named_once() {
        let refused = PairingError::Rejected("pairing is not armed on the host".into());
        assert_eq!(
            pairing_failed(&refused),
            "the host refused pairing: pairing is not armed on the host"
        );
        assert_eq!(
            pairing_failed(&PairingError::Finished),
            "pairing failed: this pairing attempt is already finished"
        );
    }

    #[test]
    fn codecs_parse() {
        use punktfunk_proto::common::Codec;
        assert_eq!(super::parse_codec("H264"), Ok(Codec::H264));
        assert_eq!(super::parse_codec("h265"), Ok(Codec::Hevc));
        assert!(super::parse_codec("av1").is_err());
    }
}
