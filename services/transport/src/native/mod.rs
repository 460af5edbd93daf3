//! The punktfunk/1 protocol shell: QUIC, a thin driver around `punktfunk-control`'s state
//! machines, like quinn's connection driver around quinn-proto.
//!
//! Every bidirectional stream a client opens is either a **pairing** stream (first message
//! `PairStart`, [`pairing`]) or a **session** stream (first message `Hello`, [`session`]).
//! Bytes go through the bounded decoder of `punktfunk-quic`; whatever the state machines
//! reject ends that stream — and the connection — with a clear `Error` message, never the
//! daemon. A client that is not paired never gets past `Hello`: it is told how to pair and no
//! data-plane socket is ever opened towards it. What a session runs is the orchestrator's
//! business ([`crate::session`]).

mod input;
mod pairing;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use punktfunk_control::error::CODE_PROTOCOL;
use punktfunk_proto::control::{ClientMessage, HostMessage, client_message};
use punktfunk_quic::{FramedRecv, RecvError};
use punktfunk_tls::{Fingerprint, peer_fingerprint};

use crate::host::Host;

pub use punktfunk_control::error::close;

/// How long a refused client has to read the refusal and close the connection itself before
/// the host closes it ([`Stream::refuse`]).
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Binds the endpoint; [`serve`] then serves it until it is closed.
pub fn bind(host: &Host) -> anyhow::Result<quinn::Endpoint> {
    let crypto = host.identity.server_config()?;
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_millis(host.config.idle_timeout_ms);
    transport.max_idle_timeout(Some(idle.try_into().context("idle timeout")?));
    // A client opens one session stream and, rarely, a pairing stream.
    transport.max_concurrent_bidi_streams(4u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let ip: IpAddr = host.config.bind.parse().context("bind address")?;
    let addr = SocketAddr::new(ip, host.config.port);
    quinn::Endpoint::server(server, addr).with_context(|| {
        format!(
            "cannot listen on UDP {addr} (is another punktfunk-transport running? set `port` in transport.toml)"
        )
    })
}

/// Accepts connections until the endpoint closes.
pub async fn serve(host: Arc<Host>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let host = host.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(host, conn).await,
                Err(e) => tracing::debug!(%remote, error = %e, "QUIC handshake failed"),
            }
        });
    }
}

async fn connection(host: Arc<Host>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(fp) = peer_fingerprint(&conn) else {
        conn.close(close::PROTOCOL.into(), b"a client certificate is required");
        return;
    };
    tracing::debug!(%remote, client = %fp.short(), "connection");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let stream = Stream {
                    host: host.clone(),
                    conn: conn.clone(),
                    fp,
                    send,
                };
                tokio::spawn(stream.dispatch(FramedRecv::new(recv)));
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection ended");
                return;
            }
        }
    }
}

/// One bidirectional stream of a client's connection, and what the shell needs to answer on it.
struct Stream {
    host: Arc<Host>,
    conn: quinn::Connection,
    fp: Fingerprint,
    send: quinn::SendStream,
}

type Reader = FramedRecv<ClientMessage>;

impl Stream {
    /// Reads the first message and hands the stream to pairing or to a session.
    async fn dispatch(mut self, mut reader: Reader) {
        let first = match reader.next().await {
            Ok(Some(m)) => m,
            Err(RecvError::Malformed(e)) => {
                let m = error_msg(CODE_PROTOCOL, format!("malformed control message: {e}"));
                self.refuse(m, close::PROTOCOL, "malformed").await;
                return;
            }
            Ok(None) | Err(RecvError::Lost(_)) => return,
        };
        match first.msg {
            Some(client_message::Msg::PairStart(_)) => pairing::run(self, reader, first).await,
            Some(client_message::Msg::Hello(_)) => session::run(self, reader, first).await,
            _ => {
                let m = error_msg(
                    CODE_PROTOCOL,
                    "the first message on a stream must be Hello (a session) or PairStart (pairing)",
                );
                self.refuse(m, close::PROTOCOL, "expected Hello or PairStart")
                    .await;
            }
        }
    }

    async fn send(&mut self, msg: &HostMessage) -> Result<(), punktfunk_quic::SendError> {
        punktfunk_quic::send_framed(&mut self.send, msg).await
    }

    /// Sends a final message, finishes the stream and closes the connection with `code`.
    ///
    /// The client closes the connection itself once it has read the message; the host closes
    /// only after [`REFUSAL_GRACE`]. Closing as soon as the message is acknowledged is not
    /// enough: a QUIC close discards what the peer has received but its application has not
    /// read yet, so the client would see only the close code (`refused`) and lose the message's
    /// machine-readable code (`capacity`, `media-refused`, ...) and its words.
    async fn refuse(&mut self, msg: HostMessage, code: u32, reason: &str) {
        let _ = self.send(&msg).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(REFUSAL_GRACE, self.conn.closed()).await;
        self.conn.close(code.into(), reason.as_bytes());
    }
}

fn error_msg(code: &str, message: impl Into<String>) -> HostMessage {
    punktfunk_control::error::error_message(code, message)
}
