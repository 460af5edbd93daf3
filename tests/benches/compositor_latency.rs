//! Capture → reassembled latency with a real compositor as the source, against the test
//! source in the same run, at 720p60.
//!
//! Two stacks of release daemons, one after the other, each streaming 10 s at 1280x720@60,
//! 20 Mbit/s, H.264, no client-side decode (so the client does not compete with the encoder
//! for the two cores):
//! * baseline: transport's `test` source (media's videotestsrc);
//! * sway: transport's `compositor` source with `--compositor sway --app "Test pattern"`: sway's
//!   headless output with the test pattern app in it, captured by the screencopy keeper into a
//!   PipeWire node that media reads like any screencast.
//!
//! "Capture" is where media receives a picture (its PipeWire or test source), so the ratio
//! compares what the stack adds after capture with each source: the sway source adds the
//! PipeWire hop's queueing and the conversion of a real desktop's pixels.

use punktfunk_tests::stack::Stack;
use serde_json::Value;

const MODE: &str = "1280x720@60";

/// A stack's source: its daemons' extra environment and the client's extra arguments.
struct Source<'a> {
    name: &'static str,
    env: Vec<(&'static str, &'static str, &'a str)>,
    args: &'static [&'static str],
}

/// One source's figures (µs).
struct Row {
    frames: u64,
    enc_p50: f64,
    c2r_p50: f64,
    c2r_p99: f64,
}

fn run(stack: &mut Stack, extra: &[&str]) -> Result<Row, String> {
    stack.pair()?;
    let host = stack.host();
    let mut args = vec![
        "stream",
        &host,
        "--duration",
        "10",
        "--mode",
        MODE,
        "--bitrate",
        "20000",
        "--codec",
        "h264",
        "--no-audio",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = stack.client(&args).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let r: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))?;
    let st = |stage: &str, q: &str| r["latency_us"][stage][q].as_f64().unwrap_or(f64::NAN);
    Ok(Row {
        frames: r["frames_received"].as_u64().unwrap_or(0),
        enc_p50: st("encode", "p50"),
        c2r_p50: st("capture_to_reassembled", "p50"),
        c2r_p99: st("capture_to_reassembled", "p99"),
    })
}

fn main() {
    let sway = punktfunk_tests::sway_dir();
    let path = punktfunk_tests::path_with_sway(sway.path());
    let sources = [
        Source {
            name: "test",
            env: vec![("transport", "PUNKTFUNK_LOG", "warn")],
            args: &[],
        },
        Source {
            name: "sway",
            env: vec![
                ("transport", "PUNKTFUNK_LOG", "warn"),
                ("transport", "PUNKTFUNK_SOURCE", "compositor"),
                ("session", "PATH", &path),
            ],
            args: &["--app", "Test pattern", "--compositor", "sway"],
        },
    ];
    let mut rows = Vec::new();
    for source in &sources {
        let mut stack = Stack::start(&source.env);
        let row = run(&mut stack, source.args);
        // Outputs outlive the daemons: let the session's end stop its output first.
        let gone = stack.wait_outputs_gone(std::time::Duration::from_secs(15));
        stack.stop();
        if let Err(e) = gone {
            eprintln!("{}: {e}", source.name);
            std::process::exit(1);
        }
        match row {
            Ok(r) => rows.push((source.name, r)),
            Err(e) => {
                eprintln!("{}: {e}", source.name);
                std::process::exit(1);
            }
        }
    }
    println!(
        "\ncompositor source vs test source, {MODE}, x264 (ultrafast, zerolatency), 20 Mbit/s, \
         10 s each, loopback; µs\n{:<8} {:>7} {:>9} {:>9} {:>9} {:>12}",
        "source", "frames", "enc p50", "c→r p50", "c→r p99", "c→r p50 ×"
    );
    let base = rows[0].1.c2r_p50;
    for (name, r) in &rows {
        println!(
            "{:<8} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>12.2}",
            name,
            r.frames,
            r.enc_p50,
            r.c2r_p50,
            r.c2r_p99,
            r.c2r_p50 / base
        );
    }
}
