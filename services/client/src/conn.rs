//! The client's QUIC connection and its control streams.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use punktfunk_control::framing::{self, FrameDecoder};
use punktfunk_proto::control::{ClientMessage, HostMessage};
use punktfunk_tls::{Fingerprint, Identity};

pub const DEFAULT_PORT: u16 = 9777;

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
    decoder: FrameDecoder<HostMessage>,
    ready: std::collections::VecDeque<HostMessage>,
    buf: Vec<u8>,
}

impl Control {
    pub async fn open(conn: &quinn::Connection) -> Result<Self, String> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("cannot open a control stream: {e}"))?;
        Ok(Self {
            send,
            recv,
            decoder: FrameDecoder::new(),
            ready: Default::default(),
            buf: vec![0; 16 * 1024],
        })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), String> {
        let bytes = framing::encode_to_vec(msg).map_err(|e| e.to_string())?;
        self.send
            .write_all(&bytes)
            .await
            .map_err(|e| format!("control stream: {e}"))
    }

    /// The next host message; `Ok(None)` when the host finished the stream.
    pub async fn next(&mut self) -> Result<Option<HostMessage>, String> {
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
                Err(e) => return Err(format!("connection to the host lost: {e}")),
            }
        }
    }
}
