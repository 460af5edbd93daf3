//! The send shell: [`SendPipeline`] (packetize → pacing schedule → sendmmsg / UDP GSO, on the
//! caller's thread) and [`Sender`] (the pipeline on a dedicated thread behind a bounded queue).
//!
//! Both are protocol-agnostic: the protocol is a [`Packetize`] implementation (the
//! packetizer seam, [`punktfunk_wire::transmit`]) that fills a [`PacketBatch`] once per frame;
//! pacing, batching, the queue and the counters are this one implementation for every
//! protocol. [`Sender::spawn`] / [`SendPipeline::new`] plug in punktfunk/1's
//! [`Packetizer`](punktfunk_wire::Packetizer); [`Sender::spawn_with`] /
//! [`SendPipeline::with_packetizer`] take any other.

use crate::qdisc;
use crate::sys::{self, BufferDir, BufferSize, Piece, SendScratch};
use punktfunk_wire::{
    ConfigError, DataPlaneConfig, FrameRef, PaceChunk, PacingConfig, PacingMode, PacketBatch,
    Packetize, PacketizeError, Packetizer, Sealer, SessionKey, StreamKind, pacing_schedule,
};
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How packets leave the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SendMode {
    /// `sendmmsg`, each message one UDP GSO super-buffer of up to 64 packets
    /// (`UDP_SEGMENT` = packet stride); the kernel (or NIC) cuts it into datagrams.
    Gso,
    /// `sendmmsg`, one datagram per message.
    #[default]
    Sendmmsg,
}

/// Which [`SendMode`] to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// GSO when the probe succeeds, else sendmmsg (and fall back at run time if a GSO send
    /// fails with EIO/EINVAL/EOPNOTSUPP).
    #[default]
    Auto,
    /// GSO or an error at construction (benchmarks).
    Gso,
    /// Never GSO (benchmarks, or paths known to mishandle it).
    Sendmmsg,
}

/// Who carries out the pacing schedule ([`SendOptions::kernel_pacing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PacingChoice {
    /// Kernel pacing ([`PacingMode::KernelFq`]) when the route to the peer leaves through the
    /// `fq` qdisc and UDP GSO works, else user-space pacing; the reason is in
    /// [`Sender::pacing_note`].
    #[default]
    Auto,
    /// Kernel pacing or an error at construction (tests, benchmarks).
    Kernel,
    /// Always user-space pacing (tests comparing the two, paths known to mishandle EDT).
    UserSpace,
}

/// The protocol-agnostic knobs of a [`Sender`] / [`SendPipeline`]: pacing, send mode, queue,
/// socket buffer and the send-buffer policy. Used with any [`Packetize`] implementation
/// ([`Sender::spawn_with`]); [`SenderConfig::options`] gives the ones of a punktfunk/1 sender.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Pacing; `None` sends every frame back to back.
    pub pacing: Option<PacingConfig>,
    /// sendmmsg or UDP GSO (default: GSO if the kernel has it).
    pub mode: ModeChoice,
    /// Kernel (EDT through `fq`) or user-space pacing (default: kernel where `fq` is).
    pub kernel_pacing: PacingChoice,
    /// Frames the queue holds before [`Sender::try_send`] drops (default 4).
    pub queue_frames: usize,
    /// SO_SNDBUF target in bytes (default 32 MiB).
    pub sndbuf_bytes: usize,
    /// How long one pacing chunk may wait for socket buffer space (default 2 ms).
    pub block_budget: Duration,
    /// Sleep until this long before a chunk's time, then spin; the send thread's timer slack
    /// is set to the same (default [`PACING_SPIN`]).
    pub spin: Duration,
    /// When later frames are already queued, send the rest of the current frame without
    /// pacing waits ([`FrameReport::caught_up`]; default on). Tests that need a slow send
    /// thread turn it off.
    pub catch_up: bool,
    /// Optional per-frame reports (`try_send`: a full channel loses reports, never blocks).
    pub reports: Option<SyncSender<FrameReport>>,
}

impl SendOptions {
    /// Paced with a 64 KiB microburst cap and a spread over 75 % of `frame_interval_ns`,
    /// automatic mode, queue of 4, 32 MiB SO_SNDBUF, 2 ms block budget, [`PACING_SPIN`].
    pub fn paced(frame_interval_ns: u64) -> Self {
        Self {
            pacing: Some(PacingConfig {
                frame_interval_ns,
                ..PacingConfig::default()
            }),
            mode: ModeChoice::Auto,
            kernel_pacing: PacingChoice::Auto,
            queue_frames: 4,
            sndbuf_bytes: 32 << 20,
            block_budget: Duration::from_millis(2),
            spin: PACING_SPIN,
            catch_up: true,
            reports: None,
        }
    }
}

/// How long before a pacing chunk's time the send thread stops sleeping and spins, and its
/// timer slack. Small, because every microsecond spun is CPU: a sleep ends at most the slack
/// late, so the spin covers only an early wake-up (100 µs of `yield` per chunk cost
/// 0.5–0.7 ms of CPU per 1 MiB frame, see docs/performance.md).
pub const PACING_SPIN: Duration = Duration::from_micros(5);

/// The nice value the `pf-dp-send` thread asks for (best effort: it needs `CAP_SYS_NICE` or a
/// permitting `RLIMIT_NICE`, and stays at the process's nice value without). On a busy machine
/// a paced frame's wake-ups each wait for a CPU behind every runnable compile job; at -10 the
/// thread's CFS weight is ~9× a nice-0 task's, so it runs when its timer fires.
pub const SEND_THREAD_NICE: i32 = -10;

/// Configuration of a punktfunk/1 [`Sender`] / [`SendPipeline`]: the packetizer's parameters
/// (`data_plane`, `key`, `kind`, `first_sequence`) and the protocol-agnostic [`SendOptions`].
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Negotiated data-plane parameters.
    pub data_plane: DataPlaneConfig,
    /// Key of this direction.
    pub key: SessionKey,
    /// The stream this sender carries (one sender per stream kind: it owns the sequence space).
    pub kind: StreamKind,
    /// First AES-GCM sequence number. A sender that replaces an earlier one of the same kind
    /// and key (a second speed test in one session) starts at the old one's
    /// [`SenderStats::next_sequence`], so no nonce is ever used twice.
    pub first_sequence: u64,
    /// Pacing, send mode, queue, socket buffer: what any protocol's sender has.
    pub options: SendOptions,
}

impl SenderConfig {
    /// Defaults around a negotiated config: [`SendOptions::paced`] at the config's frame
    /// interval, sequence from 0.
    pub fn new(data_plane: DataPlaneConfig, key: SessionKey, kind: StreamKind) -> Self {
        Self {
            data_plane,
            key,
            kind,
            first_sequence: 0,
            options: SendOptions::paced(data_plane.frame_interval_ns),
        }
    }

    /// The protocol-agnostic part.
    pub fn options(&self) -> SendOptions {
        self.options.clone()
    }

    /// The punktfunk/1 packetizer (FEC + AES-GCM seal + headers) of this config, its sealer
    /// starting at `first_sequence`.
    pub fn packetizer(&self) -> Result<Packetizer, ConfigError> {
        let sealer = Sealer::with_initial_sequence(&self.key, self.kind, self.first_sequence);
        Packetizer::with_sealer(self.data_plane, self.kind, sealer)
    }
}

/// Why a sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The data-plane config was rejected.
    #[error("data-plane config rejected: {0}")]
    Config(#[from] ConfigError),
    /// The socket has no peer (`peer_addr` failed).
    #[error("socket must be connected to the peer: {0}")]
    NotConnected(io::Error),
    /// Setting up the socket or the send thread failed.
    #[error("socket setup failed: {0}")]
    Io(#[from] io::Error),
    /// [`ModeChoice::Gso`] was asked for but the GSO probe failed.
    #[error("UDP GSO was forced but the kernel refused it: {0}")]
    GsoUnsupported(io::Error),
    /// [`PacingChoice::Kernel`] was asked for but kernel pacing is not possible here.
    #[error(
        "kernel pacing was forced but is not possible: {0} (it needs the fq qdisc on the \
         egress device, e.g. `tc qdisc replace dev DEV root fq`, and UDP GSO)"
    )]
    KernelPacingUnavailable(String),
}

/// One access unit handed to the [`Sender`].
#[derive(Debug)]
pub struct Frame {
    /// Frame index of this stream (a session starts at 0).
    pub index: u64,
    /// True if the AU is a keyframe (flagged on every packet).
    pub keyframe: bool,
    /// The AU; returned to the sender's buffer pool after sending ([`Sender::buffer`]).
    pub data: Vec<u8>,
    /// CLOCK_MONOTONIC ns when the frame was queued (set by [`Frame::new`]).
    pub queued_ns: u64,
}

impl Frame {
    /// A frame stamped as queued now.
    pub fn new(index: u64, keyframe: bool, data: Vec<u8>) -> Self {
        Self {
            index,
            keyframe,
            data,
            queued_ns: sys::monotonic_ns(),
        }
    }
}

/// [`Sender::try_send`] refused the frame; it is handed back (recycle its buffer).
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The queue is full: the frame was dropped and counted in
    /// [`SenderStats::frames_dropped_queue`]. The caller should ask the encoder for a
    /// keyframe (or reference invalidation), since the receiver will miss this frame.
    #[error("send queue full: frame {} dropped", .0.index)]
    Full(Frame),
    /// The send thread is gone (it panicked or was shut down).
    #[error("send thread gone: frame {} dropped", .0.index)]
    Disconnected(Frame),
}

impl TrySendError {
    /// The refused frame, to recycle its buffer.
    pub fn into_frame(self) -> Frame {
        match self {
            Self::Full(f) | Self::Disconnected(f) => f,
        }
    }
}

/// What sending one frame cost and when it left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameReport {
    /// Frame index of the reported frame.
    pub index: u64,
    /// Packets of the frame (data + parity) and the bytes they occupy on the wire (UDP payload).
    pub packets: u32,
    /// (See `packets`: their bytes on the wire.)
    pub bytes: u64,
    /// Packets the kernel took; `packets - sent_packets` were dropped (send buffer full or a
    /// send error).
    pub sent_packets: u32,
    /// Pacing chunks the frame was cut into.
    pub chunks: u32,
    /// CLOCK_MONOTONIC ns: frame queued by the caller (0 if unknown), first and last send
    /// call returned.
    pub queued_ns: u64,
    /// (See `queued_ns`: first send call returned.)
    pub first_sent_ns: u64,
    /// (See `queued_ns`: last send call returned.)
    pub last_sent_ns: u64,
    /// Thread CPU time of packetize (FEC + seal + copies).
    pub packetize_cpu_ns: u64,
    /// (See `packetize_cpu_ns`: CPU in the send calls.)
    pub send_cpu_ns: u64,
    /// (See `packetize_cpu_ns`: CPU of the pacing waits — the wake-ups and the spin.)
    pub pacing_cpu_ns: u64,
    /// Wall time spent waiting between chunks (pacing).
    pub pacing_wait_ns: u64,
    /// Pacing waits that slept (each is a timer wake-up of the send thread).
    pub wakeups: u32,
    /// The [`Sender`] thread's whole CPU time from the end of the previous frame to the end of
    /// this one: waiting for the frame (the queue wake-up) + packetize + send + pacing, and
    /// the bookkeeping between them. 0 when the pipeline runs on the caller's thread.
    pub thread_cpu_ns: u64,
    /// Later frames were waiting in the queue, so the rest of this frame went out without
    /// pacing waits (the send thread catching up after it was held up).
    pub caught_up: bool,
}

impl FrameReport {
    /// The send thread's whole CPU time for the frame: FEC + seal + send + pacing wake-ups.
    pub fn cpu_ns(&self) -> u64 {
        self.packetize_cpu_ns + self.send_cpu_ns + self.pacing_cpu_ns
    }
}

/// Buckets of the CPU-per-frame histogram: bucket `i` counts frames with CPU time in
/// `[2^i, 2^(i+1))` µs (bucket 0 also takes < 1 µs); the last bucket is open-ended.
pub const CPU_BUCKETS: usize = 20;

#[derive(Default)]
pub(crate) struct StatsInner {
    mode: AtomicU8,
    pacing: AtomicU8,
    packets_sent: AtomicU64,
    next_sequence: AtomicU64,
    bytes_sent: AtomicU64,
    frames_sent: AtomicU64,
    frames_dropped_queue: AtomicU64,
    frames_failed: AtomicU64,
    send_drop_packets: AtomicU64,
    send_drop_events: AtomicU64,
    send_errors: AtomicU64,
    refused: AtomicU64,
    gso_fallbacks: AtomicU64,
    pacing_wait_ns: AtomicU64,
    pacing_cpu_ns: AtomicU64,
    wakeups: AtomicU64,
    pacing_catchups: AtomicU64,
    /// Frames in the [`Sender`]'s queue right now (0 for a bare pipeline).
    queued: AtomicU64,
    packetize_cpu_ns: AtomicU64,
    send_cpu_ns: AtomicU64,
    cpu_hist: [AtomicU64; CPU_BUCKETS],
}

fn pacing_code(m: PacingMode) -> u8 {
    match m {
        PacingMode::KernelFq => 1,
        PacingMode::UserSpace => 2,
        PacingMode::Off => 3,
    }
}

fn pacing_of(code: u8) -> PacingMode {
    match code {
        1 => PacingMode::KernelFq,
        3 => PacingMode::Off,
        _ => PacingMode::UserSpace,
    }
}

fn mode_code(m: SendMode) -> u8 {
    match m {
        SendMode::Gso => 1,
        SendMode::Sendmmsg => 2,
    }
}

impl StatsInner {
    fn snapshot(&self) -> SenderStats {
        SenderStats {
            mode: if self.mode.load(Relaxed) == 1 {
                SendMode::Gso
            } else {
                SendMode::Sendmmsg
            },
            pacing: pacing_of(self.pacing.load(Relaxed)),
            packets_sent: self.packets_sent.load(Relaxed),
            next_sequence: self.next_sequence.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_dropped_queue: self.frames_dropped_queue.load(Relaxed),
            frames_failed: self.frames_failed.load(Relaxed),
            send_drop_packets: self.send_drop_packets.load(Relaxed),
            send_drop_events: self.send_drop_events.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            refused: self.refused.load(Relaxed),
            gso_fallbacks: self.gso_fallbacks.load(Relaxed),
            pacing_wait_ns: self.pacing_wait_ns.load(Relaxed),
            pacing_cpu_ns: self.pacing_cpu_ns.load(Relaxed),
            wakeups: self.wakeups.load(Relaxed),
            pacing_catchups: self.pacing_catchups.load(Relaxed),
            packetize_cpu_ns: self.packetize_cpu_ns.load(Relaxed),
            send_cpu_ns: self.send_cpu_ns.load(Relaxed),
            cpu_hist: std::array::from_fn(|i| self.cpu_hist[i].load(Relaxed)),
        }
    }

    fn record_frame(&self, r: &FrameReport) {
        self.frames_sent.fetch_add(1, Relaxed);
        self.packetize_cpu_ns.fetch_add(r.packetize_cpu_ns, Relaxed);
        self.send_cpu_ns.fetch_add(r.send_cpu_ns, Relaxed);
        self.pacing_wait_ns.fetch_add(r.pacing_wait_ns, Relaxed);
        self.pacing_cpu_ns.fetch_add(r.pacing_cpu_ns, Relaxed);
        self.wakeups.fetch_add(u64::from(r.wakeups), Relaxed);
        self.pacing_catchups
            .fetch_add(u64::from(r.caught_up), Relaxed);
        let us = r.cpu_ns() / 1000;
        let b = if us == 0 {
            0
        } else {
            (63 - us.leading_zeros() as usize).min(CPU_BUCKETS - 1)
        };
        self.cpu_hist[b].fetch_add(1, Relaxed);
    }
}

/// A snapshot of a sender's counters (monotonic since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Mode in use now (it can change once, from Gso to Sendmmsg, on a run-time fallback).
    pub mode: SendMode,
    /// Pacing in use now (kernel pacing falls back to user space with GSO).
    pub pacing: PacingMode,
    /// Packets the kernel accepted.
    pub packets_sent: u64,
    /// The sequence number the next sealed packet would get (every sealed packet counts,
    /// sent or dropped): where a replacement sender of the same kind must start.
    pub next_sequence: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// Frames packetized and handed to the socket (possibly with some packets dropped).
    pub frames_sent: u64,
    /// Frames refused by [`Sender::try_send`] because the queue was full.
    pub frames_dropped_queue: u64,
    /// Frames that could not be packetized (too large; sequence space exhausted).
    pub frames_failed: u64,
    /// Packets dropped because the socket buffer stayed full (EAGAIN/ENOBUFS) beyond the block
    /// budget, or a send error.
    pub send_drop_packets: u64,
    /// Chunks that lost packets that way.
    pub send_drop_events: u64,
    /// Send calls that failed with an error other than EAGAIN/ENOBUFS (e.g. ECONNREFUSED).
    pub send_errors: u64,
    /// Of those, the sends refused with ECONNREFUSED: an ICMP port-unreachable came back, so
    /// nothing listens on the peer's port any more (its process is gone).
    pub refused: u64,
    /// Run-time falls back from GSO to sendmmsg (0 or 1).
    pub gso_fallbacks: u64,
    /// Sum of the time spent waiting between pacing chunks.
    pub pacing_wait_ns: u64,
    /// Sum of the thread CPU time of the pacing waits (wake-ups and spin).
    pub pacing_cpu_ns: u64,
    /// Pacing waits that slept (timer wake-ups).
    pub wakeups: u64,
    /// Frames whose pacing was cut short because later frames were already queued
    /// ([`FrameReport::caught_up`]).
    pub pacing_catchups: u64,
    /// Sum of thread CPU time in packetize (FEC + seal) and in send calls.
    pub packetize_cpu_ns: u64,
    /// (See `packetize_cpu_ns`: the send calls' share.)
    pub send_cpu_ns: u64,
    /// CPU per frame (packetize + send + pacing), log2 µs buckets, see [`CPU_BUCKETS`].
    pub cpu_hist: [u64; CPU_BUCKETS],
}

impl SenderStats {
    /// Mean CPU time per sent frame (packetize + send + pacing wake-ups), ns.
    pub fn cpu_mean_ns(&self) -> u64 {
        (self.packetize_cpu_ns + self.send_cpu_ns + self.pacing_cpu_ns)
            .checked_div(self.frames_sent)
            .unwrap_or(0)
    }

    /// Upper bound (µs, a power of two) of the histogram bucket holding quantile `q` of the
    /// CPU time per frame.
    pub fn cpu_quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.cpu_hist.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, n) in self.cpu_hist.iter().enumerate() {
            acc += n;
            if acc >= want {
                return 1 << (i + 1);
            }
        }
        1 << CPU_BUCKETS
    }
}

/// The send path of one stream on the caller's thread: packetize (through the [`Packetize`]
/// seam) into a reused [`PacketBatch`], compute the pacing schedule, and send each chunk at
/// its time.
///
/// Call order: [`new`](Self::new) (punktfunk/1) or [`with_packetizer`](Self::with_packetizer)
/// (any protocol) once; then per frame [`send_frame`](Self::send_frame), which calls
/// `Packetize::packetize` once, reads `Packetize::next_sequence`, then sends the batch's
/// packet ranges at their pacing times (that per-packet loop sees only bytes and a stride).
/// [`stats`](Self::stats) at any time.
///
/// [`Sender`] runs one on its own thread; benchmarks use it directly.
pub struct SendPipeline {
    socket: UdpSocket,
    fd: RawFd,
    packetizer: Box<dyn Packetize>,
    batch: PacketBatch,
    schedule: Vec<PaceChunk>,
    pacing: Option<PacingConfig>,
    mode: SendMode,
    scratch: SendScratch,
    stats: Arc<StatsInner>,
    block_budget_ns: u64,
    spin_ns: u64,
    sndbuf: BufferSize,
    gso_probe_error: Option<String>,
    /// The timer slack of the thread that sends was set (on its first paced frame).
    slack_set: bool,
    /// [`SendOptions::catch_up`].
    catch_up: bool,
    /// Who carries out the schedule.
    pacing_mode: PacingMode,
    /// Why pacing is not in the kernel (when it is not, and it was considered).
    pacing_note: Option<String>,
    /// Kernel pacing: the departure time of the last chunk handed to the kernel; the next
    /// frame departs no earlier (`fq` sends a flow's packets in departure order, so an earlier
    /// time would overtake the previous frame's tail).
    last_departure_ns: u64,
    /// Frame interval of the pacing config (kernel pacing's catch-up bound).
    frame_interval_ns: u64,
}

impl SendPipeline {
    /// A punktfunk/1 pipeline: [`SenderConfig::packetizer`] with [`SenderConfig::options`]
    /// (see [`with_packetizer`](Self::with_packetizer)).
    pub fn new(socket: UdpSocket, cfg: &SenderConfig) -> Result<Self, SenderError> {
        let packetizer = cfg.packetizer()?;
        Self::with_packetizer(socket, &cfg.options(), Box::new(packetizer))
    }

    /// Sets up the socket (must be connected to the peer; it is made non-blocking and its
    /// SO_SNDBUF grown) and probes UDP GSO; frames will be packetized by `packetizer`.
    pub fn with_packetizer(
        socket: UdpSocket,
        opts: &SendOptions,
        packetizer: Box<dyn Packetize>,
    ) -> Result<Self, SenderError> {
        socket.peer_addr().map_err(SenderError::NotConnected)?;
        let fd = socket.as_raw_fd();
        sys::set_nonblocking(fd)?;
        let sndbuf = sys::grow_buffer(fd, BufferDir::Send, opts.sndbuf_bytes);
        let batch = packetizer.new_batch();
        let (mode, gso_probe_error) = choose_mode(fd, opts.mode, batch.stride())?;
        tracing::info!(
            ?mode,
            sndbuf = sndbuf.effective,
            forced = sndbuf.forced,
            "data-plane sender ready"
        );
        let (pacing_mode, pacing_note) = choose_pacing(&socket, opts, mode)?;
        tracing::info!(pacing = %pacing_mode, note = ?pacing_note, "data-plane pacing");
        let stats = Arc::new(StatsInner::default());
        stats.mode.store(mode_code(mode), Relaxed);
        stats.pacing.store(pacing_code(pacing_mode), Relaxed);
        stats
            .next_sequence
            .store(packetizer.next_sequence(), Relaxed);
        Ok(Self {
            socket,
            fd,
            packetizer,
            batch,
            schedule: Vec::new(),
            pacing: opts.pacing,
            mode,
            scratch: SendScratch::new(),
            stats,
            block_budget_ns: duration_ns(opts.block_budget),
            spin_ns: duration_ns(opts.spin),
            sndbuf,
            gso_probe_error,
            slack_set: false,
            catch_up: opts.catch_up,
            pacing_mode,
            pacing_note,
            last_departure_ns: 0,
            frame_interval_ns: opts.pacing.map_or(0, |p| p.frame_interval_ns),
        })
    }

    /// Who carries out the pacing schedule now.
    pub fn pacing_mode(&self) -> PacingMode {
        self.pacing_mode
    }

    /// Why the schedule is carried out in user space (no `fq` on the egress device, no GSO,
    /// `SO_TXTIME` refused), if kernel pacing was considered and not chosen.
    pub fn pacing_note(&self) -> Option<&str> {
        self.pacing_note.as_deref()
    }

    /// Mode in use.
    pub fn mode(&self) -> SendMode {
        self.mode
    }

    /// Why the GSO probe failed, if it did (mode `Auto` then fell back to sendmmsg).
    pub fn gso_probe_error(&self) -> Option<&str> {
        self.gso_probe_error.as_deref()
    }

    /// The send buffer the kernel granted.
    pub fn sndbuf(&self) -> BufferSize {
        self.sndbuf
    }

    /// The connected sending socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// A snapshot of the sender's counters.
    pub fn stats(&self) -> SenderStats {
        self.stats.snapshot()
    }

    pub(crate) fn stats_handle(&self) -> Arc<StatsInner> {
        self.stats.clone()
    }

    /// Packetizes and sends one frame, pacing its chunks; returns when the last chunk was
    /// handed to the kernel. Packets the socket did not take within the block budget are
    /// dropped and counted (never an error); only a frame that cannot be packetized is one.
    /// The first frame that needs pacing sets the calling thread's timer slack to the spin
    /// (`SendOptions::spin`, see [`sys::wait_until`]).
    pub fn send_frame(
        &mut self,
        index: u64,
        keyframe: bool,
        au: &[u8],
    ) -> Result<FrameReport, PacketizeError> {
        let c0 = sys::thread_cpu_ns();
        let frame = FrameRef {
            index,
            keyframe,
            data: au,
        };
        let result = self.packetizer.packetize(frame, &mut self.batch);
        // Whatever happened, sealed packets used their sequence numbers.
        self.stats
            .next_sequence
            .store(self.packetizer.next_sequence(), Relaxed);
        if let Err(e) = result {
            self.stats.frames_failed.fetch_add(1, Relaxed);
            return Err(e);
        }
        let stride = self.batch.stride();
        let packets = self.batch.len();
        match &self.pacing {
            Some(p) => pacing_schedule(p, packets, stride, &mut self.schedule),
            None => {
                self.schedule.clear();
                self.schedule.push(PaceChunk {
                    packets: 0..packets,
                    offset_ns: 0,
                });
            }
        }
        let c1 = sys::thread_cpu_ns();
        let mut report = FrameReport {
            index,
            packets: packets as u32,
            bytes: (packets * stride) as u64,
            chunks: self.schedule.len() as u32,
            packetize_cpu_ns: c1.saturating_sub(c0),
            ..FrameReport::default()
        };
        if self.pacing_mode == PacingMode::KernelFq {
            self.send_kernel_paced(&mut report);
        } else {
            self.send_user_paced(&mut report);
        }
        self.stats
            .packets_sent
            .fetch_add(u64::from(report.sent_packets), Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(u64::from(report.sent_packets) * stride as u64, Relaxed);
        self.stats.record_frame(&report);
        Ok(report)
    }

    /// Sends the schedule's chunks one by one, sleeping until each one's time.
    fn send_user_paced(&mut self, report: &mut FrameReport) {
        if self.schedule.len() > 1 && !self.slack_set {
            // The thread that paces sleeps with a slack no larger than its spin.
            if let Err(e) = sys::set_timer_slack(self.spin_ns) {
                tracing::debug!("timer slack not set: {e}");
            }
            self.slack_set = true;
        }
        let start = sys::monotonic_ns();
        for i in 0..self.schedule.len() {
            let chunk = self.schedule[i].clone();
            if chunk.offset_ns > 0
                && self.catch_up
                && !report.caught_up
                && self.stats.queued.load(Relaxed) > 0
            {
                // Frames are waiting behind this one (the thread was held up): spreading the
                // rest over the frame interval would only make them later, and a queue that
                // stays full drops frames. Send the rest now.
                report.caught_up = true;
            }
            if chunk.offset_ns > 0 && !report.caught_up {
                let w0 = sys::thread_cpu_ns();
                let t0 = sys::monotonic_ns();
                if start + chunk.offset_ns > t0 + self.spin_ns {
                    report.wakeups += 1;
                }
                report.pacing_wait_ns += sys::wait_until(start + chunk.offset_ns, self.spin_ns);
                report.pacing_cpu_ns += sys::thread_cpu_ns().saturating_sub(w0);
            }
            let s0 = sys::thread_cpu_ns();
            let sent = self.send_chunk(chunk.packets.clone());
            report.send_cpu_ns += sys::thread_cpu_ns().saturating_sub(s0);
            report.sent_packets += sent as u32;
            let now = sys::monotonic_ns();
            if i == 0 {
                report.first_sent_ns = now;
            }
            report.last_sent_ns = now;
        }
    }

    /// Kernel pacing: hands every chunk of the frame to the kernel at once (one `sendmmsg`
    /// when it takes them all), each GSO message with its chunk's departure time
    /// (`SCM_TXTIME` = frame start + chunk offset, CLOCK_MONOTONIC); `fq` holds them until
    /// then. The thread never sleeps between chunks (no wake-ups). A frame departs no earlier
    /// than the previous frame's last chunk; if that lies more than a frame interval ahead
    /// (the sender is behind), the frame goes out right after it, unspread
    /// ([`FrameReport::caught_up`]).
    fn send_kernel_paced(&mut self, report: &mut FrameReport) {
        let now = sys::monotonic_ns();
        let start = now.max(self.last_departure_ns);
        let behind = start > now + self.frame_interval_ns
            || self.catch_up && self.stats.queued.load(Relaxed) > 0 && start > now;
        report.caught_up = behind;
        let last_offset = self.schedule.last().map_or(0, |c| c.offset_ns);
        let departure = |c: &PaceChunk| if behind { start } else { start + c.offset_ns };
        self.last_departure_ns = if behind { start } else { start + last_offset };
        let stride = self.batch.stride();
        let mut pos = 0usize;
        let end = self.batch.len();
        let mut give_up_at: Option<u64> = None;
        let s0 = sys::thread_cpu_ns();
        while pos < end {
            let pieces: Vec<Piece<'_>> = self
                .schedule
                .iter()
                .filter(|c| c.packets.end > pos)
                .map(|c| Piece {
                    bytes: self
                        .batch
                        .range_bytes(c.packets.start.max(pos)..c.packets.end),
                    txtime_ns: Some(departure(c)),
                })
                .collect();
            match self.scratch.send_pieces(self.fd, &pieces, stride, true) {
                Ok(n) => {
                    if pos == 0 {
                        report.first_sent_ns = sys::monotonic_ns();
                    }
                    pos += n.max(1).min(end - pos);
                }
                Err(e) => {
                    let code = e.raw_os_error();
                    if code == Some(libc::EINTR) {
                        continue;
                    }
                    if sys::is_gso_failure(&e) {
                        // Without GSO every packet is its own skb and fq's per-flow limit
                        // (100 packets) would drop most of a large frame: pace in user space.
                        self.abandon_kernel_pacing(&format!("a GSO send failed ({e})"));
                        self.mode = SendMode::Sendmmsg;
                        self.stats
                            .mode
                            .store(mode_code(SendMode::Sendmmsg), Relaxed);
                        self.stats.gso_fallbacks.fetch_add(1, Relaxed);
                        break;
                    }
                    // The frame's later chunks wait in the qdisc, holding send buffer until
                    // they depart: the budget counts from the last departure, not from now.
                    let now = sys::monotonic_ns();
                    let limit = *give_up_at
                        .get_or_insert(now.max(self.last_departure_ns) + self.block_budget_ns);
                    let transient = matches!(code, Some(libc::EAGAIN) | Some(libc::ENOBUFS));
                    if !transient {
                        self.stats.send_errors.fetch_add(1, Relaxed);
                    }
                    if now >= limit || !transient && code != Some(libc::ECONNREFUSED) {
                        let lost = (end - pos) as u64;
                        self.stats.send_drop_packets.fetch_add(lost, Relaxed);
                        self.stats.send_drop_events.fetch_add(1, Relaxed);
                        tracing::debug!("send dropped {lost} packets: {e}");
                        pos = end;
                        break;
                    }
                    if code == Some(libc::EAGAIN) {
                        sys::wait_writable(self.fd, limit - now);
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
        }
        report.send_cpu_ns += sys::thread_cpu_ns().saturating_sub(s0);
        report.last_sent_ns = sys::monotonic_ns();
        if report.first_sent_ns == 0 {
            report.first_sent_ns = report.last_sent_ns;
        }
        report.sent_packets += pos as u32;
        if pos < end && self.pacing_mode == PacingMode::UserSpace {
            // Kernel pacing was abandoned mid-frame: the rest goes out the user-space way,
            // each chunk at its time.
            self.schedule.retain(|c| c.packets.end > pos);
            if let Some(first) = self.schedule.first_mut() {
                first.packets.start = first.packets.start.max(pos);
            }
            self.send_user_paced(report);
        }
    }

    /// Switches to user-space pacing for good (the reason is logged and kept).
    fn abandon_kernel_pacing(&mut self, why: &str) {
        tracing::warn!("kernel pacing off: {why}; pacing in user space");
        self.pacing_mode = PacingMode::UserSpace;
        self.pacing_note = Some(why.to_string());
        self.stats
            .pacing
            .store(pacing_code(PacingMode::UserSpace), Relaxed);
    }

    /// Sends packets `range` of the batch; returns how many the kernel took. Policy:
    /// EAGAIN → wait for POLLOUT, ENOBUFS → sleep 20 µs, both only within the block budget,
    /// then the rest of the chunk is dropped and counted; EINTR retries; a GSO failure
    /// (EIO/EINVAL/EOPNOTSUPP) switches to sendmmsg for good and retries; any other error
    /// (e.g. ECONNREFUSED from an earlier ICMP) is counted and retried within the budget.
    fn send_chunk(&mut self, range: std::ops::Range<usize>) -> usize {
        let stride = self.batch.stride();
        let mut pos = range.start;
        let end = range.end;
        let mut give_up_at: Option<u64> = None;
        while pos < end {
            let bytes = self.batch.range_bytes(pos..end);
            let gso = self.mode == SendMode::Gso;
            match self.scratch.send(self.fd, bytes, stride, gso) {
                Ok(n) => pos += n.max(1).min(end - pos),
                Err(e) => {
                    let code = e.raw_os_error();
                    if code == Some(libc::EINTR) {
                        continue;
                    }
                    if gso && sys::is_gso_failure(&e) {
                        tracing::warn!("UDP GSO send failed ({e}); falling back to sendmmsg");
                        self.mode = SendMode::Sendmmsg;
                        self.stats
                            .mode
                            .store(mode_code(SendMode::Sendmmsg), Relaxed);
                        self.stats.gso_fallbacks.fetch_add(1, Relaxed);
                        continue;
                    }
                    let now = sys::monotonic_ns();
                    let limit = *give_up_at.get_or_insert(now + self.block_budget_ns);
                    let transient = matches!(code, Some(libc::EAGAIN) | Some(libc::ENOBUFS));
                    if !transient {
                        self.stats.send_errors.fetch_add(1, Relaxed);
                    }
                    if code == Some(libc::ECONNREFUSED) {
                        self.stats.refused.fetch_add(1, Relaxed);
                    }
                    if now >= limit || !transient && code != Some(libc::ECONNREFUSED) {
                        let lost = (end - pos) as u64;
                        self.stats.send_drop_packets.fetch_add(lost, Relaxed);
                        self.stats.send_drop_events.fetch_add(1, Relaxed);
                        tracing::debug!("send dropped {lost} packets: {e}");
                        break;
                    }
                    if code == Some(libc::EAGAIN) {
                        sys::wait_writable(self.fd, limit - now);
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
        }
        pos - range.start
    }
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Probes UDP GSO on `fd` (with `stride` as the segment size, or a typical packet size if
/// the packetizer does not know its stride yet) and picks the mode `choice` asks for.
fn choose_mode(
    fd: RawFd,
    choice: ModeChoice,
    stride: usize,
) -> Result<(SendMode, Option<String>), SenderError> {
    let segment = match stride {
        1..=65_535 => stride as u16,
        _ => 1200,
    };
    let probe = sys::probe_gso(fd, segment);
    match (choice, probe) {
        (ModeChoice::Sendmmsg, _) => Ok((SendMode::Sendmmsg, None)),
        (_, Ok(())) => Ok((SendMode::Gso, None)),
        (ModeChoice::Gso, Err(e)) => Err(SenderError::GsoUnsupported(e)),
        (ModeChoice::Auto, Err(e)) => {
            tracing::warn!("UDP GSO unavailable ({e}); sending with plain sendmmsg");
            Ok((SendMode::Sendmmsg, Some(e.to_string())))
        }
    }
}

/// Decides who carries out the pacing schedule (see [`PacingChoice`]): the kernel when the
/// sender paces, sends with UDP GSO, the route to the peer leaves through `fq`
/// ([`qdisc::egress_qdisc`]) and the socket takes `SO_TXTIME`; otherwise user space, with the
/// reason. GSO is required because `fq` limits a flow to 100 queued packets by default: a
/// 1 MiB frame is ~870 packets but only ~17 GSO super-buffers.
fn choose_pacing(
    socket: &UdpSocket,
    opts: &SendOptions,
    mode: SendMode,
) -> Result<(PacingMode, Option<String>), SenderError> {
    if opts.pacing.is_none() {
        return Ok((PacingMode::Off, None));
    }
    if opts.kernel_pacing == PacingChoice::UserSpace {
        return Ok((
            PacingMode::UserSpace,
            Some("user-space pacing asked for".into()),
        ));
    }
    let why_not = kernel_pacing_blocker(socket, mode);
    match (why_not, opts.kernel_pacing) {
        (None, _) => Ok((PacingMode::KernelFq, None)),
        (Some(why), PacingChoice::Kernel) => Err(SenderError::KernelPacingUnavailable(why)),
        (Some(why), _) => Ok((PacingMode::UserSpace, Some(why))),
    }
}

/// The pacing a paced [`Sender`] with [`PacingChoice::Auto`] would use towards `peer`, and why
/// not kernel pacing when it is not: the same checks on a probe socket (unconnected UDP
/// "connected" to `peer`, nothing is sent). A host tells the client before its sender exists
/// (`Welcome.pacing`), then starts the sender with [`PacingChoice::Kernel`] or
/// [`PacingChoice::UserSpace`] accordingly, so the two never disagree.
pub fn pacing_for_peer(peer: std::net::IpAddr) -> (PacingMode, Option<String>) {
    let probe = || -> io::Result<UdpSocket> {
        let local: std::net::IpAddr = match peer {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind((local, 0))?;
        socket.connect((peer, 9))?;
        Ok(socket)
    };
    let socket = match probe() {
        Ok(s) => s,
        Err(e) => {
            return (
                PacingMode::UserSpace,
                Some(format!("no route to probe: {e}")),
            );
        }
    };
    let mode = match sys::probe_gso(socket.as_raw_fd(), 1200) {
        Ok(()) => SendMode::Gso,
        Err(_) => SendMode::Sendmmsg,
    };
    match kernel_pacing_blocker(&socket, mode) {
        None => (PacingMode::KernelFq, None),
        Some(why) => (PacingMode::UserSpace, Some(why)),
    }
}

/// Why kernel pacing cannot be used on `socket`, or `None` (then `SO_TXTIME` is on).
fn kernel_pacing_blocker(socket: &UdpSocket, mode: SendMode) -> Option<String> {
    if mode != SendMode::Gso {
        return Some("UDP GSO is off".into());
    }
    let peer = match socket.peer_addr() {
        Ok(p) => p.ip(),
        Err(e) => return Some(format!("no peer address: {e}")),
    };
    match qdisc::egress_qdisc(peer) {
        Ok(q) if q.fq => {}
        Ok(q) => return Some(format!("{q}")),
        Err(e) => return Some(format!("the egress qdisc is unknown: {e}")),
    }
    sys::enable_txtime(socket.as_raw_fd())
        .err()
        .map(|e| format!("SO_TXTIME refused: {e}"))
}

/// The send shell: a dedicated thread (`pf-dp-send`) running a [`SendPipeline`], fed through
/// a bounded queue.
///
/// Call order: [`spawn`](Self::spawn) (punktfunk/1) or [`spawn_with`](Self::spawn_with) (any
/// [`Packetize`] implementation); then, from any thread, [`buffer`](Self::buffer) →
/// [`try_send`](Self::try_send) / [`send_within`](Self::send_within) per frame, and
/// [`stats`](Self::stats) whenever; finally [`shutdown`](Self::shutdown) — it blocks, so call
/// it off the async workers (`spawn_blocking`) — or just drop the `Sender`.
///
/// Dropping never blocks: it closes the queue and tells the thread to stop; the thread
/// finishes the frame in hand, discards what is still queued, closes the socket and exits on
/// its own. Use [`shutdown`](Self::shutdown) to have the queue sent, wait for the thread and
/// get final counters (needed before a replacement sender of the same key and kind resumes
/// at [`SenderStats::next_sequence`]).
pub struct Sender {
    tx: Option<SyncSender<Frame>>,
    pool: Mutex<Receiver<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    /// Set by `Drop`: the thread discards queued frames and exits.
    abandon: Arc<AtomicBool>,
    stats: Arc<StatsInner>,
    gso_probe_error: Option<String>,
    pacing_note: Option<String>,
    sndbuf: BufferSize,
}

impl Sender {
    /// A punktfunk/1 sender: [`SenderConfig::packetizer`] with [`SenderConfig::options`] on
    /// `socket` (connected to the peer), see [`spawn_with`](Self::spawn_with).
    pub fn spawn(socket: UdpSocket, cfg: SenderConfig) -> Result<Self, SenderError> {
        let packetizer = cfg.packetizer()?;
        Self::spawn_with(socket, cfg.options(), Box::new(packetizer))
    }

    /// Sets up the pipeline on `socket` (connected to the peer) with any packetizer and
    /// starts the send thread.
    pub fn spawn_with(
        socket: UdpSocket,
        opts: SendOptions,
        packetizer: Box<dyn Packetize>,
    ) -> Result<Self, SenderError> {
        let pipeline = SendPipeline::with_packetizer(socket, &opts, packetizer)?;
        let stats = pipeline.stats_handle();
        let gso_probe_error = pipeline.gso_probe_error.clone();
        let pacing_note = pipeline.pacing_note.clone();
        let sndbuf = pipeline.sndbuf;
        let (tx, rx) = mpsc::sync_channel::<Frame>(opts.queue_frames.max(1));
        let pool_depth = opts.queue_frames.max(1) + 2;
        let (pool_tx, pool_rx) = mpsc::sync_channel::<Vec<u8>>(pool_depth);
        let abandon = Arc::new(AtomicBool::new(false));
        let thread = SendThread {
            pipeline,
            queue: rx,
            pool: pool_tx,
            reports: opts.reports,
            abandon: abandon.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("pf-dp-send".into())
            .spawn(move || thread.run())?;
        Ok(Self {
            tx: Some(tx),
            pool: Mutex::new(pool_rx),
            thread: Some(thread),
            abandon,
            stats,
            gso_probe_error,
            pacing_note,
            sndbuf,
        })
    }

    /// Who carries out the pacing schedule now (kernel pacing can fall back to user space
    /// once, when a GSO send fails).
    pub fn pacing_mode(&self) -> PacingMode {
        self.stats.snapshot().pacing
    }

    /// Why pacing is in user space, when kernel pacing was considered at setup and not
    /// chosen (e.g. "lo has noqueue, not fq").
    pub fn pacing_note(&self) -> Option<&str> {
        self.pacing_note.as_deref()
    }

    /// Queues a frame without ever blocking. When the queue is full the frame is dropped,
    /// counted (`frames_dropped_queue`) and handed back in the error.
    pub fn try_send(&self, frame: Frame) -> Result<(), TrySendError> {
        let Some(tx) = &self.tx else {
            return Err(TrySendError::Disconnected(frame));
        };
        // Counted before the frame can be taken, so the thread never sees it go negative.
        self.stats.queued.fetch_add(1, Relaxed);
        let result = tx.try_send(frame);
        if result.is_err() {
            self.stats.queued.fetch_sub(1, Relaxed);
        }
        match result {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(f)) => {
                self.stats.frames_dropped_queue.fetch_add(1, Relaxed);
                Err(TrySendError::Full(f))
            }
            Err(mpsc::TrySendError::Disconnected(f)) => {
                self.stats.frames_dropped_queue.fetch_add(1, Relaxed);
                Err(TrySendError::Disconnected(f))
            }
        }
    }

    /// Like [`try_send`](Sender::try_send), but when the queue is full waits up to `budget`
    /// (polling every 100 µs) for the send thread to make room before dropping. For feeds that
    /// hand over bursts — an encoder catching up after a stall delivers several AUs at once,
    /// which the send thread clears in microseconds — where dropping the fifth of a burst
    /// would cost the client an IDR. Only the feed's own thread waits; the producer behind it
    /// (the AU ring) never blocks.
    pub fn send_within(&self, frame: Frame, budget: Duration) -> Result<(), TrySendError> {
        let deadline = std::time::Instant::now() + budget;
        let mut frame = frame;
        loop {
            match self.try_send(frame) {
                Err(TrySendError::Full(f)) if std::time::Instant::now() < deadline => {
                    // Not dropped (yet): retried.
                    self.uncount_queue_drop();
                    frame = f;
                    std::thread::sleep(Duration::from_micros(100));
                }
                other => return other,
            }
        }
    }

    /// Undoes one `frames_dropped_queue` count (a backpressure feed retries the frame).
    pub(crate) fn uncount_queue_drop(&self) {
        self.stats.frames_dropped_queue.fetch_sub(1, Relaxed);
    }

    /// An empty buffer for the next frame: one the send thread finished with, or a new one.
    pub fn buffer(&self) -> Vec<u8> {
        let recycled = self.pool.try_lock().ok().and_then(|rx| rx.try_recv().ok());
        match recycled {
            Some(mut v) => {
                v.clear();
                v
            }
            None => Vec::new(),
        }
    }

    /// Mode in use now.
    pub fn mode(&self) -> SendMode {
        self.stats.snapshot().mode
    }

    /// Why the GSO probe failed, if it did.
    pub fn gso_probe_error(&self) -> Option<&str> {
        self.gso_probe_error.as_deref()
    }

    /// The send buffer the kernel granted.
    pub fn sndbuf(&self) -> BufferSize {
        self.sndbuf
    }

    /// A snapshot of the send thread's counters.
    pub fn stats(&self) -> SenderStats {
        self.stats.snapshot()
    }

    /// Closes the queue, lets the thread send what is queued, joins it, returns final stats.
    ///
    /// Blocks until the queued frames are out (at most `queue_frames` frame intervals when
    /// paced): call it off the async workers (`tokio::task::spawn_blocking`).
    pub fn shutdown(mut self) -> SenderStats {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats.snapshot()
    }
}

impl Drop for Sender {
    /// Only signals (never blocks): closes the queue and tells the thread to discard what is
    /// queued; the thread exits after the frame in hand.
    fn drop(&mut self) {
        self.abandon.store(true, Relaxed);
        self.tx = None;
    }
}

/// What the `pf-dp-send` thread owns.
struct SendThread {
    pipeline: SendPipeline,
    queue: Receiver<Frame>,
    pool: SyncSender<Vec<u8>>,
    reports: Option<SyncSender<FrameReport>>,
    abandon: Arc<AtomicBool>,
}

impl SendThread {
    /// Sends queued frames until the queue is closed (and drained), or until the `Sender`
    /// was dropped.
    fn run(mut self) {
        match sys::set_thread_nice(SEND_THREAD_NICE) {
            Ok(()) => tracing::debug!("send thread at nice {SEND_THREAD_NICE}"),
            Err(e) => tracing::debug!(
                "send thread stays at the process's nice value (nice {SEND_THREAD_NICE}: {e})"
            ),
        }
        let mut cpu_mark = sys::thread_cpu_ns();
        let stats = self.pipeline.stats_handle();
        while let Ok(frame) = self.queue.recv() {
            stats.queued.fetch_sub(1, Relaxed);
            if self.abandon.load(Relaxed) {
                break;
            }
            self.send(&frame, &mut cpu_mark);
            let _ = self.pool.try_send(frame.data);
        }
    }

    /// Sends `frame`; `cpu_mark` is the thread's CPU time when the previous frame was done.
    fn send(&mut self, frame: &Frame, cpu_mark: &mut u64) {
        let result = self
            .pipeline
            .send_frame(frame.index, frame.keyframe, &frame.data);
        let now = sys::thread_cpu_ns();
        let thread_cpu_ns = now.saturating_sub(*cpu_mark);
        *cpu_mark = now;
        match result {
            Ok(mut r) => {
                r.queued_ns = frame.queued_ns;
                r.thread_cpu_ns = thread_cpu_ns;
                if let Some(tx) = &self.reports {
                    let _ = tx.try_send(r);
                }
            }
            Err(e) => tracing::warn!("frame {} not sent: {e}", frame.index),
        }
    }
}
