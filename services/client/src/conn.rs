//! The client's QUIC connection and its control streams.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use punktfunk_control::framing::{self, FrameDecoder};
use punktfunk_proto::control::{ClientMessage, HostMessage};
use punktfunk_tls::{Fingerprint, Identity};
use quinn::ConnectionError;

use crate::outcome::ClientError;

pub const DEFAULT_PORT: u16 = 9777;

/// How long the client waits for the host's answer to a pairing or session message. A host
/// whose QUIC endpoint is alive but whose control task is stuck keeps the connection open
/// (keep-alives are answered), so without this bound the client would wait forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's QUIC application close codes (punktfunk-transport, `host::close`) and the
/// machine-readable name the client reports for each.
const CLOSE_CODES: [(u64, &str); 4] = [
    (1, "protocol"),
    (2, "pairing-required"),
    (3, "unpaired"),
    (4, "pairing-failed"),
];

/// The name of a host close code (`close-N` for one this client does not know).
pub fn close_code_name(code: u64) -> String {
    CLOSE_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("close-{code}"), |(_, name)| (*name).to_string())
}

/// Says why the connection ended. A close by the host carries its code and reason: they are
/// reported (the host's `Error` message may not have arrived before the close frame).
pub fn describe_connection_error(e: &ConnectionError) -> ClientError {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let name = close_code_name(code);
            let message = if name == "pairing-required" {
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
pub fn resolve(host: &str) -> Result<SocketAddr, String> {
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
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// Connects to `addr` presenting `identity`; with `pinned`, the host must have that fingerprint.
pub async fn connect(
    addr: SocketAddr,
    identity: &Identity,
    pinned: Option<Fingerprint>,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let crypto = identity.client_config(pinned).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    transport.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .map_err(|e| format!("{e}"))?,
    ));
    cfg.transport_config(Arc::new(transport));
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .map_err(|e| format!("{e}"))?;
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    endpoint.set_default_client_config(cfg);
    let connecting = endpoint
        .connect(addr, "punktfunk")
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| {
            format!(
                "no answer from {addr} within 5 s: is punktfunk-transport running there (UDP {})?",
                addr.port()
            )
        })?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    Ok((endpoint, conn))
}

/// One control stream: framed protobuf both ways.
pub struct Control {
    pub send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: quinn::Connection,
    decoder: FrameDecoder<HostMessage>,
    ready: std::collections::VecDeque<HostMessage>,
    buf: Vec<u8>,
}

impl Control {
    pub async fn open(conn: &quinn::Connection) -> Result<Self, ClientError> {
        let (send, recv) = conn.open_bi().await.map_err(|e| {
            let why = describe_connection_error(&e);
            ClientError::coded(format!("cannot open a control stream: {why}"), why.code)
        })?;
        Ok(Self {
            send,
            recv,
            conn: conn.clone(),
            decoder: FrameDecoder::new(),
            ready: Default::default(),
            buf: vec![0; 16 * 1024],
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
        let bytes = framing::encode_to_vec(msg).map_err(|e| e.to_string())?;
        match self.send.write_all(&bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The next host message; `Ok(None)` when the host finished the stream.
    pub async fn next(&mut self) -> Result<Option<HostMessage>, ClientError> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(Some(m));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => {
                    let msgs = self
                        .decoder
                        .push(&self.buf[..n])
                        .map_err(|e| format!("malformed message from the host: {e}"))?;
                    self.ready.extend(msgs);
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.failed(e)),
            }
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
