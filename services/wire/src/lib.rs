//! # punktfunk-wire: the sans-IO core of the punktfunk/1 data plane
//!
//! Bytes in, bytes out, time passed in (CLOCK_MONOTONIC nanoseconds as `u64`). There are no
//! sockets, clocks, threads or async runtimes here (in the spirit of quinn-proto): the send
//! thread in `punktfunk-dataplane` and the client's receive loop are thin shells that call
//! [`Packetize::packetize`] + [`pacing_schedule`] and `sendmmsg`/UDP GSO, or `recvmmsg` +
//! [`Reassembler::push`] + [`Reassembler::poll_event`].
//!
//! ## The packetizer seam
//!
//! The send thread is protocol-agnostic: it knows a [`PacketBatch`] (bytes plus one segment
//! size, like quinn-udp's `Transmit`) and a pacing schedule. [`Packetize`] is what a protocol
//! implements to fill that batch once per frame; [`Packetizer`] is the punktfunk/1 one, and
//! GameStream's (in `punktfunk-gamestream`) is the second. Call order: [`transmit`].
//!
//! ## Packet format (version 1)
//!
//! Every packet of a configuration has the same size, `32 + shard_bytes + 16` bytes
//! (1248 with the default 1200-byte shards; fits the 1452-byte UDP payload of a 1500 MTU over
//! IPv6). All integers are big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version = 1 |
//! | 1 | 1 | stream kind: 0 video, 1 audio, 2 probe |
//! | 2 | 1 | flags: bit 0 keyframe, bit 1 last block of the frame, bit 2 parity shard; others 0 |
//! | 3 | 1 | reserved = 0 |
//! | 4 | 8 | sequence number (AEAD nonce counter, per direction and stream kind) |
//! | 12 | 4 | frame index, low 32 bits |
//! | 16 | 4 | frame (AU) length in bytes — padding is stripped with it |
//! | 20 | 2 | block index |
//! | 22 | 2 | block count |
//! | 24 | 2 | shard index in the block (`0..data` data, `data..data+parity` parity) |
//! | 26 | 2 | data shards in this block |
//! | 28 | 2 | parity shards in this block |
//! | 30 | 2 | reserved = 0 |
//! | 32 | shard_bytes | shard, AES-128-GCM ciphertext |
//! | 32 + shard_bytes | 16 | GCM tag; the 32 header bytes are the associated data |
//!
//! [`PacketHeader::parse`] is total (fuzzed): any byte string yields a header or a
//! [`ParseError`]. The [`Reassembler`] then checks the header against the layout it computes
//! itself from the negotiated [`DataPlaneConfig`] and the frame length; a packet that
//! disagrees is dropped. No buffer size is ever taken from a packet field.
//!
//! ## FEC block layout
//!
//! A frame of `L` bytes has `N = max(1, ceil(L / shard_bytes))` data shards (the last one
//! zero-padded), cut into `B = ceil(N / max_data_shards)` blocks of balanced size (the first
//! `N mod B` blocks have one shard more). A block of `d` data shards gets
//! `p = max(ceil(d × parity_permille / 1000), parity_floor)` parity shards
//! ([`DataPlaneConfig::parity_for`]; reduced if reed-solomon-simd cannot do `(d, p)`),
//! computed with Reed-Solomon over GF(2^16) (reed-solomon-simd). The code is systematic:
//! packets go out per block, data shards first, then parity, so a loss-free receiver completes
//! every block from the data shards alone and never runs the decoder. A block with losses is
//! rebuilt as soon as any `d` of its `d + p` shards arrived.
//!
//! ## Sealing, nonces and sequence numbers
//!
//! AES-128-GCM with one [`SessionKey`] per direction (16-byte key + 4-byte salt; from the QUIC
//! TLS exporter in production). Nonce = `salt[0..3] ‖ (salt[3] ⊕ kind) ‖ seq` (seq 64-bit
//! big-endian), so each stream kind has its own sequence space and its own [`Packetizer`]
//! (video and audio can be sent from different threads without sharing a counter) while no
//! nonce is ever repeated under one key. Sequence numbers start at 0 and only increase; the
//! [`Sealer`] refuses ([`SealError::SequenceExhausted`]) before it would use 2^64−1, it never
//! wraps. Reaching that is physically impossible (at 10^6 packets/s it takes ~585 000 years);
//! a control-plane rekey (new exporter label) is the answer if a session ever must.
//! **One [`Packetizer`] (or [`Sealer`]) per key and kind**: a second one would start again at
//! sequence 0 and repeat nonces; renegotiation carries the sealer over
//! ([`Packetizer::into_sealer`]). [`Packetizer::packetize`] reserves all sequence numbers of a
//! frame up front, so a frame is sealed entirely or not at all. On receive, a packet is authenticated before it can touch
//! any state; failures are counted (`auth_failures`) and returned as
//! [`PushError::AuthFailed`]. A replay window (bitmap of ≥ `frames_in_flight ×
//! max_packets_per_frame` sequence numbers) drops duplicates (`duplicates`) and too-old
//! packets (`late`) — after authentication, so forgeries cannot move it.
//!
//! ## Frame index width and wrap
//!
//! Frame indices are 64-bit in the API and 32-bit on the wire. The receiver extends the wire
//! value to the 64-bit index nearest to the newest one it has seen (serial-number arithmetic,
//! ±2^31 frames), so it keeps counting across the 32-bit wrap (every ~2.3 years at 60 fps).
//! The extended index equals the sender's when the sender's first index is below 2^31 (a
//! session starts at 0). A receiver expects frame 0 first by default, so frames missing at
//! the very start are reported; [`Reassembler::set_expected_first_index`] changes that (e.g.
//! `Some(next)` for a reassembler rebuilt after renegotiation, `None` to join mid-stream).
//! Frames older than the start are ignored as late.
//!
//! ## Reassembly and the loss deadline
//!
//! The [`Reassembler`] tracks a window of `frames_in_flight` consecutive frame indices ending at
//! the newest seen. A frame completes as soon as every block has enough shards; events come out
//! in completion order (not necessarily index order). A frame is reported lost
//! ([`Event::FrameLost`]) when
//! - its **deadline** passes: `k × frame_interval_ns` (`k = loss_deadline_intervals`, default
//!   3) after the first evidence of the frame — its own first packet, or the first packet of a
//!   later frame if none of its own arrived yet; or
//! - it **falls out of the window** because a frame `frames_in_flight` or more indices newer
//!   arrived. Frames that were never seen and jumped over entirely are reported as one
//!   [`Event::FramesSkipped`].
//!
//! Frames after a lost one are delivered normally. Packets for frames that already completed
//! are counted `redundant` (usually parity after all data arrived); for frames given up or
//! out of the window they are `late`.
//!
//! ## Memory and allocation
//!
//! Receive buffers: `frames_in_flight` slots, each growing to at most the largest frame's data
//! plus parity shards (bounded by `max_frame_bytes`), then reused. The sender writes into a
//! reusable [`PacketBatch`] (one contiguous buffer, fixed stride = packet size, so any packet
//! range is a UDP GSO super-buffer with segment size `stride`; note the kernel's limit of 64
//! segments per GSO send). Reed-Solomon encoder and decoder instances are reused with `reset`.
//! In steady state neither side allocates per packet or per frame.
//!
//! ## Not in this crate
//!
//! Sockets, `sendmmsg`/`recvmmsg`/GSO, threads, sleeping/spinning between pacing chunks,
//! clocks, key derivation (TLS exporter) and the control plane. Also the GameStream formats
//! (`punktfunk-gamestream`).
#![forbid(unsafe_code)]

pub mod au;
pub mod config;
pub mod crypto;
pub mod pacing;
pub mod packet;
pub mod reassembly;
pub mod sender;
pub mod synthetic;
pub mod transmit;

pub use config::{BlockLayout, ConfigError, DataPlaneConfig, FrameLayout};
pub use crypto::{
    Aead, AeadBackend, AuthError, NONCE_LEN, Opener, Replay, ReplayWindow, RingAes128Gcm,
    RustCryptoAes128Gcm, SEQ_LIMIT, SealError, Sealer, SessionKey,
};
pub use pacing::{MIN_CHUNK_GAP_NS, PaceChunk, PacingConfig, PacingMode, pacing_schedule};
pub use packet::{
    FLAG_KEYFRAME, FLAG_LAST_BLOCK, FLAG_PARITY, HEADER_LEN, PacketHeader, ParseError, StreamKind,
    TAG_LEN, VERSION, peek_kind,
};
pub use reassembly::{CompleteFrame, Counters, Event, PushError, Reassembler};
pub use sender::{FrameSummary, PacketizeError, Packetizer};
pub use transmit::{FrameRef, PacketBatch, Packetize};
