//! punktfunk-input: virtual input devices (docs/architecture.md) — uinput keyboard/mouse/pads
//! and a UHID DualSense with feedback. For now it serves `Health` and declares its API.
#![forbid(unsafe_code)]

use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_common::not_yet;
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::control::FeedbackEvent;
use punktfunk_proto::input::input_server::{Input, InputServer};
use punktfunk_proto::input::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const LATER: &str = "the input work (uinput devices and the UHID DualSense)";

struct InputService {
    health: Arc<Health>,
}

#[tonic::async_trait]
impl Input for InputService {
    type FeedbackStream = Pin<Box<dyn Stream<Item = Result<FeedbackEvent, Status>> + Send>>;

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }
    async fn open_seat(
        &self,
        _: Request<OpenSeatRequest>,
    ) -> Result<Response<OpenSeatReply>, Status> {
        Err(not_yet("OpenSeat", LATER))
    }
    async fn close_seat(
        &self,
        _: Request<CloseSeatRequest>,
    ) -> Result<Response<CloseSeatReply>, Status> {
        Err(not_yet("CloseSeat", LATER))
    }
    async fn send_events(
        &self,
        _: Request<Streaming<SeatEvents>>,
    ) -> Result<Response<SendEventsReply>, Status> {
        Err(not_yet("SendEvents", LATER))
    }
    async fn feedback(
        &self,
        _: Request<FeedbackRequest>,
    ) -> Result<Response<Self::FeedbackStream>, Status> {
        Err(not_yet("Feedback", LATER))
    }
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("input", |ctx: Context<BaseConfig>| async move {
        ctx.health.set_status("idle: no seats");
        let svc = InputServer::new(InputService { health: ctx.health });
        Ok(tonic::service::Routes::new(svc))
    })
}
