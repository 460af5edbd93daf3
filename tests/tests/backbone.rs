//! The backbone's acceptance tests: the four real daemons started as systemd starts them.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use punktfunk_common::fdchannel::{self, RedeemError, Refusal};
use punktfunk_proto::common::FdTicket;
use punktfunk_tests::*;
use rustix::process::Signal;

const WATCHDOG_USEC: u64 = 800_000;

fn assert_all_serving(sup: &Supervisor) {
    let out = sup.ctl(&["status", "--json"]);
    let rows = parse_status(&out.stdout);
    let names: Vec<&str> = rows.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, DAEMONS, "status lists the four daemons in order");
    for (name, serving, row) in &rows {
        assert!(serving, "{name} not serving: {row}");
        assert!(
            !row["status"].as_str().unwrap_or("").is_empty(),
            "{name} has a status line"
        );
        assert!(row["version"].as_str().is_some_and(|v| !v.is_empty()));
        assert!(row["uptime_s"].is_u64());
    }
    assert!(out.status.success(), "status exits 0 when all four serve");
}

#[test]
fn systemd_style_start_notifies_ready_status_and_watchdog() {
    let mut sup = Supervisor::new(WATCHDOG_USEC);
    let t0 = Instant::now();
    sup.start_all();
    for name in DAEMONS {
        sup.wait_ready(name, t0);
        let unit = sup.unit(name);
        let status = unit
            .notify
            .wait_line(t0, Duration::from_secs(5), |l| l.starts_with("STATUS="));
        let status = status.unwrap_or_else(|| panic!("{name} sent no STATUS= line"));
        assert!(status.len() > "STATUS=".len(), "{name}: empty status");
    }
    assert_all_serving(&sup);

    // Watchdog cadence: pings at about half of WATCHDOG_USEC, never a gap systemd would punish.
    std::thread::sleep(Duration::from_millis(3 * WATCHDOG_USEC / 1000));
    for unit in &sup.units {
        let pings: Vec<Instant> = unit
            .notify
            .lines()
            .into_iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(at, _)| at)
            .collect();
        assert!(
            pings.len() >= 4,
            "{}: only {} watchdog pings in 3 watchdog periods",
            unit.name,
            pings.len()
        );
        let mut gaps: Vec<u128> = pings
            .windows(2)
            .map(|w| (w[1] - w[0]).as_micros())
            .collect();
        gaps.sort_unstable();
        let max = *gaps.last().unwrap();
        let median = gaps[gaps.len() / 2];
        assert!(
            max < WATCHDOG_USEC as u128,
            "{}: a watchdog gap of {max} µs ≥ WATCHDOG_USEC",
            unit.name
        );
        let half = WATCHDOG_USEC as u128 / 2;
        assert!(
            median > half / 2 && median < half * 3 / 2,
            "{}: median ping interval {median} µs, expected about {half} µs",
            unit.name
        );
    }
}

#[test]
fn kill_9_is_reported_and_a_restart_on_the_same_sockets_serves_again() {
    let mut sup = Supervisor::new(WATCHDOG_USEC);
    let t0 = Instant::now();
    sup.start_all();
    for name in DAEMONS {
        sup.wait_ready(name, t0);
    }
    sup.signal("media", Signal::KILL);
    assert!(sup.wait_exit("media", Duration::from_secs(5)).is_some());

    let out = sup.ctl(&["status", "--json"]);
    assert!(
        !out.status.success(),
        "status must exit non-zero with media down"
    );
    let rows = parse_status(&out.stdout);
    for (name, serving, row) in &rows {
        assert_eq!(*serving, name != "media", "{name}: {row}");
    }
    let human = sup.ctl(&["status"]);
    assert!(!human.status.success());
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("media") && l.contains(" no ")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains("punktfunk-media.service"),
        "says which unit to look at: {stderr}"
    );

    // systemd restarts it with the sockets it kept.
    let t1 = Instant::now();
    sup.start("media");
    sup.wait_ready("media", t1);
    assert_all_serving(&sup);
}

#[test]
fn sigterm_sends_stopping_and_exits_zero_within_5s() {
    let mut sup = Supervisor::new(WATCHDOG_USEC);
    let t0 = Instant::now();
    sup.start_all();
    for name in DAEMONS {
        sup.wait_ready(name, t0);
    }
    for name in DAEMONS {
        let t = Instant::now();
        sup.signal(name, Signal::TERM);
        let status = sup.wait_exit(name, Duration::from_secs(5));
        let status = status.unwrap_or_else(|| panic!("{name} still running 5 s after SIGTERM"));
        assert_eq!(status.code(), Some(0), "{name} exit status");
        let unit = sup.unit(name);
        assert!(
            unit.notify
                .wait_line(t, Duration::from_secs(1), |l| l == "STOPPING=1")
                .is_some(),
            "{name} sent no STOPPING=1"
        );
    }
}

#[test]
fn with_no_daemon_status_says_which_socket_and_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("punktfunkctl"))
        .arg("status")
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.path().join("punktfunk").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("systemctl --user start punktfunk.target"),
        "{stderr}"
    );
}

/// A daemon started by hand, with its own private runtime dir.
fn start_by_hand(
    name: &str,
    runtime: &std::path::Path,
    config: &std::path::Path,
) -> std::process::Child {
    Command::new(bin(&format!("punktfunk-{name}")))
        .env_clear()
        .env("XDG_RUNTIME_DIR", runtime)
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_socket(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_all_serving_by_hand(runtime: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(bin("punktfunkctl"))
            .args(["status", "--json"])
            .env("XDG_RUNTIME_DIR", runtime)
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "daemons never all served: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Children(Vec<std::process::Child>);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn started_by_hand_daemons_bind_0600_sockets_and_replace_stale_ones() {
    let root = tempfile::tempdir().unwrap();
    let (runtime, config) = (root.path().join("run"), root.path().join("config"));
    std::fs::create_dir_all(&runtime).unwrap();
    let mut kids = Children(
        DAEMONS
            .iter()
            .map(|d| start_by_hand(d, &runtime, &config))
            .collect(),
    );
    wait_all_serving_by_hand(&runtime);
    let dir = runtime.join("punktfunk");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    for name in DAEMONS {
        for ext in ["sock", "fds"] {
            let p = dir.join(format!("{name}.{ext}"));
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.mode() & 0o777, 0o600, "{}", p.display());
            assert_eq!(
                m.mode() & libc::S_IFMT,
                libc::S_IFSOCK,
                "{} is a socket",
                p.display()
            );
        }
    }

    // A second instance refuses to take over a live socket.
    let mut second = start_by_hand("media", &runtime, &config);
    let status = wait_timeout(&mut second, Duration::from_secs(10)).expect("second instance exits");
    assert_eq!(status.code(), Some(69));
    let mut err = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("already serving"), "{err}");

    // kill -9 leaves a stale socket file; a new instance replaces it.
    let media = &mut kids.0[1];
    media.kill().unwrap();
    media.wait().unwrap();
    assert!(
        dir.join("media.sock").exists(),
        "kill -9 leaves the socket file behind"
    );
    kids.0[1] = start_by_hand("media", &runtime, &config);
    wait_all_serving_by_hand(&runtime);
}

#[test]
fn another_uid_is_refused_with_permission_denied() {
    let user = match ThrowawayUser::create() {
        Ok(u) => u,
        Err(why) => {
            panic!("this test needs root to create a throwaway user (CI runs as root): {why}")
        }
    };
    let root = tempfile::tempdir().unwrap();
    let (runtime, config) = (root.path().join("run"), root.path().join("config"));
    std::fs::create_dir_all(&runtime).unwrap();
    let _kids = Children(vec![start_by_hand("transport", &runtime, &config)]);
    let sock = runtime.join("punktfunk/transport.sock");
    wait_socket(&sock);
    // The other user needs a punktfunkctl it can execute.
    let tools = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctl = tools.path().join("punktfunkctl");
    std::fs::copy(bin("punktfunkctl"), &ctl).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |runtime: &std::path::Path| {
        Command::new("runuser")
            .args(["-u", &user.name, "--"])
            .arg(&ctl)
            .args(["status", "--json", "--runtime-dir"])
            .arg(runtime.join("punktfunk"))
            .output()
            .unwrap()
    };
    let transport_row = |out: &std::process::Output| {
        parse_status(&out.stdout)
            .into_iter()
            .find(|(n, _, _)| n == "transport")
            .expect("transport row")
            .2
    };

    // First wall: the 0700 directory and 0600 socket keep the other user from connecting.
    let out = as_user(&runtime);
    let row = transport_row(&out);
    assert_eq!(row["serving"], false);
    assert!(
        row["error"].as_str().unwrap().contains("ermission denied"),
        "{row}"
    );

    // Second wall: with the file modes loosened by mistake, every call is still refused by
    // SO_PEERCRED with gRPC PERMISSION_DENIED.
    for (p, mode) in [
        (root.path().to_path_buf(), 0o755),
        (runtime.clone(), 0o755),
        (runtime.join("punktfunk"), 0o755),
        (sock.clone(), 0o666),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = as_user(&runtime);
    let row = transport_row(&out);
    assert_eq!(row["serving"], false, "{row}");
    let err = row["error"].as_str().unwrap();
    assert!(err.starts_with("PermissionDenied"), "{row}");
    assert!(err.contains(&format!("uid {}", user.uid)), "{row}");
    assert!(!out.status.success());
}

#[test]
fn malformed_config_exits_78_naming_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let (runtime, config) = (root.path().join("run"), root.path().join("config"));
    std::fs::create_dir_all(config.join("punktfunk")).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    let file = config.join("punktfunk/input.toml");
    std::fs::write(&file, "[ipc]\nticket_ttl_ms = \"five seconds\"\n").unwrap();
    let out = start_by_hand("input", &runtime, &config)
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("ipc.ticket_ttl_ms"), "names the key: {err}");
    assert!(
        !runtime.join("punktfunk/input.sock").exists(),
        "leaves no socket behind"
    );

    std::fs::write(&file, "[ipc]\nticket_ttl_ms = 1000\nmystery = 1\n").unwrap();
    let out = start_by_hand("input", &runtime, &config)
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mystery"));
}

#[test]
fn unwritable_state_exits_78_naming_the_path() {
    let root = tempfile::tempdir().unwrap();
    let (runtime, config) = (root.path().join("run"), root.path().join("config"));
    std::fs::create_dir_all(&runtime).unwrap();
    // The identity cannot be written (even by root): its temporary file's name is a directory.
    let state = config.join("punktfunk");
    std::fs::create_dir_all(state.join("host.tmp")).unwrap();
    let mut child = start_by_hand("transport", &runtime, &config);
    let status = punktfunk_tests::wait_timeout(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(78),
        "EX_CONFIG, so systemd does not retry: {err}"
    );
    assert!(
        err.contains(&state.display().to_string()),
        "names the path: {err}"
    );
    assert!(!err.contains("key=\"\""), "no empty key field: {err}");
}

#[test]
fn fd_channel_moves_a_memfd_between_processes_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = Command::new(bin("pf-fdpeer"))
        .arg(dir.path())
        .arg("written in another process")
        .arg("400")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let tickets: Vec<FdTicket> = line
        .split_whitespace()
        .map(|hex| FdTicket {
            id: (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
            expires_ms: 400,
            fd_names: vec!["text".into()],
        })
        .collect();
    assert_eq!(tickets.len(), 2);
    let path = dir.path().join("peer.fds");

    let fds = fdchannel::redeem(&path, &tickets[0]).expect("first redemption");
    let mut buf = vec![0u8; 64];
    let n = rustix::io::pread(&fds[0], &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"written in another process");
    assert_ne!(
        rustix::process::getpid(),
        rustix::process::Pid::from_child(&peer),
        "the memfd came from another process"
    );

    let refused = |t: &FdTicket| match fdchannel::redeem(&path, t) {
        Err(RedeemError::Refused { reason, message }) => (reason, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (reason, msg) = refused(&tickets[0]);
    assert_eq!(reason, Refusal::AlreadyRedeemed);
    assert!(msg.contains("already redeemed"), "{msg}");

    let unknown = FdTicket {
        id: vec![0xab; 16],
        expires_ms: 0,
        fd_names: vec![],
    };
    let (reason, msg) = refused(&unknown);
    assert_eq!(reason, Refusal::Unknown);
    assert!(msg.contains("unknown ticket"), "{msg}");

    std::thread::sleep(Duration::from_millis(600));
    let (reason, msg) = refused(&tickets[1]);
    assert_eq!(reason, Refusal::Expired);
    assert!(msg.contains("expired"), "{msg}");

    peer.kill().unwrap();
    peer.wait().unwrap();
}
