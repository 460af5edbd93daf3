//! What `stream --json` prints, and the percentile arithmetic behind it.

use std::collections::BTreeMap;

use punktfunk_control::clock::ClockEstimate;
use punktfunk_wire::au::AuTiming;
use serde::Serialize;

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

/// A delivery gap between two consecutive received video frames.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Gap {
    /// Index of the last frame before the gap.
    pub after_frame: u64,
    /// Time between the two frames' delivery, ms.
    pub ms: f64,
    /// The frame after the gap was flagged DISCONTINUITY by the host.
    pub discontinuity: bool,
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

/// The stream report (documented in the README).
#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub host: String,
    pub mode: String,
    pub bitrate_kbps: u32,
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
    pub payload: &'static str,
    /// The codec of encoded frames ("h264", "hevc").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<&'static str>,
    /// Frames flagged keyframe / discontinuity in their AU envelope.
    pub keyframes: u64,
    pub discontinuities: u64,
    pub gaps: Vec<Gap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_frames: Option<u64>,
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
    pub latency_us: BTreeMap<&'static str, Stage>,
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

#[cfg(test)]
mod tests {
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
