//! punktfunk-media: the capture + encode worker (ARCHITECTURE.md §4).
//!
//! Serves the Media gRPC API. `StartStream` builds a GStreamer pipeline (test source or a
//! PipeWire node) → encoder from the ladder → parser → appsink → AU ring, and returns a ticket
//! for the ring fds on our fd channel. The per-frame path runs on GStreamer's streaming threads;
//! the gRPC handlers only start, stop and steer pipelines (on tokio's blocking pool, since state
//! changes block).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::fdchannel::{self, TicketBook};
use punktfunk_common::health::Health;
use punktfunk_common::paths;
use punktfunk_media::description::{Codec as MCodec, Mode as MMode};
use punktfunk_media::worker::{self, EncodeWorker, Source, StreamConfig, WorkerError};
use punktfunk_media::{AUDIO_RING_FD_NAMES, VIDEO_RING_FD_NAMES};
use punktfunk_proto::common::{Codec, HealthReply, HealthRequest};
use punktfunk_proto::media::media_server::{Media, MediaServer};
use punktfunk_proto::media::*;
use tonic::{Request, Response, Status};

/// Streams one media daemon runs at once.
const MAX_STREAMS: usize = 4;
/// Bitrate when the request says 0.
const DEFAULT_BITRATE_KBPS: u32 = 20_000;
const MAX_BITRATE_KBPS: u32 = 500_000;

struct MediaService {
    health: Arc<Health>,
    tickets: Arc<TicketBook>,
    runtime_dir: Option<PathBuf>,
    streams: Mutex<HashMap<String, Arc<EncodeWorker>>>,
    next_id: AtomicU64,
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

fn mode_of(m: &punktfunk_proto::common::Mode) -> MMode {
    MMode {
        width: m.width,
        height: m.height,
        refresh_mhz: m.refresh_mhz,
    }
}

impl MediaService {
    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<EncodeWorker>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<EncodeWorker>, Status> {
        self.streams().get(id).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "no stream {id:?} on this media daemon (it was stopped, or the daemon restarted)"
            ))
        })
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
        let streams = self.streams();
        if streams.is_empty() {
            self.health.set_status("idle: no streams");
        } else {
            let mut lines: Vec<String> = streams.values().map(|w| w.status_line()).collect();
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
        let mode =
            req.mode.as_ref().map(mode_of).ok_or_else(|| {
                Status::invalid_argument("mode is required (width, height, refresh)")
            })?;
        mode.validate()
            .map_err(|e| Status::invalid_argument(format!("invalid mode: {e}")))?;
        let codec = match Codec::try_from(req.codec) {
            Ok(Codec::Unspecified) | Ok(Codec::H264) => MCodec::H264,
            Ok(Codec::Hevc) => MCodec::Hevc,
            Ok(Codec::Av1) => {
                return Err(Status::invalid_argument(
                    "AV1 is not in the encoder ladder (H.264 and HEVC are)",
                ));
            }
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
        if self.streams().len() >= MAX_STREAMS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_STREAMS} streams are running; stop one first"
            )));
        }
        let source = match SourceKind::try_from(req.source) {
            Ok(SourceKind::Test) => Source::Test {
                pattern: "ball".into(),
            },
            Ok(SourceKind::Pipewire) => Source::PipeWire {
                fd: self.pipewire_fd(&req).await?,
                node_id: req.pipewire_node_id,
                dmabuf: true,
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
            encoder: None,
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
        let encoder = worker.encoder().element().to_string();
        tracing::info!(stream_id, encoder, mode = %mode.label(), bitrate_kbps, audio, "stream started");
        self.streams().insert(stream_id.clone(), Arc::new(worker));
        self.update_status();
        Ok(Response::new(StartStreamReply {
            stream_id,
            rings: Some(ticket),
            encoder,
        }))
    }

    async fn stop_stream(
        &self,
        req: Request<StopStreamRequest>,
    ) -> Result<Response<StopStreamReply>, Status> {
        let id = req.into_inner().stream_id;
        let worker = self
            .streams()
            .remove(&id)
            .ok_or_else(|| Status::not_found(format!("no stream {id:?} on this media daemon")))?;
        self.update_status();
        tokio::task::spawn_blocking(move || worker.stop())
            .await
            .map_err(|e| Status::internal(format!("stop task failed: {e}")))?;
        tracing::info!(stream_id = id, "stream stopped");
        Ok(Response::new(StopStreamReply {}))
    }

    async fn reconfigure(
        &self,
        req: Request<ReconfigureRequest>,
    ) -> Result<Response<ReconfigureReply>, Status> {
        let req = req.into_inner();
        let worker = self.get(&req.stream_id)?;
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
            .map(mode_of);
        if let Some(m) = &mode {
            m.validate()
                .map_err(|e| Status::invalid_argument(format!("invalid mode: {e}")))?;
        }
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
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("media", |ctx: Context<BaseConfig>| async move {
        // GStreamer must load before we say READY: a broken install is a start failure.
        worker::init()?;
        let encoders = worker::available_encoders()?;
        tracing::info!(?encoders, "encoders available");
        ctx.health.set_status("idle: no streams");
        let svc = MediaServer::new(MediaService {
            health: ctx.health,
            tickets: ctx.tickets,
            runtime_dir: ctx.runtime_dir,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        Ok(tonic::service::Routes::new(svc))
    })
}
