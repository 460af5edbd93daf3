//! What `stream --json` prints, and the percentile arithmetic behind it.

use std::collections::BTreeMap;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_frames: Option<u64>,
    /// False when this client has not paired with the host (an explicitly open host).
    pub host_verified: bool,
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
}
