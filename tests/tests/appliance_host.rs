//! `punktfunkctl doctor` and `punktfunkctl healthcheck` on the plain host (no systemd --user,
//! no udev rules applied): the checks that must fail here fail and name their fix; against the
//! whole stack under the test supervisor, the daemon, codec and pairing checks pass and the
//! health check streams, decodes and cleans up after itself. The same commands in the booted
//! appliance (all pass, the gate's rollback) are in `guest.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use punktfunk_tests::bin;
use punktfunk_tests::stack::Stack;
use serde_json::Value;

fn doctor(runtime: &Path, extra_env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut c = Command::new(bin("punktfunkctl"));
    c.args(["doctor", "--json"])
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("PUNKTFUNK_RUNTIME_DIR");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c.output().expect("run punktfunkctl doctor");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code(), v)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn assert_check(report: &Value, id: &str, verdict: &str, fix_contains: &str) {
    let c = check(report, id);
    assert_eq!(c["verdict"], verdict, "{id}: {c:#}");
    if verdict == "pass" {
        assert!(c["fix"].is_null(), "{id}: a pass has no fix: {c:#}");
    } else {
        let fix = c["fix"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no fix: {c:#}"));
        assert!(
            fix.contains(fix_contains),
            "{id}: fix {fix:?} lacks {fix_contains:?}"
        );
    }
}

fn sysctl(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn doctor_on_the_bare_host_fails_what_is_missing_and_names_each_fix() {
    let runtime = tempfile::tempdir().unwrap();
    let (code, r) = doctor(runtime.path(), &[]);
    assert_eq!(r["schema"], "punktfunk.doctor/1");
    assert_eq!(r["ok"], false);
    assert_eq!(code, Some(1), "any fail exits 1");
    let counts = &r["counts"];
    let n = r["checks"].as_array().unwrap().len() as u64;
    assert_eq!(
        counts["pass"].as_u64().unwrap()
            + counts["warn"].as_u64().unwrap()
            + counts["fail"].as_u64().unwrap(),
        n
    );
    for d in ["session", "media", "transport", "input"] {
        assert_check(
            &r,
            &format!("daemon.{d}"),
            "fail",
            "systemctl --user start punktfunk.target",
        );
    }
    // No user service manager on the host: the preset cannot be seen.
    assert_check(
        &r,
        "units.enabled",
        "fail",
        "systemctl --user enable --now punktfunk.target",
    );
    assert_check(&r, "codecs", "fail", "start punktfunk-media");
    assert_check(&r, "pairing", "fail", "start punktfunk-transport");
    assert_check(&r, "pipewire", "fail", "pipewire.socket");
    // What the image's sysctl.d and udev rules fix, judged against what this machine has.
    for s in ["net.core.rmem_max", "net.core.wmem_max"] {
        let want = if sysctl(s) >= 32 << 20 {
            "pass"
        } else {
            "fail"
        };
        assert_check(
            &r,
            &format!("sysctl.{s}"),
            want,
            &format!("sysctl -w {s}=33554432"),
        );
    }
    for (dev, module) in [("/dev/uinput", "uinput"), ("/dev/uhid", "uhid")] {
        let id = format!("device.{module}");
        match std::fs::metadata(dev) {
            Err(_) => assert_check(&r, &id, "fail", &format!("modprobe {module}")),
            Ok(m) if m.mode() & 0o006 == 0o006 || rustix::process::getuid().is_root() => {
                assert_check(&r, &id, "pass", "")
            }
            Ok(_) => {}
        }
    }
    // Every line of the report is one line; every non-pass names what to do.
    for c in r["checks"].as_array().unwrap() {
        assert!(!c["detail"].as_str().unwrap().contains('\n'), "{c:#}");
        if c["verdict"] != "pass" {
            assert!(!c["fix"].as_str().unwrap_or("").is_empty(), "{c:#}");
        }
    }
}

#[test]
fn doctor_against_the_running_stack_passes_daemons_codecs_and_pairing() {
    let stack = Stack::start(&[]);
    stack.pair().expect("pair");
    let runtime = stack.sup.runtime_dir();
    let (_, r) = doctor(&runtime, &[]);
    for d in ["session", "media", "transport", "input"] {
        assert_check(&r, &format!("daemon.{d}"), "pass", "");
    }
    // No GPU on these machines: the H.264 rung is x264, and doctor says it is software.
    let h264 = check(&r, "codec.h264");
    assert_eq!(h264["verdict"], "pass", "{h264:#}");
    assert!(
        h264["detail"].as_str().unwrap().ends_with("(software)"),
        "{h264:#}"
    );
    assert_check(&r, "pairing", "pass", "");
    assert!(
        check(&r, "pairing")["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 paired")
    );
}

fn healthcheck(stack: &Stack, wait: &str) -> (Option<i32>, Value) {
    let out = Command::new(bin("punktfunkctl"))
        .args(["healthcheck", "--json", "--wait", wait, "--port"])
        .arg(stack.port.to_string())
        .env("XDG_RUNTIME_DIR", stack.sup.runtime_dir())
        .env_remove("PUNKTFUNK_RUNTIME_DIR")
        .output()
        .expect("run punktfunkctl healthcheck");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "healthcheck --json printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn healthcheck_streams_the_test_source_decoded_and_unpairs_its_client() {
    let stack = Stack::start(&[]);
    let (code, r) = healthcheck(&stack, "30");
    assert_eq!(r["pass"], true, "{r:#}");
    assert_eq!(code, Some(0));
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["daemons", "pair", "stream", "unpair"]);
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true),
        "{r:#}"
    );
    let stream = r["steps"][2]["detail"].as_str().unwrap();
    assert!(stream.contains("h264 pictures decoded"), "{stream}");
    // Its throw-away client is gone again.
    let clients = stack.sup.ctl(&["clients", "--json"]);
    let v: Value = serde_json::from_slice(&clients.stdout).unwrap();
    assert_eq!(v["clients"].as_array().unwrap().len(), 0, "{v:#}");
}

#[test]
fn healthcheck_fails_with_media_down_and_says_so() {
    let mut stack = Stack::start(&[]);
    stack.sup.signal("media", rustix::process::Signal::KILL);
    stack
        .sup
        .wait_exit("media", std::time::Duration::from_secs(5));
    let (code, r) = healthcheck(&stack, "2");
    assert_eq!(r["pass"], false, "{r:#}");
    assert_eq!(code, Some(1));
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("daemons: ") && reason.contains("media"),
        "{reason}"
    );
}
