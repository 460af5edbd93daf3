//! A punktfunk-transport started by hand for the punktfunk/1 tests, and the CLI tools around it.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin;

/// A transport daemon with private runtime/config dirs on a free UDP port.
pub struct NativeHost {
    /// The private directory holding `run/`, `config/`, `client/` and the log.
    pub root: tempfile::TempDir,
    /// The UDP port transport listens on.
    pub port: u16,
    /// The transport process, while running.
    pub child: Option<Child>,
    extra_env: Vec<(String, String)>,
}

/// A UDP port nobody uses right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl NativeHost {
    /// Starts transport (mDNS off, 2 s idle timeout) with `env` overrides; waits until it serves.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["run", "config", "client"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        let mut h = Self {
            root,
            port: free_udp_port(),
            child: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        h.spawn();
        h
    }

    /// Transport's `$XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    /// The file transport's stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("transport.log")
    }

    /// Transport's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// host:port for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(bin("punktfunk-transport"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_CONFIG_HOME", self.root.path().join("config"))
            .env("PUNKTFUNK_PORT", self.port.to_string())
            .env("PUNKTFUNK_MDNS", "false")
            // punktfunk/1 only (GameStream's fixed ports would collide between parallel tests).
            .env("PUNKTFUNK_GAMESTREAM__ENABLED", "false")
            .env("PUNKTFUNK_IDLE_TIMEOUT_MS", "2000")
            // Transport alone, no media daemon: the data-plane generator's verifiable bytes.
            .env("PUNKTFUNK_SOURCE", "synthetic")
            .env("PUNKTFUNK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start punktfunk-transport"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ctl(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let serving = v["daemons"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["name"] == "transport"))
                .is_some_and(|d| d["serving"] == true);
            if serving {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "punktfunk-transport exited with {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "transport never served; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs punktfunkctl against this host.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("punktfunkctl"))
            .args(args)
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .output()
            .expect("punktfunkctl")
    }

    /// Arms pairing; returns the PIN.
    pub fn arm(&self, window_s: u32) -> String {
        let out = self.ctl(&["pair", "--json", "--window", &window_s.to_string()]);
        assert!(
            out.status.success(),
            "pair: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pair --json");
        assert!(v["expires_s"].as_u64().is_some());
        v["pin"].as_str().expect("pin").to_string()
    }

    /// A client command with its own config dir `client/<name>`.
    pub fn client_cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin("punktfunk-client"));
        c.arg("--config-dir")
            .arg(self.root.path().join("client").join(name))
            .arg("--name")
            .arg(name)
            .args(args)
            .env("PUNKTFUNK_LOG", "warn");
        c
    }

    /// Runs `punktfunk-client` as `name` against this host to completion.
    pub fn client(&self, name: &str, args: &[&str]) -> Output {
        self.client_cmd(name, args)
            .output()
            .expect("punktfunk-client")
    }

    /// Arms and pairs client `name`.
    pub fn pair(&self, name: &str) {
        let pin = self.arm(120);
        let out = self.client(name, &["pair", "--pin", &pin, &self.addr()]);
        assert!(
            out.status.success(),
            "pair failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Live sessions as punktfunkctl reports them.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["sessions", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sessions --json");
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Whether the daemon process is still alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NativeHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
