//! How a command ends: the error it reports (with the host's machine-readable code when the
//! host sent one) and the process exit code.

use std::fmt;

/// Exit code of a run that failed: refused, unreachable, a local fault.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a `stream` run whose video stopped: nothing arrived for the last part of the
/// run (a trailing gap), or the connection was lost or ended by the host mid-stream.
pub const EXIT_INTERRUPTED: u8 = 3;

/// An error with the host's machine-readable reason, when it gave one (its `Error.code`, or the
/// name of its QUIC close code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// What happened, for a human.
    pub message: String,
    /// The host's code, e.g. `pairing-required`.
    pub code: Option<String>,
}

impl ClientError {
    pub fn coded(message: String, code: Option<String>) -> Self {
        Self { message, code }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        Self {
            message,
            code: None,
        }
    }
}

impl From<&str> for ClientError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl std::error::Error for ClientError {}

/// A local fault (or an error of a step without a host code): its whole chain of context in
/// one message. A [`ClientError`] carried inside keeps its code.
impl From<anyhow::Error> for ClientError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<ClientError>() {
            Ok(coded) => coded,
            Err(e) => chain(&e).into(),
        }
    }
}

/// An error and its causes in one line, each cause once: a cause the message already ends
/// with (as a `thiserror` message with `{source}` does) is not repeated.
pub fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// What `main` prints and exits with when a command does not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub exit: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            exit: EXIT_FAILED,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        chain(&e).into()
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        e.message.into()
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}
