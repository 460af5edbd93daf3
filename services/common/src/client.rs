//! Calls every daemon answers, made without knowing its generated client type.

use std::path::Path;
use std::time::Duration;

use punktfunk_proto::common::{HealthReply, HealthRequest};
use tonic::transport::Channel;

use crate::uds;

/// The four daemons, in start order.
pub const DAEMONS: [&str; 4] = ["session", "media", "transport", "input"];

/// The gRPC path of a daemon's Health method: `/punktfunk.<name>.v1.<Name>/Health`.
pub fn health_path(daemon: &str) -> String {
    let mut service = daemon.to_string();
    if let Some(first) = service.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    format!("/punktfunk.{daemon}.v1.{service}/Health")
}

/// Calls `Health` on an open channel to `daemon`.
pub async fn health(channel: Channel, daemon: &str) -> Result<HealthReply, tonic::Status> {
    let path = http::uri::PathAndQuery::try_from(health_path(daemon))
        .map_err(|e| tonic::Status::internal(format!("bad method path: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<HealthRequest, HealthReply>::default();
    grpc.unary(tonic::Request::new(HealthRequest {}), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Why a daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The daemon's socket could not be connected.
    #[error(transparent)]
    Connect(#[from] uds::ConnectError),
    /// The daemon answered with an error status.
    #[error("{0}")]
    Call(#[from] tonic::Status),
    /// The daemon did not answer within the given time.
    #[error("no answer within {} ms: the daemon may be stuck", .0.as_millis())]
    TimedOut(Duration),
}

/// Connects to the socket at `path` and asks `daemon` for its health; `timeout` bounds the
/// connect and the call each.
pub async fn probe(
    path: &Path,
    daemon: &str,
    timeout: Duration,
) -> Result<HealthReply, ProbeError> {
    let channel = uds::connect(path, timeout).await?;
    match tokio::time::timeout(timeout, health(channel, daemon)).await {
        Ok(reply) => Ok(reply?),
        Err(_) => Err(ProbeError::TimedOut(timeout)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_paths_match_the_protos() {
        assert_eq!(
            super::health_path("session"),
            "/punktfunk.session.v1.Session/Health"
        );
        assert_eq!(
            super::health_path("input"),
            "/punktfunk.input.v1.Input/Health"
        );
    }
}
