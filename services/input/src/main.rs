//! punktfunk-input: a seat of virtual input devices per client session (docs/input.md) —
//! uinput keyboard, mouse, absolute pointer, touchscreen and Xbox-style pads with rumble, and
//! UHID DualSenses with their feedback (rumble, lightbar, player LEDs, adaptive triggers).
#![forbid(unsafe_code)]

mod dualsense;
mod feedback;
mod policy;
mod seat;
mod uinput;

use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::input::input_server::{Input, InputServer};
use punktfunk_proto::input::*;
use punktfunk_proto::seat::SeatFeedback;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::seat::{OpenError, Seat, Seats};

/// A seat no event stream attaches to within this time is closed (its transport is gone).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the status line is refreshed while seats are open.
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct InputService {
    health: Arc<Health>,
    seats: Arc<Seats>,
}

fn status_line(seats: &Seats) -> String {
    let all = seats.all();
    if all.is_empty() {
        return "idle: no seats".into();
    }
    let (mut delivered, mut dropped, mut devices) = (0, 0, 0);
    for s in &all {
        let c = s.counters();
        delivered += c.delivered;
        dropped += c.dropped();
        devices += s.devices().len();
    }
    let names: Vec<&str> = all.iter().map(|s| s.client()).collect();
    format!(
        "{} seat(s) ({}), {devices} devices; {delivered} events delivered, {dropped} dropped",
        all.len(),
        names.join(", ")
    )
}

impl InputService {
    fn refresh_status(&self) {
        self.health.set_status(status_line(&self.seats));
    }

    /// Closes a seat off the async workers (device threads are joined, up to `uinput::POLL`).
    async fn close(&self, id: &str, why: &str) {
        let (seats, owned) = (self.seats.clone(), id.to_string());
        let closed = tokio::task::spawn_blocking(move || seats.close(&owned))
            .await
            .unwrap_or(false);
        if closed {
            tracing::info!(seat = id, "seat closed: {why}");
            self.refresh_status();
        }
    }
}

#[tonic::async_trait]
impl Input for InputService {
    type FeedbackStream = Pin<Box<dyn Stream<Item = Result<SeatFeedback, Status>> + Send>>;

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }

    async fn open_seat(
        &self,
        req: Request<OpenSeatRequest>,
    ) -> Result<Response<OpenSeatReply>, Status> {
        let r = req.into_inner();
        if !self.seats.has_room() {
            return Err(Status::resource_exhausted(OpenError::Full.to_string()));
        }
        let pads: Vec<PadKind> = r
            .pads
            .iter()
            .map(|k| PadKind::try_from(*k).unwrap_or(PadKind::Xbox))
            .collect();
        let num = self.seats.next_num();
        let client = r.client_name.clone();
        let output = (r.output_width, r.output_height);
        let now = punktfunk_clock::monotonic_ns();
        let seat =
            tokio::task::spawn_blocking(move || Seat::open(num, &client, output, &pads, now))
                .await
                .map_err(|e| Status::internal(format!("opening the seat failed: {e}")))?
                .map_err(|e| match e {
                    OpenError::TooManyPads(_) => Status::invalid_argument(e.to_string()),
                    OpenError::Full => Status::resource_exhausted(e.to_string()),
                    OpenError::Device { .. } => Status::failed_precondition(e.to_string()),
                })?;
        let seat = Arc::new(seat);
        self.seats
            .insert(seat.clone())
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        tracing::info!(
            seat = seat.id,
            client = r.client_name,
            "seat opened with {} devices",
            seat.devices().len()
        );
        self.refresh_status();
        let (svc, id) = (self.clone(), seat.id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ATTACH_TIMEOUT).await;
            if svc.seats.get(&id).is_some_and(|s| !s.attached()) {
                svc.close(&id, "no event stream attached").await;
            }
        });
        Ok(Response::new(OpenSeatReply {
            seat_id: seat.id.clone(),
            devices: seat.devices().to_vec(),
        }))
    }

    async fn close_seat(
        &self,
        req: Request<CloseSeatRequest>,
    ) -> Result<Response<CloseSeatReply>, Status> {
        let id = req.into_inner().seat_id;
        if self.seats.get(&id).is_none() {
            return Err(Status::not_found(format!("no seat {id:?}")));
        }
        self.close(&id, "CloseSeat").await;
        Ok(Response::new(CloseSeatReply {}))
    }

    async fn send_events(
        &self,
        req: Request<Streaming<SeatEvents>>,
    ) -> Result<Response<SendEventsReply>, Status> {
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "an empty event stream names no seat",
            ));
        };
        let seat = self
            .seats
            .get(&first.seat_id)
            .ok_or_else(|| Status::not_found(format!("no seat {:?}", first.seat_id)))?;
        if !seat.attach() {
            return Err(Status::already_exists(format!(
                "seat {} is fed by another event stream",
                seat.id
            )));
        }
        let (mut accepted, mut rejected) = seat.send(&first.events);
        let end = loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    let (a, r) = seat.send(&m.events);
                    accepted += a;
                    rejected += r;
                }
                Ok(None) => break "its event stream ended".to_string(),
                Err(e) => break format!("its event stream failed: {}", e.message()),
            }
        };
        self.close(&seat.id, &end).await;
        Ok(Response::new(SendEventsReply { accepted, rejected }))
    }

    async fn feedback(
        &self,
        req: Request<FeedbackRequest>,
    ) -> Result<Response<Self::FeedbackStream>, Status> {
        let id = req.into_inner().seat_id;
        let seat = self
            .seats
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("no seat {id:?}")))?;
        let rx = seat.take_feedback().ok_or_else(|| {
            Status::already_exists(format!("seat {id}'s feedback is streamed already"))
        })?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            stream, Ok,
        ))))
    }

    async fn list_seats(
        &self,
        _: Request<ListSeatsRequest>,
    ) -> Result<Response<ListSeatsReply>, Status> {
        let seats = self.seats.clone();
        let seats = tokio::task::spawn_blocking(move || {
            seats.all().iter().map(|s| s.info()).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("listing seats failed: {e}")))?;
        Ok(Response::new(ListSeatsReply { seats }))
    }
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("input", |ctx: Context<BaseConfig>| async move {
        ctx.health.set_status("idle: no seats");
        let svc = InputService {
            health: ctx.health,
            seats: Arc::new(Seats::default()),
        };
        let ticker = svc.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STATUS_EVERY);
            loop {
                every.tick().await;
                ticker.refresh_status();
            }
        });
        Ok(tonic::service::Routes::new(InputServer::new(svc)))
    })
}
