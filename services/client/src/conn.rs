//! The client's QUIC connection and its control streams.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use punktfunk_control::error::close;
use punktfunk_proto::control::{ClientMessage, HostMessage};
use punktfunk_quic::{FramedRecv, RecvError, SendError};
use punktfunk_tls::{Fingerprint, Identity};
use quinn::ConnectionError;

use crate::outcome::ClientError;

pub use punktfunk_discovery::DEFAULT_PORT;

/// How long the client waits for the host's answer to a pairing or session message. A host
/// whose QUIC endpoint is alive but whose control task is stuck keeps the connection open
/// (keep-alives are answered), so without this bound the client would wait forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The application close code of a connection this client ends normally (done, paired).
pub const CLOSE_DONE: u32 = 0;

/// The name of a host close code ([`close::name`]; `close-N` for one this client does not
/// know).
pub fn close_code_name(code: u64) -> String {
    close::name(code).map_or_else(|| format!("close-{code}"), str::to_string)
}

/// Says why the connection ended. A close by the host carries its code and reason: they are
/// reported (the host's `Error` message may not have arrived before the close frame).
pub fn describe_connection_error(e: &ConnectionError) -> ClientError {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let name = close_code_name(code);
            let message = if code == u64::from(close::PAIRING_REQUIRED) {
                format!(
                    "this host requires pairing (it closed the connection: {reason}): run \
                     `punktfunkctl pair` on the host, then `punktfunk-client pair --pin <PIN> <host>`"
                )
            } else {
                format!("the host closed the connection: {reason} ({name})")
            };
            ClientError::coded(message, Some(name))
        }
        ConnectionError::TimedOut => ClientError::from(
            "connection to the host lost: nothing arrived within the idle timeout (the host \
             stopped, or the network between us is down)",
        ),
        ConnectionError::Reset => ClientError::from(
            "connection to the host lost: the host reset it (did punktfunk-transport restart?)",
        ),
        ConnectionError::LocallyClosed => {
            ClientError::from("the connection was closed by this client")
        }
        other => ClientError::from(format!("connection to the host lost: {other}")),
    }
}

/// Resolves `HOST`, `HOST:PORT`, `[V6]:PORT` or an IP to a socket address.
pub fn resolve(host: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = host.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))
}

/// Connects to `addr` presenting `identity`; with `pinned`, the host must have that fingerprint.
pub async fn connect(
    addr: SocketAddr,
    identity: &Identity,
    pinned: Option<Fingerprint>,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let crypto = identity.client_config(pinned)?;
    let mut cfg = quinn::ClientConfig::new(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into()?));
    cfg.transport_config(Arc::new(transport));
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let mut endpoint = quinn::Endpoint::client(bind).context("cannot open a UDP socket")?;
    endpoint.set_default_client_config(cfg);
    let connecting = endpoint
        .connect(addr, "punktfunk")
        .with_context(|| format!("cannot connect to {addr}"))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from {addr} within 5 s: is punktfunk-transport running there (UDP {})?",
                addr.port()
            )
        })?
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok((endpoint, conn))
}

/// One control stream: framed protobuf both ways ([`punktfunk_quic`]), with the client's
/// errors: a broken stream is reported as the connection's end when the connection ended.
pub struct Control {
    pub send: quinn::SendStream,
    recv: FramedRecv<HostMessage>,
    conn: quinn::Connection,
}

impl Control {
    pub async fn open(conn: &quinn::Connection) -> Result<Self, ClientError> {
        let (send, recv) = conn.open_bi().await.map_err(|e| {
            let why = describe_connection_error(&e);
            ClientError::coded(format!("cannot open a control stream: {why}"), why.code)
        })?;
        Ok(Self {
            send,
            recv: FramedRecv::new(recv),
            conn: conn.clone(),
        })
    }

    /// Why a read or write failed: the connection's end, when it ended (a stream error is a
    /// consequence of it), else the stream's own error.
    fn failed(&self, stream_error: impl std::fmt::Display) -> ClientError {
        match self.conn.close_reason() {
            Some(e) => describe_connection_error(&e),
            None => ClientError::from(format!("control stream: {stream_error}")),
        }
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        match punktfunk_quic::send_framed(&mut self.send, msg).await {
            Ok(()) => Ok(()),
            Err(SendError::Encode(e)) => Err(ClientError::from(e.to_string())),
            Err(SendError::Write(e)) => Err(self.failed(e)),
        }
    }

    /// The next host message; `Ok(None)` when the host finished the stream.
    pub async fn next(&mut self) -> Result<Option<HostMessage>, ClientError> {
        match self.recv.next().await {
            Ok(m) => Ok(m),
            Err(RecvError::Malformed(e)) => Err(ClientError::from(format!(
                "malformed message from the host: {e}"
            ))),
            Err(RecvError::Lost(e)) => Err(self.failed(e)),
        }
    }

    /// The host's answer to `what` (e.g. "the pairing request"), within `timeout`.
    pub async fn reply_within(
        &mut self,
        timeout: Duration,
        what: &str,
    ) -> Result<Option<HostMessage>, ClientError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Err(no_answer(timeout, what)),
        }
    }

    /// The host's answer to `what` within [`REPLY_TIMEOUT`].
    pub async fn reply(&mut self, what: &str) -> Result<Option<HostMessage>, ClientError> {
        self.reply_within(REPLY_TIMEOUT, what).await
    }
}

/// The error of a host that kept the connection open but did not answer.
pub fn no_answer(timeout: Duration, what: &str) -> ClientError {
    ClientError::from(format!(
        "the host did not answer {what} within {} s: its punktfunk-transport is up but not \
         responding. Check `punktfunkctl status` on the host (restart punktfunk-transport if it \
         hangs) and try again",
        timeout.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_control::error::CODE_PAIRING_REQUIRED;

    #[test]
    fn close_codes_are_named_by_the_control_crate() {
        assert_eq!(close_code_name(close::PROTOCOL.into()), "protocol");
        assert_eq!(
            close_code_name(close::PAIRING_REQUIRED.into()),
            CODE_PAIRING_REQUIRED
        );
        assert_eq!(close_code_name(close::UNPAIRED.into()), "unpaired");
        assert_eq!(
            close_code_name(close::PAIRING_FAILED.into()),
            "pairing-failed"
        );
        assert_eq!(close_code_name(close::REFUSED.into()), "refused");
        assert_eq!(close_code_name(9), "close-9");
    }
}
