//! Capture → reassembled latency through the whole appliance, against the encoder's own share.
//!
//! Starts the four release daemons (transport's `test` source: punktfunk-media's videotestsrc
//! → x264enc ultrafast/zerolatency → AU ring → transport's pump → paced, sealed, FEC-protected
//! UDP on loopback → the reference client's reassembler) and streams 10 s at 720p60 and
//! 1080p60, 20 Mbit/s, H.264, no client-side decode (so the client does not compete with the
//! encoder for the two cores). Each frame carries the host's stage stamps in its AU envelope;
//! the client puts them on its own clock (8-round min-RTT sync) and reports p50/p99 per stage.
//!
//! The baseline in the same run is the encode stage itself (encoder sink pad → parsed AU at
//! the appsink, measured in media): `transport share = capture→reassembled − encode`, the aim
//! being ≤ 1 ms at p50. `cargo bench -p punktfunk-media --bench encode` gives the encoder
//! alone, without the rest of the stack running (`just bench` runs both).

use punktfunk_tests::stack::Stack;
use serde_json::Value;

const MODES: [&str; 2] = ["1280x720@60", "1920x1080@60"];

fn main() {
    let mut stack = Stack::start(&[("transport", "PUNKTFUNK_LOG", "warn")]);
    if let Err(e) = stack.pair() {
        eprintln!("cannot pair: {e}");
        std::process::exit(1);
    }
    println!(
        "\nend to end, x264 (ultrafast, zerolatency), 20 Mbit/s, 10 s each, loopback; µs\n\
         {:<14} {:>7} {:>9} {:>9} {:>11} {:>11} {:>12} {:>12} {:>10}",
        "mode",
        "frames",
        "enc p50",
        "enc p99",
        "c→r p50",
        "c→r p99",
        "c→handed p50",
        "pkt→r p50",
        "share p50"
    );
    let mut failed = false;
    for mode in MODES {
        let out = stack
            .client(&[
                "stream",
                &stack.host(),
                "--duration",
                "10",
                "--mode",
                mode,
                "--bitrate",
                "20000",
                "--codec",
                "h264",
                "--no-audio",
                "--json",
            ])
            .output()
            .expect("client");
        if !out.status.success() {
            eprintln!("{mode}: {}", String::from_utf8_lossy(&out.stderr));
            failed = true;
            continue;
        }
        let r: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{mode}: not JSON ({e})");
                failed = true;
                continue;
            }
        };
        let st = |stage: &str, q: &str| r["latency_us"][stage][q].as_f64().unwrap_or(f64::NAN);
        let enc = st("encode", "p50");
        let c2r = st("capture_to_reassembled", "p50");
        println!(
            "{:<14} {:>7} {:>9.0} {:>9.0} {:>11.0} {:>11.0} {:>12.0} {:>12.0} {:>10.0}",
            mode,
            r["frames_received"].as_u64().unwrap_or(0),
            enc,
            st("encode", "p99"),
            c2r,
            st("capture_to_reassembled", "p99"),
            st("capture_to_handed", "p50"),
            st("first_packet_to_reassembled", "p50"),
            c2r - enc,
        );
    }
    println!(
        "share = capture→reassembled − encode: conversion + queueing before the encoder, the ring, \
         the pump, pacing, the network and reassembly (aim: ≤ 1000 µs at p50)"
    );
    stack.stop();
    if failed {
        std::process::exit(1);
    }
}
