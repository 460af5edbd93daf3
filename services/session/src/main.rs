//! punktfunk-session: the compositor-session manager (docs/architecture.md). It will start
//! headless gamescope/KWin/weston/sway outputs at a client's mode and hand their screencast to
//! media; for now it serves `Health` and declares its API.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_common::not_yet;
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::session::session_server::{Session, SessionServer};
use punktfunk_proto::session::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

const LATER: &str = "the compositor-session manager work (gamescope/KWin/weston/sway backends)";

struct SessionService {
    health: Arc<Health>,
}

#[tonic::async_trait]
impl Session for SessionService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }
    async fn start_output(
        &self,
        _: Request<StartOutputRequest>,
    ) -> Result<Response<StartOutputReply>, Status> {
        Err(not_yet("StartOutput", LATER))
    }
    async fn stop_output(
        &self,
        _: Request<StopOutputRequest>,
    ) -> Result<Response<StopOutputReply>, Status> {
        Err(not_yet("StopOutput", LATER))
    }
    async fn list_outputs(
        &self,
        _: Request<ListOutputsRequest>,
    ) -> Result<Response<ListOutputsReply>, Status> {
        Err(not_yet("ListOutputs", LATER))
    }
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("session", |ctx: Context<BaseConfig>| async move {
        ctx.health.set_status("idle: no compositor outputs");
        let svc = SessionServer::new(SessionService { health: ctx.health });
        Ok(tonic::service::Routes::new(svc))
    })
}
