//! punktfunk-media: the capture + encode worker (ARCHITECTURE.md §4). It will run GStreamer
//! pipelines and write access units into a shared-memory ring handed to transport over the fd
//! channel; for now it serves `Health` and declares its API.

use std::process::ExitCode;
use std::sync::Arc;

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_common::not_yet;
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::media::media_server::{Media, MediaServer};
use punktfunk_proto::media::*;
use tonic::{Request, Response, Status};

const LATER: &str = "the capture + encode worker (GStreamer pipelines)";

struct MediaService {
    health: Arc<Health>,
}

#[tonic::async_trait]
impl Media for MediaService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }
    async fn start_stream(
        &self,
        _: Request<StartStreamRequest>,
    ) -> Result<Response<StartStreamReply>, Status> {
        Err(not_yet("StartStream", LATER))
    }
    async fn stop_stream(
        &self,
        _: Request<StopStreamRequest>,
    ) -> Result<Response<StopStreamReply>, Status> {
        Err(not_yet("StopStream", LATER))
    }
    async fn reconfigure(
        &self,
        _: Request<ReconfigureRequest>,
    ) -> Result<Response<ReconfigureReply>, Status> {
        Err(not_yet("Reconfigure", LATER))
    }
    async fn request_keyframe(
        &self,
        _: Request<RequestKeyframeRequest>,
    ) -> Result<Response<RequestKeyframeReply>, Status> {
        Err(not_yet("RequestKeyframe", LATER))
    }
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Err(not_yet("Stats", LATER))
    }
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("media", |ctx: Context<BaseConfig>| async move {
        ctx.health.set_status("idle: no streams");
        let svc = MediaServer::new(MediaService { health: ctx.health });
        Ok(tonic::service::Routes::new(svc))
    })
}
