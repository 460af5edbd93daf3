//! The punktfunk contracts: one gRPC package per daemon API and the punktfunk/1 control
//! messages. Generated at build time from `proto/punktfunk/*.proto`. Modules mirror the
//! protobuf packages (`punktfunk.<api>.v1` → `<api>::v1`, re-exported one level up) because
//! the generated code refers across packages by relative path.

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
