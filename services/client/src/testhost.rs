//! A real QUIC endpoint with a punktfunk TLS identity that misbehaves like a broken host, for
//! the tests of the client's error paths: it takes the client's first control stream, reads
//! what the client sends, and then never answers, closes the connection, or writes raw bytes.

use std::net::SocketAddr;
use std::path::Path;

use punktfunk_tls::Identity;

/// What the host does once the client's first message arrived.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Keeps the connection (QUIC keep-alives are answered) but never writes a byte.
    Silent,
    /// Closes the connection with this application close code and reason, sending no
    /// `Error` message first (as when the close frame overtakes it).
    Close(u32, &'static str),
    /// Writes these bytes on the control stream (no framing added) and then stays silent.
    Send(&'static [u8]),
}

pub struct TestHost {
    pub addr: SocketAddr,
    _endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the endpoint on 127.0.0.1 with an identity kept in `dir`.
pub fn start(dir: &Path, behaviour: Behaviour) -> TestHost {
    let identity = Identity::load_or_create(dir, "host", "testhost").expect("host identity");
    let cfg = quinn::ServerConfig::with_crypto(identity.server_config().expect("server config"));
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let endpoint = quinn::Endpoint::server(cfg, bind).expect("server endpoint");
    let addr = endpoint.local_addr().expect("bound address");
    let task = tokio::spawn(serve(endpoint.clone(), behaviour));
    TestHost {
        addr,
        _endpoint: endpoint,
        task,
    }
}

async fn serve(endpoint: quinn::Endpoint, behaviour: Behaviour) {
    let Some(incoming) = endpoint.accept().await else {
        return;
    };
    let Ok(conn) = incoming.await else { return };
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut buf = [0u8; 1024];
    let _ = recv.read(&mut buf).await;
    match behaviour {
        Behaviour::Silent => std::future::pending::<()>().await,
        Behaviour::Send(bytes) => {
            let _ = send.write_all(bytes).await;
            std::future::pending::<()>().await
        }
        Behaviour::Close(code, reason) => {
            conn.close(code.into(), reason.as_bytes());
            // Keep the endpoint's task alive until the close frame is out.
            conn.closed().await;
        }
    }
}
