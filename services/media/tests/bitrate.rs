//! Live bitrate change: 20 → 5 Mbit/s on a running x264 pipeline — the measured rate drops
//! within 2 s, with no new IDR and no pipeline restart.

mod common;

use std::time::Duration;

use common::{Au, read_for};
use punktfunk_media::description::{Codec, EncoderKind, mode};
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::{Consumer, monotonic_ns};

/// Bits per second of the AUs whose encode ended in (end − 1 s, end].
fn rate_at(aus: &[Au], end_ns: u64) -> f64 {
    let start = end_ns.saturating_sub(1_000_000_000);
    let bytes: usize = aus
        .iter()
        .filter(|a| a.encode_end_ns > start && a.encode_end_ns <= end_ns)
        .map(|a| a.payload.len())
        .sum();
    bytes as f64 * 8.0
}

#[test]
fn x264_bitrate_drops_live_without_idr_or_restart() {
    // Snow is incompressible: the encoder spends whatever rate it is given.
    let (worker, fds) = EncodeWorker::start(
        StreamConfig {
            source: Source::Test {
                pattern: "snow".into(),
            },
            // 30 Hz keeps the noise encode light on 2 busy cores; the rate is per second either way.
            mode: mode(1280, 720, 30),
            codec: Codec::H264,
            bitrate_kbps: 20_000,
            encoder: Some(EncoderKind::X264),
        },
        false,
    )
    .expect("start");
    let mut consumer = Consumer::attach(fds.video).expect("attach");
    let generation = worker.generation();
    let mut aus = read_for(&mut consumer, Duration::from_secs(4));
    let t_change = monotonic_ns();
    let restarted = worker.reconfigure(Some(5_000), None).expect("reconfigure");
    assert!(!restarted, "a bitrate change must not restart the pipeline");
    aus.extend(read_for(&mut consumer, Duration::from_secs(4)));

    let before = rate_at(&aus, t_change);
    let after = rate_at(&aus, t_change + 2_000_000_000);
    let later = rate_at(&aus, t_change + 3_500_000_000);
    eprintln!(
        "rate before {:.1} Mbit/s, 2 s after {:.1} Mbit/s, 3.5 s after {:.1} Mbit/s; {} AUs",
        before / 1e6,
        after / 1e6,
        later / 1e6,
        aus.len()
    );
    assert!(before > 12e6, "20 Mbit/s stream measured {before}");
    assert!(
        after < 8e6 && after < before / 2.0,
        "2 s after the change the rate is {after} (before {before})"
    );
    let idrs = aus.iter().filter(|a| a.idr(Codec::H264)).count();
    assert_eq!(idrs, 1, "only the initial IDR");
    assert!(aus[0].idr(Codec::H264));
    assert_eq!(worker.generation(), generation, "same pipeline");
    let s = worker.stats();
    assert_eq!(s.generation, 1);
    assert_eq!(s.keyframes, 1);
    assert_eq!(worker.desc().map(|d| d.bitrate_kbps), Some(5_000));
    worker.stop();
}
