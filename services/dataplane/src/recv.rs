//! The receive shell: [`ReceiveLoop`] (recvmmsg into a reused ring → [`Reassembler::push`] →
//! events, with loss deadlines driving the poll timeout) and [`Receiver`] (the loop on its own
//! thread).

use crate::sys::{self, BufferDir, BufferSize, RecvRing};
use punktfunk_wire::{
    ConfigError, Counters, DataPlaneConfig, Event, Reassembler, SessionKey, StreamKind, peek_kind,
};
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;

/// Configuration of a [`ReceiveLoop`] / [`Receiver`].
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// One reassembler per stream kind, each with its negotiated config.
    pub streams: Vec<(StreamKind, DataPlaneConfig)>,
    /// Key of this direction (the peer's sending direction).
    pub key: SessionKey,
    /// SO_RCVBUF target in bytes (default 32 MiB).
    pub rcvbuf_bytes: usize,
    /// Datagrams per recvmmsg call (default 64). The ring holds `batch` slots of the largest
    /// packet size + 1 byte, allocated once.
    pub batch: usize,
    /// Longest sleep in poll when no loss deadline is pending (default 50 ms); the loop also
    /// wakes at once on [`StopHandle::stop`].
    pub idle_poll_ns: u64,
    /// Index each stream starts at (`None`: adopt the first frame seen). Default `Some(0)`.
    pub expected_first_index: Option<u64>,
}

impl ReceiverConfig {
    /// One stream kind with the defaults above.
    pub fn new(kind: StreamKind, data_plane: DataPlaneConfig, key: SessionKey) -> Self {
        Self {
            streams: vec![(kind, data_plane)],
            key,
            rcvbuf_bytes: 32 << 20,
            batch: 64,
            idle_poll_ns: 50_000_000,
            expected_first_index: Some(0),
        }
    }
}

/// A completed frame; `data` borrows the reassembler's buffer for the duration of the callback.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The stream the frame came on.
    pub kind: StreamKind,
    /// Extended (64-bit) frame index.
    pub index: u64,
    /// True if the sender flagged the frame as a keyframe.
    pub keyframe: bool,
    /// The access unit, padding stripped.
    pub data: &'a [u8],
    /// CLOCK_MONOTONIC ns of the recvmmsg batch that brought the frame's first / completing
    /// packet (one timestamp per batch, taken right after the call returned).
    pub first_arrival_ns: u64,
    /// (See `first_arrival_ns`: the batch of the completing packet.)
    pub last_arrival_ns: u64,
    /// When the frame was handed to the callback.
    pub delivered_ns: u64,
    /// Data shards rebuilt by FEC.
    pub recovered_shards: u32,
}

/// What the receive loop reports.
#[derive(Debug)]
pub enum RxEvent<'a> {
    /// A frame arrived whole.
    Frame(RxFrame<'a>),
    /// The frame can no longer complete (loss deadline or window).
    Lost {
        /// The stream of the lost frame.
        kind: StreamKind,
        /// Extended index of the lost frame.
        index: u64,
    },
    /// `count` frames from `first` were never seen.
    Skipped {
        /// The stream of the skipped frames.
        kind: StreamKind,
        /// Extended index of the first skipped frame.
        first: u64,
        /// How many consecutive frames were skipped.
        count: u64,
    },
}

/// A snapshot of the receive counters (summed over streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams taken from the socket and their bytes.
    pub datagrams: u64,
    /// (See `datagrams`: their total bytes.)
    pub bytes: u64,
    /// recvmmsg calls that returned data.
    pub batches: u64,
    /// Datagrams of a stream kind we have no reassembler for, or not a packet at all.
    pub unknown_stream: u64,
    /// Datagrams longer than any packet (truncated in the ring).
    pub truncated: u64,
    /// CPU time of the receiving thread so far (updated after every drain).
    pub thread_cpu_ns: u64,
    /// The reassemblers' counters, summed: received (authentic, new), duplicates,
    /// auth_failures, malformed, late, redundant, recovered_shards, recovered_blocks,
    /// frames_completed, frames_lost, events_dropped.
    pub wire: Counters,
}

#[derive(Default)]
struct StatsInner {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    unknown_stream: AtomicU64,
    truncated: AtomicU64,
    thread_cpu_ns: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    auth_failures: AtomicU64,
    malformed: AtomicU64,
    late: AtomicU64,
    redundant: AtomicU64,
    recovered_shards: AtomicU64,
    recovered_blocks: AtomicU64,
    frames_completed: AtomicU64,
    frames_lost: AtomicU64,
    events_dropped: AtomicU64,
}

impl StatsInner {
    fn publish(&self, c: &Counters) {
        self.received.store(c.received, Relaxed);
        self.duplicates.store(c.duplicates, Relaxed);
        self.auth_failures.store(c.auth_failures, Relaxed);
        self.malformed.store(c.malformed, Relaxed);
        self.late.store(c.late, Relaxed);
        self.redundant.store(c.redundant, Relaxed);
        self.recovered_shards.store(c.recovered_shards, Relaxed);
        self.recovered_blocks.store(c.recovered_blocks, Relaxed);
        self.frames_completed.store(c.frames_completed, Relaxed);
        self.frames_lost.store(c.frames_lost, Relaxed);
        self.events_dropped.store(c.events_dropped, Relaxed);
    }

    fn snapshot(&self) -> ReceiverStats {
        ReceiverStats {
            datagrams: self.datagrams.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            batches: self.batches.load(Relaxed),
            unknown_stream: self.unknown_stream.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
            thread_cpu_ns: self.thread_cpu_ns.load(Relaxed),
            wire: Counters {
                received: self.received.load(Relaxed),
                duplicates: self.duplicates.load(Relaxed),
                auth_failures: self.auth_failures.load(Relaxed),
                malformed: self.malformed.load(Relaxed),
                late: self.late.load(Relaxed),
                redundant: self.redundant.load(Relaxed),
                recovered_shards: self.recovered_shards.load(Relaxed),
                recovered_blocks: self.recovered_blocks.load(Relaxed),
                frames_completed: self.frames_completed.load(Relaxed),
                frames_lost: self.frames_lost.load(Relaxed),
                events_dropped: self.events_dropped.load(Relaxed),
            },
        }
    }
}

/// Stops a receive loop from any thread: sets a flag and signals an eventfd the loop polls,
/// so it returns within one loop iteration (no waiting for a timeout).
#[derive(Clone)]
pub struct StopHandle {
    inner: Arc<StopInner>,
}

struct StopInner {
    flag: AtomicBool,
    efd: OwnedFd,
}

impl StopHandle {
    /// A fresh, unsignalled handle backed by a new eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; we check the result before wrapping it.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh eventfd we own exclusively.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            inner: Arc::new(StopInner {
                flag: AtomicBool::new(false),
                efd,
            }),
        })
    }

    /// Signals the receive loop to return; wakes it if it is blocked in poll.
    pub fn stop(&self) {
        self.inner.flag.store(true, Relaxed);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd we own.
        unsafe {
            libc::write(
                self.inner.efd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.flag.load(Relaxed)
    }

    fn fd(&self) -> RawFd {
        self.inner.efd.as_raw_fd()
    }
}

/// The receive path on the caller's thread. Allocation-free per packet and per frame once
/// the reassemblers have grown to the largest frame.
pub struct ReceiveLoop {
    socket: UdpSocket,
    fd: RawFd,
    streams: Vec<(StreamKind, Reassembler)>,
    ring: RecvRing,
    idle_poll_ns: u64,
    stats: Arc<StatsInner>,
    rcvbuf: BufferSize,
}

impl ReceiveLoop {
    /// Sets up the socket (non-blocking, SO_RCVBUF grown) and one reassembler per stream.
    pub fn new(socket: UdpSocket, cfg: &ReceiverConfig) -> Result<Self, ReceiverError> {
        let fd = socket.as_raw_fd();
        sys::set_nonblocking(fd)?;
        let rcvbuf = sys::grow_buffer(fd, BufferDir::Receive, cfg.rcvbuf_bytes);
        let mut streams = Vec::with_capacity(cfg.streams.len());
        let mut slot = 0;
        for (kind, dp) in &cfg.streams {
            let mut r = Reassembler::new(*dp, &cfg.key, *kind)?;
            r.set_expected_first_index(cfg.expected_first_index);
            slot = slot.max(dp.packet_len() + 1);
            streams.push((*kind, r));
        }
        Ok(Self {
            socket,
            fd,
            streams,
            ring: RecvRing::new(cfg.batch, slot.max(2)),
            idle_poll_ns: cfg.idle_poll_ns.max(1),
            stats: Arc::new(StatsInner::default()),
            rcvbuf,
        })
    }

    /// The receiving socket (e.g. for its local address).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The receive buffer the kernel granted.
    pub fn rcvbuf(&self) -> BufferSize {
        self.rcvbuf
    }

    /// A snapshot of the receive counters.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.snapshot()
    }

    /// Runs until `stop` is signalled (then returns `Ok`) or the socket fails. Every completed
    /// frame, loss and skip is passed to `on_event` on this thread.
    pub fn run(
        &mut self,
        stop: &StopHandle,
        mut on_event: impl FnMut(RxEvent<'_>),
    ) -> io::Result<()> {
        while !stop.is_stopped() {
            let now = sys::monotonic_ns();
            let deadline = self
                .streams
                .iter()
                .filter_map(|(_, r)| r.next_deadline())
                .min();
            let timeout = match deadline {
                Some(d) => d.saturating_sub(now).min(self.idle_poll_ns),
                None => self.idle_poll_ns,
            };
            let [readable, stopped] = sys::wait_readable([self.fd, stop.fd()], timeout);
            if stopped || stop.is_stopped() {
                break;
            }
            if readable {
                self.drain(&mut on_event)?;
                self.stats
                    .thread_cpu_ns
                    .store(sys::thread_cpu_ns(), Relaxed);
            }
            self.poll_events(sys::monotonic_ns(), &mut on_event);
        }
        Ok(())
    }

    /// Receives everything queued on the socket right now (several recvmmsg batches),
    /// delivering events after each batch. Returns the datagrams taken.
    pub fn drain(&mut self, on_event: &mut impl FnMut(RxEvent<'_>)) -> io::Result<usize> {
        let mut total = 0;
        // Bounded so that deadlines and the stop flag are looked at under constant load.
        for _ in 0..64 {
            let n = match self.ring.recv(self.fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors queued on the socket are not fatal for a receiver.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            let now = sys::monotonic_ns();
            let mut bytes = 0u64;
            for i in 0..n {
                let (pkt, truncated) = self.ring.datagram(i);
                bytes += pkt.len() as u64;
                if truncated {
                    self.stats.truncated.fetch_add(1, Relaxed);
                    continue;
                }
                let kind = peek_kind(pkt);
                match self.streams.iter_mut().find(|(k, _)| Some(*k) == kind) {
                    // Every error is counted by the reassembler; the datagram is dropped.
                    Some((_, r)) => {
                        let _ = r.push(now, pkt);
                    }
                    None => {
                        self.stats.unknown_stream.fetch_add(1, Relaxed);
                    }
                }
            }
            self.stats.datagrams.fetch_add(n as u64, Relaxed);
            self.stats.bytes.fetch_add(bytes, Relaxed);
            self.stats.batches.fetch_add(1, Relaxed);
            total += n;
            // Completions only (a deadline of 0 gives nothing up): after a stall the rest of
            // a frame may still be in the socket buffer, behind this batch. Deadlines are
            // judged once the socket is drained (the caller's `poll_events`).
            self.poll_events(0, on_event);
        }
        Ok(total)
    }

    /// Hands out every pending event (completions, and losses whose deadline is `<= now`).
    pub fn poll_events(&mut self, now: u64, on_event: &mut impl FnMut(RxEvent<'_>)) {
        let mut sum = Counters::default();
        for (kind, r) in &mut self.streams {
            let kind = *kind;
            while let Some(ev) = r.poll_event(now) {
                match ev {
                    Event::FrameComplete(f) => on_event(RxEvent::Frame(RxFrame {
                        kind,
                        index: f.index,
                        keyframe: f.keyframe,
                        data: f.data,
                        first_arrival_ns: f.first_arrival_ns,
                        last_arrival_ns: f.last_arrival_ns,
                        delivered_ns: sys::monotonic_ns(),
                        recovered_shards: f.recovered_shards,
                    })),
                    Event::FrameLost { index } => on_event(RxEvent::Lost { kind, index }),
                    Event::FramesSkipped { first, count } => {
                        on_event(RxEvent::Skipped { kind, first, count })
                    }
                }
            }
            add_counters(&mut sum, &r.counters());
        }
        self.stats.publish(&sum);
    }
}

fn add_counters(a: &mut Counters, b: &Counters) {
    a.received += b.received;
    a.duplicates += b.duplicates;
    a.auth_failures += b.auth_failures;
    a.malformed += b.malformed;
    a.late += b.late;
    a.redundant += b.redundant;
    a.recovered_shards += b.recovered_shards;
    a.recovered_blocks += b.recovered_blocks;
    a.frames_completed += b.frames_completed;
    a.frames_lost += b.frames_lost;
    a.events_dropped += b.events_dropped;
}

/// Why a receiver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// A stream's data-plane config was rejected.
    #[error("data-plane config rejected: {0}")]
    Config(#[from] ConfigError),
    /// Setting up the socket or the stop eventfd failed.
    #[error("socket setup failed: {0}")]
    Io(#[from] io::Error),
}

/// The receive shell on its own thread (`pf-dp-recv`).
///
/// Call order: [`spawn`](Self::spawn); [`stats`](Self::stats) whenever; finally
/// [`shutdown`](Self::shutdown) (blocking: it joins the thread — call it off the async
/// workers) or drop. Dropping only signals the loop to stop (eventfd); the thread exits
/// within one loop iteration on its own, and `Drop` never waits for it.
pub struct Receiver {
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    stats: Arc<StatsInner>,
    rcvbuf: BufferSize,
}

impl Receiver {
    /// Starts the loop; `on_event` runs on the receive thread (copy `data` out or send it on
    /// to keep it; never block for long there).
    pub fn spawn<F>(
        socket: UdpSocket,
        cfg: &ReceiverConfig,
        mut on_event: F,
    ) -> Result<Self, ReceiverError>
    where
        F: FnMut(RxEvent<'_>) + Send + 'static,
    {
        let mut lp = ReceiveLoop::new(socket, cfg)?;
        let stats = lp.stats.clone();
        let rcvbuf = lp.rcvbuf;
        let stop = StopHandle::new()?;
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pf-dp-recv".into())
            .spawn(move || {
                let r = lp.run(&stop2, &mut on_event);
                if let Err(e) = &r {
                    tracing::error!("data-plane receive loop failed: {e}");
                }
                r
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
            rcvbuf,
        })
    }

    /// A snapshot of the receive thread's counters.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.snapshot()
    }

    /// The receive buffer the kernel granted.
    pub fn rcvbuf(&self) -> BufferSize {
        self.rcvbuf
    }

    /// A handle that stops the loop from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stops the loop, joins the thread, returns the final stats and the loop's result.
    /// Blocks until the thread is done (within one loop iteration): call it off the async
    /// workers.
    pub fn shutdown(mut self) -> (ReceiverStats, io::Result<()>) {
        let r = self.join();
        (self.stats.snapshot(), r)
    }

    /// The same as [`shutdown`](Self::shutdown) (the older name).
    pub fn stop(self) -> (ReceiverStats, io::Result<()>) {
        self.shutdown()
    }

    fn join(&mut self) -> io::Result<()> {
        self.stop.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("receive thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Receiver {
    /// Only signals the loop to stop; never waits for the thread.
    fn drop(&mut self) {
        self.stop.stop();
    }
}
