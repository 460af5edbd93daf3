//! `punktfunkctl healthcheck`: is this boot good? A short synthetic stream through the whole
//! stack on loopback: media's test source → media's encoder → transport → the reference client
//! (`punktfunk-client`), decoded.
//!
//! Two modes:
//! - as the streaming user: [`check`] waits for the four daemons, pairs a throw-away client
//!   identity with a fresh PIN, streams a few seconds with `--decode`, unpairs, and reports;
//! - `--gate`, as root from `punktfunk-healthcheck.service` at boot: [`gate`] finds the user
//!   whose punktfunk sockets exist, runs the check as that user (setpriv), up to
//!   [`GATE_ATTEMPTS`] times ([`judge`]), and when every attempt failed
//!   writes the reason to the journal (stderr), asks `bootc rollback` for the previous image and
//!   reboots into it, unless the boot before already rolled back (a marker in the unit's state
//!   directory): two failing images in a row are left to a person instead of looping.
//!
//! Step order of [`check`]: daemons serving → pair → stream → unpair (always, once paired).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use punktfunk_common::client::{self, DAEMONS};
use punktfunk_common::paths;
use punktfunk_proto::transport::transport_client::TransportClient;
use punktfunk_proto::transport::{ArmPairingRequest, UnpairRequest};
use serde::{Deserialize, Serialize};

/// The name the health check's client pairs under (and is unpaired by).
pub const CLIENT_NAME: &str = "punktfunk-healthcheck";
/// The stream: short, small, H.264 (every machine has an H.264 rung), decoded.
pub const STREAM_ARGS: [&str; 9] = [
    "--duration",
    "3",
    "--mode",
    "640x360@30",
    "--bitrate",
    "2000",
    "--codec",
    "h264",
    "--decode",
];
/// The stream must finish within this (it runs 3 s; pairing and the first keyframe take more).
pub const STREAM_DEADLINE: Duration = Duration::from_secs(60);
/// The default wait for the daemons (first boot: GStreamer builds its registry).
pub const DEFAULT_WAIT_S: u64 = 120;

/// One step's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    /// `daemons`, `pair`, `stream`, `unpair`.
    pub name: String,
    /// It worked.
    pub ok: bool,
    /// What happened, one line.
    pub detail: String,
}

/// What `healthcheck --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// The boot is good.
    pub pass: bool,
    /// Why not, one line (absent on a pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every step that ran, in order.
    pub steps: Vec<Step>,
}

impl Outcome {
    fn from_steps(steps: Vec<Step>) -> Self {
        let reason = steps
            .iter()
            .find(|s| !s.ok && s.name != "unpair")
            .map(|s| format!("{}: {}", s.name, s.detail));
        Self {
            pass: reason.is_none(),
            reason,
            steps,
        }
    }
}

/// The client's `stream --json` fields the verdict needs.
#[derive(Debug, Deserialize)]
struct StreamReport {
    error: Option<String>,
    decoded_frames: Option<u64>,
    decode_errors: Option<u64>,
    codec: Option<String>,
}

/// Judges the client's report: no error, at least one picture decoded, no decode error.
fn judge_stream(r: &StreamReport) -> Result<String, String> {
    if let Some(e) = &r.error {
        return Err(format!("the stream failed: {e}"));
    }
    let decoded = r.decoded_frames.unwrap_or(0);
    if decoded == 0 {
        return Err("no picture was decoded".into());
    }
    if let Some(n) = r.decode_errors.filter(|n| *n > 0) {
        return Err(format!("{n} decode errors"));
    }
    Ok(format!(
        "{decoded} {} pictures decoded",
        r.codec.as_deref().unwrap_or("?")
    ))
}

/// Runs the check as the current user; prints the outcome; exit 0 on a pass.
pub async fn check(runtime_dir: &Path, port: u16, wait: Duration, json: bool) -> ExitCode {
    let outcome = run_steps(runtime_dir, port, wait).await;
    if json {
        match serde_json::to_string(&outcome) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("punktfunkctl: cannot encode JSON: {e}"),
        }
    } else {
        for s in &outcome.steps {
            println!(
                "{}  {:<8} {}",
                if s.ok { "ok  " } else { "FAIL" },
                s.name,
                s.detail
            );
        }
        match &outcome.reason {
            None => println!("health check passed"),
            Some(r) => println!("health check FAILED: {r}"),
        }
    }
    if outcome.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run_steps(runtime_dir: &Path, port: u16, wait: Duration) -> Outcome {
    let mut steps = vec![wait_for_daemons(runtime_dir, wait).await];
    if !steps[0].ok {
        return Outcome::from_steps(steps);
    }
    let dir = match tempfile::Builder::new()
        .prefix("punktfunk-healthcheck")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            steps.push(step(
                "pair",
                Err(format!("cannot create a temporary directory: {e}")),
            ));
            return Outcome::from_steps(steps);
        }
    };
    let host = format!("127.0.0.1:{port}");
    let paired = pair(runtime_dir, dir.path(), &host).await;
    let was_paired = paired.is_ok();
    steps.push(step("pair", paired));
    if was_paired {
        steps.push(step("stream", stream(dir.path(), &host)));
        steps.push(step("unpair", unpair(runtime_dir).await));
    }
    Outcome::from_steps(steps)
}

fn step(name: &str, r: Result<String, String>) -> Step {
    match r {
        Ok(detail) => Step {
            name: name.into(),
            ok: true,
            detail,
        },
        Err(detail) => Step {
            name: name.into(),
            ok: false,
            detail,
        },
    }
}

async fn wait_for_daemons(runtime_dir: &Path, wait: Duration) -> Step {
    let deadline = Instant::now() + wait;
    loop {
        let mut down = Vec::new();
        for name in DAEMONS {
            let socket = paths::grpc_socket(runtime_dir, name);
            match client::probe(&socket, name, Duration::from_secs(2)).await {
                Ok(h) if h.serving => {}
                Ok(h) => down.push(format!("{name} not serving ({})", h.status)),
                Err(e) => down.push(format!("{name}: {e}")),
            }
        }
        if down.is_empty() {
            return step("daemons", Ok("all four serve".into()));
        }
        if Instant::now() >= deadline {
            return step(
                "daemons",
                Err(format!("after {} s: {}", wait.as_secs(), down.join("; "))),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn transport(
    runtime_dir: &Path,
) -> Result<TransportClient<tonic::transport::Channel>, String> {
    let socket = paths::grpc_socket(runtime_dir, "transport");
    punktfunk_common::uds::connect(&socket, Duration::from_secs(2))
        .await
        .map(TransportClient::new)
        .map_err(|e| format!("punktfunk-transport: {e}"))
}

/// The reference client: beside this binary (the image's /usr/bin, a build's target dir), else
/// on PATH.
fn client_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("punktfunk-client")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("punktfunk-client"))
}

fn client_cmd(config_dir: &Path) -> Command {
    let mut c = Command::new(client_binary());
    c.arg("--config-dir")
        .arg(config_dir)
        .arg("--name")
        .arg(CLIENT_NAME)
        .env("PUNKTFUNK_LOG", "warn")
        .stdin(Stdio::null());
    c
}

async fn pair(runtime_dir: &Path, config_dir: &Path, host: &str) -> Result<String, String> {
    let pin = transport(runtime_dir)
        .await?
        .arm_pairing(ArmPairingRequest {
            window_s: 60,
            pin: String::new(),
        })
        .await
        .map_err(|s| format!("arming pairing: {}", s.message()))?
        .into_inner()
        .pin;
    let out = client_cmd(config_dir)
        .args(["pair", "--pin", &pin, host])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", client_binary().display()))?;
    if !out.status.success() {
        return Err(format!(
            "the reference client could not pair: {}",
            last_line(&out.stderr)
        ));
    }
    Ok(format!("paired {CLIENT_NAME} with {host}"))
}

fn stream(config_dir: &Path, host: &str) -> Result<String, String> {
    let mut child = client_cmd(config_dir)
        .arg("stream")
        .arg(host)
        .args(STREAM_ARGS)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", client_binary().display()))?;
    let deadline = Instant::now() + STREAM_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the reference client did not finish within {} s",
                    STREAM_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the client: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading the client's report: {e}"))?;
    let report: StreamReport = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "the client printed no report ({e}): {}",
            last_line(&out.stderr)
        )
    })?;
    judge_stream(&report)
}

async fn unpair(runtime_dir: &Path) -> Result<String, String> {
    transport(runtime_dir)
        .await?
        .unpair(UnpairRequest {
            client: CLIENT_NAME.into(),
        })
        .await
        .map_err(|s| format!("unpairing {CLIENT_NAME}: {}", s.message()))?;
    Ok(format!("unpaired {CLIENT_NAME}"))
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

// ---- the gate (root, at boot) ------------------------------------------------------------------

/// Where users' runtime directories live.
pub const RUN_USER: &str = "/run/user";

/// The users (uid, gid, runtime dir) whose punktfunk transport socket exists.
fn punktfunk_users(run_user: &Path) -> Vec<(u32, u32, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(run_user) else {
        return Vec::new();
    };
    let mut users: Vec<(u32, u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| paths::grpc_socket(&p.join("punktfunk"), "transport").exists())
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (m.uid(), m.gid(), p)))
        .collect();
    users.sort();
    users
}

/// Checks a boot gets before it is judged bad. A busy boot can fail one check that a good
/// image must not be rolled back for (the first stream after a boot waits for GStreamer's plugin
/// scan and the encoder's start, on a machine still starting everything else); a broken image
/// fails every one.
pub const GATE_ATTEMPTS: u32 = 3;
/// The pause before a failed check is run again.
pub const GATE_RETRY_AFTER: Duration = Duration::from_secs(15);

/// What the gate concluded from its attempts.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Attempt `attempt` (1-based) passed; `earlier` are the reasons of the ones before it.
    Good {
        attempt: u32,
        outcome: Outcome,
        earlier: Vec<String>,
    },
    /// Every attempt failed; their reasons in order.
    Bad { reasons: Vec<String> },
}

/// Runs `check` until it passes, at most [`GATE_ATTEMPTS`] times, calling
/// `pause(GATE_RETRY_AFTER)` between attempts. A check that could not run at all (`Err`)
/// counts as a failed one. `on_failure(attempt, reason)` hears each failure as it happens.
pub fn judge(
    mut check: impl FnMut() -> Result<Outcome, String>,
    mut pause: impl FnMut(Duration),
    mut on_failure: impl FnMut(u32, &str),
) -> Verdict {
    let mut reasons = Vec::new();
    for attempt in 1..=GATE_ATTEMPTS {
        if attempt > 1 {
            pause(GATE_RETRY_AFTER);
        }
        let reason = match check() {
            Ok(outcome) if outcome.pass => {
                return Verdict::Good {
                    attempt,
                    outcome,
                    earlier: reasons,
                };
            }
            Ok(outcome) => outcome.reason.unwrap_or_else(|| "unknown".into()),
            Err(e) => e,
        };
        on_failure(attempt, &reason);
        reasons.push(reason);
    }
    Verdict::Bad { reasons }
}

/// Runs the check for the first user that runs punktfunk (waiting up to `wait` for one), up to
/// [`GATE_ATTEMPTS`] times; when every attempt failed, `bootc rollback` and a reboot. Exit 0
/// when the boot is good or not judged.
pub fn gate(wait: Duration) -> ExitCode {
    let deadline = Instant::now() + wait;
    let (uid, gid, dir) = loop {
        if let Some(u) = punktfunk_users(Path::new(RUN_USER)).into_iter().next() {
            break u;
        }
        if Instant::now() >= deadline {
            println!(
                "no user session runs punktfunk (looked for {RUN_USER}/*/punktfunk/transport.sock for {} s): this boot is not judged",
                wait.as_secs()
            );
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let verdict = judge(
        || run_as_user(uid, gid, &dir, wait.max(Duration::from_secs(60))),
        std::thread::sleep,
        |attempt, reason| {
            if attempt < GATE_ATTEMPTS {
                println!(
                    "check {attempt} of {GATE_ATTEMPTS} failed: {reason}; checking again in {} s",
                    GATE_RETRY_AFTER.as_secs()
                );
            }
        },
    );
    let marker = rollback_marker();
    match verdict {
        Verdict::Good {
            attempt, outcome, ..
        } => {
            let after = if attempt > 1 {
                format!(" (check {attempt} of {GATE_ATTEMPTS})")
            } else {
                String::new()
            };
            println!(
                "boot is good: the health check streamed through the whole stack as uid {uid}{after}"
            );
            for s in &outcome.steps {
                println!("  {}: {}", s.name, s.detail);
            }
            let _ = std::fs::remove_file(&marker);
            ExitCode::SUCCESS
        }
        Verdict::Bad { reasons } => {
            let last = reasons.last().map_or("unknown", String::as_str);
            eprintln!("all {GATE_ATTEMPTS} checks failed");
            fail(last, &marker)
        }
    }
}

/// Where the gate remembers that it asked for a rollback: `$STATE_DIRECTORY` (the unit's
/// `StateDirectory=punktfunk`) or /var/lib/punktfunk.
fn rollback_marker() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/punktfunk"))
        .join("healthcheck-rolled-back")
}

/// A failed check: roll back, unless the previous boot already did. Two bad images in a row
/// would otherwise roll back and forth forever; the second failure is left to a person.
fn fail(reason: &str, marker: &Path) -> ExitCode {
    eprintln!("punktfunk health check FAILED: {reason}");
    if let Ok(earlier) = std::fs::read_to_string(marker) {
        eprintln!(
            "not rolling back again: the boot before this one already rolled back ({}); two images in a row fail, fix by hand (see /usr/share/doc/punktfunk/README.md, then remove {})",
            earlier.trim(),
            marker.display()
        );
        return ExitCode::from(1);
    }
    if let Some(d) = marker.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Err(e) = std::fs::write(marker, format!("{reason}\n")) {
        eprintln!(
            "cannot record the rollback in {} ({e}): not rolling back, to avoid a loop",
            marker.display()
        );
        return ExitCode::from(1);
    }
    roll_back()
}

fn run_as_user(uid: u32, gid: u32, dir: &Path, wait: Duration) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find punktfunkctl: {e}"))?;
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--init-groups", "--reset-env", "env"])
        .arg(format!("XDG_RUNTIME_DIR={}", dir.display()))
        .arg(exe)
        .args(["healthcheck", "--json", "--wait"])
        .arg(wait.as_secs().max(10).to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run setpriv (util-linux): {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "the check as uid {uid} printed no result ({e}): {}",
            last_line(&out.stderr)
        )
    })
}

fn roll_back() -> ExitCode {
    eprintln!("rolling back to the previous image: bootc rollback, then reboot");
    match Command::new("bootc").arg("rollback").status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("bootc rollback failed ({s}): staying on this image; see `bootc status`");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("cannot run bootc ({e}): staying on this image");
            return ExitCode::from(1);
        }
    }
    match Command::new("systemctl").arg("reboot").status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("systemctl reboot failed ({s}): reboot by hand to finish the rollback"),
        Err(e) => {
            eprintln!("cannot run systemctl reboot ({e}): reboot by hand to finish the rollback")
        }
    }
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(error: Option<&str>, decoded: Option<u64>, errors: Option<u64>) -> StreamReport {
        StreamReport {
            error: error.map(String::from),
            decoded_frames: decoded,
            decode_errors: errors,
            codec: Some("h264".into()),
        }
    }

    #[test]
    fn a_stream_passes_only_with_decoded_pictures_and_no_error() {
        assert_eq!(
            judge_stream(&report(None, Some(88), Some(0))),
            Ok("88 h264 pictures decoded".into())
        );
        assert!(judge_stream(&report(Some("refused: capacity"), Some(5), None)).is_err());
        assert!(judge_stream(&report(None, Some(0), None)).is_err());
        assert!(judge_stream(&report(None, None, None)).is_err());
        assert!(judge_stream(&report(None, Some(80), Some(2))).is_err());
    }

    #[test]
    fn the_reason_is_the_first_failed_step_and_unpair_does_not_fail_the_boot() {
        let s = |name: &str, ok: bool| Step {
            name: name.into(),
            ok,
            detail: format!("{name} detail"),
        };
        let o = Outcome::from_steps(vec![
            s("daemons", true),
            s("pair", true),
            s("stream", false),
            s("unpair", false),
        ]);
        assert!(!o.pass);
        assert_eq!(o.reason.as_deref(), Some("stream: stream detail"));
        let o = Outcome::from_steps(vec![
            s("daemons", true),
            s("pair", true),
            s("stream", true),
            s("unpair", false),
        ]);
        assert!(o.pass);
    }

    fn outcome(pass: bool) -> Outcome {
        Outcome::from_steps(vec![Step {
            name: "stream".into(),
            ok: pass,
            detail: if pass {
                "30 h264 pictures decoded"
            } else {
                "no picture was decoded"
            }
            .into(),
        }])
    }

    /// Runs `judge` over scripted attempt results; returns the verdict, the pauses and the
    /// failures it reported.
    fn judge_script(
        script: Vec<Result<Outcome, String>>,
    ) -> (Verdict, Vec<Duration>, Vec<(u32, String)>) {
        let mut script = script.into_iter();
        let (mut pauses, mut failures) = (Vec::new(), Vec::new());
        let v = judge(
            || {
                script
                    .next()
                    .expect("judge ran more attempts than scripted")
            },
            |d| pauses.push(d),
            |a, r| failures.push((a, r.to_string())),
        );
        (v, pauses, failures)
    }

    #[test]
    fn a_pass_at_once_is_good_without_a_pause() {
        let (v, pauses, failures) = judge_script(vec![Ok(outcome(true))]);
        assert!(matches!(v, Verdict::Good { attempt: 1, ref earlier, .. } if earlier.is_empty()));
        assert!(pauses.is_empty() && failures.is_empty());
    }

    #[test]
    fn a_boot_that_fails_one_check_is_checked_again_and_not_rolled_back() {
        let (v, pauses, failures) = judge_script(vec![
            Err("the check as uid 1000 printed no result".into()),
            Ok(outcome(false)),
            Ok(outcome(true)),
        ]);
        let Verdict::Good {
            attempt, earlier, ..
        } = v
        else {
            panic!("judged bad: {v:?}")
        };
        assert_eq!(attempt, 3);
        assert_eq!(
            earlier,
            [
                "the check as uid 1000 printed no result",
                "stream: no picture was decoded"
            ]
        );
        assert_eq!(pauses, [GATE_RETRY_AFTER, GATE_RETRY_AFTER]);
        assert_eq!(failures.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_boot_that_fails_every_check_is_bad_with_every_reason() {
        let (v, pauses, failures) = judge_script(vec![Ok(outcome(false)); 3]);
        assert_eq!(
            v,
            Verdict::Bad {
                reasons: vec!["stream: no picture was decoded".into(); 3]
            }
        );
        assert_eq!(pauses.len(), 2);
        assert_eq!(failures.len(), 3);
    }

    #[test]
    fn a_second_failure_in_a_row_does_not_roll_back_again() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("state/healthcheck-rolled-back");
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, "stream: no picture was decoded\n").unwrap();
        // With the marker present, `fail` returns before bootc: the marker is left as the
        // first rollback wrote it (a rollback attempt would have rewritten it first).
        assert_eq!(fail("stream: again", &marker), ExitCode::from(1));
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "stream: no picture was decoded\n"
        );
    }

    #[test]
    fn users_are_found_by_their_transport_socket() {
        let root = tempfile::tempdir().unwrap();
        let with = root.path().join("1000/punktfunk");
        std::fs::create_dir_all(&with).unwrap();
        std::fs::write(with.join("transport.sock"), "").unwrap();
        std::fs::create_dir_all(root.path().join("1001/punktfunk")).unwrap();
        let found = punktfunk_users(root.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].2, root.path().join("1000"));
    }
}
