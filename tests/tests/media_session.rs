//! A client session through the whole appliance: transport starts a stream on the real
//! punktfunk-media (videotestsrc with its frame counter → x264enc, audiotestsrc → opusenc),
//! pumps the AU rings into the data plane, and the reference client decodes every picture
//! (avdec_h264) and every Opus packet. Then the same with punktfunk-media killed mid-stream.

use std::time::{Duration, Instant};

use punktfunk_tests::stack::Stack;
use serde_json::Value;

const MODE: &str = "1280x720@60";

/// One row of `--frames-out`.
#[derive(Debug)]
struct Row {
    index: u64,
    keyframe: bool,
    discontinuity: bool,
    counter: Option<u64>,
}

fn read_frames(path: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).expect("frames csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (i, k, d, c) = (
        col("index"),
        col("keyframe"),
        col("discontinuity"),
        col("counter"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                index: f[i].parse().expect("index"),
                keyframe: f[k] == "1",
                discontinuity: f[d] == "1",
                counter: f[c].parse().ok(),
            }
        })
        .collect()
}

fn report(out: &std::process::Output, stack: &mut Stack) -> Value {
    assert!(
        out.status.success(),
        "client failed: {}\n--- transport log ---\n{}\n--- media log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&stack.log("transport")),
        tail(&stack.log("media")),
    );
    serde_json::from_slice(&out.stdout).expect("stream --json")
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(6000)..]
}

/// `punktfunk-client stream HOST ARGS… --json`, run to its end.
fn stream_json(stack: &Stack, args: &[&str]) -> std::process::Output {
    let host = stack.host();
    let mut all = vec!["stream", host.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    stack.client(&all).output().expect("client")
}

/// Media runs a stream within `limit`.
fn wait_media_encoding(stack: &Stack, limit: Duration) {
    let t = Instant::now();
    while !stack.daemon_status("media").starts_with("encoding") {
        assert!(t.elapsed() < limit, "media never streamed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Media runs no stream within 5 s (the client left, or the stream was given up).
fn assert_media_idle_soon(stack: &Stack) {
    let t = Instant::now();
    while !stack.daemon_status("media").starts_with("idle") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "media still streams after the client left: {}",
            stack.daemon_status("media")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `punktfunk-client stream` of H.264 with decoding and per-frame rows into `csv`.
fn decoding_stream(
    stack: &Stack,
    seconds: &str,
    mode: &str,
    kbps: &str,
    csv: &std::path::Path,
) -> std::process::Command {
    let host = stack.host();
    let csv = csv.to_str().expect("utf-8 path");
    stack.client(&[
        "stream",
        &host,
        "--duration",
        seconds,
        "--mode",
        mode,
        "--bitrate",
        kbps,
        "--codec",
        "h264",
        "--decode",
        "--frames-out",
        csv,
        "--json",
    ])
}

#[test]
fn test_source_720p60_h264_every_frame_decoded_with_audio() {
    let mut stack = Stack::start(&[]);
    stack.pair().expect("pair");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("frames.csv");
    let out = decoding_stream(&stack, "10", MODE, "20000", &csv)
        .output()
        .expect("client");
    let r = report(&out, &mut stack);
    eprintln!("{r:#}");

    let received = r["frames_received"].as_u64().expect("frames_received");
    let decoded = r["decoded_frames"].as_u64().expect("decoded_frames");
    // The live source runs at 60 fps; a loaded machine may make x264 drop some before the
    // encoder (they are gaps in the counter, not losses), but most of 10 s arrive.
    assert!(received >= 300, "only {received} frames in 10 s");
    assert!(
        decoded * 100 >= received * 99,
        "decoded {decoded} of {received} frames"
    );
    assert_eq!(r["verify_failures"], 0);
    assert_eq!(r["counter_strictly_increasing"], true);
    assert_eq!(r["counter_unreadable"], 0);
    assert_eq!(r["discontinuities"], 0);
    // (Delivery gaps without a discontinuity can happen: a starved encoder on 2 cores. Any
    // host-side break in the stream would be flagged, and there must be none.)
    for stage in ["encode", "capture_to_reassembled", "decode"] {
        assert!(
            r["latency_us"][stage]["p50"].as_f64().is_some(),
            "no {stage} latency"
        );
    }
    // Audio: a sine through opusenc → audio ring → data plane → libopus.
    let audio = r["audio_packets"].as_u64().expect("audio_packets");
    assert!(
        audio >= 1000,
        "{audio} audio packets in 10 s of 5 ms packets"
    );
    assert_eq!(r["audio_decoded"].as_u64(), Some(audio));
    assert!(
        r["audio_rms"].as_f64().expect("rms") > 0.05,
        "audio is silent"
    );

    // Infinite GOP end to end: one IDR at the start, more only when the client asked.
    let rows = read_frames(&csv);
    assert_eq!(rows.len() as u64, received);
    assert!(rows[0].keyframe, "the first frame is not an IDR");
    // (A 2-core machine can starve the send thread for a few frames while the encoder and
    // the client's decoder start; each such loss costs one requested IDR, never more.)
    let requests = r["keyframe_requests"].as_u64().expect("keyframe_requests");
    let keyframes = rows.iter().filter(|r| r.keyframe).count() as u64;
    assert!(
        keyframes >= 1 && keyframes <= 1 + requests,
        "{keyframes} IDRs in 10 s of infinite GOP with {requests} requests"
    );
    // The counters read back from decoded pictures climb with the wire index.
    let counters: Vec<u64> = rows.iter().filter_map(|r| r.counter).collect();
    assert_eq!(counters.len() as u64, decoded);
    assert!(counters.windows(2).all(|w| w[0] < w[1]));

    // The client said Goodbye: transport stopped the media stream.
    assert_media_idle_soon(&stack);
    let sessions = stack.sup.ctl(&["sessions", "--json"]);
    let v: Value = serde_json::from_slice(&sessions.stdout).expect("sessions --json");
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0));
}

#[test]
fn media_killed_mid_stream_client_stays_connected_and_reports_the_gap() {
    let mut stack = Stack::start(&[]);
    stack.pair().expect("pair");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("frames.csv");
    let child = decoding_stream(&stack, "14", "640x360@60", "4000", &csv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("client");
    // Let it stream, then kill media the hard way.
    wait_media_encoding(&stack, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    stack.sup.signal("media", rustix::process::Signal::KILL);
    assert!(
        stack
            .sup
            .wait_exit("media", Duration::from_secs(5))
            .is_some()
    );
    // Down for a second, then back on the same sockets (as systemd's Restart= does).
    std::thread::sleep(Duration::from_secs(1));
    let restart = Instant::now();
    stack.sup.start("media");
    stack.sup.wait_ready("media", restart);
    let back = Instant::now();

    let out = child.wait_with_output().expect("client");
    let r = report(&out, &mut stack);
    eprintln!("{r:#}");
    let log = stack.log("transport");
    assert!(
        log.contains("media stream restarted"),
        "transport did not restart the stream:\n{}",
        tail(&log)
    );

    // The client saw exactly one host-side discontinuity, reported as a gap.
    assert_eq!(r["discontinuities"], 1, "{}", r["gaps"]);
    let gaps = r["gaps"].as_array().expect("gaps");
    assert!(!gaps.is_empty());
    let gap_ms = gaps
        .iter()
        .filter_map(|g| g["ms"].as_f64())
        .fold(0.0, f64::max);
    // The gap began at the latest when media died, so it ended at most `gap_ms` after the
    // kill: frames were back within (gap − downtime) of media being ready again.
    let down_ms = back.duration_since(killed).as_secs_f64() * 1e3;
    let resumed_after_back_ms = gap_ms - down_ms;
    eprintln!(
        "gap {gap_ms:.0} ms, media down {down_ms:.0} ms → resumed {resumed_after_back_ms:.0} ms after media was back"
    );
    assert!(
        resumed_after_back_ms < 3000.0,
        "frames resumed {resumed_after_back_ms:.0} ms after media was back"
    );

    // The first frame after the gap is an IDR flagged discontinuous, and decoding continued:
    // the counter restarted with the new worker (one reset) and climbs within each segment.
    let rows = read_frames(&csv);
    let cut = rows
        .iter()
        .position(|r| r.discontinuity)
        .expect("a discontinuous frame");
    assert!(
        rows[cut].keyframe,
        "frame {} after the gap is not an IDR",
        rows[cut].index
    );
    let after = rows[cut..].iter().filter(|r| r.counter.is_some()).count();
    assert!(
        after >= 60,
        "only {after} frames decoded after media came back"
    );
    assert_eq!(r["counter_resets"], 1);
    assert_eq!(r["counter_strictly_increasing"], true);
    // Frames after the gap decode: the discontinuous IDR restarted the decoder cleanly.
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("media") || l.contains("dropped") || l.contains("session"))
        .map(|l| &l[..l.len().min(300)])
        .collect();
    assert_eq!(r["decode_errors"], 0, "{}", notable.join("\n"));
}

/// Issue #9, defect 6: on a host whose encoders are all software (this machine), the host
/// offers H.264 first even though the client prefers HEVC, and a session its encode budget
/// cannot hold is refused with the machine-readable code `capacity` instead of starving every
/// stream (three HEVC clients used to get 10–13 fps each, and all "succeeded").
#[test]
fn software_host_prefers_h264_and_refuses_sessions_past_its_encode_budget() {
    // A budget that holds exactly one 1280x720@30 stream (27.6 Mpixel/s) on this many CPUs.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let need_mpix: u64 = 1280 * 720 * 30 / 1_000_000 + 1;
    let per_cpu = need_mpix.div_ceil(cpus).to_string();
    let mut stack = Stack::start(&[("media", "PUNKTFUNK_SOFTWARE_MPIXELS_PER_CPU", &per_cpu)]);
    stack.pair().expect("pair");
    let host = stack.host();
    // The client's default offer: HEVC first, then H.264.
    let first = stack
        .client(&[
            "stream",
            &host,
            "--duration",
            "8",
            "--mode",
            "1280x720@30",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("client");
    let t = Instant::now();
    while stack.daemon_status("media").starts_with("idle") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the first session never started: {}",
            tail(&stack.log("transport"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = stack
        .client(&[
            "stream",
            &host,
            "--duration",
            "2",
            "--mode",
            "1280x720@30",
            "--json",
        ])
        .output()
        .expect("client");
    let refused: Value = serde_json::from_slice(&second.stdout).unwrap_or_else(|e| {
        panic!(
            "the refused client printed no report ({e}): {}",
            String::from_utf8_lossy(&second.stderr)
        )
    });
    assert!(
        !second.status.success(),
        "a refused session must fail: {refused:#}"
    );
    assert_eq!(refused["error_code"], "capacity", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("budget")),
        "the reason names the limit: {refused:#}"
    );

    let out = first.wait_with_output().expect("first client");
    let r = report(&out, &mut stack);
    assert_eq!(
        r["codec"], "h264",
        "a software-only host offers H.264 first: {r:#}"
    );
    assert!(r["frames_received"].as_u64().unwrap_or(0) > 0, "{r:#}");
}

/// Issue #10: media accepts at most 500 Mbit/s while the protocol allows 2 Gbit/s. A client
/// asking for more than media accepts streams at the clamped bitrate, and the Welcome says
/// which (it used to get a refused StartStream, retried every 200 ms forever).
#[test]
fn a_bitrate_above_what_media_accepts_is_clamped_and_the_welcome_says_so() {
    let mut stack = Stack::start(&[]);
    stack.pair().expect("pair");
    let args = [
        "--duration",
        "2",
        "--mode",
        "640x360@30",
        "--bitrate",
        "900000",
    ];
    let out = stream_json(&stack, &[&args[..], &["--codec", "h264"]].concat());
    let r = report(&out, &mut stack);
    assert_eq!(
        r["bitrate_kbps"], 500_000,
        "the Welcome carries media's ceiling: {r:#}"
    );
    assert!(r["frames_received"].as_u64().unwrap_or(0) > 0, "{r:#}");

    // A mode beyond the encode budget: a coded refusal, not a silent session.
    let out = stream_json(&stack, &["--duration", "2", "--mode", "7680x4320@240"]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("a report even when refused");
    assert!(!out.status.success(), "{r:#}");
    assert_eq!(r["error_code"], "capacity", "{r:#}");
}

/// Issue #9 defect 2 (a Reconfigure media rejects used to abandon the stream, leaking it in
/// media) and #10 (a refusal reaches the client): the client asks mid-stream for a mode beyond
/// media's encode budget. The stream goes on at the old mode without a break, the client is
/// told what holds, and once it leaves media runs no stream.
#[test]
fn a_reconfiguration_media_refuses_keeps_the_stream_and_tells_the_client() {
    let mut stack = Stack::start(&[]);
    stack.pair().expect("pair");
    let out = stream_json(
        &stack,
        &[
            "--duration",
            "4",
            "--mode",
            "640x360@30",
            "--codec",
            "h264",
            "--reconfigure",
            "1:7680x4320@60:20000",
        ],
    );
    let r = report(&out, &mut stack);
    let answers = r["reconfigured"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        answers.last().map(|a| a["mode"].clone()),
        Some(Value::from("640x360@30")),
        "the host's last word is the mode that holds: {r:#}"
    );
    assert_eq!(r["discontinuities"], 0, "{r:#}");
    assert!(
        r["frames_received"].as_u64().unwrap_or(0) >= 60,
        "the stream went on: {r:#}"
    );
    assert!(
        stack
            .log("transport")
            .contains("media refused the reconfiguration"),
        "{}",
        tail(&stack.log("transport"))
    );
    assert_media_idle_soon(&stack);
}

/// A stack whose transport streams the client's compositor output (`source = "compositor"`).
fn compositor_stack() -> Stack {
    let stack = Stack::start(&[("transport", "PUNKTFUNK_SOURCE", "compositor")]);
    stack.pair().expect("pair");
    stack
}

/// [`compositor_stack`] whose session can start sway outputs (the wrapper's directory must
/// live as long as the stack).
fn sway_stack() -> (tempfile::TempDir, Stack) {
    let sway = punktfunk_tests::sway_dir();
    let path = punktfunk_tests::path_with_sway(sway.path());
    let stack = Stack::start(&[
        ("transport", "PUNKTFUNK_SOURCE", "compositor"),
        ("session", "PATH", &path),
    ]);
    stack.pair().expect("pair");
    (sway, stack)
}

/// `stream --app "Test pattern" --decode` for `seconds` at `mode` (spawned, stdout piped),
/// in the host's default compositor or `compositor`; the frames go to `dir/frames.csv`, one
/// decoded picture to `dir/frame.png`.
fn test_pattern_stream(
    stack: &Stack,
    seconds: &str,
    mode: &str,
    dir: &std::path::Path,
    compositor: Option<&str>,
) -> std::process::Child {
    let mut cmd = decoding_stream(stack, seconds, mode, "20000", &dir.join("frames.csv"));
    cmd.args(["--app", "Test pattern", "--save-frame"])
        .arg(dir.join("frame.png"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(c) = compositor {
        cmd.args(["--compositor", c]);
    }
    cmd.spawn().expect("client")
}

/// The decoded picture's size, and the app's counters (asserted never backwards, ≥ `min`).
fn check_test_pattern(
    r: &Value,
    dir: &std::path::Path,
    min: usize,
    stack: &Stack,
) -> ((u64, u64), Vec<u64>) {
    let saved = &r["saved_frame"];
    let size = (
        saved["width"].as_u64().unwrap_or(0),
        saved["height"].as_u64().unwrap_or(0),
    );
    let rows = read_frames(&dir.join("frames.csv"));
    let counters: Vec<u64> = rows.iter().filter_map(|r| r.counter).collect();
    assert!(
        counters.len() >= min,
        "{} of {} frames carried the test pattern's counter\n--- session log ---\n{}",
        counters.len(),
        rows.len(),
        tail(&stack.log("session"))
    );
    // Never backwards. Through media, mutter's screencast now and then delivers one picture
    // twice (0–1 per ~420 frames here, not seen on the raw screencast in session_outputs;
    // not yet explained): repeats are counted, reported and bounded, not hidden.
    assert!(
        counters.windows(2).all(|w| w[0] <= w[1]),
        "counters went backwards: {counters:?}"
    );
    let repeats = counters.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(
        repeats * 100 <= counters.len(),
        "{repeats} repeated pictures in {}: {counters:?}",
        counters.len()
    );
    assert_eq!(r["verify_failures"], 0);
    eprintln!(
        "compositor source {}x{}: {} frames received, {} with the app's counter ({}..={}, \
         {repeats} repeated); capture→reassembled p50 {} µs, gaps {}",
        size.0,
        size.1,
        rows.len(),
        counters.len(),
        counters[0],
        counters[counters.len() - 1],
        r["latency_us"]["capture_to_reassembled"]["p50"],
        r["gaps"]
    );
    (size, counters)
}

/// The session ended: transport stopped its output, and nothing of it is left.
fn assert_outputs_gone_soon(stack: &Stack) {
    if let Err(e) = stack.wait_outputs_gone(Duration::from_secs(10)) {
        panic!("{e}");
    }
}

/// `source = "compositor"`: transport asks punktfunk-session for a mutter output at the
/// client's mode with the built-in "Test pattern" app in it, media captures its screencast
/// (the real PipeWire node, through a ticket transport fetched with `OpenScreencast`), and the
/// client decodes the app's own frame counter. Two sessions in a row at different modes each
/// get an output of exactly their mode. Mutter without a GPU does not reach 60 fps, so the
/// delivered rate is reported, not asserted.
#[test]
fn compositor_source_streams_the_test_pattern_app_from_mutter_at_each_clients_mode() {
    let mut stack = compositor_stack();
    for (mode, size, min) in [(MODE, (1280, 720), 100), ("800x600@30", (800, 600), 50)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = test_pattern_stream(&stack, "8", mode, dir.path(), None)
            .wait_with_output()
            .expect("client");
        let r = report(&out, &mut stack);
        assert_eq!(
            check_test_pattern(&r, dir.path(), min, &stack).0,
            size,
            "the client's pictures have its mode"
        );
        assert_outputs_gone_soon(&stack);
        assert_media_idle_soon(&stack);
    }
}

/// `--compositor sway` at 720p60: the output is sway's headless output, captured by the
/// screencopy keeper into a PipeWire node, which media encodes like any other screencast. The
/// keeper asks for the next frame as soon as one is ready, so at least 80 % of the frames the
/// app drew arrive decoded, every one newer than the one before, and the report carries each
/// stage's latency.
#[test]
fn compositor_source_streams_the_test_pattern_app_from_sway_at_720p60_with_most_frames() {
    let (_sway, mut stack) = sway_stack();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = test_pattern_stream(&stack, "8", MODE, dir.path(), Some("sway"))
        .wait_with_output()
        .expect("client");
    let r = report(&out, &mut stack);
    let (size, counters) = check_test_pattern(&r, dir.path(), 100, &stack);
    assert_eq!(size, (1280, 720), "the client's pictures have its mode");
    assert!(
        counters.windows(2).all(|w| w[0] < w[1]),
        "counters not strictly increasing: {counters:?}"
    );
    let drawn = counters[counters.len() - 1] - counters[0] + 1;
    assert!(
        counters.len() as u64 * 100 >= drawn * 80,
        "{} of the {drawn} frames the app drew arrived",
        counters.len()
    );
    for stage in punktfunk_tests::stack::LATENCY_STAGES {
        assert!(
            r["latency_us"][stage]["p50"].is_number(),
            "no {stage} latency in the report: {r:#}"
        );
    }
    eprintln!(
        "sway 1280x720@60: {} of {drawn} drawn frames decoded ({:.0} %)",
        counters.len(),
        100.0 * counters.len() as f64 / drawn as f64
    );
    assert_outputs_gone_soon(&stack);
    assert_media_idle_soon(&stack);
}

/// A mode `Reconfigure` mid-stream with the compositor source moves the stream to a new output
/// at the new mode (its own compositor with the app in it): the client's pictures after it have
/// the new size, and the old output and then the new one are stopped, leaving nothing.
#[test]
fn compositor_source_reconfigure_to_another_mode_yields_pictures_of_the_new_size() {
    let mut stack = compositor_stack();
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, runs) = reconfigure_to_800x600(&mut stack, &dir.path().join("frames.csv"), &[]);
    let answers = r["reconfigured"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        answers.last().map(|a| a["mode"].clone()),
        Some(Value::from("800x600@30")),
        "the host's last word is the new mode: {r:#}"
    );
    eprintln!("picture sizes through the reconfiguration: {runs:?}");
    assert_outputs_gone_soon(&stack);
    assert_media_idle_soon(&stack);
}

/// `stream --app "Test pattern" --decode` for 10 s at [`MODE`] with a `Reconfigure` to
/// 800x600@30 at 3 s (and `extra` arguments), frames to `csv`: the report and its runs of
/// picture sizes, which must start at 1280x720 and end with a few seconds at 800x600.
fn reconfigure_to_800x600(
    stack: &mut Stack,
    csv: &std::path::Path,
    extra: &[&str],
) -> (Value, Vec<(u64, u64, u64)>) {
    let out = decoding_stream(stack, "10", MODE, "20000", csv)
        .args([
            "--app",
            "Test pattern",
            "--reconfigure",
            "3:800x600@30:20000",
        ])
        .args(extra)
        .output()
        .expect("client");
    let r = report(&out, stack);
    let runs = picture_runs(&r);
    let (first, last) = (runs.first(), runs.last());
    assert_eq!(
        first.map(|r| (r.0, r.1)),
        Some((1280, 720)),
        "pictures before: {runs:?}"
    );
    assert_eq!(
        last.map(|r| (r.0, r.1)),
        Some((800, 600)),
        "pictures after: {runs:?}\n--- transport log ---\n{}",
        tail(&stack.log("transport"))
    );
    assert!(
        last.is_some_and(|r| r.2 >= 30),
        "a few seconds of pictures at the new size: {runs:?}"
    );
    (r, runs)
}

/// The report's runs of decoded picture sizes: (width, height, pictures).
fn picture_runs(r: &Value) -> Vec<(u64, u64, u64)> {
    r["picture_sizes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let n = |k: &str| s[k].as_u64().unwrap_or(0);
                    (n("width"), n("height"), n("pictures"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// With sway a mode `Reconfigure` changes the output in place: the pictures after it have the
/// new size and the app's counter goes on (the same app; a new one would start again at 0),
/// and one output is stopped at the end.
#[test]
fn compositor_source_reconfigure_of_a_sway_output_resizes_it_in_place_with_its_app_running_on() {
    let (_sway, mut stack) = sway_stack();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("frames.csv");
    let (_, runs) = reconfigure_to_800x600(&mut stack, &csv, &["--compositor", "sway"]);
    let counters: Vec<u64> = read_frames(&csv).iter().filter_map(|f| f.counter).collect();
    assert!(
        counters.windows(2).all(|w| w[0] <= w[1]),
        "the app's counter went back (a new app?): {counters:?}"
    );
    let session = stack.log("session");
    assert!(
        session.contains("output resized in place"),
        "{}",
        tail(&session)
    );
    eprintln!(
        "sway resized in place: picture sizes {runs:?}, counters {}..={}",
        counters[0],
        counters[counters.len() - 1]
    );
    assert_outputs_gone_soon(&stack);
    assert_media_idle_soon(&stack);
}

/// The sound of the output: an app that plays an 880 Hz tone through PulseAudio (what SDL,
/// Proton and Steam speak) into its output's own sink, beside the test pattern; media captures
/// the sink's monitor on the output's PipeWire instead of its 440 Hz test tone, and the client
/// decodes the tone at 880 Hz.
#[test]
fn compositor_source_streams_the_sound_an_app_plays_in_the_output() {
    let mut stack = compositor_stack();
    let apps = stack.sup.config_home().join("punktfunk");
    std::fs::create_dir_all(&apps).expect("config dir");
    std::fs::write(
        apps.join("apps.toml"),
        "[[app]]\ntitle = \"Tone\"\ncommand = [\"sh\", \"-c\", \"punktfunk-testpattern & \
         exec gst-launch-1.0 -q audiotestsrc is-live=true wave=sine freq=880 volume=0.5 ! \
         audioconvert ! pulsesink\"]\n",
    )
    .expect("apps.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = decoding_stream(
        &stack,
        "8",
        "640x360@30",
        "4000",
        &dir.path().join("frames.csv"),
    )
    .args(["--app", "Tone"])
    .output()
    .expect("client");
    let r = report(&out, &mut stack);
    assert!(
        r["audio_decoded"].as_u64().unwrap_or(0) >= 200,
        "a second of sound arrived: {r:#}"
    );
    let hz = r["audio_frequency_hz"].as_f64().unwrap_or(0.0);
    assert!(
        (hz - 880.0).abs() < 880.0 * 0.02,
        "the client hears {hz} Hz, not the app's 880 Hz tone: {r:#}\n--- media log ---\n{}",
        tail(&stack.log("media"))
    );
    eprintln!(
        "the app's 880 Hz tone arrived at {hz:.1} Hz: {} packets decoded, rms {}",
        r["audio_decoded"], r["audio_rms"]
    );
    assert_outputs_gone_soon(&stack);
    assert_media_idle_soon(&stack);
}

/// The one session's frames sent so far (`punktfunkctl sessions --json`).
fn frames_sent(stack: &Stack) -> u64 {
    let out = stack.sup.ctl(&["sessions", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("sessions --json");
    v["sessions"][0]["frames_sent"].as_u64().unwrap_or(0)
}

/// `kill -9` of punktfunk-session mid-stream: the output (compositor, app, screencast) lives
/// on outside the manager, so media keeps capturing and the client keeps receiving the app's
/// frames with no discontinuity; the restarted manager re-adopts the output, and the
/// session's end stops it through the new manager.
#[test]
fn compositor_source_survives_kill_9_of_the_session_manager() {
    let mut stack = compositor_stack();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = test_pattern_stream(&stack, "12", "640x360@60", dir.path(), None);
    wait_media_encoding(&stack, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    stack.sup.signal("session", rustix::process::Signal::KILL);
    assert!(
        stack
            .sup
            .wait_exit("session", Duration::from_secs(5))
            .is_some()
    );
    let at_kill = frames_sent(&stack);
    // Down for two seconds: frames keep flowing without the manager.
    std::thread::sleep(Duration::from_secs(2));
    let while_down = frames_sent(&stack);
    assert!(
        while_down >= at_kill + 20,
        "frames stopped with the manager: {at_kill} then {while_down} sent"
    );
    let restart = Instant::now();
    stack.sup.start("session");
    stack.sup.wait_ready("session", restart);
    let out = stack.sup.ctl(&["outputs", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("outputs --json");
    assert_eq!(
        v["outputs"].as_array().map(Vec::len),
        Some(1),
        "the restarted manager lists the output: {v}"
    );

    let out = child.wait_with_output().expect("client");
    let r = report(&out, &mut stack);
    check_test_pattern(&r, dir.path(), 100, &stack);
    assert_eq!(
        r["discontinuities"], 0,
        "media never restarted: {}",
        r["gaps"]
    );
    assert_outputs_gone_soon(&stack);
}
