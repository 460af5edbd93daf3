//! What `stream --json` prints, and the percentile arithmetic behind it.

use std::collections::BTreeMap;

use punktfunk_control::clock::ClockEstimate;
use punktfunk_proto::common::Mode;
use punktfunk_wire::au::AuTiming;
use serde::Serialize;

use crate::outcome::{ClientError, EXIT_FAILED, EXIT_INTERRUPTED, Failure};

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stage {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// p50/p99/max of `samples` (microseconds); `None` when empty.
pub fn stage(samples: &mut [f64]) -> Option<Stage> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Some(Stage {
        p50: at(0.50),
        p99: at(0.99),
        max: samples[samples.len() - 1],
    })
}

/// A host stamp of 0 means "not measured".
fn stamp(ns: u64) -> Option<u64> {
    (ns != 0).then_some(ns)
}

/// `a - b` in µs (signed: clock-sync error can make a short stage negative).
pub fn us(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) / 1e3
}

/// The per-stage latencies of one frame in µs; `None` where the host left a stamp at 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStages {
    pub encode: Option<f64>,
    pub capture_to_handed: Option<f64>,
    pub handed_to_first_packet: Option<f64>,
    pub first_packet_to_reassembled: Option<f64>,
    pub capture_to_reassembled: Option<f64>,
}

/// Splits one frame's latency by stage; host stamps are mapped to the client's clock with `est`.
pub fn frame_stages(
    t: &AuTiming,
    first_arrival_ns: u64,
    delivered_ns: u64,
    est: &ClockEstimate,
) -> FrameStages {
    let captured = stamp(t.captured_ns);
    let handed = stamp(t.handed_ns);
    FrameStages {
        encode: stamp(t.encode_start_ns)
            .zip(stamp(t.encode_end_ns))
            .map(|(s, e)| us(e, s)),
        capture_to_handed: captured.zip(handed).map(|(c, h)| us(h, c)),
        handed_to_first_packet: handed.map(|h| us(first_arrival_ns, est.to_client_time(h))),
        first_packet_to_reassembled: Some(us(delivered_ns, first_arrival_ns)),
        capture_to_reassembled: captured.map(|c| us(delivered_ns, est.to_client_time(c))),
    }
}

/// The host's answer to a `Reconfigure`: the mode and bitrate in effect afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconfigured {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub bitrate_kbps: u32,
}

/// A delivery gap between two consecutive received video frames, or (trailing) from the last
/// one to the end of the run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Gap {
    /// Index of the last frame before the gap; `None` for a trailing gap of a run in which no
    /// frame arrived.
    pub after_frame: Option<u64>,
    /// Time between the two frames' delivery (trailing: from the last delivery, or from the
    /// start of the stream, to the end of the run), ms.
    pub ms: f64,
    /// The frame after the gap was flagged DISCONTINUITY by the host.
    pub discontinuity: bool,
    /// No frame came after this gap: the video stopped before the run ended.
    pub trailing: bool,
}

/// The picture `--save-frame` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SavedFrame {
    pub file: String,
    pub frame: u64,
    pub counter: Option<u32>,
    pub width: u32,
    pub height: u32,
}

/// How a `stream` run ended; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// Video arrived until the end of the run.
    #[default]
    Complete,
    /// The run failed: refused, unreachable, a local fault, a file it could not write.
    Failed,
    /// The video stopped: a trailing gap, or the connection was lost or ended by the host.
    Interrupted,
}

impl Ending {
    pub fn exit_code(self) -> u8 {
        match self {
            Ending::Complete => 0,
            Ending::Failed => EXIT_FAILED,
            Ending::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// The stream report (documented in the README). Fields the host decides (`mode`,
/// `bitrate_kbps`, `payload`, `pacing`) are absent when no `Welcome` arrived.
#[derive(Debug, Default, Serialize)]
pub struct StreamReport {
    pub host: String,
    /// Why the run did not complete, for a human (absent when it did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The host's machine-readable reason, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The mode the host granted (`Welcome.mode`), `WxH@Hz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    pub duration_s: f64,
    pub frames_received: u64,
    pub frames_verified: u64,
    pub verify_failures: u64,
    pub frames_lost: u64,
    pub keyframe_requests: u64,
    pub fec_recovered_shards: u64,
    pub goodput_mbps: f64,
    pub first_frame_ms: Option<f64>,
    pub skew_corrected: bool,
    pub clock_offset_us: Option<f64>,
    pub clock_rtt_us: Option<f64>,
    /// False when this client has not paired with the host (an explicitly open host).
    pub host_verified: bool,
    /// What the video frames carried: "synthetic" or "encoded".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'static str>,
    /// How the host paces the video (`Welcome.pacing`): "kernel-fq" (departure times, held
    /// by the fq qdisc) or "user-space" (the host's send thread sleeps between chunks); absent
    /// when the host did not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing: Option<&'static str>,
    /// The codec of encoded frames ("h264", "hevc").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<&'static str>,
    /// Frames flagged keyframe / discontinuity in their AU envelope.
    pub keyframes: u64,
    pub discontinuities: u64,
    pub gaps: Vec<Gap>,
    /// The host's answers to `--reconfigure`: what is in effect afterwards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconfigured: Vec<Reconfigured>,
    /// `--input-script`: input datagrams sent, and those quinn refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_send_errors: Option<u64>,
    /// Feedback datagrams the host sent (rumble, lightbar, player LEDs, trigger effects), and
    /// the first thousand of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_received: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<crate::input::Feedback>,
    /// When each input event was sent (CLOCK_MONOTONIC ns, the first 10,000): latency benches
    /// match them with what arrived.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_sent_ns: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_frames: Option<u64>,
    /// The decoded pictures' sizes in order, one run per size (`--decode`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub picture_sizes: Vec<crate::decode::SizeRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_skipped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_restarts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_first: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_strictly_increasing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_resets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_unreadable: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_frame: Option<SavedFrame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_decoded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_decode_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_rms: Option<f64>,
    /// The decoded audio's tone (Hz), from its zero crossings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_frequency_hz: Option<f64>,
    pub latency_us: BTreeMap<&'static str, Stage>,
    /// Not printed: the exit code.
    #[serde(skip)]
    pub ending: Ending,
}

impl StreamReport {
    /// The report of a run that failed before it could measure anything.
    pub fn failed(host: &str, e: ClientError) -> Self {
        Self {
            host: host.to_string(),
            error: Some(e.message),
            error_code: e.code,
            ending: Ending::Failed,
            ..Default::default()
        }
    }

    /// Records how the run ended: `stream_end` is how the stream loop ended (an error: the
    /// connection was lost or the host ended the session), `trailing` the time without video
    /// at the end of the run, `artefact_error` a `--save-frame`/`--frames-out` failure.
    pub fn conclude(
        &mut self,
        stream_end: Result<(), ClientError>,
        trailing: Option<Gap>,
        artefact_error: Option<String>,
    ) {
        let mut problems = Vec::new();
        match stream_end {
            Err(e) => {
                self.ending = Ending::Interrupted;
                self.error_code = e.code;
                problems.push(e.message);
            }
            Ok(()) => {
                if let Some(g) = &trailing {
                    self.ending = Ending::Interrupted;
                    problems.push(video_stopped(g));
                }
            }
        }
        self.gaps.extend(trailing);
        if let Some(e) = artefact_error {
            if self.ending == Ending::Complete {
                self.ending = Ending::Failed;
            }
            problems.push(e);
        }
        self.error = (!problems.is_empty()).then(|| problems.join("; "));
    }

    /// `Ok` for a complete run, else the error and exit code for `main`.
    pub fn outcome(&self) -> Result<(), Failure> {
        match self.ending {
            Ending::Complete => Ok(()),
            ending => Err(Failure {
                message: self
                    .error
                    .clone()
                    .unwrap_or_else(|| "the run did not complete".into()),
                exit: ending.exit_code(),
            }),
        }
    }
}

/// The error of a run whose video stopped while the connection stayed up.
fn video_stopped(g: &Gap) -> String {
    match g.after_frame {
        Some(_) => format!(
            "video stopped: no frame arrived in the last {:.1} s of the run",
            g.ms / 1e3
        ),
        None => format!("no video frame arrived in {:.1} s", g.ms / 1e3),
    }
}

/// The speed-test report.
#[derive(Debug, Serialize)]
pub struct SpeedReport {
    pub host: String,
    pub target_kbps: u32,
    pub duration_ms: u32,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub loss_percent: f64,
    pub send_drops: u64,
    pub goodput_mbps: f64,
    pub percent_of_target: f64,
}

/// `WxH@Hz` (Hz without trailing zeros: `1920x1080@59.94`).
pub fn mode_name(m: &Mode) -> String {
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

pub fn print_stream(r: &StreamReport, json: bool) {
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
    print_summary(r, mode);
    print_decoded(r);
    print_artefacts_and_audio(r);
    print_gaps(r);
    print_latency(r);
    print_input(r);
}

/// `--input-script`: what was sent and what came back.
fn print_input(r: &StreamReport) {
    let Some(sent) = r.input_sent else { return };
    println!(
        "input {sent} events sent ({} refused), {} feedback events received",
        r.input_send_errors.unwrap_or(0),
        r.feedback_received.unwrap_or(0)
    );
    for f in &r.feedback {
        println!(
            "  feedback {}",
            serde_json::to_string(f).unwrap_or_default()
        );
    }
}

/// The text report's first lines: host, frames, payload, goodput and clock.
fn print_summary(r: &StreamReport, mode: &str) {
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
        "payload {}{}, pacing {}, {} keyframes, {} discontinuities",
        r.payload.unwrap_or("-"),
        r.codec.map(|c| format!(" ({c})")).unwrap_or_default(),
        r.pacing.unwrap_or("-"),
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
}

/// The decoder's lines (`--decode`).
fn print_decoded(r: &StreamReport) {
    let Some(d) = r.decoded_frames else {
        return;
    };
    println!(
        "decoded {}/{} ({:.1} %), {} decode errors, {} frames skipped waiting for a keyframe",
        d,
        r.frames_received,
        100.0 * r.decoded_fraction.unwrap_or(0.0),
        r.decode_errors.unwrap_or(0),
        r.decode_skipped.unwrap_or(0)
    );
    if !r.picture_sizes.is_empty() {
        let runs: Vec<String> = r
            .picture_sizes
            .iter()
            .map(|s| format!("{}x{} ×{}", s.width, s.height, s.pictures))
            .collect();
        println!("picture sizes {}", runs.join(", "));
    }
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

/// The saved frame's line and the audio line, when there are.
fn print_artefacts_and_audio(r: &StreamReport) {
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
            "audio {} packets, {} decoded, {} errors, {} lost, rms {}, tone {}",
            p,
            r.audio_decoded.unwrap_or(0),
            r.audio_decode_errors.unwrap_or(0),
            r.audio_lost.unwrap_or(0),
            r.audio_rms
                .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
            r.audio_frequency_hz
                .map_or_else(|| "-".into(), |v| format!("{v:.0} Hz"))
        );
    }
}

/// The `gaps` line.
fn print_gaps(r: &StreamReport) {
    if r.gaps.is_empty() {
        println!("gaps none");
        return;
    }
    let list: Vec<String> = r.gaps.iter().map(gap_text).collect();
    println!("gaps {}", list.join("; "));
}

/// One gap in words.
fn gap_text(g: &Gap) -> String {
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
}

/// The latency table.
fn print_latency(r: &StreamReport) {
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "latency (µs)", "p50", "p99", "max"
    );
    for (k, s) in &r.latency_us {
        println!("{k:<30} {:>10.1} {:>10.1} {:>10.1}", s.p50, s.p99, s.max);
    }
}

#[cfg(test)]
mod tests {
    use punktfunk_control::error::CODE_PAIRING_REQUIRED;

    fn trailing(after_frame: Option<u64>, ms: f64) -> super::Gap {
        super::Gap {
            after_frame,
            ms,
            discontinuity: false,
            trailing: true,
        }
    }

    #[test]
    fn a_complete_run_has_no_error_and_exits_0() {
        let mut r = super::StreamReport::default();
        r.conclude(Ok(()), None, None);
        assert_eq!(
            (r.ending, r.error.as_deref()),
            (super::Ending::Complete, None)
        );
        assert_eq!(r.outcome(), Ok(()));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("error").is_none() && json.get("error_code").is_none());
    }

    #[test]
    fn video_that_stopped_is_an_interruption_with_its_gap() {
        let mut r = super::StreamReport::default();
        r.conclude(Ok(()), Some(trailing(Some(59), 2000.0)), None);
        assert_eq!(r.ending, super::Ending::Interrupted);
        assert_eq!(r.gaps, vec![trailing(Some(59), 2000.0)]);
        let e = r.outcome().unwrap_err();
        assert_eq!(e.exit, super::EXIT_INTERRUPTED);
        assert!(e.message.contains("video stopped"), "{}", e.message);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["gaps"][0]["trailing"], true);
        assert_eq!(json["gaps"][0]["after_frame"], 59);
        // No frame at all.
        let mut r = super::StreamReport::default();
        r.conclude(Ok(()), Some(trailing(None, 3000.0)), None);
        assert!(r.error.unwrap().contains("no video frame arrived in 3.0 s"));
    }

    #[test]
    fn a_lost_connection_is_an_interruption_with_the_hosts_code() {
        let mut r = super::StreamReport::default();
        let lost = super::ClientError::coded(
            "the host closed the connection: unpaired (unpaired)".into(),
            Some("unpaired".into()),
        );
        r.conclude(Err(lost), Some(trailing(Some(7), 900.0)), None);
        assert_eq!(r.ending, super::Ending::Interrupted);
        assert_eq!(r.error_code.as_deref(), Some("unpaired"));
        assert_eq!(
            r.error.as_deref(),
            Some("the host closed the connection: unpaired (unpaired)")
        );
        assert_eq!(r.outcome().unwrap_err().exit, super::EXIT_INTERRUPTED);
    }

    #[test]
    fn a_file_that_could_not_be_written_fails_the_run() {
        let mut r = super::StreamReport::default();
        r.conclude(
            Ok(()),
            None,
            Some("--save-frame: no picture was decoded".into()),
        );
        assert_eq!(r.outcome().unwrap_err().exit, super::EXIT_FAILED);
        // An interruption stays the exit code's reason; both are in the error.
        let mut r = super::StreamReport::default();
        r.conclude(
            Ok(()),
            Some(trailing(Some(1), 500.0)),
            Some("--frames-out: disk full".into()),
        );
        let e = r.outcome().unwrap_err();
        assert_eq!(e.exit, super::EXIT_INTERRUPTED);
        assert!(e.message.contains("video stopped") && e.message.contains("disk full"));
    }

    #[test]
    fn a_failed_run_reports_the_error_without_host_decided_fields() {
        let e = super::ClientError::coded(
            "the host refused the session: this host requires pairing".into(),
            Some(CODE_PAIRING_REQUIRED.into()),
        );
        let r = super::StreamReport::failed("deck:9777", e);
        assert_eq!(r.outcome().unwrap_err().exit, super::EXIT_FAILED);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["error_code"], CODE_PAIRING_REQUIRED);
        assert_eq!(json["host"], "deck:9777");
        assert_eq!(json["frames_received"], 0);
        assert!(json.get("mode").is_none() && json.get("payload").is_none());
        assert_eq!(json["gaps"], serde_json::json!([]));
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = super::stage(&mut v).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (51.0, 99.0, 100.0));
        assert!(super::stage(&mut []).is_none());
    }

    #[test]
    fn unstamped_stages_are_absent_and_skew_is_corrected() {
        use super::*;
        let est = ClockEstimate {
            offset_ns: 1_000_000,
            rtt_ns: 0,
        };
        // Host clock runs 1 ms ahead of ours.
        let t = AuTiming {
            flags: 0,
            captured_ns: 11_000_000,
            encode_start_ns: 11_100_000,
            encode_end_ns: 11_600_000,
            handed_ns: 11_800_000,
        };
        let s = frame_stages(&t, 10_900_000, 11_000_000, &est);
        assert_eq!(s.encode, Some(500.0));
        assert_eq!(s.capture_to_handed, Some(800.0));
        assert_eq!(s.handed_to_first_packet, Some(100.0));
        assert_eq!(s.first_packet_to_reassembled, Some(100.0));
        assert_eq!(s.capture_to_reassembled, Some(1000.0));
        let s = frame_stages(&AuTiming::default(), 5, 7, &est);
        assert_eq!(
            (
                s.encode,
                s.capture_to_handed,
                s.handed_to_first_packet,
                s.capture_to_reassembled
            ),
            (None, None, None, None)
        );
        assert_eq!(s.first_packet_to_reassembled, Some(0.002));
    }
}
