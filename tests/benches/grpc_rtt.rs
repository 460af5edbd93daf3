//! Unary gRPC round trip over the daemons' Unix socket, the figure the AU ring's handoff
//! latency is compared against (`just bench` runs both): why encoded frames do not ride gRPC.
//!
//! Starts a real `punktfunk-transport` (release build) by hand in a private runtime dir and
//! times `Health` calls on one channel, after a warm-up. Prints p50/p99/max in microseconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use punktfunk_common::{client, uds};

const WARMUP: usize = 500;
const CALLS: usize = 5_000;

fn main() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut daemon = Command::new(punktfunk_tests::bin("punktfunk-transport"))
        .env_clear()
        .env("XDG_RUNTIME_DIR", root.path())
        .env("XDG_CONFIG_HOME", root.path())
        .env("PUNKTFUNK_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start punktfunk-transport");
    let sock = root.path().join("punktfunk/transport.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let samples = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let channel = loop {
            match uds::connect(&sock, Duration::from_secs(1)).await {
                Ok(c) if client::health(c.clone(), "transport").await.is_ok() => break c,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(_) => panic!("transport never answered Health"),
                Err(e) => panic!("{e}"),
            }
        };
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..WARMUP + CALLS {
            let t = Instant::now();
            client::health(channel.clone(), "transport")
                .await
                .expect("Health");
            if i >= WARMUP {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        samples
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mut s = samples;
    s.sort_unstable();
    let pct = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)] as f64 / 1e3;
    println!(
        "grpc unary Health round trip over UDS ({CALLS} calls, one channel): p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
