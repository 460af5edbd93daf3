//! punktfunk-media: the capture + encode worker (docs/architecture.md, "Media").
//!
//! Serves the Media gRPC API. `StartStream` builds a GStreamer pipeline (test source or a
//! PipeWire node) → encoder from the ladder → parser → appsink → AU ring, and returns a ticket
//! for the ring fds on our fd channel. The per-frame path runs on GStreamer's streaming threads;
//! the gRPC handlers only start, stop and steer pipelines (on tokio's blocking pool, since state
//! changes block).
//!
//! A stream lives until StopStream or until its lease runs out ([`punktfunk_media::lease`]): a
//! reaper task checks every stream's ring ticket and ring counters every
//! [`lease::REAP_INTERVAL`] and stops orphans the way StopStream does. StartStream and a
//! Reconfigure to a bigger mode are admitted against the encode budget
//! ([`punktfunk_media::admission`]); Capabilities reports the ladder and the budget.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use punktfunk_common::daemon::{self, Context};
use punktfunk_common::fdchannel::{self, TicketBook, TicketState};
use punktfunk_common::health::Health;
use punktfunk_common::{alloc, paths};
use punktfunk_media::admission::{Budget, Load, Refusal};
use punktfunk_media::config::MediaConfig;
use punktfunk_media::description::{Codec as MCodec, Mode, ModeExt, choose_encoder};
use punktfunk_media::lease::{self, Lease, Orphaned, Ticket};
use punktfunk_media::worker::{
    self, EncodeWorker, Source, StreamConfig, WorkerError, pick_encoder,
};
use punktfunk_media::{AUDIO_RING_FD_NAMES, MAX_BITRATE_KBPS, VIDEO_RING_FD_NAMES};
use punktfunk_proto::common::{Codec, HealthReply, HealthRequest};
use punktfunk_proto::media::media_server::{Media, MediaServer};
use punktfunk_proto::media::*;
use tonic::{Request, Response, Status};

/// Streams one media daemon runs at once, whatever their encoders (hardware encoders have no
/// other limit here; software ones also share the pixel budget).
const MAX_STREAMS: usize = 4;
// Bitrate when the request says 0: the protocol's default.
use punktfunk_proto::limits::DEFAULT_BITRATE_KBPS;

/// One running stream.
struct Stream {
    worker: Arc<EncodeWorker>,
    /// What it takes from the budget (its current mode).
    load: Load,
    /// The id of its ring ticket (to learn whether it was redeemed).
    ticket: Vec<u8>,
    lease: Lease,
}

#[derive(Default)]
struct Streams {
    running: HashMap<String, Stream>,
    /// Admitted starts whose pipelines are being built, by reservation number.
    starting: HashMap<u64, Load>,
}

impl Streams {
    /// The loads of every running and starting stream but `except`.
    fn loads(&self, except: Option<&str>) -> Vec<Load> {
        self.running
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(_, s)| s.load)
            .chain(self.starting.values().copied())
            .collect()
    }
}

struct MediaService {
    health: Arc<Health>,
    tickets: Arc<TicketBook>,
    runtime_dir: Option<PathBuf>,
    streams: Mutex<Streams>,
    next_id: AtomicU64,
    next_reservation: AtomicU64,
    budget: Budget,
    cpus: usize,
    /// The ladder's encoders GStreamer has (looked up once at start).
    encoders: HashSet<String>,
    /// media.toml's `test_pattern`.
    test_pattern: String,
}

/// An admitted start, counted against the budget until it runs or fails (drop releases it).
struct Reservation<'a> {
    svc: &'a MediaService,
    id: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.svc.streams().starting.remove(&self.id);
    }
}

fn refusal_status(r: Refusal) -> Status {
    Status::resource_exhausted(r.to_string())
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "no stream {id:?} on this media daemon (it was stopped, reaped as orphaned, or the \
         daemon restarted)"
    ))
}

fn ticket_of(state: TicketState) -> Ticket {
    match state {
        TicketState::Live => Ticket::Pending,
        TicketState::Redeemed => Ticket::Redeemed,
        TicketState::Expired | TicketState::Unknown => Ticket::Expired,
    }
}

fn worker_status(e: WorkerError) -> Status {
    match e {
        WorkerError::Mode(_) => Status::invalid_argument(e.to_string()),
        WorkerError::NoEncoder { .. } | WorkerError::Init(_) => {
            Status::failed_precondition(e.to_string())
        }
        WorkerError::Stopped => Status::not_found(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

impl MediaService {
    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<EncodeWorker>, Status> {
        self.streams()
            .running
            .get(id)
            .map(|s| s.worker.clone())
            .ok_or_else(|| not_found(id))
    }

    /// Admits a stream of `load` (counting running and starting streams) and holds its place.
    fn reserve(&self, load: Load) -> Result<Reservation<'_>, Status> {
        let mut streams = self.streams();
        self.budget
            .admit(&streams.loads(None), load)
            .map_err(refusal_status)?;
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        streams.starting.insert(id, load);
        Ok(Reservation { svc: self, id })
    }

    /// Turns an admitted start into a running stream.
    fn commit(&self, reservation: Reservation<'_>, stream_id: String, stream: Stream) {
        let mut streams = self.streams();
        streams.starting.remove(&reservation.id);
        streams.running.insert(stream_id, stream);
    }

    /// Admits a mode change of stream `id` to `mode` and charges it at once (so concurrent
    /// starts see it). Returns the worker.
    fn admit_mode(&self, id: &str, mode: Option<Mode>) -> Result<Arc<EncodeWorker>, Status> {
        let mut streams = self.streams();
        let others = streams.loads(Some(id));
        let stream = streams.running.get_mut(id).ok_or_else(|| not_found(id))?;
        if let Some(mode) = mode {
            let load = Load {
                mode,
                ..stream.load
            };
            self.budget.fits(&others, load).map_err(refusal_status)?;
            stream.load = load;
        }
        Ok(stream.worker.clone())
    }

    /// Removes stream `id` and stops it (the consumer sees its rings closed); then gives the
    /// freed memory back to the kernel.
    async fn stop(&self, id: &str) -> Result<(), Status> {
        let stream = self
            .streams()
            .running
            .remove(id)
            .ok_or_else(|| not_found(id))?;
        self.update_status();
        let worker = stream.worker;
        tokio::task::spawn_blocking(move || {
            worker.stop();
            drop(worker);
            alloc::trim();
        })
        .await
        .map_err(|e| Status::internal(format!("stop task failed: {e}")))
    }

    /// One lease check of every stream (see [`lease`] for the call order); returns the orphans.
    fn check_leases(&self, now: Instant) -> Vec<(String, Orphaned)> {
        let mut streams = self.streams();
        let mut orphans = Vec::new();
        for (id, s) in streams.running.iter_mut() {
            s.lease
                .handle_ticket(now, ticket_of(self.tickets.state(&s.ticket)));
            s.lease.handle_pipeline(now, s.worker.is_alive());
            s.lease.handle_rings(now, s.worker.ring_progress());
            if let Some(why) = s.lease.poll_orphaned(now) {
                orphans.push((id.clone(), why));
            }
        }
        orphans
    }

    /// Stops orphaned streams every [`lease::REAP_INTERVAL`], for the daemon's life.
    async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(lease::REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (id, why) in self.check_leases(Instant::now()) {
                tracing::warn!(
                    stream_id = id,
                    reason = %why,
                    "stopping orphaned stream {id}: {why}"
                );
                if let Err(e) = self.stop(&id).await {
                    tracing::debug!(stream_id = id, error = %e, "orphan already gone");
                }
            }
        }
    }

    /// What the ladder does with `codec`.
    fn capability(&self, codec: Codec) -> CodecCapability {
        let kind = MCodec::try_from(codec)
            .ok()
            .and_then(|c| choose_encoder(c, &self.encoders));
        CodecCapability {
            codec: codec as i32,
            available: kind.is_some(),
            hardware: kind.is_some_and(|k| k.is_hardware()),
            encoder: kind.map(|k| k.element().to_string()).unwrap_or_default(),
        }
    }

    /// A stream whose pipeline is still healthy; ABORTED (restart it) if GStreamer failed it.
    fn get_healthy(&self, id: &str) -> Result<Arc<EncodeWorker>, Status> {
        let w = self.get(id)?;
        if let Some(e) = w.failure() {
            self.update_status();
            return Err(Status::aborted(format!(
                "stream {id:?} failed: {e}; stop it and start a new one"
            )));
        }
        Ok(w)
    }

    fn update_status(&self) {
        // The workers are copied out first: a worker's status line takes its own lock, which a
        // mode change holds for as long as it rebuilds the pipeline.
        let workers: Vec<Arc<EncodeWorker>> = self
            .streams()
            .running
            .values()
            .map(|s| s.worker.clone())
            .collect();
        if workers.is_empty() {
            self.health.set_status("idle: no streams");
        } else {
            let mut lines: Vec<String> = workers.iter().map(|w| w.status_line()).collect();
            lines.sort();
            self.health.set_status(lines.join("; "));
        }
    }

    /// Redeems the PipeWire remote fd from the session daemon's fd channel.
    async fn pipewire_fd(&self, req: &StartStreamRequest) -> Result<Option<OwnedFd>, Status> {
        let Some(ticket) = req.pipewire_remote.clone().filter(|t| !t.id.is_empty()) else {
            // No ticket: the user's default PipeWire daemon.
            return Ok(None);
        };
        let dir = self.runtime_dir.clone().ok_or_else(|| {
            Status::failed_precondition("XDG_RUNTIME_DIR is not set: cannot reach session.fds")
        })?;
        let path = paths::fd_socket(&dir, "session");
        let fds = tokio::task::spawn_blocking(move || fdchannel::redeem(&path, &ticket))
            .await
            .map_err(|e| Status::internal(format!("redeem task failed: {e}")))?
            .map_err(|e| {
                Status::failed_precondition(format!("cannot redeem the PipeWire remote: {e}"))
            })?;
        fds.into_iter()
            .next()
            .map(Some)
            .ok_or_else(|| Status::failed_precondition("the PipeWire remote ticket carried no fd"))
    }
}

#[tonic::async_trait]
impl Media for MediaService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }

    async fn start_stream(
        &self,
        req: Request<StartStreamRequest>,
    ) -> Result<Response<StartStreamReply>, Status> {
        let req = req.into_inner();
        let mode = req
            .mode
            .ok_or_else(|| Status::invalid_argument("mode is required (width, height, refresh)"))?;
        mode.validate()
            .map_err(|e| Status::invalid_argument(format!("invalid mode: {e}")))?;
        let codec = match Codec::try_from(req.codec) {
            Ok(Codec::Unspecified) => MCodec::H264,
            // Only AV1 has no rung.
            Ok(c) => MCodec::try_from(c).map_err(|_| {
                Status::invalid_argument("AV1 is not in the encoder ladder (H.264 and HEVC are)")
            })?,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown codec {}",
                    req.codec
                )));
            }
        };
        let bitrate_kbps = match req.bitrate_kbps {
            0 => DEFAULT_BITRATE_KBPS,
            b if b > MAX_BITRATE_KBPS => {
                return Err(Status::invalid_argument(format!(
                    "bitrate {b} kbit/s is above {MAX_BITRATE_KBPS}"
                )));
            }
            b => b,
        };
        let encoder = pick_encoder(codec, &self.encoders).map_err(worker_status)?;
        let reservation = self.reserve(Load::new(mode, encoder))?;
        let source = match SourceKind::try_from(req.source) {
            Ok(SourceKind::Test) => Source::Test {
                pattern: self.test_pattern.clone(),
            },
            Ok(SourceKind::Pipewire) => Source::PipeWire {
                fd: self.pipewire_fd(&req).await?,
                node_id: req.pipewire_node_id,
                dmabuf: true,
                audio_sink: (!req.audio_sink.is_empty()).then(|| req.audio_sink.clone()),
            },
            Ok(SourceKind::Synthetic) => {
                return Err(Status::invalid_argument(
                    "the synthetic source is transport's data-plane generator, not a media pipeline",
                ));
            }
            Ok(SourceKind::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "source must be SOURCE_KIND_TEST or SOURCE_KIND_PIPEWIRE",
                ));
            }
        };
        let config = StreamConfig {
            source,
            mode,
            codec,
            bitrate_kbps,
            encoder: Some(encoder),
        };
        let audio = req.audio;
        let (worker, fds) = tokio::task::spawn_blocking(move || EncodeWorker::start(config, audio))
            .await
            .map_err(|e| Status::internal(format!("start task failed: {e}")))?
            .map_err(worker_status)?;
        let mut owned = vec![fds.video.memfd, fds.video.doorbell];
        let mut names: Vec<&str> = VIDEO_RING_FD_NAMES.to_vec();
        if let Some(a) = fds.audio {
            owned.extend([a.memfd, a.doorbell]);
            names.extend(AUDIO_RING_FD_NAMES);
        }
        let ticket = self
            .tickets
            .issue(owned, &names)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream_id = format!("media-{}-{n}", std::process::id());
        let stream = Stream {
            worker: Arc::new(worker),
            load: Load::new(mode, encoder),
            ticket: ticket.id.clone(),
            lease: Lease::new(Instant::now(), lease::LEASE),
        };
        let encoder = encoder.element();
        tracing::info!(stream_id, encoder, mode = %mode.label(), bitrate_kbps, audio, "stream started");
        self.commit(reservation, stream_id.clone(), stream);
        self.update_status();
        Ok(Response::new(StartStreamReply {
            stream_id,
            rings: Some(ticket),
            encoder: encoder.to_string(),
        }))
    }

    async fn stop_stream(
        &self,
        req: Request<StopStreamRequest>,
    ) -> Result<Response<StopStreamReply>, Status> {
        let id = req.into_inner().stream_id;
        self.stop(&id).await?;
        tracing::info!(stream_id = id, "stream stopped");
        Ok(Response::new(StopStreamReply {}))
    }

    async fn reconfigure(
        &self,
        req: Request<ReconfigureRequest>,
    ) -> Result<Response<ReconfigureReply>, Status> {
        let req = req.into_inner();
        let bitrate = match req.bitrate_kbps {
            0 => None,
            b if b > MAX_BITRATE_KBPS => {
                return Err(Status::invalid_argument(format!(
                    "bitrate {b} kbit/s is above {MAX_BITRATE_KBPS}"
                )));
            }
            b => Some(b),
        };
        // An absent or all-zero mode means "keep the mode".
        let mode = req
            .mode
            .as_ref()
            .filter(|m| m.width != 0 || m.height != 0 || m.refresh_mhz != 0)
            .copied();
        if let Some(m) = &mode {
            m.validate()
                .map_err(|e| Status::invalid_argument(format!("invalid mode: {e}")))?;
        }
        let worker = self.admit_mode(&req.stream_id, mode)?;
        let restarted = tokio::task::spawn_blocking(move || worker.reconfigure(bitrate, mode))
            .await
            .map_err(|e| Status::internal(format!("reconfigure task failed: {e}")))?
            .map_err(worker_status)?;
        self.update_status();
        Ok(Response::new(ReconfigureReply { restarted }))
    }

    async fn request_keyframe(
        &self,
        req: Request<RequestKeyframeRequest>,
    ) -> Result<Response<RequestKeyframeReply>, Status> {
        let worker = self.get_healthy(&req.into_inner().stream_id)?;
        // Off the async workers: a concurrent restart holds the pipeline lock while it builds.
        tokio::task::spawn_blocking(move || worker.request_keyframe())
            .await
            .map_err(|e| Status::internal(format!("keyframe task failed: {e}")))?
            .map_err(worker_status)?;
        Ok(Response::new(RequestKeyframeReply {}))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let worker = self.get_healthy(&req.into_inner().stream_id)?;
        let s = tokio::task::spawn_blocking(move || worker.stats())
            .await
            .map_err(|e| Status::internal(format!("stats task failed: {e}")))?;
        Ok(Response::new(StatsReply {
            fps_in: s.fps_in,
            fps_out: s.fps_out,
            encode_p50_us: s.encode_p50_us,
            encode_p99_us: s.encode_p99_us,
            dropped_frames: s.dropped_frames,
            ring_dropped: s.ring_dropped,
        }))
    }

    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        let loads = self.streams().loads(None);
        Ok(Response::new(CapabilitiesReply {
            codecs: [Codec::H264, Codec::Hevc, Codec::Av1]
                .into_iter()
                .map(|c| self.capability(c))
                .collect(),
            max_streams: u32::try_from(self.budget.max_streams).unwrap_or(u32::MAX),
            streams: u32::try_from(loads.len()).unwrap_or(u32::MAX),
            software_budget_pixels_per_second: self
                .budget
                .software_pixels_per_second
                .unwrap_or(u64::MAX),
            software_in_use_pixels_per_second: Budget::software_in_use(&loads),
            cpus: u32::try_from(self.cpus).unwrap_or(u32::MAX),
            max_bitrate_kbps: MAX_BITRATE_KBPS,
            max_mode: Some(punktfunk_media::description::MAX_MODE),
        }))
    }
}

fn main() -> ExitCode {
    // Before any thread exists (see punktfunk_common::alloc).
    let arenas_capped = alloc::limit_arenas();
    daemon::run::<MediaConfig, _, _>("media", move |ctx: Context<MediaConfig>| async move {
        // GStreamer must load before we say READY: a broken install is a start failure.
        worker::init()?;
        let encoders = worker::available_encoders()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let budget = Budget::new(MAX_STREAMS, ctx.config.software_mpixels_per_cpu, cpus);
        tracing::info!(
            ?encoders,
            cpus,
            software_budget_pixels_per_second = ?budget.software_pixels_per_second,
            max_streams = MAX_STREAMS,
            arenas_capped,
            max_arenas = alloc::MAX_ARENAS,
            "encoders available"
        );
        ctx.health.set_status("idle: no streams");
        let svc = Arc::new(MediaService {
            health: ctx.health,
            tickets: ctx.tickets,
            runtime_dir: ctx.runtime_dir,
            streams: Mutex::new(Streams::default()),
            next_id: AtomicU64::new(1),
            next_reservation: AtomicU64::new(1),
            budget,
            cpus,
            encoders,
            test_pattern: ctx.config.test_pattern.clone(),
        });
        tokio::spawn(svc.clone().reap());
        Ok(tonic::service::Routes::new(MediaServer::from_arc(svc)))
    })
}
