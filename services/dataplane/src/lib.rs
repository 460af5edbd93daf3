//! # punktfunk-dataplane: the I/O shells of the punktfunk/1 data plane
//!
//! [`punktfunk_wire`] is the sans-IO core (packetize, FEC, seal, reassemble, pacing schedule);
//! this crate is the thin shell around it that touches sockets, clocks and threads — like
//! quinn-udp around quinn-proto. No async: the per-frame hot path runs on plain threads with
//! bounded channels.
//!
//! ## Threads and queues
//!
//! ```text
//!  producer (transport: AU ring reader, or feed::run_synthetic)
//!      │ Sender::try_send(Frame)            never blocks
//!      ▼
//!  sync_channel(queue_frames = 4)  ──full──▶ frame dropped, counted, handed back (TrySendError::Full)
//!      ▼
//!  thread "pf-dp-send": SendPipeline::send_frame
//!      Packetize::packetize (the protocol: punktfunk/1 = FEC + seal; once per frame,
//!        into one reused PacketBatch = packets back to back, one stride)
//!      → pacing_schedule (microburst cap 64 KiB, then spread over 75 % of the frame interval)
//!      → per chunk: sleep until ~100 µs before its time, spin (yield) the rest, then
//!        sendmmsg — each message one UDP GSO super-buffer (mode Gso) or one datagram
//!      → buffer back to a small pool (Sender::buffer), optional FrameReport
//!
//!  thread "pf-dp-recv" (or the client's own thread via ReceiveLoop::run):
//!      ppoll(socket, stop eventfd; timeout = earliest loss deadline, ≤ 50 ms)
//!      → recvmmsg into a reused ring (64 × (packet size + 1))
//!      → Reassembler::push per datagram (demuxed by stream kind)
//!      → poll_event → callback RxEvent::{Frame, Lost, Skipped}
//! ```
//!
//! One [`Sender`] per stream kind (it owns that kind's AEAD sequence space); one
//! [`Receiver`] handles every stream kind on its socket, one reassembler each.
//!
//! ## The packetizer seam
//!
//! The send thread is protocol-agnostic, like quinn-udp's `Transmit` (bytes plus a segment
//! size): per frame it calls [`Packetize::packetize`] once (dynamic dispatch, once per frame)
//! to fill a [`PacketBatch`], then paces and sends packet ranges of it; the per-packet loop
//! sees only bytes and a stride. punktfunk/1 plugs in its
//! [`Packetizer`](punktfunk_wire::Packetizer) ([`Sender::spawn`] with a [`SenderConfig`]);
//! any other protocol (GameStream's RTP + FEC packetizer next) uses [`Sender::spawn_with`]
//! with [`SendOptions`] and its own `Box<dyn Packetize>`. Pacing, batching, the queue and the
//! counters exist once. Call order: [`punktfunk_wire::transmit`].
//!
//! ## Threads stop without blocking in `Drop`
//!
//! Dropping a [`Sender`], [`Receiver`] or [`feed::SyntheticFeed`] only signals its thread to
//! stop (it exits on its own, soon); nothing joins a thread in `Drop`, so dropping one on an
//! async worker (an error path) never blocks it. The explicit, blocking calls join and return
//! the final counters: [`Sender::shutdown`], [`Receiver::shutdown`],
//! [`feed::SyntheticFeed::stop`] — run them off the async workers (`spawn_blocking`).
//!
//! ## The full-queue policy
//!
//! The caller (transport's AU reader) must never block on the hot path. [`Sender::try_send`]
//! either queues the frame or fails at once with [`TrySendError::Full`], handing the frame
//! back (its buffer can be reused). The frame is not sent; it is counted in
//! [`SenderStats::frames_dropped_queue`]. The caller learns it from the error and should ask
//! the encoder for a keyframe (or a reference invalidation), since the frames after it
//! reference a frame the client will never get; the client's reassembler reports it lost.
//! Frames already queued are still sent in order. The queue is short (4 frames by default):
//! a frame that waited longer than that is worth less than a fresh keyframe.
//!
//! ## Send-buffer exhaustion (EAGAIN / ENOBUFS)
//!
//! The socket is non-blocking. When a send fails with EAGAIN (socket buffer full) the thread
//! waits for POLLOUT, with ENOBUFS (device queue full) it sleeps 20 µs, and retries — but only
//! within a per-chunk budget ([`SenderConfig::block_budget`], default 2 ms). After it, the
//! rest of *that chunk* is dropped and counted ([`SenderStats::send_drop_packets`],
//! `send_drop_events`); the next chunk is tried normally at its own time. So the thread never
//! spins forever and a frame is never delayed by more than the budget per chunk; FEC parity
//! (sent last in each block) can still repair a frame whose tail was cut. Other errors (e.g.
//! ECONNREFUSED, the echo of an earlier ICMP port-unreachable) are counted in `send_errors`;
//! ECONNREFUSED is retried within the budget, anything else drops the chunk. ECONNREFUSED is
//! also counted on its own ([`SenderStats::refused`]): it says the peer's port is closed, which
//! is how transport notices a killed client long before any idle timeout.
//!
//! Note: packets a qdisc or device drops (`NET_XMIT_DROP`) are reported to a UDP sender as
//! ENOBUFS *only* when `IP_RECVERR` is set; otherwise the kernel swallows them and counts them
//! in `/proc/net/snmp` `Udp: SndbufErrors`. We do not set `IP_RECVERR` (it would also queue
//! ICMP errors that must then be drained), so `send_drop_packets` counts what the socket
//! refused (buffer full), not what a queue further down dropped.
//!
//! ## UDP GSO probe and fallback
//!
//! [`SendPipeline::new`] probes once: `setsockopt(SOL_UDP, UDP_SEGMENT, stride)` (and back to
//! 0; the segment size then travels per message in a `UDP_SEGMENT` cmsg). If the kernel
//! refuses (pre-4.18: ENOPROTOOPT/EINVAL), [`ModeChoice::Auto`] uses plain sendmmsg and
//! [`SendPipeline::gso_probe_error`] / [`Sender::gso_probe_error`] say why. A device without
//! checksum offload can accept the option yet fail the send with EIO: the first such failure
//! switches the sender to sendmmsg for good (counted in [`SenderStats::gso_fallbacks`]) and
//! the chunk is resent. [`SenderStats::mode`] / [`Sender::mode`] report the mode in use.
//! [`ModeChoice::Gso`] and [`ModeChoice::Sendmmsg`] force a mode (benchmarks). Each GSO
//! super-buffer carries at most 64 segments and at most 65 507 bytes (52 packets of 1248 B).
//!
//! ## Socket buffers
//!
//! Both ends ask for 32 MiB ([`SenderConfig::sndbuf_bytes`], [`ReceiverConfig::rcvbuf_bytes`]):
//! `SO_SNDBUFFORCE`/`SO_RCVBUFFORCE` first (works as root or with CAP_NET_ADMIN, ignores the
//! global cap), else `SO_SNDBUF`/`SO_RCVBUF`, which the kernel silently caps at
//! `net.core.wmem_max` / `net.core.rmem_max` (Debian default 208 KiB; 4 MiB on our VMs). If the
//! granted size is below the target, a `tracing::warn!` names the fix:
//! `sysctl -w net.core.wmem_max=33554432` (resp. `net.core.rmem_max=33554432`). Those sysctls
//! are global (not settable inside a network namespace). What was granted is reported by
//! [`Sender::sndbuf`] / [`Receiver::rcvbuf`].
//!
//! ## Counters
//!
//! Atomics updated by the I/O thread, read from any thread as a snapshot:
//! - [`SenderStats`]: packets and bytes sent, frames sent, frames dropped at the queue, frames
//!   that failed to packetize, send-buffer drops (packets and events), send errors, GSO
//!   fallbacks, pacing wait time (sum), thread CPU time in packetize (FEC + seal) and in send
//!   calls (sums), and a log2-µs histogram of CPU per frame ([`SenderStats::cpu_quantile_us`],
//!   [`SenderStats::cpu_mean_ns`]). CPU time is `CLOCK_THREAD_CPUTIME_ID` around packetize and
//!   around each send call (pacing waits excluded).
//! - Per frame, optionally, a [`FrameReport`] (queued / first sent / last sent timestamps,
//!   CPU by stage) on a bounded channel ([`SenderConfig::reports`]).
//! - [`ReceiverStats`]: datagrams, bytes, recvmmsg batches, unknown-stream and truncated
//!   datagrams, and the reassemblers' [`punktfunk_wire::Counters`] summed (received,
//!   duplicates, auth failures, malformed, late, redundant, FEC-recovered shards and blocks,
//!   frames completed, frames lost).
//!
//! Arrival timestamps are CLOCK_MONOTONIC, taken once per recvmmsg batch.
//!
//! ## Synthetic source
//!
//! [`feed::run_synthetic`] / [`feed::SyntheticFeed`] drive a [`Sender`] from wire's
//! `SyntheticSource` at its bitrate and frame rate (absolute tick schedule on the producing
//! thread); [`punktfunk_wire::synthetic::verify`] checks every byte on the other side.
//!
//! ## Test support
//!
//! The network lab (namespaces with loss, verified streams) lives in the `punktfunk-testsupport`
//! crate, which no shipped binary depends on.

pub mod feed;
pub mod qdisc;
mod recv;
mod send;
pub mod sys;

pub use punktfunk_wire::PacingMode;
/// The packetizer seam the send shell is built on (defined in the sans-IO core).
pub use punktfunk_wire::{FrameRef, PacketBatch, Packetize, PacketizeError};
pub use recv::{
    ReceiveLoop, Receiver, ReceiverConfig, ReceiverError, ReceiverStats, RxEvent, RxFrame,
    StopHandle,
};
pub use send::{
    CPU_BUCKETS, Frame, FrameReport, ModeChoice, PacingChoice, SendMode, SendOptions, SendPipeline,
    Sender, SenderConfig, SenderError, SenderStats, TrySendError, pacing_for_peer,
};
pub use sys::BufferSize;
