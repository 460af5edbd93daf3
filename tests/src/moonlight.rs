//! A real Moonlight client for the GameStream tests: moonlight-python (Moonlight's pairing in
//! Python, `libmoonlight-common-c` for RTSP, ENet control, video/audio RTP with FEC and
//! decryption) in a virtual environment, driven by `tests/moonlight/driver.py`.
//!
//! The venv is created by the tests themselves, once per set of pinned requirements, as
//! `moonlight-venv-<hash of requirements.txt>` in the cache root ([`crate::uml::cache_dir`]:
//! `$PUNKTFUNK_CACHE`, by default `/var/tmp/punktfunk-cache`), outside the clone, so a CI machine
//! that is reused keeps it. Creation goes through a temporary directory and a
//! rename, so concurrent test processes never see a half-installed venv.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;

use serde_json::Value;

use crate::Supervisor;

/// Names a directory with `driver.py` and `requirements.txt` to use instead of the
/// repository's: a UML guest cannot see a clone under `/tmp` (it mounts its own tmpfs there),
/// so a test that runs Moonlight inside one passes [`guest_visible_dir`] in this variable.
pub const DIR_ENV: &str = "PUNKTFUNK_MOONLIGHT_DIR";

/// The driver script and its pinned requirements: in the repository, or where [`DIR_ENV`] says.
fn moonlight_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("moonlight"))
}

/// A copy of the driver and its requirements in the cache root (which every UML guest sees,
/// wherever the clone is), named by the hash of both files; made on first use, through a
/// temporary directory and a rename like the venv.
pub fn guest_visible_dir() -> PathBuf {
    let src = moonlight_dir();
    let files = ["driver.py", "requirements.txt"];
    let texts: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(src.join(f)).unwrap_or_else(|e| panic!("tests/moonlight/{f}: {e}")))
        .collect();
    let cache = crate::uml::cache_dir();
    let dir = cache.join(format!("moonlight-driver-{}", key(&texts.concat())));
    if dir.join(files[1]).exists() {
        return dir;
    }
    let tmp = cache.join(format!(".moonlight-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create the driver's copy");
    for (f, text) in files.iter().zip(&texts) {
        std::fs::write(tmp.join(f), text).expect("copy the Moonlight driver");
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// FNV-1a 64 of the requirements: the cache key (no crypto needed, only change detection).
fn key(text: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The venv's Python, creating the venv on first use (pip install from PyPI, ~30 s).
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let req = moonlight_dir().join("requirements.txt");
        let text = std::fs::read(&req).expect("tests/moonlight/requirements.txt");
        let cache = crate::uml::cache_dir();
        let venv = cache.join(format!("moonlight-venv-{}", key(&text)));
        let py = venv.join("bin/python");
        if py.exists() {
            return py;
        }
        std::fs::create_dir_all(&cache).expect("create the cache dir");
        let tmp = cache.join(format!(
            ".moonlight-venv-{}-{}",
            key(&text),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new("python3").arg("-m").arg("venv").arg(&tmp));
        run(Command::new(tmp.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&req));
        // A concurrent creator may have won: its venv is as good as ours.
        if std::fs::rename(&tmp, &venv).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(
            py.exists(),
            "{} missing after creating the venv",
            py.display()
        );
        py
    })
    .clone()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (python3 with venv and network access to PyPI are needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A GameStream base (HTTP) port whose whole map is free right now: TCP base − 5, base and
/// base + 21, UDP base + 9..=11 (the offsets of transport's `gamestream::Ports`).
pub fn free_base_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    for _ in 0..200 {
        let base: u16 = rand::random_range(20_000..60_000);
        let tcp = [base - 5, base, base + 21]
            .iter()
            .all(|p| TcpListener::bind(("::", *p)).is_ok());
        let udp = (base + 9..=base + 11).all(|p| UdpSocket::bind(("::", p)).is_ok());
        if tcp && udp {
            return base;
        }
    }
    panic!("no free GameStream port range found");
}

/// One Moonlight client identity (its RSA certificate lives in `config`) talking to a host's
/// HTTP port.
pub struct Moonlight {
    /// The client's identity directory (key, certificate, the host's pinned certificate).
    pub config: PathBuf,
    /// The host's address.
    pub host: String,
    /// The host's GameStream HTTP port.
    pub http_port: u16,
    /// Run the client inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
}

impl Moonlight {
    /// A client with a fresh identity in `config`.
    pub fn new(config: PathBuf, host: &str, http_port: u16) -> Self {
        Self {
            config,
            host: host.to_string(),
            http_port,
            netns: None,
        }
    }

    /// The driver command for `args` (not started).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(python());
                c
            }
            None => Command::new(python()),
        };
        c.arg(moonlight_dir().join("driver.py"))
            .arg("--host")
            .arg(&self.host)
            .arg("--port")
            .arg(self.http_port.to_string())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Starts `pair --pin PIN` (the client shows `pin`) and waits up to `within` until the host
    /// lists a client waiting to pair; returns the running driver and that pending entry.
    pub fn start_pairing(
        &self,
        sup: &Supervisor,
        pin: &str,
        within: Duration,
    ) -> anyhow::Result<(Child, Value)> {
        let mut child = self
            .command(&["pair", "--pin", pin])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the moonlight driver")?;
        let deadline = Instant::now() + within;
        loop {
            let clients = sup.ctl_json(&["clients", "--json"])?;
            if let Some(p) = clients["pending"].as_array().and_then(|p| p.first()) {
                return Ok((child, p.clone()));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                anyhow::bail!(
                    "the Moonlight client never showed up as waiting to pair within {within:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pairs: [`Moonlight::start_pairing`], the host user types `pin` (`punktfunkctl pair
    /// --pin`), and the driver reports success.
    pub fn pair_with(&self, sup: &Supervisor, pin: &str, within: Duration) -> anyhow::Result<()> {
        let (child, _) = self.start_pairing(sup, pin, within)?;
        let out = sup.ctl(&["pair", "--pin", pin]);
        anyhow::ensure!(
            out.status.success(),
            "punktfunkctl pair --pin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = report(&child.wait_with_output()?);
        anyhow::ensure!(r["ok"] == true, "pairing failed: {r}");
        Ok(())
    }

    /// Runs the driver to its end and parses its JSON report.
    pub fn run(&self, args: &[&str]) -> Value {
        report(
            &self
                .command(args)
                .output()
                .expect("run the moonlight driver"),
        )
    }
}

/// The JSON report of a finished driver run (panics with its stderr if there is none).
pub fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'));
    match line.and_then(|l| serde_json::from_str(l).ok()) {
        Some(v) => v,
        None => panic!(
            "the moonlight driver printed no report (exit {:?}): {}\n{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_follows_the_requirements() {
        assert_ne!(
            key(b"moonlight-python==0.3.0"),
            key(b"moonlight-python==0.3.1")
        );
        assert_eq!(key(b""), "cbf29ce484222325");
    }
}
