//! Helpers of the attack tests (`tests/tests/attacks.rs`, issue #9): bounded client runs that
//! can never hang a test, the leak checks every attack ends with (live sessions, media's
//! streams, transport's open fds), and a packet tap on a private loopback to replay real
//! traffic.
//!
//! Every wait here is bounded: a wedged daemon makes a test fail with what it saw, not hang.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::native::NativeHost;
use crate::stack::Stack;
use crate::{bin, wait_timeout};

/// How many more fds than its baseline transport may hold once every session is gone (gRPC
/// channels opened lazily, a socket in TIME_WAIT-like teardown); a leak per session is more.
pub const FD_MARGIN: usize = 8;
/// The longest a pairing attempt may take before the test calls it wedged.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// What the acceptance criteria allow `punktfunkctl pair` after any pairing abuse.
pub const ARM_BOUND: Duration = Duration::from_secs(1);
/// The stream most attacks watch: H.264 (or the synthetic source) at a small mode, which a
/// 2-core machine encodes for three clients at once.
pub const SMALL_STREAM: [&str; 6] = [
    "--mode",
    "640x360@30",
    "--bitrate",
    "1500",
    "--codec",
    "h264",
];

/// A host under attack: transport alone ([`NativeHost`]) or the whole appliance ([`Stack`]).
pub trait Host {
    /// Runs `punktfunkctl` against it.
    fn ctl(&self, args: &[&str]) -> Output;
    /// `host:port` of transport's QUIC endpoint.
    fn addr(&self) -> String;
    /// The running transport's pid (panics when it is not running).
    fn transport_pid(&self) -> u32;
    /// The logs of its daemons so far, by daemon name.
    fn logs(&self) -> Vec<(&'static str, String)>;
    /// Where client identities live (`<dir>/<name>`).
    fn clients_dir(&self) -> PathBuf;
    /// Media's status line; `None` when there is no media daemon.
    fn media_status(&self) -> Option<String>;
}

impl Host for NativeHost {
    fn ctl(&self, args: &[&str]) -> Output {
        NativeHost::ctl(self, args)
    }
    fn addr(&self) -> String {
        NativeHost::addr(self)
    }
    fn transport_pid(&self) -> u32 {
        self.child.as_ref().expect("transport runs").id()
    }
    fn logs(&self) -> Vec<(&'static str, String)> {
        vec![("transport", self.log())]
    }
    fn clients_dir(&self) -> PathBuf {
        self.root.path().join("client")
    }
    fn media_status(&self) -> Option<String> {
        None
    }
}

impl Host for Stack {
    fn ctl(&self, args: &[&str]) -> Output {
        self.sup.ctl(args)
    }
    fn addr(&self) -> String {
        self.host()
    }
    fn transport_pid(&self) -> u32 {
        daemon_pid(self, "transport")
    }
    fn logs(&self) -> Vec<(&'static str, String)> {
        self.sup
            .units
            .iter()
            .filter(|u| matches!(u.name, "transport" | "media"))
            .map(|u| {
                (
                    u.name,
                    std::fs::read_to_string(&u.log_path).unwrap_or_default(),
                )
            })
            .collect()
    }
    fn clients_dir(&self) -> PathBuf {
        self.sup.root.path().join("clients")
    }
    fn media_status(&self) -> Option<String> {
        let out = self.sup.ctl(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let row = v["daemons"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == "media").cloned());
        Some(
            row.and_then(|r| r["status"].as_str().map(str::to_string))
                .unwrap_or_else(|| "down".into()),
        )
    }
}

/// The pid of the running daemon `name` of `stack` (panics when it is not running).
pub fn daemon_pid(stack: &Stack, name: &str) -> u32 {
    stack
        .sup
        .units
        .iter()
        .find(|u| u.name == name)
        .and_then(|u| u.child.as_ref())
        .unwrap_or_else(|| panic!("{name} is not running"))
        .id()
}

/// The last `lines` lines of each daemon's log above DEBUG, for assertion messages.
pub fn log_excerpt(host: &impl Host, lines: usize) -> String {
    let mut out = String::new();
    for (name, log) in host.logs() {
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
            .collect();
        out.push_str(&format!(
            "\n--- {name} log (INFO and above, last {lines} lines) ---\n"
        ));
        for l in &notable[notable.len().saturating_sub(lines)..] {
            out.push_str(&l[..l.len().min(400)]);
            out.push('\n');
        }
    }
    out
}

/// Polls `f` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reference client: an identity directory and the name it announces.
#[derive(Clone, Debug)]
pub struct ClientId {
    /// The client's config and identity directory.
    pub dir: PathBuf,
    /// The name it announces when pairing.
    pub name: String,
}

impl ClientId {
    /// A client with its own identity under the host's clients dir.
    pub fn new(host: &impl Host, name: &str) -> Self {
        Self {
            dir: host.clients_dir().join(name),
            name: name.to_string(),
        }
    }

    /// The same identity (so the same pairing) announcing another name.
    pub fn renamed(&self, name: &str) -> Self {
        Self {
            dir: self.dir.clone(),
            name: name.to_string(),
        }
    }

    /// A `punktfunk-client` command as this client.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("punktfunk-client"));
        c.arg("--config-dir")
            .arg(&self.dir)
            .arg("--name")
            .arg(&self.name)
            .args(args)
            .env("PUNKTFUNK_LOG", "warn");
        c
    }

    /// `pair --pin PIN` against `host`, bounded by [`ATTEMPT_TIMEOUT`].
    pub fn pair(&self, host: &impl Host, pin: &str) -> Finished {
        Running::spawn(&mut self.command(&["pair", "--pin", pin, &host.addr()]))
            .finish(ATTEMPT_TIMEOUT)
    }

    /// A [`SMALL_STREAM`] of `seconds` against `host`, with `extra` arguments.
    pub fn small_stream(&self, host: &impl Host, seconds: u32, extra: &[&str]) -> Command {
        let seconds = seconds.to_string();
        let mut args = vec!["--duration", seconds.as_str()];
        args.extend_from_slice(&SMALL_STREAM);
        args.extend_from_slice(extra);
        self.stream_command(host, &args)
    }

    /// A `stream --json` command against `host` with `extra` arguments.
    pub fn stream_command(&self, host: &impl Host, extra: &[&str]) -> Command {
        let addr = host.addr();
        let mut args = vec!["stream", addr.as_str(), "--json"];
        args.extend_from_slice(extra);
        self.command(&args)
    }
}

/// A child whose stdout and stderr are drained on threads (it can never block on a full pipe).
pub struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    started: Instant,
}

/// How a [`Running`] child ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it was still running at the deadline and was killed.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr, lossily decoded.
    pub stderr: String,
    /// Time from spawn to exit (or kill).
    pub elapsed: Duration,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

impl Running {
    /// Spawns `cmd` with piped output.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited already (it is not reaped by this).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout`; kills it (SIGKILL) if it is still running then.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let status = wait_timeout(&mut self.child, timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.collect(status)
    }

    /// kill -9, the way a crashing or yanked client leaves: no Goodbye, no close frame.
    pub fn kill9(mut self) -> Finished {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.collect(status)
    }

    fn collect(self, status: Option<ExitStatus>) -> Finished {
        Finished {
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: String::from_utf8_lossy(&self.stderr.join().unwrap_or_default()).into_owned(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Finished {
    /// True if it exited on its own with status 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// True if it was killed at the deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// One line for assertion messages: how it ended and its stderr.
    pub fn describe(&self) -> String {
        let how = match self.status {
            None => format!(
                "still running after {:.1} s (killed)",
                self.elapsed.as_secs_f64()
            ),
            Some(s) => format!("{s} after {:.1} s", self.elapsed.as_secs_f64()),
        };
        format!("{how}; stderr: {}", self.stderr.trim())
    }

    /// The `--json` report on stdout.
    pub fn report(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.stdout).map_err(|e| {
            format!(
                "no JSON report ({e}): {}; stdout: {}",
                self.describe(),
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }
}

/// Arms pairing with `punktfunkctl pair --window W`; returns the PIN and how long the call took.
pub fn arm(host: &impl Host, window_s: u32) -> Result<(String, Duration), String> {
    let t = Instant::now();
    let out = host.ctl(&["pair", "--json", "--window", &window_s.to_string()]);
    let took = t.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    match v["pin"].as_str() {
        Some(pin) if out.status.success() => Ok((pin.to_string(), took)),
        _ => Err(format!(
            "punktfunkctl pair failed after {:.2} s ({}): {}",
            took.as_secs_f64(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Live sessions as `punktfunkctl sessions --json` lists them.
pub fn sessions(host: &impl Host) -> Result<Vec<Value>, String> {
    let out = host.ctl(&["sessions", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "sessions --json ({}): {e}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(v["sessions"].as_array().cloned().unwrap_or_default())
}

/// How many sessions are live (`usize::MAX` when transport does not answer).
pub fn session_count(host: &impl Host) -> usize {
    sessions(host).map_or(usize::MAX, |s| s.len())
}

/// Frames transport has sent to the session of client `name` (`None`: no such session).
pub fn frames_sent_to(host: &impl Host, name: &str) -> Option<u64> {
    sessions(host)
        .ok()?
        .iter()
        .find(|s| s["client"] == name)
        .and_then(|s| s["frames_sent"].as_u64())
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What "nothing leaked" is measured against: transport's fds while no client is connected.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Transport's process id.
    pub pid: u32,
    /// Its open file descriptors at the time.
    pub fds: usize,
}

impl Baseline {
    /// Counts the host's transport fds now.
    pub fn take(host: &impl Host) -> Self {
        let pid = host.transport_pid();
        Self {
            pid,
            fds: fd_count(pid),
        }
    }

    /// Waits up to `timeout` until no session is live, media (if any) streams nothing and
    /// transport holds at most [`FD_MARGIN`] more fds than the baseline; `Err` says what leaked.
    pub fn wait_clean(&self, host: &impl Host, timeout: Duration) -> Result<(), String> {
        let clean = || {
            session_count(host) == 0
                && host.media_status().is_none_or(|s| s.starts_with("idle"))
                && fd_count(self.pid) <= self.fds + FD_MARGIN
        };
        if wait_for(timeout, clean) {
            return Ok(());
        }
        Err(format!(
            "leaked after {timeout:?}: sessions {:?}; media {:?}; transport fds {} (baseline {}){}",
            sessions(host),
            host.media_status(),
            fd_count(self.pid),
            self.fds,
            log_excerpt(host, 30)
        ))
    }
}

/// Pairs `client` with a freshly armed PIN; `Err` says what failed (arming or pairing).
/// Arming must answer within [`ARM_BOUND`].
pub fn arm_and_pair(host: &impl Host, client: &ClientId) -> Result<(), String> {
    let (pin, took) = arm(host, 120)?;
    if took > ARM_BOUND {
        return Err(format!(
            "punktfunkctl pair took {:.2} s (bound {ARM_BOUND:?})",
            took.as_secs_f64()
        ));
    }
    let f = client.pair(host, &pin);
    if !f.succeeded() {
        return Err(format!("pairing {} failed: {}", client.name, f.describe()));
    }
    Ok(())
}

/// A short stream by `client`: it must succeed with a clock-synced, verified report, and its
/// session must be gone within 5 s (it said Goodbye).
pub fn probe_stream(host: &impl Host, client: &ClientId) -> Result<Value, String> {
    let f = Running::spawn(&mut client.small_stream(host, 2, &[])).finish(Duration::from_secs(30));
    let r = f.report()?;
    let frames = r["frames_received"].as_u64().unwrap_or(0);
    if !f.succeeded() || frames == 0 || r["skew_corrected"] != true || r["verify_failures"] != 0 {
        return Err(format!(
            "stream of {} failed: {}; report {r}",
            client.name,
            f.describe()
        ));
    }
    if !wait_for(Duration::from_secs(5), || {
        sessions(host).is_ok_and(|s| !s.iter().any(|s| s["client"] == client.name.as_str()))
    }) {
        return Err(format!(
            "the session of {} is still listed 5 s after it ended: {:?}",
            client.name,
            sessions(host)
        ));
    }
    Ok(r)
}

/// The host still serves: `punktfunkctl pair` answers within [`ARM_BOUND`], a new client `name`
/// pairs with that PIN, streams with `skew_corrected: true` and leaves no session behind.
pub fn assert_serves(host: &impl Host, name: &str) {
    let client = ClientId::new(host, name);
    let result = arm_and_pair(host, &client).and_then(|()| probe_stream(host, &client));
    if let Err(e) = result {
        panic!(
            "the host no longer serves ({name}): {e}{}",
            log_excerpt(host, 40)
        );
    }
}

/// The rows of a `--frames-out` CSV as (index, discontinuity) pairs.
pub fn frame_rows(csv: &Path) -> Vec<(u64, bool)> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(i), Some(d)) = (col("index"), col("discontinuity")) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.get(i)?.parse().ok()?, *f.get(d)? == "1"))
        })
        .collect()
}

/// The longest gap between two received frames (trailing gaps aside): (ms, index before it).
pub fn longest_gap(report: &Value) -> Option<(f64, u64)> {
    report["gaps"]
        .as_array()?
        .iter()
        .filter(|g| g["trailing"] != true)
        .filter_map(|g| Some((g["ms"].as_f64()?, g["after_frame"].as_u64()?)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// A private network namespace for the calling thread and every process it starts from now
/// on, with its own loopback (up, and accepting packets injected with a local source address,
/// which replays need). Needs root; nothing outside the namespace changes.
pub fn private_loopback() -> Result<(), String> {
    // SAFETY: unshare only changes the calling thread's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {} (the replay test needs root; CI runs as root)",
            std::io::Error::last_os_error()
        ));
    }
    // A child inherits this thread's namespace, so these settings land in the new one only.
    let script = "ip link set lo up && for k in route_localnet accept_local; do \
                  echo 1 > /proc/sys/net/ipv4/conf/lo/$k && echo 1 > /proc/sys/net/ipv4/conf/all/$k; done";
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "setting up the private loopback failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// One IPv4/UDP datagram seen on loopback.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The whole IPv4 packet.
    pub ip: Vec<u8>,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

/// `setsockopt(SOL_PACKET, PACKET_VNET_HDR)`: each packet read comes after a
/// `virtio_net_hdr`, which says how a UDP GSO burst splits into datagrams.
const PACKET_VNET_HDR: libc::c_int = 15;
const VNET_HDR_LEN: usize = 10;
/// What a `SOCK_RAW` tap reads before the IP packet: the `virtio_net_hdr`, then Ethernet.
const FRAME_PREFIX: usize = VNET_HDR_LEN + 14;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;

/// The IPv4 header checksum of `header` (its checksum field zeroed).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Captured {
    fn parse(ip: &[u8]) -> Option<Self> {
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        let proto = *ip.get(9)?;
        let udp = ip.get(ihl..ihl + 8)?;
        (ip[0] >> 4 == 4 && proto == libc::IPPROTO_UDP as u8).then(|| Self {
            ip: ip.to_vec(),
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        })
    }

    fn udp_offset(&self) -> usize {
        usize::from(self.ip[0] & 0x0f) * 4
    }

    /// The UDP payload.
    pub fn payload(&self) -> &[u8] {
        &self.ip[self.udp_offset() + 8..]
    }

    /// A datagram with this one's addresses and ports and `payload`.
    fn with_payload(&self, payload: &[u8]) -> Self {
        let ihl = self.udp_offset();
        let mut ip = self.ip[..ihl + 8].to_vec();
        ip.extend_from_slice(payload);
        let total = u16::try_from(ip.len()).unwrap_or(u16::MAX);
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10..12].fill(0);
        let sum = ipv4_checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip[ihl + 4..ihl + 6].copy_from_slice(&(total - ihl as u16).to_be_bytes());
        Self {
            ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    /// The datagrams of a UDP GSO burst of `segment` bytes each, as they reach the receiver.
    fn segments(&self, segment: usize) -> Vec<Self> {
        self.payload()
            .chunks(segment.max(1))
            .map(|c| self.with_payload(c))
            .collect()
    }

    /// The datagram with one payload byte flipped (same length, same addresses).
    pub fn tampered(&self, at: usize) -> Self {
        let mut p = self.clone();
        let start = p.udp_offset() + 8;
        if p.ip.len() > start {
            let i = start + at % (p.ip.len() - start);
            p.ip[i] ^= 0x5a;
        }
        p
    }
}

/// An `AF_PACKET` socket on `lo`: sees every IPv4 packet on loopback and injects packets as
/// if they had been sent there (the exact bytes, addresses and ports included).
pub struct LoopbackTap {
    fd: OwnedFd,
    ifindex: i32,
}

fn sockaddr_ll(ifindex: i32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll
}

/// `setsockopt` of a plain value; `Err` with `what` and the OS error.
fn set_opt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> Result<(), String> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to a live `T` of `len` bytes.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    if rc != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl LoopbackTap {
    /// A tap that captures every IPv4 packet on `lo` (needs root).
    pub fn listen() -> Result<Self, String> {
        // SOCK_RAW (frames with their Ethernet header): only it can have PACKET_VNET_HDR.
        let tap = Self::open(libc::SOCK_RAW, (libc::ETH_P_IP as u16).to_be())?;
        let sll = sockaddr_ll(tap.ifindex);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: bind with a sockaddr_ll of `len` bytes.
        if unsafe { libc::bind(tap.fd.as_raw_fd(), (&raw const sll).cast(), len) } != 0 {
            return Err(format!("bind to lo: {}", std::io::Error::last_os_error()));
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        set_opt(
            &tap.fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv,
            "SO_RCVTIMEO",
        )?;
        set_opt(
            &tap.fd,
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            &1i32,
            "PACKET_VNET_HDR",
        )?;
        Ok(tap)
    }

    /// A tap that only injects (it receives nothing, so it costs nothing while packets flow).
    pub fn injector() -> Result<Self, String> {
        Self::open(libc::SOCK_DGRAM, 0)
    }

    fn open(kind: libc::c_int, protocol: u16) -> Result<Self, String> {
        // SAFETY: socket() returns a new fd that we own from here on.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                kind | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(format!(
                "AF_PACKET socket (needs root): {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) } as i32;
        Ok(Self { fd, ifindex })
    }

    /// The UDP datagrams of the next packet within 100 ms: one, or the datagrams of a UDP
    /// GSO burst (loopback carries a burst whole); empty when none came or not IPv4/UDP.
    pub fn next(&self) -> Vec<Captured> {
        let mut buf = vec![0u8; FRAME_PREFIX + 65_536];
        // SAFETY: recv into a buffer of the length passed.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Some(n) = usize::try_from(n).ok().filter(|n| *n > FRAME_PREFIX) else {
            return Vec::new();
        };
        let (gso_type, gso_size) = (buf[1] & 0x7f, u16::from_ne_bytes([buf[4], buf[5]]));
        match Captured::parse(&buf[FRAME_PREFIX..n]) {
            Some(p) if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4 && gso_size > 0 => {
                p.segments(usize::from(gso_size))
            }
            Some(p) => vec![p],
            None => Vec::new(),
        }
    }

    /// Captures the UDP datagrams that satisfy `keep` for `how_long` (at most about `max`).
    pub fn capture(
        &self,
        how_long: Duration,
        max: usize,
        keep: impl Fn(&Captured) -> bool,
    ) -> Vec<Captured> {
        let deadline = Instant::now() + how_long;
        let mut out = Vec::new();
        while Instant::now() < deadline && out.len() < max {
            out.extend(self.next().into_iter().filter(|p| keep(p)));
        }
        out
    }

    /// Puts `p` on loopback again. Its UDP checksum is cleared (valid for IPv4: "none"),
    /// because a captured loopback packet carries only a partial, offloaded checksum.
    pub fn inject(&self, p: &Captured) -> std::io::Result<()> {
        let mut ip = p.ip.clone();
        let c = p.udp_offset() + 6;
        ip[c..c + 2].fill(0);
        let sll = sockaddr_ll(self.ifindex);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: sendto from a live buffer of the length passed, to a sockaddr_ll of `len`.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ip.as_ptr().cast(),
                ip.len(),
                0,
                (&raw const sll).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Proves that a captured datagram, injected again, reaches its socket a second time (so a
/// replay test does replay): one datagram to a socket of ours, captured, injected, received.
pub fn check_replay_reaches_sockets() -> Result<(), String> {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let port = rx.local_addr().map_err(|e| e.to_string())?.port();
    let tap = LoopbackTap::listen()?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    tx.send_to(b"replay-check", ("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let seen = tap.capture(Duration::from_secs(1), 1, |p| p.dst_port == port);
    let p = seen.first().ok_or("the tap saw nothing on lo")?;
    LoopbackTap::injector()?
        .inject(p)
        .map_err(|e| format!("inject: {e}"))?;
    let mut buf = [0u8; 64];
    for which in ["original", "replay"] {
        let n = rx
            .recv(&mut buf)
            .map_err(|e| format!("the {which} did not arrive: {e}"))?;
        if &buf[..n] != b"replay-check" {
            return Err(format!("the {which} arrived altered"));
        }
    }
    Ok(())
}
