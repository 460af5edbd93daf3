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

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_control::error::CODE_CAPACITY;

    /// An error whose message ends with its source, as thiserror's `#[error("…: {0}")]`
    /// with `#[from]` makes it.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "mDNS: {}", self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let io = || std::io::Error::other("no route");
        // A context gets its cause appended.
        let e = anyhow::Error::new(io()).context("cannot resolve deck");
        assert_eq!(chain(&e), "cannot resolve deck: no route");
        // A message that already ends with its source (thiserror's `{0}` with `#[from]`)
        // does not repeat it.
        let e = anyhow::Error::new(Wrapped(io())).context("mDNS browse failed");
        assert_eq!(chain(&e), "mDNS browse failed: mDNS: no route");
    }

    #[test]
    fn a_coded_error_keeps_its_code_through_anyhow() {
        let coded = ClientError::coded("the host refused".into(), Some(CODE_CAPACITY.into()));
        let back = ClientError::from(anyhow::Error::new(coded.clone()));
        assert_eq!(back, coded);
        let plain = ClientError::from(anyhow::anyhow!("local fault"));
        assert_eq!((plain.message.as_str(), plain.code), ("local fault", None));
        let failure = Failure::from(anyhow::anyhow!("disk full").context("cannot write x.csv"));
        assert_eq!(failure.message, "cannot write x.csv: disk full");
        assert_eq!(failure.exit, EXIT_FAILED);
    }
}
