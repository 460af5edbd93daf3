//! Moonlight's connect → first frame against punktfunk/1's, in the same run on the same stack.
//!
//! Starts the four daemons (transport's `test` source: media's videotestsrc → x264enc), pairs
//! a real Moonlight client (moonlight-python: `/serverinfo`, `/applist`, `/launch`, RTSP, ENet,
//! video pings, then libmoonlight-common-c's depacketizer and PyAV's H.264 decoder) and the
//! reference punktfunk/1 client (QUIC handshake, Hello/Welcome, StartStream, then its
//! reassembler), and measures from "start connecting" to "first access unit reassembled by the
//! client" (before decoding, on both sides), 1280x720@60, H.264, loopback, five rounds each,
//! alternating. The baseline is punktfunk/1's number: the ratio says what GameStream's longer
//! handshake (HTTPS serverinfo/applist/launch, seven RTSP requests, ENet, pings) costs.

use punktfunk_tests::moonlight::Moonlight;
use punktfunk_tests::stack::Stack;

const ROUNDS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let stack = Stack::start(&[("transport", "PUNKTFUNK_LOG", "warn")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let moonlight = Moonlight::new(
        dir.path().join("moonlight"),
        "127.0.0.1",
        stack.gamestream_port,
    );
    if let Err(e) = stack.pair().and_then(|_| {
        moonlight
            .pair_with(&stack.sup, "8642", std::time::Duration::from_secs(60))
            .map_err(|e| format!("{e:#}"))
    }) {
        eprintln!("cannot pair: {e}");
        std::process::exit(1);
    }
    let (mut gs, mut pf) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let r = moonlight.run(&[
            "stream",
            "--width",
            "1280",
            "--height",
            "720",
            "--fps",
            "60",
            "--codec",
            "h264",
            "--bitrate",
            "8000",
            "--frames",
            "10",
            "--timeout",
            "20",
            "--quit",
        ]);
        match r["first_au_s"].as_f64() {
            Some(s) => gs.push(s * 1000.0),
            None => {
                eprintln!("Moonlight stream failed: {r}");
                std::process::exit(1);
            }
        }
        let host = stack.host();
        let out = stack
            .client(&[
                "stream",
                &host,
                "--duration",
                "1",
                "--mode",
                "1280x720@60",
                "--codec",
                "h264",
                "--json",
            ])
            .output()
            .expect("punktfunk-client");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        match v["first_frame_ms"].as_f64() {
            Some(ms) => pf.push(ms),
            None => {
                eprintln!(
                    "punktfunk-client stream failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::process::exit(1);
            }
        }
    }
    let (g, p) = (median(&mut gs), median(&mut pf));
    println!(
        "\nconnect -> first access unit at the client, 1280x720@60 H.264, loopback, median of {ROUNDS}; ms\n\
         {:<34} {:>9}\n{:<34} {:>9.1}\n{:<34} {:>9.1}\n{:<34} {:>9.2}",
        "client",
        "ms",
        "Moonlight (GameStream)",
        g,
        "punktfunk/1 (baseline)",
        p,
        "ratio GameStream / punktfunk/1",
        g / p
    );
}
