//! x264 encode latency from the ring records (encode_end − encode_start, and capture → ring
//! write) for the (game-pattern) test source at 720p60 and 1080p60, 5 s each. `cargo bench -p punktfunk-media`.
//!
//! Method: the real worker (videotestsrc live → counter → videoconvert → x264enc ultrafast/
//! zerolatency → h264parse → appsink → ring) runs at the mode's real rate; a consumer reads the
//! ring; the first second is discarded (encoder warm-up); percentiles are over the rest.

use std::time::{Duration, Instant};

use punktfunk_media::description::{Codec, EncoderKind, GAME_PATTERN, Mode, ModeExt, mode};
use punktfunk_media::worker::{EncodeWorker, Source, StreamConfig};
use punktfunk_ring::Consumer;

fn pct(v: &mut [u64], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) * p).div_ceil(100)] as f64 / 1e6
}

fn run(mode: Mode, kbps: u32) {
    let (worker, fds) = match EncodeWorker::start(
        StreamConfig {
            source: Source::Test {
                pattern: GAME_PATTERN.into(),
            },
            mode,
            codec: Codec::H264,
            bitrate_kbps: kbps,
            encoder: Some(EncoderKind::X264),
        },
        false,
    ) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot start {}: {e}", mode.label());
            return;
        }
    };
    let Ok(mut consumer) = Consumer::attach(fds.video) else {
        eprintln!("cannot attach the ring");
        return;
    };
    let start = Instant::now();
    let (mut enc, mut total, mut n, mut bytes) = (Vec::new(), Vec::new(), 0u64, 0u64);
    while start.elapsed() < Duration::from_secs(6) {
        let _ = consumer.wait(Some(Duration::from_millis(50)));
        while let Ok(Some(rec)) = consumer.try_read() {
            n += 1;
            if start.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let m = *rec.meta();
            bytes += rec.payload().len() as u64;
            enc.push(m.encode_end_ns.saturating_sub(m.encode_start_ns));
            total.push(rec.written_ns().saturating_sub(m.captured_ns));
        }
    }
    let s = worker.stats();
    worker.stop();
    println!(
        "x264 {} @ {} kbit/s: {} AUs measured ({n} total, {:.1} fps), encode p50 {:.2} ms p99 {:.2} ms, \
         capture→ring p50 {:.2} ms p99 {:.2} ms, {:.1} Mbit/s, dropped {} frames, ring drops {}",
        mode.label(),
        kbps,
        enc.len(),
        enc.len() as f64 / 5.0,
        pct(&mut enc, 50),
        pct(&mut enc, 99),
        pct(&mut total, 50),
        pct(&mut total, 99),
        bytes as f64 * 8.0 / 5.0 / 1e6,
        s.dropped_frames,
        s.ring_dropped
    );
}

fn main() {
    run(mode(1280, 720, 60), 20_000);
    run(mode(1920, 1080, 60), 20_000);
}
