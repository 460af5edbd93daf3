//! punktfunk/1 input: the client's `InputEvent` QUIC datagrams into the session's seat, and
//! the seat's feedback back as `FeedbackEvent` datagrams. The mapping is
//! `punktfunk_control::input` (sans-IO, fuzzed); this is its loop.

use std::sync::atomic::Ordering;

use punktfunk_control::input::{InputMapper, decode_input, feedback_datagram};

use crate::input::SeatPort;
use crate::stream::now_ns;

/// Runs until the connection closes or the seat's port is gone.
pub(super) async fn pump(conn: quinn::Connection, mut port: SeatPort, output: (u32, u32)) {
    let mut mapper = InputMapper::new(output);
    let (mut malformed, mut full) = (0u64, 0u64);
    loop {
        tokio::select! {
            d = conn.read_datagram() => {
                let Ok(bytes) = d else { break };
                match decode_input(&bytes) {
                    Ok(ev) => {
                        if let Some(e) = mapper.map(&ev, now_ns())
                            && port.events.try_send(e.into()).is_err()
                        {
                            full += 1;
                            port.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        malformed += 1;
                        if malformed == 1 {
                            tracing::warn!(remote = %conn.remote_address(), "dropped an input datagram: {e}");
                        }
                    }
                }
            }
            f = port.feedback.recv() => {
                let Some(f) = f else { break };
                if let Some(bytes) = feedback_datagram(&f)
                    && let Err(e) = conn.send_datagram(bytes.into())
                {
                    tracing::debug!("feedback datagram not sent: {e}");
                }
            }
        }
    }
    tracing::debug!(malformed, full, offset_ns = ?mapper.offset_ns(), "input pump ended");
}
