//! The whole appliance on loopback: the four daemons under the [`Supervisor`] (socket
//! activation, notify sockets, watchdog), transport on a free UDP port without mDNS, and a
//! reference client paired with a real PIN. Used by the media-session tests, `just demo` and
//! the end-to-end latency bench.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::native::free_udp_port;
use crate::{DAEMONS, Supervisor, bin};

/// All four daemons under a [`Supervisor`], transport on a free port with mDNS off.
pub struct Stack {
    /// The supervisor running the daemons.
    pub sup: Supervisor,
    /// Transport's UDP port.
    pub port: u16,
    /// The name the test client pairs under.
    pub client_name: String,
    /// Transport's GameStream HTTP port (a free base: several stacks run at once).
    pub gamestream_port: u16,
}

/// The per-stage latencies `punktfunk-client stream --decode --json` reports (`latency_us`),
/// in the order of a frame's path.
pub const LATENCY_STAGES: [&str; 7] = [
    "encode",
    "capture_to_handed",
    "handed_to_first_packet",
    "first_packet_to_reassembled",
    "capture_to_reassembled",
    "decode",
    "capture_to_decoded",
];

impl Stack {
    /// Starts the daemons with `env` extras (`(daemon, KEY, value)`) and waits for READY=1
    /// from each; returns when all four serve.
    pub fn start(env: &[(&'static str, &str, &str)]) -> Self {
        let mut sup = Supervisor::new(4_000_000);
        let port = free_udp_port();
        sup.env
            .push(("transport", "PUNKTFUNK_PORT".into(), port.to_string()));
        sup.env
            .push(("transport", "PUNKTFUNK_MDNS".into(), "false".into()));
        let gamestream_port = crate::moonlight::free_base_port();
        sup.env.push((
            "transport",
            "PUNKTFUNK_GAMESTREAM__ENABLED".into(),
            "true".into(),
        ));
        sup.env.push((
            "transport",
            "PUNKTFUNK_GAMESTREAM__HTTP_PORT".into(),
            gamestream_port.to_string(),
        ));
        for (d, k, v) in env {
            sup.env.push((d, k.to_string(), v.to_string()));
        }
        let t0 = Instant::now();
        sup.start_all();
        for name in DAEMONS {
            sup.wait_ready(name, t0);
        }
        Self {
            sup,
            port,
            client_name: "stack-client".into(),
            gamestream_port,
        }
    }

    /// Transport's `address:port`, as the client takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client's config directory.
    pub fn client_dir(&self) -> PathBuf {
        self.sup.root.path().join("client")
    }

    /// A `punktfunk-client` command with this stack's client identity.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("punktfunk-client"));
        c.arg("--config-dir")
            .arg(self.client_dir())
            .arg("--name")
            .arg(&self.client_name)
            .args(args)
            .env("PUNKTFUNK_LOG", "warn");
        c
    }

    /// Arms pairing with `punktfunkctl pair` and pairs the client with the PIN it printed.
    pub fn pair(&self) -> Result<String, String> {
        let out = self.sup.ctl(&["pair", "--json"]);
        let pin = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["pin"].as_str().map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "punktfunkctl pair failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let out = self
            .client(&["pair", "--pin", &pin, &self.host()])
            .output()
            .map_err(|e| format!("cannot run punktfunk-client: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pairing failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(pin)
    }

    /// A daemon's STATUS line as `punktfunkctl status --json` shows it ("" if it is not listed).
    pub fn daemon_status(&self, daemon: &str) -> String {
        let out = self.sup.ctl(&["status", "--json"]);
        crate::parse_status(&out.stdout)
            .into_iter()
            .find(|(name, _, _)| name == daemon)
            .map(|(_, _, v)| v["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// A daemon's log so far (for assertion messages).
    pub fn log(&self, daemon: &str) -> String {
        self.sup.log(daemon)
    }

    /// Waits up to `limit` until punktfunk-session lists no output and no output runtime dir
    /// is left: a session's end stops its output after the client has gone, and outputs
    /// outlive the daemons, so wait for this before [`Stack::stop`].
    pub fn wait_outputs_gone(&self, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let listed = self.sup.ctl_json(&["outputs", "--json"]);
            let dirs = std::fs::read_dir(self.sup.runtime_dir())
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("pf-"))
                        .count()
                })
                .unwrap_or(0);
            let none_listed = listed
                .as_ref()
                .is_ok_and(|v| v["outputs"].as_array().is_some_and(Vec::is_empty));
            if none_listed && dirs == 0 {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "outputs outlived their sessions: {listed:?}, {dirs} output runtime dirs"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERMs every daemon and waits for each (5 s); returns `(name, exit status)`.
    pub fn stop(&mut self) -> Vec<(&'static str, Option<std::process::ExitStatus>, Duration)> {
        DAEMONS
            .iter()
            .map(|&name| {
                let t = Instant::now();
                self.sup.signal(name, rustix::process::Signal::TERM);
                let s = self.sup.wait_exit(name, Duration::from_secs(5));
                (name, s, t.elapsed())
            })
            .collect()
    }
}
