//! Test and benchmark support: two network namespaces joined by a veth pair, with random
//! loss by nftables in the receiving one (see docs/testing.md "Networks"). Needs root, `ip`
//! (iproute2) and `nft` (nftables). Everything is removed on drop (deleting a namespace
//! removes its veth end and its nft tables).
//!
//! Sockets are created *inside* a namespace by a short-lived thread that `setns`es into it;
//! the socket stays in that namespace wherever it is used afterwards, so the sender and the
//! receiver run as ordinary threads of the test process.
//!
//! [`run_verified`] sends a synthetic stream between any two UDP sockets (loopback or the
//! namespaces) and verifies every delivered frame byte for byte.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex};

use punktfunk_dataplane::feed::{FeedConfig, FeedControl, FeedReport, run_synthetic};
use punktfunk_dataplane::{
    ModeChoice, Receiver, ReceiverConfig, ReceiverStats, RxEvent, SendMode, Sender, SenderConfig,
    SenderStats,
};
use punktfunk_wire::synthetic::{self, SyntheticConfig};
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};

/// Why the lab could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetlabError {
    #[error(
        "network-namespace tests need root (CAP_SYS_ADMIN + CAP_NET_ADMIN); running as uid {0}"
    )]
    /// The process is not root (its uid is given).
    NotRoot(u32),
    /// A required tool (named) is not installed.
    #[error("`{0}` not found: install iproute2 and nftables (`just setup`)")]
    Missing(&'static str),
    #[error("`{cmd}` failed: {stderr}")]
    /// A setup command exited with an error.
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Running a command or opening a namespace failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A veth device did not come up in time.
    #[error("veth {dev} in {ns} not ready after 5 s: {state}")]
    NotReady {
        /// The namespace holding the device.
        ns: String,
        /// The device name.
        dev: String,
        /// Its last seen operational state.
        state: String,
    },
}

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The sending namespace (`pf-a-<tag>`, 10.201.0.1).
    A,
    /// The receiving namespace (`pf-b-<tag>`, 10.201.0.2); loss rules live here.
    B,
}

/// Two namespaces `pf-a-<tag>` / `pf-b-<tag>` joined by a veth pair, 10.201.0.1/24 and
/// 10.201.0.2/24 (private addresses that exist only inside the namespaces).
pub struct NetnsPair {
    a: String,
    b: String,
}

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

/// Waits until `dev` has carrier, its qdisc is attached (the kernel's linkwatch does that up to
/// ~1 s after carrier; until then the device drops every packet, which loses mDNS queries and
/// the first frames) and no IPv6 address is still tentative.
fn wait_link_ready(ns: &str, dev: &str) -> Result<(), NetlabError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let link = run(&["ip", "-n", ns, "link", "show", "dev", dev])?;
        let tentative = run(&[
            "ip",
            "-n",
            ns,
            "-6",
            "addr",
            "show",
            "dev",
            dev,
            "tentative",
        ])?;
        if link.contains("LOWER_UP") && !link.contains("qdisc noop") && tentative.trim().is_empty()
        {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(NetlabError::NotReady {
                ns: ns.to_string(),
                dev: dev.to_string(),
                state: format!("{} {}", link.trim(), tentative.trim()),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> Result<String, NetlabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NetlabError::Missing(if args[0] == "nft" { "nft" } else { "ip" })
            } else {
                NetlabError::Io(e)
            }
        })?;
    if !out.status.success() {
        return Err(NetlabError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetnsPair {
    /// Creates the namespaces, the veth pair and the addresses. `tag` makes the names unique
    /// (e.g. the pid plus a counter); names are `pf-a-<tag>` and `pf-b-<tag>`.
    pub fn create(tag: &str) -> Result<Self, NetlabError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(NetlabError::NotRoot(uid));
        }
        run(&["ip", "-V"])?;
        run(&["nft", "--version"])?;
        let pair = Self {
            a: format!("pf-a-{tag}"),
            b: format!("pf-b-{tag}"),
        };
        // Leftovers of a crashed earlier run with the same tag.
        let _ = run(&["ip", "netns", "del", &pair.a]);
        let _ = run(&["ip", "netns", "del", &pair.b]);
        run(&["ip", "netns", "add", &pair.a])?;
        // From here on, drop cleans up whatever exists.
        run(&["ip", "netns", "add", &pair.b])?;
        run(&[
            "ip", "-n", &pair.a, "link", "add", "pfva", "type", "veth", "peer", "name", "pfvb",
            "netns", &pair.b,
        ])?;
        for (ns, dev, addr) in [(&pair.a, "pfva", ADDR_A), (&pair.b, "pfvb", ADDR_B)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ])?;
            // A GSO super-buffer would cross the veth as one skb and the loss rule would drop
            // ~52 packets at once. Like a NIC that segments in hardware (loss on the wire hits
            // single datagrams), the device segments: the sender still saves the stack
            // traversal per packet, the receiving namespace sees single datagrams.
            run(&["ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1"])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        for (ns, dev) in [(&pair.a, "pfva"), (&pair.b, "pfvb")] {
            wait_link_ready(ns, dev)?;
        }
        Ok(pair)
    }

    /// The namespace name of `side`.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The IPv4 address of `side`'s veth end.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => ADDR_A,
            Side::B => ADDR_B,
        }
    }

    /// Drops `permille`/1000 of the UDP packets to `port` arriving in namespace B, at random
    /// (`numgen random mod 1000 < permille`), with a counter. Replaces an earlier rule.
    pub fn set_loss(&self, port: u16, permille: u32) -> Result<(), NetlabError> {
        let _ = run(&[
            "ip", "netns", "exec", &self.b, "nft", "delete", "table", "inet", "pflab",
        ]);
        let script = format!(
            "add table inet pflab\n\
             add chain inet pflab input {{ type filter hook input priority 0 ; policy accept ; }}\n\
             add rule inet pflab input udp dport {port} numgen random mod 1000 < {permille} counter drop\n"
        );
        let path = std::env::temp_dir().join(format!("{}-loss.nft", self.b));
        std::fs::write(&path, script)?;
        let r = run(&[
            "ip",
            "netns",
            "exec",
            &self.b,
            "nft",
            "-f",
            &path.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Drops every UDP packet to `port` arriving on B's veth at the `netdev` ingress hook,
    /// before the IP stack sees it: a sink whose receive path costs next to nothing, so that
    /// a sender's CPU time is its own (the benches' sender-only figure). Counted like a loss
    /// rule ([`dropped_packets`](Self::dropped_packets) does not read it).
    pub fn drop_at_ingress(&self, port: u16) -> Result<(), NetlabError> {
        let _ = run(&[
            "ip", "netns", "exec", &self.b, "nft", "delete", "table", "netdev", "pfsink",
        ]);
        let script = format!(
            "add table netdev pfsink\n\
             add chain netdev pfsink ingress {{ type filter hook ingress device pfvb priority 0 ; policy accept ; }}\n\
             add rule netdev pfsink ingress udp dport {port} counter drop\n"
        );
        let path = std::env::temp_dir().join(format!("{}-sink.nft", self.b));
        std::fs::write(&path, script)?;
        let r = run(&[
            "ip",
            "netns",
            "exec",
            &self.b,
            "nft",
            "-f",
            &path.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Packets the loss rule dropped so far (from its nft counter).
    pub fn dropped_packets(&self) -> Result<u64, NetlabError> {
        let out = run(&[
            "ip", "netns", "exec", &self.b, "nft", "list", "chain", "inet", "pflab", "input",
        ])?;
        let n = out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        Ok(n)
    }

    /// A UDP socket created inside namespace `side`, bound to its address and `port`.
    pub fn udp_socket(&self, side: Side, port: u16) -> Result<UdpSocket, NetlabError> {
        let ns = format!("/run/netns/{}", self.name(side));
        let addr = SocketAddr::V4(SocketAddrV4::new(self.addr(side), port));
        let r = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<UdpSocket> {
                let f = std::fs::File::open(&ns)?;
                // SAFETY: `f` is an open namespace file; setns only changes this (short-lived)
                // thread's network namespace, which no other code observes.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                UdpSocket::bind(addr)
            })
            .join()
        });
        match r {
            Ok(r) => Ok(r?),
            Err(_) => Err(NetlabError::Io(io::Error::other("setns thread panicked"))),
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end (and with it the peer) and its nft tables.
        for ns in [&self.a, &self.b] {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("netlab: cleanup of {ns} failed: {e}");
            }
        }
    }
}

/// One verified synthetic stream from a sender socket to a receiver socket (see
/// [`run_verified`]).
#[derive(Clone, Debug)]
pub struct StreamRun {
    /// Data-plane config of both ends.
    pub data_plane: DataPlaneConfig,
    /// The synthetic stream to send.
    pub source: SyntheticConfig,
    /// Frames to send.
    pub frames: u64,
    /// Time between produced frames; `data_plane.frame_interval_ns` should equal it so that
    /// pacing spread and loss deadlines scale with it.
    pub feed_interval_ns: u64,
    /// How the sender hands packets to the kernel.
    pub mode: ModeChoice,
    /// Frames the send queue holds before dropping.
    pub queue_frames: usize,
    /// The feed waits for queue space instead of dropping (see [`FeedConfig::backpressure`]).
    /// Defaults to on in unoptimized builds, where FEC + AES cost ~0.5 s per 1 MiB frame and
    /// real time is out of reach; off with optimizations.
    pub backpressure: bool,
    /// [`wire_is_unoptimized`] said so when this run was made.
    pub slow_build: bool,
}

/// True when punktfunk-wire runs unoptimized (a debug build without a profile override):
/// packetizing a 256 KiB frame takes ~0.3 ms of CPU optimized and ~50–100 ms without; the
/// cut is at 10 ms of thread CPU time. Decides test *parameters*, never a pass/fail.
pub fn wire_is_unoptimized() -> bool {
    let Ok(mut p) =
        punktfunk_wire::Packetizer::new(DataPlaneConfig::default(), &lab_key(), StreamKind::Probe)
    else {
        return true;
    };
    let mut batch = punktfunk_wire::PacketBatch::new();
    let au = vec![0x5a; 256 << 10];
    // Best of three (the first pays for allocation and page faults).
    let mut best = u64::MAX;
    for i in 0..3 {
        let c0 = punktfunk_dataplane::sys::thread_cpu_ns();
        let _ = p.packetize(i, true, &au, &mut batch);
        best = best.min(punktfunk_dataplane::sys::thread_cpu_ns() - c0);
    }
    best > 10_000_000
}

impl StreamRun {
    /// `frames` frames of `source` at its frame rate, default data-plane config with its
    /// frame interval set to match.
    ///
    /// In unoptimized builds ([`wire_is_unoptimized`]) neither end keeps up with real time (FEC and
    /// AES-GCM unoptimized: ~0.5 s of CPU per 1 MiB frame), so the feed uses backpressure and
    /// the loss deadline is widened from 3 to 600 frame intervals (10 s: tests run in parallel on
    /// 2 cores, where an unoptimized receiver needs ~1 s of wall time for a keyframe); the delivery assertions
    /// stay the same. With optimizations the run is real time with the default deadline.
    pub fn realtime(source: SyntheticConfig, frames: u64) -> Self {
        let slow = wire_is_unoptimized();
        let interval = 1_000_000_000 / u64::from(source.fps.max(1));
        Self {
            data_plane: DataPlaneConfig {
                frame_interval_ns: interval,
                loss_deadline_intervals: if slow { 600 } else { 3 },
                ..DataPlaneConfig::default()
            },
            source,
            frames,
            feed_interval_ns: interval,
            mode: ModeChoice::Auto,
            queue_frames: 4,
            backpressure: slow,
            slow_build: slow,
        }
    }

    /// Stretches time by `factor`: frames are produced `factor` times less often and the
    /// data-plane frame interval (pacing spread, loss deadline) grows alike.
    pub fn slow_down(&mut self, factor: u64) {
        self.feed_interval_ns = self.feed_interval_ns.saturating_mul(factor.max(1));
        self.data_plane.frame_interval_ns = self
            .data_plane
            .frame_interval_ns
            .saturating_mul(factor.max(1));
    }
}

/// What [`run_verified`] saw.
#[derive(Clone, Debug, Default)]
pub struct StreamOutcome {
    /// Frames the run was asked to send (`StreamRun::frames`).
    pub frames: u64,
    /// Frames delivered and byte-identical to the synthetic source (`synthetic::verify`).
    pub verified: u64,
    /// Frames delivered but different (must be 0: AEAD + layout checks).
    pub corrupt: u64,
    /// Frames delivered more than once (must be 0).
    pub repeated: u64,
    /// Frames reported lost or skipped by the receiver.
    pub lost: u64,
    /// The send mode the sender ended up using.
    pub mode: SendMode,
    /// Why the GSO probe failed, if it did.
    pub gso_probe_error: Option<String>,
    /// Final sender counters.
    pub sender: SenderStats,
    /// Final receiver counters.
    pub receiver: ReceiverStats,
    /// What the feed thread reported.
    pub feed: FeedReport,
    /// First corruption, if any.
    pub first_error: Option<String>,
}

impl StreamOutcome {
    /// Frames never verified (lost, corrupt or missing).
    pub fn missing(&self) -> u64 {
        self.frames - self.verified
    }
}

/// The fixed key the lab streams use.
pub fn lab_key() -> SessionKey {
    SessionKey {
        key: *b"punktfunk-lab-k1",
        salt: *b"salt",
    }
}

/// Sends `run.frames` synthetic frames from `tx` (connected to `rx`'s address) through a
/// [`Sender`] fed in real time, receives them with a [`Receiver`] on `rx`, verifies every
/// delivered frame byte for byte, and waits for the stragglers (until every frame is
/// delivered or lost, at most one loss deadline + 1 s after the last frame).
pub fn run_verified(
    tx: UdpSocket,
    rx: UdpSocket,
    run: &StreamRun,
) -> Result<StreamOutcome, Box<dyn std::error::Error + Send + Sync>> {
    let n = run.frames;
    let seen = Arc::new(Mutex::new(Tally {
        delivered: vec![false; n as usize],
        ..Tally::default()
    }));
    let key = lab_key();
    let rcfg = ReceiverConfig::new(StreamKind::Video, run.data_plane, key.clone());
    let seen2 = seen.clone();
    let receiver = Receiver::spawn(rx, &rcfg, move |ev| {
        let Ok(mut t) = seen2.lock() else { return };
        match ev {
            RxEvent::Frame(f) => {
                let i = f.index as usize;
                match synthetic::verify(f.index, f.data) {
                    Ok(()) if i < t.delivered.len() => {
                        if t.delivered[i] {
                            t.repeated += 1;
                        } else {
                            t.delivered[i] = true;
                            t.verified += 1;
                        }
                    }
                    Ok(()) => t.corrupt += 1,
                    Err(e) => {
                        t.corrupt += 1;
                        if t.first_error.is_none() {
                            t.first_error = Some(format!("frame {}: {e}", f.index));
                        }
                    }
                }
            }
            RxEvent::Lost { .. } => t.lost += 1,
            RxEvent::Skipped { count, .. } => t.lost += count,
        }
    })?;
    let mut scfg = SenderConfig::new(run.data_plane, key, StreamKind::Video);
    scfg.options.mode = run.mode;
    scfg.options.queue_frames = run.queue_frames;
    let sender = Sender::spawn(tx, scfg)?;
    let mode = sender.mode();
    let gso_probe_error = sender.gso_probe_error().map(str::to_string);
    let feed_cfg = FeedConfig {
        source: run.source,
        frames: Some(n),
        interval_ns: run.feed_interval_ns,
        backpressure: run.backpressure,
        envelope: false,
    };
    if run.backpressure {
        eprintln!(
            "netlab: unoptimized build, the feed waits for queue space (not real time); \
             build with optimizations for real-time 60 fps"
        );
    }
    let control = FeedControl::new(&feed_cfg, Default::default());
    let feed = run_synthetic(&sender, &feed_cfg, &control, |_| {});
    let sender_stats = sender.shutdown();
    // Wait until every frame is accounted for, or nothing happened for one loss deadline
    // + 1 s (the receiver may still be working through a backlog in slow builds).
    let quiet_ns = run.data_plane.loss_deadline_ns() + 1_000_000_000;
    let mut last_progress = (punktfunk_dataplane::sys::monotonic_ns(), u64::MAX);
    loop {
        let (accounted, done) = seen
            .lock()
            .map(|t| {
                let a = t.verified + t.corrupt + t.lost;
                (a, a >= n)
            })
            .unwrap_or((0, true));
        let progress = receiver.stats().datagrams + accounted;
        let now = punktfunk_dataplane::sys::monotonic_ns();
        if progress != last_progress.1 {
            last_progress = (now, progress);
        }
        if done || now - last_progress.0 > quiet_ns {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (receiver_stats, r) = receiver.stop();
    r?;
    let t = seen.lock().map_err(|_| "tally poisoned")?;
    Ok(StreamOutcome {
        frames: n,
        verified: t.verified,
        corrupt: t.corrupt,
        repeated: t.repeated,
        lost: t.lost,
        mode,
        gso_probe_error,
        sender: sender_stats,
        receiver: receiver_stats,
        feed,
        first_error: t.first_error.clone(),
    })
}

#[derive(Default)]
struct Tally {
    delivered: Vec<bool>,
    verified: u64,
    corrupt: u64,
    repeated: u64,
    lost: u64,
    first_error: Option<String>,
}
