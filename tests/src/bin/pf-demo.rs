//! `just demo`: the appliance on this machine, end to end.
//!
//! Starts the four daemons the way systemd does (socket activation, NOTIFY_SOCKET, a
//! watchdog), shows what they told the service manager and `punktfunkctl status`, pairs the
//! reference client with a PIN, streams 10 s of 1280x720@60 H.264 from punktfunk-media's test
//! source with Opus audio over punktfunk/1 on loopback, decodes every picture and packet in the
//! client, prints a summary, writes a decoded frame and a latency-per-frame plot as PNGs, and
//! stops everything with SIGTERM.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use punktfunk_tests::DAEMONS;
use punktfunk_tests::plot::{Series, latency_plot};
use punktfunk_tests::stack::Stack;
use serde_json::Value;

const SECONDS: &str = "10";
const MODE: &str = "1280x720@60";
const BITRATE: &str = "20000";

fn main() {
    let out_dir = output_dir();
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("cannot create {}: {e}", out_dir.display());
        std::process::exit(1);
    }
    let out_dir = out_dir.canonicalize().unwrap_or(out_dir);
    let t0 = Instant::now();
    println!("starting the four daemons as systemd would (socket activation, notify, watchdog)…");
    let mut stack = Stack::start(&[]);
    println!("runtime dir: {}", stack.sup.runtime_dir().display());
    for name in DAEMONS {
        let lines = stack.sup.unit(name).notify.lines();
        let ready_at = lines
            .iter()
            .find(|(_, l)| l == "READY=1")
            .map(|(at, _)| at.duration_since(t0));
        let status = lines
            .iter()
            .filter_map(|(_, l)| l.strip_prefix("STATUS=").map(str::to_string))
            .next_back()
            .unwrap_or_default();
        println!(
            "punktfunk-{name:<9} READY=1 after {:>6.1} ms  STATUS={status}",
            ready_at.unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    let mut ok = true;
    println!("\n$ punktfunkctl status");
    ok &= show(&stack.sup.ctl(&["status"]));

    println!(
        "\n$ punktfunkctl pair   (then punktfunk-client pair --pin <PIN> {})",
        stack.host()
    );
    match stack.pair() {
        Ok(pin) => println!("paired with PIN {pin}"),
        Err(e) => {
            eprintln!("{e}");
            ok = false;
        }
    }

    let frame_png = out_dir.join("decoded-frame.png");
    let csv = out_dir.join("frames.csv");
    let plot_png = out_dir.join("latency.png");
    if ok {
        let args = [
            "stream",
            &stack.host(),
            "--duration",
            SECONDS,
            "--mode",
            MODE,
            "--bitrate",
            BITRATE,
            "--codec",
            "h264",
            "--decode",
            "--save-frame",
            path_str(&frame_png),
            "--frames-out",
            path_str(&csv),
            "--json",
        ];
        println!("\n$ punktfunk-client {}", args.join(" "));
        println!("streaming {SECONDS} s…");
        let out = stack.client(&args).output().expect("punktfunk-client");
        if out.status.success() {
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(r) => {
                    ok &= summary(&r);
                    std::fs::write(out_dir.join("report.json"), &out.stdout).ok();
                }
                Err(e) => {
                    eprintln!("the client's report is not JSON: {e}");
                    ok = false;
                }
            }
            match plot(&csv, &plot_png) {
                Ok(()) => {}
                Err(e) => {
                    eprintln!("plot: {e}");
                    ok = false;
                }
            }
        } else {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            ok = false;
        }
    }

    println!("\n$ punktfunkctl status   (after the client left)");
    show(&stack.sup.ctl(&["status"]));
    println!("\nstopping (SIGTERM):");
    for (name, status, took) in stack.stop() {
        match status {
            Some(s) => {
                println!(
                    "punktfunk-{name:<9} exited {s} after {:.1} ms",
                    took.as_secs_f64() * 1e3
                );
                ok &= s.success();
            }
            None => {
                println!("punktfunk-{name:<9} did not exit within 5 s");
                ok = false;
            }
        }
    }
    if ok {
        println!("\nwritten to {}:", out_dir.display());
        for f in [&frame_png, &plot_png, &csv, &out_dir.join("report.json")] {
            println!("  {}", f.display());
        }
    } else {
        // The daemons' logs live in a temporary dir that goes with the stack: keep copies.
        let logs = out_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        for name in DAEMONS {
            let _ = std::fs::copy(
                &stack.sup.unit(name).log_path,
                logs.join(format!("{name}.log")),
            );
        }
        eprintln!(
            "\nthe demo FAILED; the daemons' logs are in {}",
            logs.display()
        );
        std::process::exit(1);
    }
}

/// `<workspace>/demo-out`, or `$PUNKTFUNK_DEMO_OUT`.
fn output_dir() -> PathBuf {
    std::env::var_os("PUNKTFUNK_DEMO_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo-out"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("the output path is UTF-8")
}

/// Prints the summary table; false when the run does not meet the demo's bar (≥ 99 % of frames
/// decoded, counter strictly increasing, audio decoded).
fn summary(r: &Value) -> bool {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let received = n("frames_received");
    let decoded = n("decoded_frames");
    let duration = f("duration_s");
    let pct = 100.0 * decoded as f64 / received.max(1) as f64;
    println!("\n{:<34} {}", "mode", r["mode"].as_str().unwrap_or("?"));
    println!(
        "{:<34} {:.1} fps ({} frames in {:.1} s)",
        "frames received",
        received as f64 / duration.max(1e-9),
        received,
        duration
    );
    let requested_mbps = BITRATE.parse::<f64>().unwrap_or(f64::NAN) / 1000.0;
    let goodput_pct = 100.0 * f("goodput_mbps") / requested_mbps;
    println!(
        "{:<34} {:.2} Mbit/s ({goodput_pct:.0} % of the {requested_mbps:.0} Mbit/s asked for)",
        "bitrate (goodput)",
        f("goodput_mbps")
    );
    println!(
        "{:<34} {} of {} ({pct:.2} %)",
        "decoded (avdec_h264)", decoded, received
    );
    println!(
        "{:<34} {}..{}, strictly increasing: {}",
        "frame counter read back",
        r["counter_first"],
        r["counter_last"],
        r["counter_strictly_increasing"]
    );
    println!("{:<34} {}", "frames lost", n("frames_lost"));
    println!(
        "{:<34} {:.1} ms",
        "first frame (from connect)",
        f("first_frame_ms")
    );
    println!(
        "{:<34} {} received, {} decoded, rms {:.3}",
        "audio packets (Opus, 5 ms)",
        n("audio_packets"),
        n("audio_decoded"),
        f("audio_rms")
    );
    println!(
        "\n{:<34} {:>10} {:>10}",
        "latency per stage (µs)", "p50", "p99"
    );
    for stage in punktfunk_tests::stack::LATENCY_STAGES {
        let s = &r["latency_us"][stage];
        if let (Some(p50), Some(p99)) = (s["p50"].as_f64(), s["p99"].as_f64()) {
            println!("{stage:<34} {p50:>10.0} {p99:>10.0}");
        }
    }
    let good = received > 0
        && decoded * 100 >= received * 99
        && r["counter_strictly_increasing"] == true
        && n("audio_decoded") > 0
        && goodput_pct >= 80.0;
    if !good {
        eprintln!(
            "below the bar: ≥ 99 % decoded, counter strictly increasing, audio decoded, goodput \
             ≥ 80 % of the bitrate asked for (the busy test source fills it)"
        );
    }
    good
}

/// Per-frame latency from the client's CSV, plotted.
fn plot(csv: &Path, png: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(csv).map_err(|e| format!("cannot read {}: {e}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty CSV")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no column {name} in {}", csv.display()))
    };
    let index = col("index")?;
    let wanted = [
        ("capture → reassembled", col("capture_to_reassembled_us")?),
        ("encode", col("encode_us")?),
        ("decode", col("decode_us")?),
    ];
    let mut series: Vec<Series> = wanted
        .iter()
        .map(|(name, _)| Series {
            name: name.to_string(),
            points: Vec::new(),
        })
        .collect();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let Some(i) = fields.get(index).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        for (s, (_, c)) in series.iter_mut().zip(wanted.iter()) {
            if let Some(v) = fields.get(*c).and_then(|v| v.parse::<f64>().ok()) {
                s.points.push((i, v));
            }
        }
    }
    latency_plot(
        &series,
        &format!("punktfunk demo: {MODE} H.264 (x264), per-frame latency"),
        png,
    )
}

fn show(out: &std::process::Output) -> bool {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.success()
}
