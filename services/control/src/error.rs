//! Protocol violations on the session stream, and the `Error` messages that report them.

use crate::framing::FrameError;
use punktfunk_proto::control::{Error as ErrorMsg, HostMessage, host_message};

/// `Error.code` for a protocol violation.
pub const CODE_PROTOCOL: &str = "protocol";
/// `Error.code` when `Hello.version` is not [`crate::PROTOCOL_VERSION`].
pub const CODE_UNSUPPORTED_VERSION: &str = "unsupported-version";
/// `Error.code` when the requested mode is outside what the host can serve.
pub const CODE_UNSUPPORTED_MODE: &str = "unsupported-mode";
/// `Error.code` when client and host have no codec in common.
pub const CODE_UNSUPPORTED_CODEC: &str = "unsupported-codec";
/// `Error.code` for an unpaired client (sent by the transport shell before any session).
pub const CODE_PAIRING_REQUIRED: &str = "pairing-required";
/// `Error.code` when the media worker refused the stream (this mode, codec or bitrate): final,
/// asking again the same way will not help.
pub const CODE_MEDIA_REFUSED: &str = "media-refused";
/// `Error.code` when the host's encoders are busy: every encode budget is in use (try a smaller
/// mode, or later).
pub const CODE_CAPACITY: &str = "capacity";
/// `Error.code` when the media worker is not running or did not answer in time (try again
/// shortly; the host's supervisor restarts it).
pub const CODE_MEDIA_UNAVAILABLE: &str = "media-unavailable";
/// `Error.code` when `Hello.app` names no app in the host's apps file.
pub const CODE_UNKNOWN_APP: &str = "unknown-app";
/// `Error.code` when the client's compositor output could not be started (the message names
/// the step that failed and what to do); the session manager may also be down.
pub const CODE_OUTPUT_FAILED: &str = "output-failed";
/// `Error.code` for a fault of the host itself (misconfiguration, a failed socket).
pub const CODE_INTERNAL: &str = "internal";
/// `Error.code` / `PairResult` code when the pairing PIN was wrong or malformed.
pub const CODE_WRONG_PIN: &str = "wrong-pin";
/// `Error.code` when the host refused a pairing attempt (not armed, expired, not stored).
pub const CODE_PAIRING_REJECTED: &str = "rejected";

/// QUIC application close codes of the control connection. The host closes with one of these;
/// the close reason (and the `Error` message sent before the close) says why in words.
pub mod close {
    /// A protocol violation, or a malformed message.
    pub const PROTOCOL: u32 = 1;
    /// The client is not paired ([`super::CODE_PAIRING_REQUIRED`]).
    pub const PAIRING_REQUIRED: u32 = 2;
    /// The client was unpaired on the host while connected.
    pub const UNPAIRED: u32 = 3;
    /// A pairing attempt failed (not armed, expired, wrong PIN, not stored).
    pub const PAIRING_FAILED: u32 = 4;
    /// The host cannot serve this session: media refused it, its encoders are busy, or media
    /// is unavailable (the `Error.code` says which).
    pub const REFUSED: u32 = 5;

    /// The name of a close code, for people and reports (`None`: not one of ours).
    pub fn name(code: u64) -> Option<&'static str> {
        Some(match u32::try_from(code).ok()? {
            PROTOCOL => super::CODE_PROTOCOL,
            PAIRING_REQUIRED => super::CODE_PAIRING_REQUIRED,
            UNPAIRED => "unpaired",
            PAIRING_FAILED => "pairing-failed",
            REFUSED => "refused",
            _ => return None,
        })
    }
}

/// The peer broke the protocol; the session ends. The host shell sends
/// [`crate::host::HostSession::error_message`] and closes the connection; the client shell
/// sends a `Goodbye` with the error text and closes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A session stream must start with `Hello`.
    #[error("expected Hello first")]
    ExpectedHelloFirst,
    /// `Hello` was sent twice.
    #[error("duplicate Hello")]
    DuplicateHello,
    /// The client must wait for `Welcome` (or an `Error`) first.
    #[error("expected Welcome first")]
    ExpectedWelcomeFirst,
    /// `Welcome` arrived twice.
    #[error("duplicate Welcome")]
    DuplicateWelcome,
    /// The `oneof` was empty, or carried a case this version does not know.
    #[error("empty or unknown message")]
    EmptyMessage,
    /// Pairing messages belong on the pairing stream, not the session stream.
    #[error("pairing message on the session stream")]
    PairingOnSessionStream,
    /// A message of this type is not valid here or now.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// A message arrived after the session was closed (Goodbye, refusal).
    #[error("message after the session was closed")]
    Closed,
    /// A field is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// `Message.field`.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A `ProbeRequest` while a probe is still running.
    #[error("a bandwidth probe is already running")]
    ProbeInProgress,
    /// The stream's framing broke (oversize, malformed protobuf, truncated).
    #[error("{0}")]
    Frame(#[from] FrameError),
}

impl ProtocolError {
    /// Machine-readable `Error.code`.
    pub fn code(&self) -> &'static str {
        CODE_PROTOCOL
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ProtocolError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A `HostMessage::Error { code, message }`.
pub fn error_message(code: &str, message: impl Into<String>) -> HostMessage {
    HostMessage {
        msg: Some(host_message::Msg::Error(ErrorMsg {
            message: message.into(),
            code: code.to_owned(),
        })),
    }
}
