//! Sans-IO core of the punktfunk/1 control plane (docs/protocol.md).
//!
//! Pure state machines in the style of quinn-proto: they are fed messages (or bytes) and
//! `CLOCK_MONOTONIC` timestamps (`u64` ns) by the caller and return what to do. No sockets,
//! no QUIC, no async, no clocks. The QUIC shells (quinn) live in `punktfunk-transport` (host)
//! and `punktfunk-client`.
//!
//! | module | job |
//! |---|---|
//! | [`framing`] | `varint(len) ‖ protobuf` frames on a QUIC stream, bounded by [`framing::MAX_CONTROL_MESSAGE`] |
//! | [`pairing`] | SPAKE2 PIN ceremony: [`pairing::PairingHost`], [`pairing::PairingClient`], [`pairing::generate_pin`] |
//! | [`host`] | [`host::HostSession`]: the host's session stream (Hello → Welcome, …) |
//! | [`client`] | [`client::ClientSession`]: the client's session stream, including clock sync |
//! | [`clock`] | NTP-style offset estimation, minimum-RTT of 8 rounds |
//! | [`keys`] | TLS-exporter labels for the data-plane keys; `FecConfig` ⇄ `DataPlaneConfig` |
//! | [`error`] | [`ProtocolError`] and `Error` codes |
//! | [`input`] | input/feedback datagrams ⇄ the seat model: decoding, scaling, clock skew |
//!
//! # Message flow
//!
//! One QUIC connection (ALPN `punktfunk/1`, mutual TLS with self-signed certificates; identity
//! = SHA-256 of the certificate). Every stream message is one frame (see [`framing`]).
//!
//! **Pairing stream** (client opens a bidirectional stream; only for a client the host does
//! not know yet, while a PIN is armed):
//!
//! ```text
//! C → H  PairStart { client_name, spake_message }
//! H → C  PairChallenge { spake_message, host_confirm }     (host's PIN is now spent)
//! C → H  PairConfirm { client_confirm }
//! H → C  PairResult { paired, error, host_name }            then both close the stream
//! ```
//!
//! **Session stream** (client opens a bidirectional stream; the host accepts it only from a
//! paired fingerprint, otherwise `Error { code: "pairing-required" }`):
//!
//! ```text
//! C → H  Hello { version: 1, mode, codecs, bitrate, audio, compositor, data_port }
//! H → C  Welcome { mode, codec, bitrate, audio, data_addr, fec, session_id, payload, pacing }
//!          or Error { code: unsupported-version | unsupported-mode | unsupported-codec } + close
//! C → H  ClockProbe { round 0..8 }      H → C  ClockEcho (each probe after the previous echo)
//! C → H  Reconfigure                     H → C  reconfigured (what is in effect)
//! C → H  KeyframeRequest | RefInvalidate | Stats
//! C → H  ProbeRequest                    H → C  ProbeResult
//! either Goodbye (or the host's Error) ends the session
//! ```
//!
//! **Datagrams**: `InputEvent` (client → host) and `FeedbackEvent` (host → client), one
//! protobuf per QUIC datagram, unframed (outside this crate's state machines). The media data
//! plane is plain UDP (`punktfunk-wire`), keyed from the TLS exporter ([`keys`]).
//!
//! # Rules (both directions)
//!
//! * Everything the peer sends is bounded before it is buffered: frames by
//!   [`framing::MAX_CONTROL_MESSAGE`], names by [`pairing::MAX_NAME_LEN`], rates and sizes by
//!   the [`host::HostPolicy`]. Nothing on an input path panics or allocates from an
//!   untrusted length.
//! * A protocol violation returns `Err(`[`ProtocolError`]`)`; the session is over. The host
//!   shell sends [`host::HostSession::error_message`] and closes; the client shell sends a
//!   `Goodbye` and closes.
//! * An empty `oneof` (which includes cases this version does not know: prost drops unknown
//!   fields) is a violation.
//!
//! # Security
//!
//! See [`pairing`] for why an armed PIN gives an attacker exactly one online guess, why the
//! host's confirmation going first enables no offline dictionary attack, and how the MACs over
//! both fingerprints defeat a man in the middle. After pairing, TLS with pinned fingerprints
//! authenticates both ends; the data plane is sealed with AES-128-GCM under keys exported from
//! that TLS session.

#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod error;
pub mod framing;
pub mod host;
pub mod input;
pub mod keys;
pub mod pairing;

pub use client::{ClientAction, ClientRequest, ClientSession};
pub use clock::{CLOCK_ROUNDS, ClockEstimate, ClockSample, ClockSync};
pub use error::ProtocolError;
pub use framing::{FrameDecoder, FrameError, MAX_CONTROL_MESSAGE};
pub use host::{HostAction, HostPolicy, HostSession, ResolvedSession};
pub use pairing::{PairingClient, PairingError, PairingHost, generate_pin};

/// The protocol's name, as people and logs see it (the ALPN carries the same bytes).
pub use punktfunk_proto::PROTOCOL_NAME;

/// The protocol version this crate speaks (`Hello.version`, `Welcome.version`).
pub const PROTOCOL_VERSION: u32 = 1;
/// QUIC ALPN of the control connection (the same bytes as `punktfunk_tls::ALPN`, which the
/// QUIC configs use; both are the protocol's name).
pub const ALPN: &[u8] = PROTOCOL_NAME.as_bytes();
