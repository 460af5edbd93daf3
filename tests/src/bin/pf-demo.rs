//! `just demo`: the appliance on this machine, end to end, as far as it is built.
//!
//! Starts the four daemons the way systemd does (socket activation, NOTIFY_SOCKET, a
//! watchdog), shows what they told the service manager and `punktfunkctl status`, pairs the
//! reference client with a PIN, streams from the synthetic source over punktfunk/1 on
//! loopback and prints what arrived and how fast, then stops everything with SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use punktfunk_tests::native::free_udp_port;
use punktfunk_tests::{DAEMONS, Supervisor, bin};
use rustix::process::Signal;

const STREAM_SECONDS: &str = "5";

fn main() {
    let mut sup = Supervisor::new(4_000_000);
    let port = free_udp_port();
    sup.env
        .push(("transport", "PUNKTFUNK_PORT".into(), port.to_string()));
    sup.env
        .push(("transport", "PUNKTFUNK_MDNS".into(), "false".into()));
    println!("runtime dir: {}", sup.runtime_dir().display());
    let t0 = Instant::now();
    sup.start_all();
    for name in DAEMONS {
        sup.wait_ready(name, t0);
        let unit = sup.unit(name);
        let lines = unit.notify.lines();
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
    ok &= show(sup.ctl(&["status"]));

    println!("\n$ punktfunkctl pair");
    let out = sup.ctl(&["pair", "--json"]);
    let pin = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["pin"].as_str().map(str::to_string));
    let client_dir = sup.root.path().join("client");
    let host = format!("127.0.0.1:{port}");
    match pin {
        Some(pin) => {
            println!("PIN {pin}");
            println!("\n$ punktfunk-client pair --pin {pin} {host}");
            ok &= show(
                client(&client_dir)
                    .args(["pair", "--pin", &pin, &host])
                    .output()
                    .expect("client"),
            );
            println!(
                "\n$ punktfunk-client stream {host} --duration {STREAM_SECONDS} --mode 1280x720@60 --bitrate 20000"
            );
            ok &= show(
                client(&client_dir)
                    .args([
                        "stream",
                        &host,
                        "--duration",
                        STREAM_SECONDS,
                        "--mode",
                        "1280x720@60",
                        "--bitrate",
                        "20000",
                    ])
                    .output()
                    .expect("client"),
            );
        }
        None => {
            eprintln!(
                "pairing could not be armed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ok = false;
        }
    }

    println!("\nstopping (SIGTERM):");
    for name in DAEMONS {
        let t = Instant::now();
        sup.signal(name, Signal::TERM);
        match sup.wait_exit(name, Duration::from_secs(5)) {
            Some(s) => {
                println!(
                    "punktfunk-{name:<9} exited {s} after {:.1} ms",
                    t.elapsed().as_secs_f64() * 1e3
                );
                ok &= s.success();
            }
            None => {
                println!("punktfunk-{name:<9} did not exit within 5 s");
                ok = false;
            }
        }
    }
    if !ok {
        std::process::exit(1);
    }
}

fn client(dir: &std::path::Path) -> Command {
    let mut c = Command::new(bin("punktfunk-client"));
    c.arg("--config-dir")
        .arg(dir)
        .args(["--name", "demo-client"]);
    c
}

fn show(out: std::process::Output) -> bool {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.success()
}
