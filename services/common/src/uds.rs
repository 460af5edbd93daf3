//! gRPC over Unix sockets: the server side with a peer-credential check on every call, and
//! the client connector every caller (punktfunkctl, the daemons themselves) uses.
//!
//! The socket is already 0600 in a 0700 directory; the `SO_PEERCRED` check is the second
//! wall for when a socket is passed around or its mode is loosened by mistake.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::{InterceptorLayer, Routes};
use tonic::transport::server::UdsConnectInfo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// Admits callers with our uid or root; everyone else gets `PERMISSION_DENIED`.
pub fn check_peer(req: Request<()>) -> Result<Request<()>, Status> {
    let me = rustix::process::getuid().as_raw();
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred);
    match cred {
        Some(c) if c.uid() == me || c.uid() == 0 => Ok(req),
        Some(c) => Err(Status::permission_denied(format!(
            "uid {} may not use this daemon: it serves uid {me} (and root) only",
            c.uid()
        ))),
        None => Err(Status::permission_denied(
            "the caller's credentials (SO_PEERCRED) are unavailable, so the call is refused",
        )),
    }
}

/// Serves `routes` on `listener` until `shutdown` resolves, checking every call's peer.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    listener
        .set_nonblocking(true)
        .map_err(ServeError::Listener)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(ServeError::Listener)?;
    tonic::transport::Server::builder()
        .layer(InterceptorLayer::new(check_peer))
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}

/// Why serving gRPC on a Unix socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not be made non-blocking or handed to tokio.
    #[error("cannot use the gRPC listener: {0}")]
    Listener(std::io::Error),
    /// The tonic server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Transport(tonic::transport::Error),
}

/// A gRPC channel to a daemon socket could not be connected.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {path}: {source}")]
pub struct ConnectError {
    /// The socket path.
    pub path: PathBuf,
    /// The transport error.
    #[source]
    pub source: tonic::transport::Error,
}

/// A gRPC channel to the daemon socket at `path`. Connects eagerly (within
/// `connect_timeout`), so a daemon that is not running is an error here rather than on the
/// first call.
///
/// The channel has **no** per-request timeout: each call gets the deadline it was designed
/// with, as `tokio::time::timeout` around it (a StartStream that builds a pipeline may take
/// seconds, a Health call should not).
pub async fn connect(path: &Path, connect_timeout: Duration) -> Result<Channel, ConnectError> {
    let target = path.to_path_buf();
    // The URI is required by the HTTP/2 layer but never resolved: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://punktfunk.local").connect_timeout(connect_timeout);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { UnixStream::connect(target).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| ConnectError {
            path: path.to_path_buf(),
            source,
        })
}
