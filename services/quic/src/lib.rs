//! The pieces of punktfunk/1's QUIC shell that host (punktfunk-transport) and client
//! (punktfunk-client) share, so that each exists once:
//!
//! - [`FramedRecv`]: control messages off a quinn receive stream, through the bounded
//!   [`FrameDecoder`] of `punktfunk-control` (a length prefix above
//!   [`punktfunk_control::MAX_CONTROL_MESSAGE`] is an error, never an allocation);
//! - [`send_framed`]: one message onto a send stream;
//! - [`export_key`]: a session's data-plane key from the connection's TLS exporter
//!   ([`punktfunk_control::keys`] names the labels and the context).
//!
//! Everything protocol-level (what the messages mean, the state machines) stays in the sans-IO
//! `punktfunk-control`; this crate only moves bytes.
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use punktfunk_control::framing::{self, FrameDecoder, FrameError};
use punktfunk_control::keys::{self, Direction};
use punktfunk_wire::SessionKey;

/// How many bytes one read takes off the stream.
const READ_CHUNK: usize = 16 * 1024;

/// Why the next message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The stream or the connection broke (peer gone, idle timeout, reset, closed); a close by
    /// the peer shows its code and reason.
    #[error("{}", lost(.0))]
    Lost(#[from] quinn::ReadError),
    /// The bytes are not valid framed protobuf (or the stream ended inside a message).
    #[error("malformed control message: {0}")]
    Malformed(#[from] FrameError),
}

/// "connection lost: closed by peer: wrong pin (code 4)" rather than quinn's bare
/// "connection lost".
fn lost(e: &quinn::ReadError) -> String {
    match e {
        quinn::ReadError::ConnectionLost(c) => format!("connection lost: {c}"),
        other => other.to_string(),
    }
}

/// Framed messages of type `M` off one receive stream.
pub struct FramedRecv<M> {
    recv: quinn::RecvStream,
    decoder: FrameDecoder<M>,
    ready: VecDeque<M>,
    buf: Vec<u8>,
}

impl<M: prost::Message + Default> FramedRecv<M> {
    /// A reader of length-prefixed `M` messages from `recv`.
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(),
            ready: VecDeque::new(),
            buf: vec![0; READ_CHUNK],
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream between messages.
    pub async fn next(&mut self) -> Result<Option<M>, RecvError> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(Some(m));
            }
            match self.recv.read(&mut self.buf).await? {
                Some(n) => {
                    let msgs = self.decoder.push(&self.buf[..n])?;
                    self.ready.extend(msgs);
                }
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message could not be framed (e.g. it exceeds the size limit).
    #[error("{0}")]
    Encode(#[from] FrameError),
    /// Writing to the QUIC stream failed.
    #[error("{0}")]
    Write(#[from] quinn::WriteError),
}

/// Frames `msg` and writes it to `send`.
pub async fn send_framed<M: prost::Message>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), SendError> {
    let bytes = framing::encode_to_vec(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// The TLS exporter refused, or gave material of the wrong size.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive the data-plane key from the TLS exporter: {0}")]
pub struct KeyError(String);

/// The data-plane key of session `session_id` in direction `dir`, from the connection's TLS
/// exporter (both ends derive the same key; nothing secret crosses the wire).
pub fn export_key(
    conn: &quinn::Connection,
    session_id: u64,
    dir: Direction,
) -> Result<SessionKey, KeyError> {
    let mut material = [0u8; keys::KEY_MATERIAL_LEN];
    conn.export_keying_material(
        &mut material,
        dir.exporter_label(),
        &keys::exporter_context(session_id),
    )
    .map_err(|e| KeyError(format!("{e:?}")))?;
    keys::session_key_from_material(&material).map_err(|e| KeyError(format!("{e:?}")))
}
