//! punktfunk-client's report and exit code tell the truth: video that stops before the end of
//! the run, a host that dies, a refusal — each is in the `--json` report (always printed) with an
//! `error`, and the exit code is not 0. A complete run exits 0 with the mode the host granted.
//!
//! Exit codes (README): 0 the run completed, 1 it failed before video started (refused,
//! unreachable, bad arguments), 3 the stream was interrupted (video stopped, or the connection
//! was lost or ended by the host).

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use punktfunk_tests::native::NativeHost;

/// Exit code of a run whose video stopped or whose connection was lost mid-stream.
const EXIT_INTERRUPTED: i32 = 3;
/// Exit code of a run that failed before any video could arrive (refused, unreachable).
const EXIT_FAILED: i32 = 1;

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "--json prints exactly one object (exit {}); stdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `stream --json` for `secs` seconds from a paired client "deck".
fn spawn_stream(host: &NativeHost, secs: &str) -> Child {
    host.client_cmd(
        "deck",
        &["stream", &host.addr(), "--duration", secs, "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("punktfunk-client")
}

/// Lets the session stream for about a second, then kills the host with SIGKILL (no goodbye, no
/// close frame: to the client the video simply stops).
fn kill_host_after_a_second(host: &mut NativeHost) {
    wait_until("the session", Duration::from_secs(10), || {
        !host.sessions().is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    let child = host.child.as_mut().expect("transport runs");
    child.kill().expect("kill -9 transport");
    child.wait().expect("reap transport");
}

fn finish(child: Child) -> Output {
    let mut child = child;
    let status = punktfunk_tests::wait_timeout(&mut child, Duration::from_secs(20));
    assert!(status.is_some(), "the client did not end within 20 s");
    child.wait_with_output().expect("client output")
}

/// The gaps flagged trailing (the time from the last frame to the end of the run).
fn trailing_gaps(r: &serde_json::Value) -> Vec<serde_json::Value> {
    r["gaps"]
        .as_array()
        .unwrap_or_else(|| panic!("gaps is an array: {r}"))
        .iter()
        .filter(|g| g["trailing"] == true)
        .cloned()
        .collect()
}

fn assert_trailing_gap(r: &serde_json::Value) {
    let trailing = trailing_gaps(r);
    assert_eq!(trailing.len(), 1, "one trailing gap: {r}");
    let g = &trailing[0];
    assert!(
        g["ms"].as_f64().is_some_and(|ms| ms > 250.0),
        "a trailing gap is longer than the 250 ms threshold: {r}"
    );
    assert!(
        g["after_frame"].is_u64(),
        "frames arrived before the host died, so the gap follows one: {r}"
    );
}

#[test]
fn a_host_killed_mid_stream_is_reported_with_an_error_and_a_trailing_gap() {
    // 2 s idle timeout: the client declares the connection lost 2 to 3 s after the kill (its
    // keep-alive, sent at most 1 s after the last packet from the host, restarts the timer),
    // well before its 6 s run ends.
    let mut host = NativeHost::start(&[]);
    host.pair("deck");
    let child = spawn_stream(&host, "6");
    kill_host_after_a_second(&mut host);
    let out = finish(child);
    let r = report(&out);
    eprintln!("{r}");
    assert_eq!(
        out.status.code(),
        Some(EXIT_INTERRUPTED),
        "a lost stream is not a success: {r}"
    );
    assert!(r["frames_received"].as_u64().is_some_and(|n| n > 0), "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("connection to the host lost"),
        "the report says what happened: {r}"
    );
    assert_trailing_gap(&r);
}

#[test]
fn video_that_stops_before_the_idle_timeout_is_a_trailing_gap_and_not_a_success() {
    // 10 s idle timeout: the 3 s run ends before the connection is declared lost, so only the
    // missing video can tell.
    let mut host = NativeHost::start(&[("PUNKTFUNK_IDLE_TIMEOUT_MS", "10000")]);
    host.pair("deck");
    let child = spawn_stream(&host, "3");
    kill_host_after_a_second(&mut host);
    let out = finish(child);
    let r = report(&out);
    eprintln!("{r}");
    assert_eq!(out.status.code(), Some(EXIT_INTERRUPTED), "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a non-zero exit comes with an error: {r}"
    );
    assert_trailing_gap(&r);
}

#[test]
fn a_complete_run_exits_0_without_a_trailing_gap() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    let out = finish(spawn_stream(&host, "2"));
    let r = report(&out);
    assert!(out.status.success(), "exit {}: {r}", out.status);
    assert!(trailing_gaps(&r).is_empty(), "{r}");
    assert!(r.get("error").is_none(), "{r}");
    assert!(r["frames_received"].as_u64().is_some_and(|n| n > 60), "{r}");
    // Our machines' loopback has no fq qdisc: the host paces in user space and says so in
    // Welcome (kernel pacing is tested in the UML guest, tests/tests/pacing.rs).
    assert_eq!(r["pacing"], "user-space", "{r}");
}

#[test]
fn the_report_shows_the_mode_the_host_granted_not_the_one_asked_for() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    // The host clamps the refresh rate to at least 10 Hz (a rate, harmless to raise).
    let out = host.client(
        "deck",
        &[
            "stream",
            &host.addr(),
            "--duration",
            "1",
            "--mode",
            "640x480@5",
            "--json",
        ],
    );
    let r = report(&out);
    assert!(out.status.success(), "exit {}: {r}", out.status);
    assert_eq!(r["mode"], "640x480@10", "{r}");
}

#[test]
fn a_refused_client_still_prints_a_report_with_the_hosts_error_code() {
    let host = NativeHost::start(&[]);
    // Never paired: the host answers pairing-required and closes the connection.
    let out = host.client(
        "stranger",
        &["stream", &host.addr(), "--duration", "1", "--json"],
    );
    let r = report(&out);
    assert_eq!(out.status.code(), Some(EXIT_FAILED), "{r}");
    assert_eq!(r["error_code"], "pairing-required", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("requires pairing") && error.contains("punktfunkctl pair"),
        "{r}"
    );
    assert!(trailing_gaps(&r).is_empty(), "no stream, no gap: {r}");
    assert_eq!(r["frames_received"], 0, "{r}");
}

#[test]
fn a_refused_pairing_says_so_once() {
    let host = NativeHost::start(&[]);
    // Nothing armed: the host refuses at once.
    let out = host.client("eve", &["pair", "--pin", "000000", &host.addr()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("refused pairing").count(),
        1,
        "each layer adds its context once: {err}"
    );
    assert!(!err.contains("pairing failed: the host"), "{err}");
}
