//! `just demo` (backbone stage): starts the four daemons the way systemd does — socket
//! activation, NOTIFY_SOCKET, a watchdog — shows what they told the service manager and what
//! `punktfunkctl status` says, then stops them with SIGTERM and reports how they exited.

use std::time::{Duration, Instant};

use punktfunk_tests::{DAEMONS, Supervisor};
use rustix::process::Signal;

fn main() {
    let mut sup = Supervisor::new(4_000_000);
    println!("runtime dir: {}", sup.runtime_dir().display());
    let t0 = Instant::now();
    sup.start_all();
    for name in DAEMONS {
        sup.wait_ready(name, t0);
        let unit = sup.unit(name);
        let ready_at = unit
            .notify
            .lines()
            .into_iter()
            .find(|(_, l)| l == "READY=1")
            .map(|(at, _)| at.duration_since(t0));
        let status = unit
            .notify
            .lines()
            .into_iter()
            .filter_map(|(_, l)| l.strip_prefix("STATUS=").map(str::to_string))
            .next_back()
            .unwrap_or_default();
        println!(
            "punktfunk-{name:<9} READY=1 after {:>6.1} ms  STATUS={status}",
            ready_at.unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    println!("\n$ punktfunkctl status");
    let out = sup.ctl(&["status"]);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let ok = out.status.success();

    println!("\nstopping (SIGTERM):");
    let mut clean = true;
    for name in DAEMONS {
        let t = Instant::now();
        sup.signal(name, Signal::TERM);
        match sup.wait_exit(name, Duration::from_secs(5)) {
            Some(s) => {
                println!(
                    "punktfunk-{name:<9} exited {s} after {:.1} ms",
                    t.elapsed().as_secs_f64() * 1e3
                );
                clean &= s.success();
            }
            None => {
                println!("punktfunk-{name:<9} did not exit within 5 s");
                clean = false;
            }
        }
    }
    if !(ok && clean) {
        std::process::exit(1);
    }
}
