//! The punktfunk contracts: one gRPC package per daemon API and the punktfunk/1 control
//! messages. Generated at build time from `proto/punktfunk/*.proto`. Modules mirror the
//! protobuf packages (`punktfunk.<api>.v1` → `<api>::v1`, re-exported one level up) because
//! the generated code refers across packages by relative path.
#![forbid(unsafe_code)]

/// The native protocol's name, as people, logs and mDNS see it; the QUIC ALPN carries the same
/// bytes (`punktfunk_control::ALPN`, `punktfunk_tls::ALPN`, discovery's `proto` TXT value).
pub const PROTOCOL_NAME: &str = "punktfunk/1";

/// The bounds of what punktfunk/1 streams, whatever one host allows: `HostPolicy` validates
/// against them, the host clamps requests into them, and each daemon's own, narrower limits
/// (media's encoder ceiling, told through `Capabilities`) must lie within them.
pub mod limits {
    /// Lowest bitrate any session runs at (kbit/s).
    pub const MIN_BITRATE_KBPS: u32 = 500;
    /// Highest bitrate any session runs at (kbit/s): 2 Gbit/s.
    pub const MAX_BITRATE_KBPS: u32 = 2_000_000;
    /// Bitrate when a request asks for 0 (kbit/s), unless a host's policy says otherwise.
    pub const DEFAULT_BITRATE_KBPS: u32 = 20_000;
    /// Smallest mode width.
    pub const MIN_WIDTH: u32 = 320;
    /// Smallest mode height.
    pub const MIN_HEIGHT: u32 = 200;
    /// Largest width any policy may allow.
    pub const MAX_WIDTH: u32 = 7680;
    /// Largest height any policy may allow.
    pub const MAX_HEIGHT: u32 = 4320;
    /// Lowest refresh rate (mHz): 10 Hz.
    pub const MIN_REFRESH_MHZ: u32 = 10_000;
    /// Highest refresh rate anything streams or encodes (mHz): 500 Hz.
    pub const MAX_REFRESH_MHZ: u32 = 500_000;
}

/// Messages every daemon API shares (health, fd tickets, modes, codecs).
pub mod common {
    pub mod v1 {
        tonic::include_proto!("punktfunk.common.v1");
    }
    pub use v1::*;
}

/// punktfunk/1 control-plane messages (QUIC stream and datagrams).
pub mod control {
    pub mod v1 {
        tonic::include_proto!("punktfunk.control.v1");
    }
    pub use v1::*;
}

/// `punktfunk-session`: compositor outputs and their screencasts.
pub mod session {
    pub mod v1 {
        tonic::include_proto!("punktfunk.session.v1");
    }
    pub use v1::*;
}

/// `punktfunk-media`: capture + encode streams.
pub mod media {
    pub mod v1 {
        tonic::include_proto!("punktfunk.media.v1");
    }
    pub use v1::*;

    /// `StartStreamReply.rings.fd_names`, in order: the video ring, then (with audio) the
    /// audio ring — each a sealed memfd and its eventfd doorbell.
    pub const VIDEO_RING_FD_NAMES: [&str; 2] = ["video-ring-memfd", "video-ring-doorbell"];
    pub const AUDIO_RING_FD_NAMES: [&str; 2] = ["audio-ring-memfd", "audio-ring-doorbell"];
}

/// `punktfunk-transport`: pairing, clients, sessions.
pub mod transport {
    pub mod v1 {
        tonic::include_proto!("punktfunk.transport.v1");
    }
    pub use v1::*;
}

/// `punktfunk-input`: seats of virtual input devices.
pub mod input {
    pub mod v1 {
        tonic::include_proto!("punktfunk.input.v1");
    }
    pub use v1::*;
}
