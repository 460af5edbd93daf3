//! A gRPC call over our Unix-socket channel gets the deadline its caller gives it, not one the
//! channel imposes (issue #9, defect 3: a 2 s per-request timeout on every channel cut media's
//! 15 s StartStream short and reported it as a refusal).

use std::time::Duration;

use punktfunk_common::{client, uds};
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::session::session_server::{Session, SessionServer};
use punktfunk_proto::session::*;
use tonic::{Request, Response, Status};

/// A daemon whose Health takes longer than the connect timeout.
struct Slow(Duration);

#[tonic::async_trait]
impl Session for Slow {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        tokio::time::sleep(self.0).await;
        Ok(Response::new(HealthReply::default()))
    }
    async fn start_output(
        &self,
        _: Request<StartOutputRequest>,
    ) -> Result<Response<StartOutputReply>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn stop_output(
        &self,
        _: Request<StopOutputRequest>,
    ) -> Result<Response<StopOutputReply>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_outputs(
        &self,
        _: Request<ListOutputsRequest>,
    ) -> Result<Response<ListOutputsReply>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn open_screencast(
        &self,
        _: Request<OpenScreencastRequest>,
    ) -> Result<Response<OpenScreencastReply>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn resize_output(
        &self,
        _: Request<ResizeOutputRequest>,
    ) -> Result<Response<ResizeOutputReply>, Status> {
        Err(Status::unimplemented("test"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_may_outlast_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let routes = tonic::service::Routes::new(SessionServer::new(Slow(Duration::from_millis(1500))));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(uds::serve(listener, routes, async {
        let _ = stopped.await;
    }));

    let connect_timeout = Duration::from_millis(500);
    let channel = uds::connect(&path, connect_timeout).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client::health(channel.clone(), "session"),
    )
    .await
    .expect("the caller's own deadline");
    assert!(
        reply.is_ok(),
        "a 1.5 s call on a channel connected with a 0.5 s timeout must succeed: {reply:?}"
    );

    // The probe bounds its call by its own timeout and says so.
    let e = client::probe(&path, "session", connect_timeout)
        .await
        .unwrap_err();
    assert!(matches!(e, client::ProbeError::TimedOut(_)), "{e:?}");
    assert!(e.to_string().contains("no answer within 500 ms"), "{e}");

    let _ = stop.send(());
    let _ = server.await;
}
