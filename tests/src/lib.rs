//! The harness of the end-to-end tests: it starts the real daemon binaries the way systemd
//! does, so the tests exercise the same start-up path as production.
//!
//! For a [`Supervisor`]-started daemon the harness plays systemd's part: it creates and keeps
//! the listening sockets (`<name>.sock` stream, `<name>.fds` seqpacket, mode 0600, like
//! `SocketMode=0600`), passes them as fds 3 and 4 with `LISTEN_FDS`/`LISTEN_FDNAMES` and a
//! `LISTEN_PID` equal to the daemon's pid, gives each daemon its own `NOTIFY_SOCKET` datagram
//! socket and reads what it sends, and sets `WATCHDOG_USEC`. Because the sockets outlive the
//! process, a daemon restarted after `kill -9` gets the very same sockets, as under systemd.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

pub mod appliance;
pub mod attack;
pub mod evdev_nodes;
pub mod moonlight;
pub mod native;
pub mod plot;
pub mod stack;
pub mod uml;

/// The four daemons' short names, in start order.
pub const DAEMONS: [&str; 4] = punktfunk_common::client::DAEMONS;

/// Directory of the workspace's built binaries (`target/<profile>`), next to the test binary's
/// `deps/` directory, or `$PUNKTFUNK_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PUNKTFUNK_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.ends_with("deps") {
        deps.parent().expect("target/<profile>").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// `PATH` with [`bin_dir`] first, as installed: the daemons find the workspace's other
/// binaries (`punktfunk-testpattern` for the built-in "Test pattern" app) there.
pub fn path_with_bin_dir() -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(&rest)))
        .unwrap_or(rest)
}

/// See [`sway_dir`].
const SWAY_WRAPPER: &str = r#"#!/bin/sh
if [ "$(id -u)" = 0 ]; then
    exec unshare --user --map-user=1000 --map-group=1000 /usr/bin/sway "$@"
fi
exec /usr/bin/sway "$@"
"#;

/// A directory holding a `sway` for the tests, which run as root: sway refuses root (it
/// cannot drop privileges it must not keep). As root the wrapper runs the real sway as uid
/// 1000 inside a user namespace that maps uid 1000 onto root, so outside it everything it
/// creates is root's as before, and it can use what root's 0700 directories hold. Any other
/// user gets sway as it is. Put the directory first on the daemon's PATH.
pub fn sway_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sway");
    std::fs::write(&path, SWAY_WRAPPER).expect("write the sway wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// [`path_with_bin_dir`] with `sway_dir` (from [`sway_dir`]) first: the `PATH` of a daemon
/// that starts sway outputs.
pub fn path_with_sway(sway_dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        sway_dir.display(),
        path_with_bin_dir().to_string_lossy()
    )
}

/// Path of a workspace binary; panics with what to run when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (`just test` does)",
        p.display()
    );
    p
}

/// One notification datagram from a daemon, with its arrival time.
#[derive(Debug, Clone)]
pub struct Notification {
    /// When the harness received it.
    pub at: Instant,
    /// The datagram as text (`KEY=VALUE` lines).
    pub text: String,
}

/// A `NOTIFY_SOCKET` the harness reads on a thread, like systemd's.
pub struct NotifySocket {
    /// Where the socket is bound.
    pub path: PathBuf,
    log: Arc<Mutex<Vec<Notification>>>,
}

impl NotifySocket {
    /// Binds the socket at `path` and starts the reader thread.
    pub fn bind(path: PathBuf) -> Self {
        let sock = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push(Notification {
                    at: Instant::now(),
                    text,
                });
            }
        });
        Self { path, log }
    }

    /// Every notification so far.
    pub fn all(&self) -> Vec<Notification> {
        self.log.lock().unwrap().clone()
    }

    /// Each `KEY=value` line received so far, in order, with its datagram's arrival time.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.all()
            .into_iter()
            .flat_map(|n| {
                n.text
                    .lines()
                    .map(|l| (n.at, l.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until a line satisfying `pred` arrives after `since`; returns it.
    pub fn wait_line(
        &self,
        since: Instant,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, l)) = self
                .lines()
                .into_iter()
                .find(|(at, l)| *at >= since && pred(l))
            {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The sockets systemd would create for `punktfunk-<name>.socket`.
pub struct ActivationSockets {
    /// The gRPC listener (fd 3 in the daemon).
    pub grpc: UnixListener,
    /// The SOCK_SEQPACKET fd-channel listener (fd 4 in the daemon).
    pub fds: OwnedFd,
}

impl ActivationSockets {
    /// Binds `<name>.sock` and `<name>.fds` in `dir`, mode 0600.
    pub fn create(dir: &Path, name: &str) -> Self {
        let grpc_path = dir.join(format!("{name}.sock"));
        let fds_path = dir.join(format!("{name}.fds"));
        let grpc = UnixListener::bind(&grpc_path).expect("bind gRPC socket");
        let fds = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("seqpacket socket");
        rustix::net::bind(&fds, &SocketAddrUnix::new(&fds_path).unwrap()).expect("bind fd channel");
        rustix::net::listen(&fds, 64).expect("listen");
        for p in [&grpc_path, &fds_path] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Self { grpc, fds }
    }
}

/// Plays systemd for the four daemons: private runtime and config dirs, sockets, notify sockets.
pub struct Supervisor {
    /// The private directory holding runtime, config and log dirs.
    pub root: tempfile::TempDir,
    /// `WATCHDOG_USEC` handed to every daemon.
    pub watchdog_usec: u64,
    /// One entry per daemon, in [`DAEMONS`] order.
    pub units: Vec<Unit>,
    /// Extra environment per daemon (like `Environment=` in a drop-in).
    pub env: Vec<(&'static str, String, String)>,
}

/// One daemon under the [`Supervisor`].
pub struct Unit {
    /// The daemon's short name (`session`, `media`, ...).
    pub name: &'static str,
    /// Its socket-activation listeners.
    pub sockets: ActivationSockets,
    /// Its `NOTIFY_SOCKET`.
    pub notify: NotifySocket,
    /// The running process, once started.
    pub child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
}

impl Supervisor {
    /// Creates the directories and every daemon's sockets (nothing is started yet).
    pub fn new(watchdog_usec: u64) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["run", "config", "logs"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let sock_dir = root.path().join("run/punktfunk");
        std::fs::create_dir(&sock_dir).unwrap();
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let units = DAEMONS
            .iter()
            .map(|&name| Unit {
                name,
                sockets: ActivationSockets::create(&sock_dir, name),
                notify: NotifySocket::bind(root.path().join(format!("notify-{name}"))),
                child: None,
                log_path: root.path().join(format!("logs/{name}.log")),
            })
            .collect();
        Self {
            root,
            watchdog_usec,
            units,
            // GameStream's ports are fixed unless told otherwise, and tests run in parallel:
            // off by default; a test that wants it sets a free port (as `Stack` does; later
            // entries override earlier ones).
            env: vec![(
                "transport",
                "PUNKTFUNK_GAMESTREAM__ENABLED".into(),
                "false".into(),
            )],
        }
    }

    /// `$XDG_RUNTIME_DIR` of the daemons.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    /// Where the daemons' sockets live (`$XDG_RUNTIME_DIR/punktfunk`).
    pub fn socket_dir(&self) -> PathBuf {
        self.runtime_dir().join("punktfunk")
    }

    /// `$XDG_CONFIG_HOME` of the daemons.
    pub fn config_home(&self) -> PathBuf {
        self.root.path().join("config")
    }

    /// The unit of daemon `name`; panics on an unknown name.
    pub fn unit(&mut self, name: &str) -> &mut Unit {
        self.units
            .iter_mut()
            .find(|u| u.name == name)
            .expect("known daemon")
    }

    /// Starts `name` as systemd would (fds 3 and 4, LISTEN_PID = its pid, NOTIFY_SOCKET).
    pub fn start(&mut self, name: &str) {
        let runtime_dir = self.runtime_dir();
        let config_home = self.config_home();
        let watchdog = self.watchdog_usec;
        let extra: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(d, _, _)| *d == name)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        let unit = self.unit(name);
        assert!(unit.child.is_none(), "{name} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&unit.log_path)
            .unwrap();
        // Copies at fd ≥ 100 (close-on-exec) so the child's dup2 onto 3 and 4 can never
        // overwrite a source before copying it. They are closed again after the spawn.
        let high_grpc = rustix::io::fcntl_dupfd_cloexec(&unit.sockets.grpc, 100).expect("dup");
        let high_fds = rustix::io::fcntl_dupfd_cloexec(&unit.sockets.fds, 100).expect("dup");
        let (grpc, fds) = (high_grpc.as_raw_fd(), high_fds.as_raw_fd());
        // `sh` execs the daemon in place, so `$$` is the daemon's pid: systemd sets LISTEN_PID
        // in the forked child the same way. Setting it in pre_exec is not possible (setenv is
        // not async-signal-safe). With `PUNKTFUNK_TEST_NETNS` in the daemon's extra
        // environment it runs inside that network namespace (`ip netns exec` execs in place
        // too, so the pid stays the same).
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                "LISTEN_PID=$$; export LISTEN_PID; \
                 if [ -n \"$PUNKTFUNK_TEST_NETNS\" ]; then exec ip netns exec \"$PUNKTFUNK_TEST_NETNS\" \"$0\"; fi; \
                 exec \"$0\"",
            )
            .arg(bin(&format!("punktfunk-{name}")))
            .env_clear()
            .env("PATH", path_with_bin_dir())
            .env("LISTEN_FDS", "2")
            .env("LISTEN_FDNAMES", format!("{name}:{name}"))
            .env("NOTIFY_SOCKET", &unit.notify.path)
            .env("WATCHDOG_USEC", watchdog.to_string())
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("XDG_CONFIG_HOME", &config_home)
            .env("HOME", &config_home)
            .env("PUNKTFUNK_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.envs(extra);
        // SAFETY: runs in the forked child before exec; dup2 and fcntl are async-signal-safe and
        // only touch fd numbers. The sources are the harness's listeners (open in the parent for
        // the spawn); dup2 clears FD_CLOEXEC on the targets 3 and 4. The sources are ≥ 100, so
        // neither is overwritten before it is copied.
        unsafe {
            cmd.pre_exec(move || {
                for (src, dst) in [(grpc, 3), (fds, 4)] {
                    if libc::dup2(src, dst) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        unit.child = Some(cmd.spawn().expect("spawn daemon"));
        drop((high_grpc, high_fds));
    }

    /// Starts every daemon in [`DAEMONS`] order.
    pub fn start_all(&mut self) {
        for name in DAEMONS {
            self.start(name);
        }
    }

    /// Waits for `READY=1` from `name` sent after `since`.
    pub fn wait_ready(&mut self, name: &str, since: Instant) {
        let timeout = Duration::from_secs(20);
        let unit = self.unit(name);
        if unit
            .notify
            .wait_line(since, timeout, |l| l == "READY=1")
            .is_none()
        {
            let log = std::fs::read_to_string(&unit.log_path).unwrap_or_default();
            panic!("{name} sent no READY=1 within {timeout:?}; its log:\n{log}");
        }
    }

    /// Daemon `name`'s log so far (empty when it has none yet).
    pub fn log(&self, name: &str) -> String {
        self.units
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| std::fs::read_to_string(&u.log_path).ok())
            .unwrap_or_default()
    }

    /// The last `n` lines of daemon `name`'s log at info level and above (the daemons log at
    /// debug under the supervisor; h2 and TLS chatter would bury what happened).
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let all = self.log(name);
        let lines: Vec<&str> = all.lines().filter(|l| !l.contains(" DEBUG ")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends `sig` to `name`.
    pub fn signal(&mut self, name: &str, sig: rustix::process::Signal) {
        let child = self.unit(name).child.as_ref().expect("running");
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Waits up to `timeout` for `name` to exit; returns its status (None: still running).
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<ExitStatus> {
        let unit = self.unit(name);
        let child = unit.child.as_mut().expect("running");
        let status = wait_timeout(child, timeout);
        if status.is_some() {
            unit.child = None;
        }
        status
    }

    /// Runs `punktfunkctl ARGS` (a `--json` command) and parses its output; an error when it
    /// failed, with its stderr.
    pub fn ctl_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.ctl(args);
        anyhow::ensure!(
            out.status.success(),
            "punktfunkctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Runs `punktfunkctl` against this supervisor's sockets.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("punktfunkctl"))
            .args(args)
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env_remove("PUNKTFUNK_RUNTIME_DIR")
            .output()
            .expect("run punktfunkctl")
    }
}

impl Supervisor {
    /// Every live process whose environment points into one of this supervisor's output
    /// runtime dirs (`<run>/pf-*`): an output's processes, or what one left behind.
    pub fn output_processes(&self) -> Vec<(u32, String)> {
        processes_with_env(&self.output_env_prefix())
    }

    /// What every output process's environment holds: `XDG_RUNTIME_DIR=<run>/pf-`.
    pub fn output_env_prefix(&self) -> String {
        format!("XDG_RUNTIME_DIR={}/pf-", self.runtime_dir().display())
    }
}

/// Every live (not zombie) process with an environment entry starting with `prefix`, with its
/// command line.
pub fn processes_with_env(prefix: &str) -> Vec<(u32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in procs.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie
            && env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(prefix.as_bytes()))
        {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((pid, cmd));
        }
    }
    out
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for u in &mut self.units {
            if let Some(mut c) = u.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Outputs outlive punktfunk-session by design; a test that failed before its session
        // ended leaves them running, loading the machine for the tests after it.
        for (pid, _) in self.output_processes() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// `try_wait` until `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses `punktfunkctl status --json` output into (name, serving) pairs.
pub fn parse_status(stdout: &[u8]) -> Vec<(String, bool, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    });
    v["daemons"]
        .as_array()
        .expect("daemons array")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_string(),
                d["serving"].as_bool().expect("serving"),
                d.clone(),
            )
        })
        .collect()
}

/// A throwaway system user for permission tests, removed again on drop.
pub struct ThrowawayUser {
    /// The user's login name.
    pub name: String,
    /// Its numeric uid.
    pub uid: u32,
}

impl ThrowawayUser {
    /// Creates a user (needs root and `useradd`); `None` with the reason when impossible.
    pub fn create() -> Result<Self, String> {
        if !rustix::process::getuid().is_root() {
            return Err("not root: cannot create a throwaway user".into());
        }
        let name = format!("pft{}", std::process::id() % 100_000);
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .map_err(|e| format!("useradd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "useradd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let id = Command::new("id")
            .args(["-u", &name])
            .output()
            .map_err(|e| e.to_string())?;
        let uid = String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id -u: {e}"))?;
        Ok(Self { name, uid })
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
