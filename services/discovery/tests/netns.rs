//! Discovery across two network namespaces joined by a veth pair.
//!
//! Needs root and iproute2 (`ip`); CI runs as root and `just setup` installs
//! iproute2. Without them the test fails with a clear message instead of
//! silently passing.
//!
//! Layout: namespace A (10.213.0.1/24) runs two `pf-mdns advertise`
//! processes (one `pair=required`, one `pair=optional`); namespace B
//! (10.213.0.2/24) runs `pf-mdns browse --json`, which returns as soon as
//! both instances are resolved.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pf-mdns");
const FP_REQ: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const FP_OPT: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const ADDR_A: &str = "10.213.0.1";
const ADDR_B: &str = "10.213.0.2";

/// Owns the namespaces and child processes; tears everything down on drop,
/// including when an assertion fails.
struct Netns {
    a: String,
    b: String,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: plain syscall on a pid we spawned and have not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespaces also deletes the veth pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the netns discovery test needs root (it creates network namespaces); \
         run the tests as root as CI does"
    );
    let ok = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the netns discovery test needs iproute2 (`ip`) on PATH; run `just setup` \
         or `apt-get install iproute2`"
    );
}

fn setup() -> Netns {
    preflight();
    let pid = std::process::id();
    let a = format!("pfd-a-{pid}");
    let b = format!("pfd-b-{pid}");
    // Interface names are limited to 15 bytes.
    let va = format!("pfda{pid}");
    let vb = format!("pfdb{pid}");
    // Leftovers of a crashed run with the same pid.
    for ns in [&a, &b] {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    ip(&["netns", "add", &a]);
    let guard = Netns {
        a: a.clone(),
        b: b.clone(),
        children: Vec::new(),
    };
    ip(&["netns", "add", &b]);
    ip(&[
        "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", &format!("{ADDR_A}/24"), "dev", &va]);
    ip(&["-n", &b, "addr", "add", &format!("{ADDR_B}/24"), "dev", &vb]);
    for (ns, dev) in [(&a, &va), (&b, &vb)] {
        // No IPv6 duplicate address detection on a private veth: the
        // link-local address is usable at once instead of after ~1-2 s.
        let dad = format!("echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad");
        let _ = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &dad])
            .stderr(Stdio::null())
            .status();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"]);
    }
    for (ns, dev) in [(&a, &va), (&b, &vb)] {
        wait_link_ready(ns, dev);
    }
    guard
}

fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Waits until `dev` has carrier, its qdisc is attached (the kernel's
/// linkwatch does that up to ~1 s after carrier; until then the device drops
/// every packet) and no IPv6 address is still tentative.
fn wait_link_ready(ns: &str, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let link = ip_out(&["-n", ns, "link", "show", "dev", dev]);
        let tentative = ip_out(&["-n", ns, "-6", "addr", "show", "dev", dev, "tentative"]);
        if link.contains("LOWER_UP") && !link.contains("qdisc noop") && tentative.trim().is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "veth {dev} in {ns} not ready after 5 s: {link} {tentative}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `pf-mdns advertise` process to run.
struct Ad<'a> {
    instance: &'a str,
    host: &'a str,
    port: u16,
    fp: &'a str,
    pair: &'a str,
    id: &'a str,
}

/// Spawns `pf-mdns advertise` in namespace `ns`; returns a receiver that gets
/// the first stdout line.
fn advertise(env: &mut Netns, ns: &str, ad: &Ad<'_>) -> mpsc::Receiver<String> {
    let port = ad.port.to_string();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "advertise"])
        .args([
            "--instance",
            ad.instance,
            "--hostname",
            ad.host,
            "--port",
            &port,
        ])
        .args(["--fp", ad.fp, "--pair", ad.pair, "--id", ad.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pf-mdns advertise");
    let stdout = child.stdout.take().expect("piped stdout");
    env.children.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if BufReader::new(stdout).read_line(&mut line).is_ok() {
            let _ = tx.send(line);
        }
    });
    rx
}

fn host<'a>(report: &'a Value, instance: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["instance"] == instance))
        .unwrap_or_else(|| panic!("B did not find `{instance}`; browse output: {report:#}"))
}

fn in_subnet_a(h: &Value) -> bool {
    h["addresses"].as_array().is_some_and(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .any(|s| s.starts_with("10.213.0.") && s != ADDR_B)
    })
}

#[test]
fn browse_in_b_sees_hosts_advertised_in_a() {
    let t0 = Instant::now();
    let mut env = setup();
    let a = env.a.clone();
    let b = env.b.clone();
    let req = advertise(
        &mut env,
        &a,
        &Ad {
            instance: "pf req host",
            host: "req-host",
            port: 9777,
            fp: FP_REQ,
            pair: "required",
            id: "host-req",
        },
    );
    let opt = advertise(
        &mut env,
        &a,
        &Ad {
            instance: "pf opt host",
            host: "opt-host",
            port: 9778,
            fp: FP_OPT,
            pair: "optional",
            id: "host-opt",
        },
    );
    for (name, rx) in [("required", &req), ("optional", &opt)] {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("advertiser ({name}) did not announce within 5 s"));
        assert!(line.starts_with("advertising "), "unexpected: {line:?}");
        eprintln!("[{:?}] A: {}", t0.elapsed(), line.trim_end());
    }

    let out = Command::new("ip")
        .args(["netns", "exec", &b, BIN, "browse", "--timeout-ms", "5000"])
        .args(["--json", "--want", "pf req host", "--want", "pf opt host"])
        .output()
        .expect("run pf-mdns browse");
    assert!(
        out.status.success(),
        "browse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "browse printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    eprintln!("[{:?}] B: browse done", t0.elapsed());

    let r = host(&report, "pf req host");
    assert_eq!(r["port"], 9777);
    assert_eq!(r["proto"], "punktfunk/1");
    assert_eq!(r["fingerprint_hex"], FP_REQ);
    assert_eq!(r["pairing"], "required");
    assert_eq!(r["host_id"], "host-req");
    assert_eq!(r["hostname"], "req-host.local.");
    let txt = r["txt"].as_object().expect("txt object");
    assert_eq!(txt.len(), 4, "exactly proto, fp, pair, id: {txt:?}");
    assert_eq!(txt["proto"], "punktfunk/1");
    assert_eq!(txt["fp"], FP_REQ);
    assert_eq!(txt["pair"], "required");
    assert_eq!(txt["id"], "host-req");
    assert!(in_subnet_a(r), "no address in A's subnet: {r:#}");

    let o = host(&report, "pf opt host");
    assert_eq!(o["port"], 9778);
    assert_eq!(o["pairing"], "optional");
    assert_eq!(o["fingerprint_hex"], FP_OPT);
    assert_eq!(o["host_id"], "host-opt");
    assert!(in_subnet_a(o), "no address in A's subnet: {o:#}");

    assert_eq!(
        report["rejected"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    eprintln!("[{:?}] ok", t0.elapsed());
}
