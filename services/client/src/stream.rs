//! `stream`: receive, verify and measure a stream, in named steps: connect
//! ([`open_session`]), what the Welcome settled ([`Settled`]), the decoder and the rest of the
//! receive pipeline ([`start_pipeline`]), the control loop ([`control_loop`]), teardown
//! ([`teardown`]) and the report ([`build_report`], printed by [`crate::report::print_stream`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use punktfunk_control::client::ClientAction;
use punktfunk_control::clock::ClockEstimate;
use punktfunk_control::keys;
use punktfunk_dataplane::{Receiver, ReceiverConfig, ReceiverStats, RxEvent};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{Stats, VideoPayload};
use punktfunk_wire::au::{FLAG_DISCONTINUITY, FLAG_KEYFRAME};
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};

use crate::audio::{self, AudioOutcome, AudioPacket};
use crate::decode::{self, DecodeInput, DecodeOutcome, DecoderConfig, DecoderHandle, Picture};
use crate::decode::{KeptPicture, VideoCodec};
use crate::frames_out::{self, FrameRow};
use crate::outcome::{ClientError, Failure, chain};
use crate::report::{self, SavedFrame, StreamReport};
use crate::session::{Ask, Open, open_session};
use crate::snapshot;
use crate::verify::{self, Payload, RxRecord, Verified};

use punktfunk_dataplane::sys::monotonic_ns as now_ns;

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
    /// Ask for another mode and bitrate this far into the run (`--reconfigure`).
    pub reconfigure: Option<ReconfigureAt>,
    /// Timed input events to send (`--input-script`).
    pub input_script: Option<Vec<crate::input::Step>>,
    /// The pads this client brings (`--gamepads`).
    pub gamepads: Vec<punktfunk_proto::control::GamepadKind>,
    /// The app to run in the output (`--app`), by title.
    pub app: Option<String>,
    /// The compositor to run the output in (`--compositor`), by backend name.
    pub compositor: Option<String>,
}

/// A `Reconfigure` to send during the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReconfigureAt {
    pub after: Duration,
    pub mode: Mode,
    pub bitrate_kbps: u32,
}

impl ReconfigureAt {
    /// `SECS:WxH@Hz:KBPS`, e.g. `2:1920x1080@60:30000`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("`{s}` is not SECS:WxH@Hz:KBPS (e.g. 2:1920x1080@60:30000)");
        let mut parts = s.splitn(3, ':');
        let (Some(secs), Some(mode), Some(kbps)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let secs: f64 = secs.parse().map_err(|_| bad())?;
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(bad());
        }
        Ok(Self {
            after: Duration::from_secs_f64(secs),
            mode: crate::session::parse_mode(mode)?,
            bitrate_kbps: kbps.parse().map_err(|_| bad())?,
        })
    }
}

/// Streams, verifies and measures; prints the report whatever happened (refused, lost, video
/// stopped: then with its `error`) and returns the exit code's reason.
pub async fn stream(
    dir: &Path,
    name: &str,
    host: &str,
    opts: &StreamOptions,
) -> Result<(), Failure> {
    let mut stop = StopSignal::install();
    let report = run_stream(dir, name, host, opts, &mut stop)
        .await
        .unwrap_or_else(|e| StreamReport::failed(host, e));
    report::print_stream(&report, opts.json);
    report.outcome()
}

/// One `stream` run. `Err`: it failed before it could measure (refused, unreachable, a local
/// fault); an interrupted stream is a report with its `error` set.
async fn run_stream(
    dir: &Path,
    name: &str,
    host: &str,
    opts: &StreamOptions,
    stop: &mut StopSignal,
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
        gamepads: &opts.gamepads,
        app: opts.app.as_deref(),
        compositor: opts.compositor.as_deref(),
    };
    let mut open = open_session(dir, name, host, ask).await?;
    let settled = Settled::from_welcome(&open)?;
    let key = open.key()?;
    let mut pipeline = start_pipeline(&mut open, &settled, key, opts).await?;
    // Input runs beside the control loop: its own task on the connection's datagrams.
    let input = opts.input_script.clone().map(|steps| {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(crate::input::run(
            open.connection.clone(),
            steps,
            now_ns(),
            stopped,
        ));
        (stop, task)
    });
    let ran = control_loop(&mut open, &mut pipeline, opts, stop).await;
    let input = match input {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.ok()
        }
        None => None,
    };
    let collected = teardown(&mut open, pipeline).await?;
    let mut report = build_report(host, opts, &open, &settled, ran, collected);
    if let Some(i) = input {
        report.input_sent = Some(i.sent);
        report.input_send_errors = Some(i.send_errors);
        report.feedback_received = Some(i.feedback_received);
        report.feedback = i.feedback;
        report.input_sent_ns = i.sent_ns;
    }
    Ok(report)
}

/// What the Welcome settled: the data plane and what the video is.
struct Settled {
    data_plane: DataPlaneConfig,
    payload: Payload,
    /// The Welcome's codec when this client decodes it.
    codec: Option<VideoCodec>,
}

impl Settled {
    fn from_welcome(open: &Open) -> anyhow::Result<Self> {
        let data_plane = open.data_plane()?;
        let payload = match VideoPayload::try_from(open.welcome.payload) {
            Ok(VideoPayload::Encoded) => Payload::Encoded,
            // UNSPECIFIED: a host from before Welcome.payload, which only had the synthetic source.
            _ => Payload::Synthetic,
        };
        let codec = Codec::try_from(open.welcome.codec)
            .ok()
            .and_then(VideoCodec::of);
        Ok(Self {
            data_plane,
            payload,
            codec,
        })
    }
}

/// Counters the receive callback updates.
#[derive(Default)]
struct RxCounters {
    video_frames: AtomicU64,
    lost: AtomicU64,
    overflow: AtomicU64,
    audio_lost: AtomicU64,
}

/// The receive side while streaming: the data-plane receiver and the threads behind it
/// (receiver → verifier → decoder; receiver → audio).
struct Pipeline {
    receiver: Receiver,
    verifier: JoinHandle<Verified>,
    decoder: Option<DecoderHandle>,
    audio: Option<JoinHandle<AudioOutcome>>,
    counters: Arc<RxCounters>,
    /// Indices of frames lost (or dropped on the way): each asks the host for a keyframe.
    lost_rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
}

/// Ends a session that cannot go on before streaming began.
async fn refuse(open: &mut Open, why: anyhow::Error) -> ClientError {
    let bye = open.session.goodbye("client cannot use this stream");
    let _ = open.ctl.send(&bye).await;
    let _ = open.ctl.send.finish();
    open.connection
        .close(crate::conn::CLOSE_DONE.into(), b"done");
    why.into()
}

/// Starts the decoder (`--decode`; a stream it cannot decode ends the session), the audio
/// thread, the verifier and the data-plane receiver (with the session's `key`), in that
/// order.
async fn start_pipeline(
    open: &mut Open,
    settled: &Settled,
    key: SessionKey,
    opts: &StreamOptions,
) -> Result<Pipeline, ClientError> {
    let decoder = if opts.decode {
        match start_decoder(open, settled, opts) {
            Ok(d) => Some(d),
            Err(e) => return Err(refuse(open, e).await),
        }
    } else {
        None
    };
    let audio_cfg = open.welcome.audio.filter(|a| a.enabled && opts.audio);
    let mut rx_cfg = ReceiverConfig::new(StreamKind::Video, settled.data_plane, key);
    let audio = match &audio_cfg {
        Some(a) => {
            rx_cfg.streams.push((
                StreamKind::Audio,
                keys::audio_data_plane(&settled.data_plane),
            ));
            Some(audio::spawn(a.channels, a.sample_rate)?)
        }
        None => None,
    };
    let (audio_tx, audio) = audio.unzip();
    let (decode_tx, decoder) = decoder.unzip();

    let (frames_tx, frames_rx) = mpsc::sync_channel::<RxRecord>(1024);
    let (lost_tx, lost_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let verify_lost_tx = lost_tx.clone();
    let verifier = verify::spawn(frames_rx, settled.payload, decode_tx, move |index| {
        let _ = verify_lost_tx.send(index);
    })?;
    let counters = Arc::new(RxCounters::default());
    let route = Router {
        counters: counters.clone(),
        frames_tx,
        audio_tx,
        lost_tx,
    };
    let socket = open
        .socket
        .try_clone()
        .context("cannot share the data-plane socket")?;
    let receiver = Receiver::spawn(socket, &rx_cfg, move |ev| route.on_event(ev))
        .context("cannot start the receiver")?;
    Ok(Pipeline {
        receiver,
        verifier,
        decoder,
        audio,
        counters,
        lost_rx,
    })
}

/// The decoder for the Welcome's video, or why this client cannot decode it.
fn start_decoder(
    open: &Open,
    settled: &Settled,
    opts: &StreamOptions,
) -> anyhow::Result<(SyncSender<DecodeInput>, DecoderHandle)> {
    let shown_mode = open.welcome.mode.unwrap_or(opts.mode);
    let keep_picture = opts.save_frame.as_ref().map(|_| {
        // The middle of the run by picture count (a short run keeps its last picture).
        (opts.duration.max(0.0) * f64::from(shown_mode.refresh_mhz) / 1000.0 / 2.0) as u64
    });
    match (settled.payload, settled.codec) {
        (Payload::Synthetic, _) => Err(anyhow!(
            "--decode: this host streams the synthetic source, which is not a bitstream \
             (Welcome.payload); configure its media source to decode"
        )),
        (Payload::Encoded, None) => Err(anyhow!(
            "--decode: the host's codec ({}) is not one this client decodes (H.264, HEVC)",
            open.welcome.codec
        )),
        (Payload::Encoded, Some(codec)) => decode::spawn(DecoderConfig {
            codec,
            keep_picture,
        }),
    }
}

/// Where the receive thread puts each event: video to the verifier, audio to the audio
/// thread, losses to the counters and the keyframe requests.
struct Router {
    counters: Arc<RxCounters>,
    frames_tx: SyncSender<RxRecord>,
    audio_tx: Option<SyncSender<AudioPacket>>,
    lost_tx: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl Router {
    fn on_event(&self, ev: RxEvent<'_>) {
        let c = &self.counters;
        match ev {
            RxEvent::Frame(f) if f.kind == StreamKind::Audio => {
                let packet = AudioPacket {
                    frame: f.data.to_vec(),
                };
                if self
                    .audio_tx
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
                if self.frames_tx.try_send(rec).is_err() {
                    // Dropped here, the frame breaks the decoder's reference chain like a loss.
                    c.overflow.fetch_add(1, Ordering::Relaxed);
                    let _ = self.lost_tx.send(f.index);
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
                let _ = self.lost_tx.send(index);
            }
            RxEvent::Skipped { first, count, .. } => {
                c.lost.fetch_add(count, Ordering::Relaxed);
                let _ = self.lost_tx.send(first);
            }
        }
    }
}

/// How the control loop ended, and what it saw.
struct Ran {
    /// `Err`: the connection was lost or the host ended the session.
    end: Result<(), ClientError>,
    clock: Option<ClockEstimate>,
    keyframe_requests: u64,
    elapsed_s: f64,
    /// CLOCK_MONOTONIC ns when streaming began and ended.
    started_ns: u64,
    ended_ns: u64,
    /// What the host answered to our `Reconfigure` (what is in effect), in order.
    reconfigured: Vec<report::Reconfigured>,
}

/// Serves the control stream for `duration` seconds (or until SIGINT/SIGTERM): host messages,
/// keyframe requests for lost frames, and `Stats` every second.
async fn control_loop(
    open: &mut Open,
    pipeline: &mut Pipeline,
    opts: &StreamOptions,
    stop: &mut StopSignal,
) -> Ran {
    let started = Instant::now();
    let started_ns = now_ns();
    let t0 = tokio::time::Instant::now();
    let deadline = t0 + Duration::from_secs_f64(opts.duration.max(0.0));
    let mut reconfigure = opts.reconfigure;
    let mut reconfigured = Vec::new();
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut clock = None;
    let mut keyframe_requests = 0u64;
    let end = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break Ok(()),
            // Ctrl-C or SIGTERM end the stream as the deadline does: the report still comes.
            _ = stop.recv() => break Ok(()),
            m = open.ctl.next() => {
                if let Err(e) = on_host_message(open, m, &mut clock, &mut reconfigured).await {
                    break Err(e);
                }
            }
            _ = sleep_until_reconfigure(t0, reconfigure) => {
                if let Some(r) = reconfigure.take() {
                    let _ = open.ctl.send(&open.session.reconfigure(Some(r.mode), r.bitrate_kbps)).await;
                }
            }
            Some(index) = pipeline.lost_rx.recv() => {
                keyframe_requests += 1;
                let _ = open.ctl.send(&open.session.keyframe_request(index)).await;
            }
            _ = stats_tick.tick() => send_stats(open, pipeline).await,
        }
    };
    Ran {
        end,
        clock,
        keyframe_requests,
        elapsed_s: started.elapsed().as_secs_f64(),
        started_ns,
        ended_ns: now_ns(),
        reconfigured,
    }
}

/// SIGINT and SIGTERM, caught from the start of a `stream` run so that one arriving at any
/// point ends the stream as its deadline does (the report still comes) instead of killing the
/// client. Without handlers (installation failed) it never fires and the deadline still holds.
struct StopSignal(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignal {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self(
            signal(SignalKind::interrupt())
                .ok()
                .zip(signal(SignalKind::terminate()).ok()),
        )
    }

    async fn recv(&mut self) {
        match &mut self.0 {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Sleeps until the reconfiguration is due; forever without one.
async fn sleep_until_reconfigure(t0: tokio::time::Instant, r: Option<ReconfigureAt>) {
    match r {
        Some(r) => tokio::time::sleep_until(t0 + r.after).await,
        None => std::future::pending().await,
    }
}

/// One message from the host while streaming (`m`: what the control stream gave). `Err`: the
/// stream ends (the connection was lost, the host ended the session or broke the protocol).
async fn on_host_message(
    open: &mut Open,
    m: Result<Option<punktfunk_proto::control::HostMessage>, ClientError>,
    clock: &mut Option<ClockEstimate>,
    reconfigured: &mut Vec<report::Reconfigured>,
) -> Result<(), ClientError> {
    let msg = m?.ok_or("the host closed the session")?;
    let actions = open
        .session
        .on_message(now_ns(), msg)
        .map_err(|e| format!("protocol error from the host: {e}"))?;
    let mut closed = None;
    for a in actions {
        match a {
            ClientAction::Send(m) => {
                let _ = open.ctl.send(&m).await;
            }
            ClientAction::ClockSynced(c) => *clock = Some(c),
            ClientAction::Reconfigured(r) => reconfigured.push(report::Reconfigured {
                mode: r.mode.as_ref().map(report::mode_name),
                bitrate_kbps: r.bitrate_kbps,
            }),
            ClientAction::Closed { reason, code } => closed = Some((reason, code)),
            _ => {}
        }
    }
    match closed {
        Some((reason, code)) => Err(ClientError::coded(
            format!("the host ended the session: {reason}"),
            code,
        )),
        None => Ok(()),
    }
}

/// The receive counters, as the host's `Stats`.
async fn send_stats(open: &mut Open, pipeline: &Pipeline) {
    let s = pipeline.receiver.stats();
    let c = &pipeline.counters;
    let stats = Stats {
        frames_received: c.video_frames.load(Ordering::Relaxed),
        frames_lost: c.lost.load(Ordering::Relaxed),
        fec_recovered_shards: s.wire.recovered_shards,
        bytes_received: s.bytes,
        ..Default::default()
    };
    let _ = open.ctl.send(&open.session.stats(stats)).await;
}

/// What the receive side returned when the stream ended.
struct Collected {
    verified: Verified,
    decoded: Option<DecodeOutcome>,
    audio: Option<AudioOutcome>,
    rx_stats: ReceiverStats,
    counters: Arc<RxCounters>,
}

/// Says goodbye, stops the receiver and waits (off the async workers) for each thread to
/// drain and finish in turn, then closes the connection.
async fn teardown(open: &mut Open, pipeline: Pipeline) -> Result<Collected, ClientError> {
    let goodbye = open.session.goodbye("done");
    let _ = open.ctl.send(&goodbye).await;
    let _ = open.ctl.send.finish();
    let Pipeline {
        receiver,
        verifier,
        decoder,
        audio,
        counters,
        lost_rx: _,
    } = pipeline;
    let collected = tokio::task::spawn_blocking(move || -> anyhow::Result<Collected> {
        // Stopping the receiver drops its senders; each thread then drains and finishes.
        let (rx_stats, _) = receiver.shutdown();
        let verified = verifier
            .join()
            .map_err(|_| anyhow!("the verifier thread panicked"))?;
        let decoded = decoder.map(DecoderHandle::join).transpose()?;
        let audio = audio
            .map(|t| t.join().map_err(|_| anyhow!("the audio thread panicked")))
            .transpose()?;
        Ok(Collected {
            verified,
            decoded,
            audio,
            rx_stats,
            counters,
        })
    })
    .await
    .map_err(anyhow::Error::from)??;
    open.connection
        .close(crate::conn::CLOSE_DONE.into(), b"done");
    Ok(collected)
}

/// The report of a run that streamed.
fn build_report(
    host: &str,
    opts: &StreamOptions,
    open: &Open,
    settled: &Settled,
    ran: Ran,
    collected: Collected,
) -> StreamReport {
    let offset = ran.clock.or_else(|| open.session.clock());
    let Collected {
        verified,
        decoded,
        audio,
        rx_stats,
        counters,
    } = collected;
    let est = offset.unwrap_or(ClockEstimate {
        offset_ns: 0,
        rtt_ns: 0,
    });
    let (latency_us, rows) =
        latencies(&verified, decoded.as_ref(), &est, opts.frames_out.is_some());
    let (saved_frame, artefact_error) = write_artefacts(opts, decoded.as_ref(), &rows);
    let trailing = verify::trailing_gap(verified.last, ran.started_ns, ran.ended_ns);
    let payload = settled.payload;
    let mut report = StreamReport {
        host: host.to_string(),
        mode: open.welcome.mode.as_ref().map(report::mode_name),
        bitrate_kbps: Some(open.welcome.bitrate_kbps),
        duration_s: ran.elapsed_s,
        frames_received: verified.frames,
        frames_verified: verified.ok,
        verify_failures: verified.failures + counters.overflow.load(Ordering::Relaxed),
        frames_lost: counters.lost.load(Ordering::Relaxed),
        keyframe_requests: ran.keyframe_requests,
        fec_recovered_shards: rx_stats.wire.recovered_shards,
        goodput_mbps: verified.bytes as f64 * 8.0 / ran.elapsed_s.max(1e-9) / 1e6,
        first_frame_ms: verified
            .first_delivered_ns
            .map(|d| d.saturating_sub(open.connect_started_ns) as f64 / 1e6),
        skew_corrected: offset.is_some(),
        clock_offset_us: offset.map(|c| c.offset_ns as f64 / 1e3),
        clock_rtt_us: offset.map(|c| c.rtt_ns as f64 / 1e3),
        host_verified: open.host_verified,
        payload: Some(payload.name()),
        pacing: punktfunk_control::keys::pacing_from_proto(open.welcome.pacing)
            .map(punktfunk_wire::PacingMode::as_str),
        codec: settled
            .codec
            .filter(|_| payload == Payload::Encoded)
            .map(VideoCodec::name),
        keyframes: verified.keyframes,
        discontinuities: verified.discontinuities,
        gaps: verified.gaps.clone(),
        reconfigured: ran.reconfigured.clone(),
        saved_frame,
        latency_us,
        ..Default::default()
    };
    report_decoded(&mut report, &verified, decoded.as_ref());
    report_audio(&mut report, audio.as_ref(), &counters);
    report.conclude(ran.end, trailing, artefact_error);
    report
}

/// The decoder's fields of the report (`--decode`).
fn report_decoded(report: &mut StreamReport, verified: &Verified, decoded: Option<&DecodeOutcome>) {
    let Some(d) = decoded else {
        return;
    };
    let counter = decode::summarise_counters(&d.pictures);
    report.decoded_frames = Some(d.decoded);
    report.picture_sizes = d.sizes.clone();
    report.decoded_fraction = Some(d.decoded as f64 / verified.frames.max(1) as f64);
    report.decode_errors = Some(d.errors + d.unmatched);
    report.decode_skipped = Some(d.skipped + verified.decoder_overflow);
    report.decoder_restarts = Some(d.restarts);
    report.counter_first = counter.first;
    report.counter_last = counter.last;
    report.counter_strictly_increasing = Some(counter.strictly_increasing);
    report.counter_resets = Some(counter.resets);
    report.counter_unreadable = Some(counter.unreadable);
}

/// The audio fields of the report (when the host streamed audio).
fn report_audio(report: &mut StreamReport, audio: Option<&AudioOutcome>, counters: &RxCounters) {
    let Some(a) = audio else {
        return;
    };
    report.audio_packets = Some(a.packets);
    report.audio_decoded = Some(a.decoded);
    report.audio_decode_errors = Some(a.decode_errors);
    report.audio_lost = Some(counters.audio_lost.load(Ordering::Relaxed));
    report.audio_rms = a.rms;
    report.audio_frequency_hz = a.frequency_hz;
}

/// The per-stage latency distributions, and (with `want_rows`) one `--frames-out` row per
/// received frame.
fn latencies(
    verified: &Verified,
    decoded: Option<&DecodeOutcome>,
    est: &ClockEstimate,
    want_rows: bool,
) -> (BTreeMap<&'static str, report::Stage>, Vec<FrameRow>) {
    let pictures: HashMap<u64, &Picture> = decoded
        .iter()
        .flat_map(|d| d.pictures.iter().map(|p| (p.index, p)))
        .collect();
    let mut stages: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for info in &verified.infos {
        let st = info
            .timing
            .map(|t| report::frame_stages(&t, info.first_arrival_ns, info.delivered_ns, est))
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
        if want_rows {
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
    (latency_us, rows)
}

/// Writes `--save-frame` and `--frames-out`; the saved frame, and the first error.
fn write_artefacts(
    opts: &StreamOptions,
    decoded: Option<&DecodeOutcome>,
    rows: &[FrameRow],
) -> (Option<SavedFrame>, Option<String>) {
    let mut artefact_error = None;
    let saved_frame = match (&opts.save_frame, decoded) {
        (Some(path), Some(d)) => match &d.kept {
            Some(k) => match save_frame(path, k) {
                Ok(saved) => Some(saved),
                Err(e) => {
                    artefact_error = Some(chain(&e));
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
        && let Err(e) = frames_out::write_file(path, rows)
    {
        artefact_error.get_or_insert(chain(&e));
    }
    (saved_frame, artefact_error)
}

/// Writes the kept picture as PNG to `path`.
fn save_frame(path: &Path, k: &KeptPicture) -> anyhow::Result<SavedFrame> {
    snapshot::save_png(path, k)?;
    Ok(SavedFrame {
        file: path.display().to_string(),
        frame: k.index,
        counter: k.counter,
        width: k.width,
        height: k.height,
    })
}
