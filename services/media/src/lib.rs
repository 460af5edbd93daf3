//! punktfunk-media: the capture + encode worker (docs/architecture.md, "Media").
//!
//! * [`description`] — typed pipeline descriptions and the encoder ladder (pure, no GStreamer);
//! * [`counter`] — the machine-readable frame counter drawn into test frames (the
//!   `punktfunk-framecount` crate, re-exported here: the client reads it back with the same code);
//! * [`nal`] — Annex-B NAL unit parsing (IDR / parameter-set checks);
//! * [`worker`] — runs a description with GStreamer and writes access units into the AU ring;
//! * [`lease`] — when a stream has lost its consumer (reaped without StopStream);
//! * [`admission`] — the encode budget a new stream or a bigger mode must fit;
//! * [`config`] — `media.toml`.
#![forbid(unsafe_code)]

pub use punktfunk_framecount as counter;
pub mod admission;
pub mod config;
pub mod description;
pub mod lease;
pub mod nal;
pub mod worker;

/// Names of the fds in the StartStream ticket, in order (audio only when requested): the
/// contract's, defined once in `punktfunk-proto`.
pub use punktfunk_proto::media::{AUDIO_RING_FD_NAMES, VIDEO_RING_FD_NAMES};

/// The highest bitrate media's encoders are asked for (kbit/s): 500 Mbit/s. Below the
/// protocol's ceiling ([`punktfunk_proto::limits::MAX_BITRATE_KBPS`]); transport learns it from
/// `Capabilities.max_bitrate_kbps` and clamps each session to it.
pub const MAX_BITRATE_KBPS: u32 = 500_000;
const _: () = assert!(MAX_BITRATE_KBPS <= punktfunk_proto::limits::MAX_BITRATE_KBPS);
