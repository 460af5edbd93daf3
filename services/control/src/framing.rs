//! Length-prefixed protobuf frames on a QUIC stream.
//!
//! Every control message is sent as `varint(len) ‖ protobuf(len bytes)` — exactly prost's
//! `encode_length_delimited`. [`FrameDecoder`] is fed the stream's bytes in chunks of any size
//! and yields whole messages. Its memory is bounded by [`MAX_CONTROL_MESSAGE`] (or the bound
//! given to [`FrameDecoder::with_max`]): a declared length above the bound is rejected as soon
//! as the varint shows it, before a single body byte is buffered, and no buffer is ever sized
//! from a length that has not passed that check. Errors are sticky: after one, the decoder
//! refuses everything (the shell sends an `Error` and closes the connection).
//!
//! Driving it:
//!
//! ```
//! use punktfunk_control::framing::{encode, FrameDecoder};
//! use punktfunk_proto::control::{ClientMessage, Goodbye, client_message::Msg};
//!
//! let msg = ClientMessage { msg: Some(Msg::Goodbye(Goodbye { reason: "bye".into() })) };
//! let mut bytes = Vec::new();
//! encode(&msg, &mut bytes).unwrap();
//!
//! let mut dec = FrameDecoder::<ClientMessage>::new();
//! let mut got = Vec::new();
//! for chunk in bytes.chunks(3) {            // whatever the QUIC stream hands you
//!     let mut rest = chunk;
//!     while let Some(m) = dec.decode(&mut rest).unwrap() {
//!         got.push(m);                         // feed to HostSession / ClientSession
//!     }
//! }
//! assert_eq!(got, vec![msg]);
//! dec.finish().unwrap();                      // at end of stream: nothing half-received
//! ```

use core::marker::PhantomData;
use prost::Message;

/// Largest control message (protobuf body, without the length prefix) either side accepts
/// or sends: 64 KiB. Real messages are a few hundred bytes.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// Longest varint (u64) prefix.
const MAX_VARINT_LEN: usize = 10;

/// Why a frame could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared (or, when encoding, actual) length exceeds the bound.
    #[error("control message of {declared} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The length the peer declared (a lower bound when the varint was cut short because
        /// it had already passed `max`).
        declared: u64,
        /// The bound in force.
        max: usize,
    },
    /// The length prefix is not a valid varint (longer than 10 bytes).
    #[error("invalid length prefix (varint longer than 10 bytes)")]
    BadLength,
    /// The body is not a valid protobuf message of the expected type.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of an incomplete frame)")]
    Truncated {
        /// Bytes of the incomplete frame received (prefix + body).
        buffered: usize,
    },
}

/// Appends `msg` as one frame (`varint(len) ‖ body`) to `out`.
///
/// Refuses (appending nothing) if the body is longer than [`MAX_CONTROL_MESSAGE`]: the peer
/// would reject it anyway.
pub fn encode<M: Message>(msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_CONTROL_MESSAGE {
        return Err(FrameError::TooLong {
            declared: len as u64,
            max: MAX_CONTROL_MESSAGE,
        });
    }
    // Writing into a Vec cannot run out of capacity; map the impossible error anyway.
    msg.encode_length_delimited(out)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// [`encode`] into a fresh `Vec`.
pub fn encode_to_vec<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(msg.encoded_len().min(MAX_CONTROL_MESSAGE) + MAX_VARINT_LEN);
    encode(msg, &mut out)?;
    Ok(out)
}

/// Incremental decoder of length-prefixed messages of type `M`
/// (`ClientMessage` on the host, `HostMessage` on the client).
#[derive(Debug)]
pub struct FrameDecoder<M> {
    max: usize,
    /// Length prefix bytes seen so far (while `body_len` is `None`).
    prefix_value: u64,
    prefix_len: usize,
    /// Declared body length once the prefix is complete.
    body_len: Option<usize>,
    body: Vec<u8>,
    error: Option<FrameError>,
    _m: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Default for FrameDecoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Message + Default> FrameDecoder<M> {
    /// A decoder bounded by [`MAX_CONTROL_MESSAGE`].
    pub fn new() -> Self {
        Self::with_max(MAX_CONTROL_MESSAGE)
    }

    /// A decoder with a different bound (at most [`MAX_CONTROL_MESSAGE`]; larger values are
    /// reduced to it).
    pub fn with_max(max: usize) -> Self {
        Self {
            max: max.min(MAX_CONTROL_MESSAGE),
            prefix_value: 0,
            prefix_len: 0,
            body_len: None,
            body: Vec::new(),
            error: None,
            _m: PhantomData,
        }
    }

    /// Consumes bytes from the front of `input` until one whole message is decoded
    /// (returned, with `input` advanced past it) or `input` is used up (`Ok(None)`, `input`
    /// empty). Call it in a loop until `Ok(None)` for every chunk the stream delivers.
    ///
    /// After an error every further call returns the same error.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<M>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.decode_inner(input) {
            Ok(m) => Ok(m),
            Err(e) => {
                self.error = Some(e.clone());
                self.body = Vec::new();
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self, input: &mut &[u8]) -> Result<Option<M>, FrameError> {
        loop {
            let body_len = match self.body_len {
                Some(n) => n,
                None => {
                    let Some((&b, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    if self.prefix_len >= MAX_VARINT_LEN {
                        return Err(FrameError::BadLength);
                    }
                    let shift = 7 * self.prefix_len as u32;
                    let bits = u64::from(b & 0x7f);
                    // Bits that do not fit a u64 make the value > max anyway.
                    let part = if shift >= 64 || (shift > 0 && bits >> (64 - shift) != 0) {
                        u64::MAX
                    } else {
                        bits << shift
                    };
                    self.prefix_value |= part;
                    self.prefix_len += 1;
                    // Varint bits only ever add: once the partial value passes the bound,
                    // the final one does too. Refuse before buffering anything.
                    if self.prefix_value > self.max as u64 {
                        return Err(FrameError::TooLong {
                            declared: self.prefix_value,
                            max: self.max,
                        });
                    }
                    if b & 0x80 != 0 {
                        continue;
                    }
                    // Checked against max (≤ 64 KiB) above: the cast cannot truncate.
                    let n = self.prefix_value as usize;
                    self.body_len = Some(n);
                    self.body.clear();
                    self.body.reserve(n);
                    n
                }
            };
            let want = body_len - self.body.len();
            let take = want.min(input.len());
            self.body.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.body.len() < body_len {
                return Ok(None);
            }
            let msg = M::decode(self.body.as_slice())
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            self.body.clear();
            self.body_len = None;
            self.prefix_len = 0;
            self.prefix_value = 0;
            return Ok(Some(msg));
        }
    }

    /// Decodes every whole message in `chunk` (convenience over [`FrameDecoder::decode`]).
    /// On error the messages decoded before it are lost with it; the session is over anyway.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<M>, FrameError> {
        let mut rest = chunk;
        let mut out = Vec::new();
        while let Some(m) = self.decode(&mut rest)? {
            out.push(m);
        }
        Ok(out)
    }

    /// Call when the stream ends: an error if a frame was cut off (or an error is pending).
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let buffered = match self.body_len {
            Some(_) => self.prefix_len + self.body.len(),
            None => self.prefix_len,
        };
        if buffered > 0 {
            return Err(FrameError::Truncated { buffered });
        }
        Ok(())
    }

    /// Bytes of the current incomplete frame held in memory (never more than the bound).
    pub fn buffered(&self) -> usize {
        self.body.len()
    }

    /// The bound this decoder enforces.
    pub fn max(&self) -> usize {
        self.max
    }
}
