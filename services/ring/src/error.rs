//! The crate's error type.

/// Everything that can go wrong creating, attaching to, writing or reading a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// `Ring::create` was given an unusable capacity / max-record combination.
    #[error("invalid ring configuration: {0}")]
    InvalidConfig(String),
    /// A record is larger than the ring's `max_record_bytes` (which is itself at most half of the
    /// data area). The record is not written and is counted as dropped.
    #[error("record of {len} bytes exceeds the ring's maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Requested payload length.
        len: u64,
        /// The ring's maximum payload length.
        max: u64,
    },
    /// `Consumer::attach` was handed something that is not a compatible ring (wrong magic or
    /// version, wrong size, missing seals, ...).
    #[error("not a compatible punktfunk AU ring: {0}")]
    Incompatible(String),
    /// The shared memory holds values a correct peer never writes (bad offsets, lengths or tags).
    /// The ring must be abandoned; nothing was read or written out of bounds.
    #[error("ring memory is corrupt: {0}")]
    Corrupt(String),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl RingError {
    pub(crate) fn os(op: &'static str, e: rustix::io::Errno) -> Self {
        RingError::Os {
            op,
            source: e.into(),
        }
    }
}

/// `Result` with [`RingError`].
pub type Result<T> = std::result::Result<T, RingError>;
