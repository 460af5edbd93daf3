//! The sender at its limit: thread CPU time per frame of FEC + seal + send, honestly split,
//! for 16 KiB, 256 KiB, 1 MiB and 4 MiB frames, against a `memcpy` of the same bytes.
//!
//! Per frame size, in this order (each a fresh socket; the sizes run one after another):
//! 1. **memcpy** of the frame: the floor.
//! 2. **sender only**: `SendPipeline::send_frame` back to back (pacing off, UDP GSO, and
//!    plain sendmmsg beside it) into a sink in another network namespace that drops at the
//!    veth's `netdev` ingress hook, so the receive path (IP, UDP, socket) is not billed to the
//!    sender. Split into packetize (RS + seal + copies) and send (the sendmmsg calls). The
//!    sending veth passes a GSO super-buffer on whole, as a NIC with UDP segmentation offload
//!    takes it; a second column makes the veth segment in software (`gso_max_segs 1`, a NIC
//!    without USO: the kernel's segmentation then runs in the sender's context and is billed
//!    to it), and a third sends plain sendmmsg (one datagram per message).
//! 3. **loopback + receiver**: the same on loopback with a real `Receiver` (authenticate +
//!    reassemble) on the other core; its softirq receive path is billed to the sending thread,
//!    which is why this figure is higher. Goodput and delivery are checked here.
//! 4. **paced, whole thread**: a real `Sender` (its own `pf-dp-send` thread, pacing on at
//!    60 fps) into the sink, fed one frame per 16.7 ms: the thread's whole CPU time per frame
//!    (`FrameReport::thread_cpu_ns`: queue wake-up + packetize + send + pacing wake-ups and
//!    spin), with the pacing share and the wake-ups per frame, and that total split into the
//!    paced run's own packetize, send, pacing and the rest between frames. A paced frame
//!    arrives 16.7 ms after the last one, its bytes written by another thread: its packetize
//!    runs with cold caches and costs more than the back-to-back figure of point 2. For 1 MiB
//!    and 4 MiB the paced run is repeated with smaller FEC blocks ([`SMALL_BLOCK`]).
//!
//! CPU is `CLOCK_THREAD_CPUTIME_ID` of the thread doing the work. Each figure is the median
//! (and min) over the frames of its run. Data-plane config: 1200-byte shards, ≤ 1024 data
//! shards per block (1 MiB = one block), 20 % parity, AES-128-GCM on the data plane's backend.
//! The sink needs root (network namespaces, nftables); without it those rows say so.
//!
//! `cargo bench -p punktfunk-dataplane --bench send`

use punktfunk_dataplane::sys::{monotonic_ns, thread_cpu_ns};
use punktfunk_dataplane::{
    FrameReport, ModeChoice, Receiver, ReceiverConfig, RxEvent, SendPipeline, Sender, SenderConfig,
};
use punktfunk_testsupport::netlab::{NetnsPair, Side};
use punktfunk_wire::synthetic::fill;
use punktfunk_wire::{AeadBackend, DataPlaneConfig, SessionKey, StreamKind};
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SINK_PORT: u16 = 47_100;
const FPS: u64 = 60;
/// The smaller FEC block the paced rows are also run with (the GameStream-sized choice).
const SMALL_BLOCK: u32 = 256;

fn key() -> SessionKey {
    SessionKey {
        key: *b"bench-key-16byte",
        salt: *b"salt",
    }
}

fn dp() -> DataPlaneConfig {
    DataPlaneConfig {
        parity_permille: 200,
        frames_in_flight: 8,
        frame_interval_ns: 1_000_000_000 / FPS,
        ..DataPlaneConfig::default()
    }
}

/// Median and min, in µs.
#[derive(Clone, Copy, Default)]
struct Stat {
    med: f64,
    min: f64,
}

impl Stat {
    fn of(v: &[u64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut v = v.to_vec();
        v.sort_unstable();
        Self {
            med: v[v.len() / 2] as f64 / 1e3,
            min: v[0] as f64 / 1e3,
        }
    }
}

impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} ({:.0})", self.med, self.min)
    }
}

/// Where the sender-only runs send to.
struct Sink {
    lab: NetnsPair,
    /// Bound in B so the port exists; nothing reaches it.
    _rx: UdpSocket,
}

impl Sink {
    fn create() -> Result<Self, String> {
        let lab =
            NetnsPair::create(&format!("bs{}", std::process::id())).map_err(|e| e.to_string())?;
        lab.drop_at_ingress(SINK_PORT).map_err(|e| e.to_string())?;
        let rx = lab
            .udp_socket(Side::B, SINK_PORT)
            .map_err(|e| e.to_string())?;
        Ok(Self { lab, _rx: rx })
    }

    /// Whether A's veth cuts GSO super-buffers into datagrams in software.
    fn segment_in_software(&self, yes: bool) {
        let segs = if yes { "1" } else { "65535" };
        let ns = self.lab.name(Side::A);
        let ok = std::process::Command::new("ip")
            .args(["-n", ns, "link", "set", "pfva", "gso_max_segs", segs])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set pfva gso_max_segs {segs} failed in {ns}");
    }

    fn socket(&self) -> UdpSocket {
        let s = self.lab.udp_socket(Side::A, 0).expect("socket in A");
        s.connect(SocketAddr::from((self.lab.addr(Side::B), SINK_PORT)))
            .expect("connect to the sink");
        s
    }
}

fn frames_for(size: usize) -> usize {
    ((128usize << 20) / size).clamp(40, 2000)
}

fn memcpy(size: usize) -> Stat {
    let mut src = Vec::new();
    fill(1, size, &mut src);
    let mut dst = vec![0u8; size];
    let v: Vec<u64> = (0..frames_for(size))
        .map(|_| {
            let t = thread_cpu_ns();
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
            thread_cpu_ns() - t
        })
        .collect();
    Stat::of(&v)
}

/// Back to back through a `SendPipeline` on this thread: (packetize, send, packetize + send).
fn unpaced(socket: UdpSocket, size: usize, mode: ModeChoice) -> (Stat, Stat, Stat, u64) {
    let mut cfg = SenderConfig::new(dp(), key(), StreamKind::Video);
    cfg.options.pacing = None;
    cfg.options.mode = mode;
    let mut p = SendPipeline::new(socket, &cfg).expect("pipeline");
    let mut au = Vec::new();
    let (mut pk, mut send, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..frames_for(size) {
        fill(i as u64, size, &mut au);
        let r = p.send_frame(i as u64, i == 0, &au).expect("send");
        pk.push(r.packetize_cpu_ns);
        send.push(r.send_cpu_ns);
        both.push(r.packetize_cpu_ns + r.send_cpu_ns);
    }
    let drops = p.stats().send_drop_packets;
    (Stat::of(&pk), Stat::of(&send), Stat::of(&both), drops)
}

/// Loopback with a real receiver: (send, packetize + send, delivered, frames, goodput Mbit/s).
fn loopback(size: usize) -> (Stat, Stat, u64, usize, f64, u64) {
    let rx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
    let tx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    tx_sock
        .connect(rx_sock.local_addr().expect("addr"))
        .expect("connect");
    let delivered = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let (d2, b2, l2) = (delivered.clone(), bytes.clone(), last.clone());
    let rcfg = ReceiverConfig::new(StreamKind::Video, dp(), key());
    let receiver = Receiver::spawn(rx_sock, &rcfg, move |ev| {
        if let RxEvent::Frame(f) = ev {
            d2.fetch_add(1, Relaxed);
            b2.fetch_add(f.data.len() as u64, Relaxed);
            l2.store(f.delivered_ns, Relaxed);
        }
    })
    .expect("receiver");
    let mut cfg = SenderConfig::new(dp(), key(), StreamKind::Video);
    cfg.options.pacing = None;
    cfg.options.mode = ModeChoice::Gso;
    let mut p = SendPipeline::new(tx_sock, &cfg).expect("pipeline");
    let frames = frames_for(size);
    let mut au = Vec::new();
    let (mut send, mut both) = (Vec::new(), Vec::new());
    let start = monotonic_ns();
    for i in 0..frames {
        fill(i as u64, size, &mut au);
        let r = p.send_frame(i as u64, i == 0, &au).expect("send");
        send.push(r.send_cpu_ns);
        both.push(r.packetize_cpu_ns + r.send_cpu_ns);
    }
    // The receiver is done when every frame arrived or nothing moved for 200 ms.
    let mut seen = (monotonic_ns(), u64::MAX);
    while (delivered.load(Relaxed) as usize) < frames {
        let n = receiver.stats().datagrams;
        if n != seen.1 {
            seen = (monotonic_ns(), n);
        } else if monotonic_ns() - seen.0 > 200_000_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = receiver.stop();
    let span = last.load(Relaxed).saturating_sub(start).max(1);
    let goodput = bytes.load(Relaxed) as f64 * 8.0 / span as f64 * 1e3;
    let drops = p.stats().send_drop_packets;
    (
        Stat::of(&send),
        Stat::of(&both),
        delivered.load(Relaxed),
        frames,
        goodput,
        drops,
    )
}

struct Paced {
    total: Stat,
    pacing: Stat,
    /// The paced run's own packetize and send shares (cold caches after each 16.7 ms sleep).
    packetize: Stat,
    send: Stat,
    /// The rest of `total`: between the end of one frame and the start of the next (queue
    /// wake-up, buffer recycling, report) — and whatever the hypervisor bills to the thread.
    between: Stat,
    wakeups: f64,
    chunks: f64,
    drops: u64,
    /// First to last send call of a frame, µs (median, max).
    span: Stat,
    span_max_us: f64,
    catchups: u64,
    /// Who paced (and why not the kernel).
    pacing_mode: String,
}

impl Paced {
    /// The thread's total and the shares it is made of.
    fn split(&self) -> String {
        format!(
            "thread total {} = packetize {} + send {} + pacing {} + between frames {}",
            self.total, self.packetize, self.send, self.pacing, self.between
        )
    }
}

/// A real paced `Sender` into the sink at 60 fps: the send thread's whole CPU per frame.
fn paced(socket: UdpSocket, size: usize, dp: DataPlaneConfig) -> Paced {
    let (tx, rx) = std::sync::mpsc::sync_channel::<FrameReport>(1024);
    let mut cfg = SenderConfig::new(dp, key(), StreamKind::Video);
    cfg.options.mode = ModeChoice::Gso;
    cfg.options.reports = Some(tx);
    let sender = Sender::spawn(socket, cfg).expect("sender");
    let pacing_mode = match sender.pacing_note() {
        Some(why) => format!("{} ({why})", sender.pacing_mode()),
        None => sender.pacing_mode().to_string(),
    };
    let frames = 90u64; // 1.5 s; the first 10 (warm-up) are not counted
    let start = monotonic_ns();
    let interval = 1_000_000_000 / FPS;
    for i in 0..frames {
        let tick = start + i * interval;
        let now = monotonic_ns();
        if tick > now {
            std::thread::sleep(Duration::from_nanos(tick - now));
        }
        let mut buf = sender.buffer();
        fill(i, size, &mut buf);
        let _ = sender.try_send(punktfunk_dataplane::Frame::new(i, i == 0, buf));
    }
    let stats = sender.shutdown();
    let reports: Vec<FrameReport> = rx.try_iter().filter(|r| r.index >= 10).collect();
    let n = reports.len().max(1) as f64;
    let stat = |f: fn(&FrameReport) -> u64| Stat::of(&reports.iter().map(f).collect::<Vec<_>>());
    Paced {
        total: stat(|r| r.thread_cpu_ns),
        pacing: stat(|r| r.pacing_cpu_ns),
        packetize: stat(|r| r.packetize_cpu_ns),
        send: stat(|r| r.send_cpu_ns),
        between: stat(|r| {
            r.thread_cpu_ns
                .saturating_sub(r.packetize_cpu_ns + r.send_cpu_ns + r.pacing_cpu_ns)
        }),
        wakeups: reports.iter().map(|r| f64::from(r.wakeups)).sum::<f64>() / n,
        chunks: reports.iter().map(|r| f64::from(r.chunks)).sum::<f64>() / n,
        drops: stats.send_drop_packets + stats.frames_dropped_queue,
        span: stat(|r| r.last_sent_ns - r.first_sent_ns),
        span_max_us: reports
            .iter()
            .map(|r| r.last_sent_ns - r.first_sent_ns)
            .max()
            .unwrap_or(0) as f64
            / 1e3,
        catchups: stats.pacing_catchups,
        pacing_mode,
    }
}

fn main() {
    if cfg!(debug_assertions) {
        println!("warning: unoptimized build; run with `cargo bench`");
    }
    println!(
        "data-plane send bench: 1200-B shards, 20 % parity, AES-128-GCM ({}), UDP GSO unless \
         said; thread CPU time per frame, median (min) in µs",
        AeadBackend::FASTEST.name()
    );
    let sink = match Sink::create() {
        Ok(s) => {
            s.segment_in_software(false);
            Some(s)
        }
        Err(e) => {
            println!("sender-only sink unavailable ({e}): those columns are empty");
            None
        }
    };
    let sizes = [16usize << 10, 256 << 10, 1 << 20, 4 << 20];
    println!();
    println!(
        "| frame | memcpy | packetize (RS+seal+copies) | send, sender only | FEC+seal+send, sender only | \
         send, sw segmentation, sender only | send, sendmmsg, sender only | send, loopback + receiver | FEC+seal+send, loopback | \
         paced thread total | of it pacing | wake-ups/chunks | total ÷ memcpy | loopback delivered, goodput |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut drops = 0;
    let mut spans = Vec::new();
    let mut pacing_modes = std::collections::BTreeSet::new();
    let mut small_blocks = Vec::new();
    for &size in &sizes {
        // Warm-up (page faults, caches, allocator), not reported.
        let _ = loopback(size.min(256 << 10));
        let copy = memcpy(size);
        let (pk, send, both, swseg, mmsg, paced_run) = match &sink {
            Some(s) => {
                let (pk, send, both, d1) = unpaced(s.socket(), size, ModeChoice::Gso);
                s.segment_in_software(true);
                let (_, swseg, _, d4) = unpaced(s.socket(), size, ModeChoice::Gso);
                s.segment_in_software(false);
                let (_, mmsg, _, d2) = unpaced(s.socket(), size, ModeChoice::Sendmmsg);
                let pr = paced(s.socket(), size, dp());
                drops += d1 + d2 + d4 + pr.drops;
                if size >= 1 << 20 {
                    let small = paced(
                        s.socket(),
                        size,
                        DataPlaneConfig {
                            max_data_shards: SMALL_BLOCK,
                            ..dp()
                        },
                    );
                    drops += small.drops;
                    small_blocks.push(format!(
                        "  {:>5} KiB in {SMALL_BLOCK}-shard blocks: {}",
                        size >> 10,
                        small.split()
                    ));
                }
                (pk, send, both, swseg, mmsg, Some(pr))
            }
            None => Default::default(),
        };
        let (lsend, lboth, delivered, frames, goodput, d3) = loopback(size);
        drops += d3;
        let (total, pacing, wake) = match &paced_run {
            Some(p) => (
                p.total.to_string(),
                p.pacing.to_string(),
                format!("{:.1}/{:.1}", p.wakeups, p.chunks),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        if let Some(p) = &paced_run {
            pacing_modes.insert(p.pacing_mode.clone());
            spans.push(format!(
                "  {:>5} KiB: {} chunks, sent over median {:.0} µs (max {:.0} µs), {} frames caught up; {}",
                size >> 10,
                p.chunks,
                p.span.med,
                p.span_max_us,
                p.catchups,
                p.split()
            ));
        }
        let ratio = paced_run.as_ref().map_or("-".into(), |p| {
            format!("{:.1}", p.total.med / copy.med.max(1e-3))
        });
        println!(
            "| {} KiB | {copy} | {pk} | {send} | {both} | {swseg} | {mmsg} | {lsend} | {lboth} | {total} | {pacing} | {wake} | {ratio} | {delivered}/{frames}, {goodput:.0} Mbit/s |",
            size >> 10,
        );
    }
    println!();
    println!(
        "paced sender at 60 fps: first to last send call per frame (the schedule spreads a \
         frame's chunks over < 12.5 ms; more is scheduling delay of the pacing wake-ups):"
    );
    for line in &spans {
        println!("{line}");
    }
    println!(
        "the same paced runs with FEC blocks of at most {SMALL_BLOCK} data shards \
         (`fec.max_data_shards`; the default {} makes a 1 MiB frame one block): a block's data, \
         RS work and parity stay in cache while it is encoded",
        DataPlaneConfig::default().max_data_shards
    );
    for line in &small_blocks {
        println!("{line}");
    }
    for mode in &pacing_modes {
        println!("paced rows: pacing {mode}");
    }
    if !pacing_modes.iter().any(|m| m.starts_with("kernel-fq")) {
        println!(
            "kernel pacing (EDT, fq): not measured here: this kernel's sink path has no fq \
             qdisc; `cargo bench -p punktfunk-tests --bench pacing` measures it in the UML guest"
        );
    }
    println!("send drops over all runs: {drops}");
    println!(
        "aim (issue 15): 1 MiB FEC + seal + sender-only send ≤ 800 µs min, ≤ 1000 µs median; \
         paced thread total ≤ 1200 µs median"
    );
}
