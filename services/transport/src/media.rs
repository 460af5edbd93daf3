//! One client session's link to punktfunk-media: start a capture+encode stream at the
//! negotiated mode/codec/bitrate, pump its AU rings into the session's senders, steer it
//! (keyframes, bitrate, mode), stop it when the session ends — and keep the client's session
//! alive when media dies: the supervisor notices the silence, waits for media to be back
//! (systemd restarts it), starts a new stream and marks the next frame as a discontinuity.
//!
//! The async part is control only (gRPC calls, a 100 ms liveness tick); frames move on the
//! pump threads ([`crate::pump`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use punktfunk_common::{fdchannel, paths, uds};
use punktfunk_dataplane::Sender;
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::media::media_client::MediaClient;
use punktfunk_proto::media::{
    AUDIO_RING_FD_NAMES, CapabilitiesRequest, CodecCapability, ReconfigureRequest,
    RequestKeyframeRequest, SourceKind, StartStreamRequest, StatsRequest, StopStreamRequest,
    VIDEO_RING_FD_NAMES,
};
use punktfunk_ring::{Consumer, RingFds};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::pump::{Pump, PumpConfig, PumpEvent, PumpShared};
use crate::stream::now_ns;
use crate::supervisor::{self, CallOutcome};

/// How long to wait for media's socket and for a unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// After a stream was given up, a restart refused for want of capacity is retried this long:
/// the abandoned stream may hold its encoder until media stops it or its lease (3 s) reaps it.
const CAPACITY_GRACE: Duration = Duration::from_secs(6);
/// StartStream builds and starts a GStreamer pipeline: allow more.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the video pump waits for room in a full send queue before dropping a frame:
/// a quarter of a 60 Hz frame, so a burst of AUs after an encoder stall gets through while a
/// send path that is really behind still drops (and asks for an IDR) without delaying the
/// frames behind it much.
const VIDEO_SEND_BUDGET: Duration = Duration::from_millis(4);
/// Audio frames are 5 ms apart.
const AUDIO_SEND_BUDGET: Duration = Duration::from_millis(2);
/// Audio older than this when the pump reads it is skipped (stale: see PumpConfig::max_age).
const AUDIO_MAX_AGE: Duration = Duration::from_millis(60);

/// What to ask media for.
#[derive(Clone, Debug)]
pub struct MediaPlan {
    pub source: SourceKind,
    pub mode: Mode,
    pub codec: Codec,
    pub bitrate_kbps: u32,
    pub audio: bool,
    /// The compositor output whose screencast media captures (`source` is then PipeWire):
    /// every stream, a restarted one too, gets a fresh ticket for it. The supervisor owns it
    /// from the start: a new mode moves the stream to a new output, and stopping the
    /// session stops the output of the moment, after media.
    pub output: Option<crate::output::Output>,
}

/// The session's data-plane outputs the pumps feed.
pub struct Outputs {
    pub video: Arc<Sender>,
    pub video_state: Arc<PumpShared>,
    pub audio: Option<(Arc<Sender>, Arc<PumpShared>)>,
}

/// Steering from the session task.
#[derive(Debug)]
pub enum Command {
    Keyframe,
    Reconfigure {
        bitrate_kbps: u32,
        mode: Option<Mode>,
    },
}

/// What the supervisor tells the session.
#[derive(Debug)]
pub enum MediaEvent {
    /// Media refused to restart the stream: final, the session should end and say why.
    Refused(MediaError),
    /// Media refused a reconfiguration; the stream goes on at this mode and bitrate.
    Kept {
        mode: Mode,
        bitrate_kbps: u32,
        reason: String,
    },
}

/// A media stream under supervision; dropping it without [`MediaSession::stop`] aborts the
/// supervisor (the stream then ends when media notices nothing reads it — prefer `stop`).
pub struct MediaSession {
    commands: mpsc::UnboundedSender<Command>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// What the supervisor tells the session.
    events: mpsc::UnboundedReceiver<MediaEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(
        "the media worker is not reachable at {path}: {why} (check `systemctl --user status punktfunk-media`)"
    )]
    Unreachable { path: PathBuf, why: String },
    #[error(
        "the media worker did not answer {call}: timed out after {} s (check `systemctl --user status punktfunk-media`)",
        after.as_secs()
    )]
    TimedOut { call: &'static str, after: Duration },
    /// Media answered, and said no: asking again the same way will not help.
    #[error("the media worker refused the stream: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("cannot take over the media worker's AU rings: {0}")]
    Rings(String),
    /// The compositor output's screencast could not be handed over.
    #[error("{0}")]
    Output(String),
}

impl MediaError {
    /// Sorts a failed call: an answer that says no is a refusal; anything else means media
    /// is not (or not yet) there.
    fn from_status(runtime_dir: &Path, status: tonic::Status) -> Self {
        if is_refusal(status.code()) {
            MediaError::Refused {
                code: status.code(),
                message: status.message().to_string(),
            }
        } else {
            MediaError::Unreachable {
                path: paths::grpc_socket(runtime_dir, "media"),
                why: status.message().to_string(),
            }
        }
    }

    /// The `Error.code` a client is told.
    pub fn client_code(&self) -> &'static str {
        use punktfunk_control::error::{
            CODE_CAPACITY, CODE_INTERNAL, CODE_MEDIA_REFUSED, CODE_MEDIA_UNAVAILABLE,
        };
        match self {
            MediaError::Refused {
                code: tonic::Code::ResourceExhausted,
                ..
            } => CODE_CAPACITY,
            MediaError::Refused { .. } => CODE_MEDIA_REFUSED,
            MediaError::Unreachable { .. } | MediaError::TimedOut { .. } => CODE_MEDIA_UNAVAILABLE,
            MediaError::Rings(_) => CODE_INTERNAL,
            MediaError::Output(_) => punktfunk_control::error::CODE_OUTPUT_FAILED,
        }
    }
}

/// gRPC codes with which media refuses a request on its merits (mode, codec, bitrate, budget).
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
            | tonic::Code::ResourceExhausted
            | tonic::Code::PermissionDenied
    )
}

/// A started media stream: its id and the pumps reading its rings.
struct Running {
    client: MediaClient<Channel>,
    stream_id: String,
    pumps: Vec<Pump>,
    started_ns: u64,
}

impl MediaSession {
    /// Starts the first stream (errors are the client's to see) and the supervisor.
    pub async fn start(
        runtime_dir: PathBuf,
        plan: MediaPlan,
        outputs: Outputs,
    ) -> Result<Self, MediaError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let running = start_stream(&runtime_dir, &plan, &outputs, &events_tx, false).await?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (session_tx, session_rx) = mpsc::unbounded_channel();
        let shell = Shell {
            runtime_dir,
            plan,
            outputs,
            events_tx,
            session: session_tx,
            running: Some(running),
            last_error: None,
            lost_at: None,
        };
        let task = tokio::spawn(shell.run(commands_rx, events_rx, stop_rx));
        Ok(Self {
            commands,
            stop: Some(stop_tx),
            task: Some(task),
            events: session_rx,
        })
    }

    /// The supervisor's next word for the session; pending forever when it has none.
    pub async fn event(&mut self) -> MediaEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Stops the media stream and the pumps; returns when both are gone.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The async shell around [`supervisor::Supervisor`]: it turns channel messages, pump events
/// and timeouts into `handle_*` calls and carries out the actions (gRPC calls, pumps).
struct Shell {
    runtime_dir: PathBuf,
    plan: MediaPlan,
    outputs: Outputs,
    events_tx: mpsc::UnboundedSender<PumpEvent>,
    session: mpsc::UnboundedSender<MediaEvent>,
    running: Option<Running>,
    /// Why the last restart failed (a refusal is handed to the session as it came).
    last_error: Option<MediaError>,
    /// When the running stream was last given up.
    lost_at: Option<Instant>,
}

/// What the shell waits for between actions.
enum Wake {
    Stop,
    Command(Command),
    Event(PumpEvent),
    Timeout,
}

impl Shell {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<PumpEvent>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let plan = supervisor::Plan {
            mode: self.plan.mode,
            bitrate_kbps: self.plan.bitrate_kbps,
        };
        let mut sup = supervisor::Supervisor::new(Instant::now(), plan);
        loop {
            while let Some(action) = sup.poll_action() {
                if self.act(&mut sup, action, &mut stop).await.is_none() {
                    return self.shutdown().await;
                }
            }
            let deadline = sup.poll_timeout();
            let wake = tokio::select! {
                _ = &mut stop => Wake::Stop,
                Some(c) = commands.recv() => Wake::Command(c),
                Some(ev) = events.recv() => Wake::Event(ev),
                _ = sleep_until(deadline) => Wake::Timeout,
            };
            let now = Instant::now();
            self.feed_records(&mut sup, now);
            match wake {
                Wake::Stop => return self.shutdown().await,
                Wake::Command(Command::Keyframe) | Wake::Event(PumpEvent::NeedKeyframe) => {
                    sup.handle_keyframe_wanted(now)
                }
                Wake::Command(Command::Reconfigure { bitrate_kbps, mode }) => {
                    sup.handle_reconfigure(now, bitrate_kbps, mode)
                }
                Wake::Event(PumpEvent::Ended) => sup.handle_ring_closed(now),
                Wake::Timeout => sup.handle_timeout(now),
            }
        }
    }

    /// Tells the supervisor when the newest record arrived (the pumps stamp it).
    fn feed_records(&self, sup: &mut supervisor::Supervisor, now: Instant) {
        let Some(r) = &self.running else { return };
        let last = self
            .outputs
            .video_state
            .last_record_ns
            .load(Ordering::Relaxed)
            .max(r.started_ns);
        let age = Duration::from_nanos(now_ns().saturating_sub(last));
        if let Some(at) = now.checked_sub(age) {
            sup.handle_record(at);
        }
    }

    /// Carries out one action; None when `stop` fired meanwhile.
    async fn act(
        &mut self,
        sup: &mut supervisor::Supervisor,
        action: supervisor::Action,
        stop: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> Option<()> {
        use supervisor::Action;
        match action {
            Action::Probe => {
                let alive = or_stop(stop, self.alive()).await?;
                sup.handle_probe_result(Instant::now(), alive);
            }
            Action::RequestKeyframe => {
                let outcome = or_stop(stop, self.request_keyframe()).await?;
                sup.handle_call_result(Instant::now(), outcome);
            }
            Action::Reconfigure(plan) => {
                let outcome = or_stop(stop, self.reconfigure(&plan)).await?;
                sup.handle_reconfigure_result(Instant::now(), outcome);
            }
            Action::Abandon => self.abandon().await,
            Action::Restart(plan) => {
                self.plan.mode = plan.mode;
                self.plan.bitrate_kbps = plan.bitrate_kbps;
                let outcome = or_stop(stop, self.restart(sup.restarts())).await?;
                sup.handle_start_result(Instant::now(), outcome);
            }
            Action::Refused(reason) => {
                tracing::warn!("media refused to restart the stream: {reason}");
                let e = self.last_error.take().unwrap_or(MediaError::Refused {
                    code: tonic::Code::FailedPrecondition,
                    message: reason,
                });
                let _ = self.session.send(MediaEvent::Refused(e));
            }
            Action::Kept(plan, reason) => {
                let _ = self.session.send(MediaEvent::Kept {
                    mode: plan.mode,
                    bitrate_kbps: plan.bitrate_kbps,
                    reason,
                });
            }
        }
        Some(())
    }

    /// Stops the pumps and the media stream, then the output it captured; the session is
    /// over.
    async fn shutdown(&mut self) {
        self.stop_running().await;
        if let Some(output) = self.plan.output.take() {
            output.stop().await;
        }
    }

    /// Stops the pumps and the media stream, waiting for media's answer.
    async fn stop_running(&mut self) {
        if let Some(r) = self.running.take() {
            stop_pumps(r.pumps).await;
            stop_remote(r.client, r.stream_id).await;
        }
    }

    /// Gives the running stream up: pumps stop now, media is told without waiting (a stalled
    /// media answers late or never, and then its lease on the ring reaps the stream).
    async fn abandon(&mut self) {
        if let Some(r) = self.running.take() {
            tracing::warn!(
                stream_id = r.stream_id,
                "the media worker stopped delivering; keeping the client connected and waiting for media to come back"
            );
            stop_pumps(r.pumps).await;
            tokio::spawn(stop_remote(r.client, r.stream_id));
            self.lost_at = Some(Instant::now());
        }
    }

    /// Whether media still knows and runs our stream.
    async fn alive(&mut self) -> bool {
        let Some(r) = self.running.as_mut() else {
            return false;
        };
        let req = StatsRequest {
            stream_id: r.stream_id.clone(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, r.client.stats(req)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e.message(), "media Stats failed");
                false
            }
            Err(_) => false,
        }
    }

    /// Asks for an IDR.
    async fn request_keyframe(&mut self) -> CallOutcome {
        let Some(r) = self.running.as_mut() else {
            return CallOutcome::Gone;
        };
        let req = RequestKeyframeRequest {
            stream_id: r.stream_id.clone(),
        };
        outcome(tokio::time::timeout(CALL_TIMEOUT, r.client.request_keyframe(req)).await)
    }

    /// Asks media for a new bitrate/mode of the running stream.
    async fn reconfigure(&mut self, plan: &supervisor::Plan) -> CallOutcome {
        if self
            .plan
            .output
            .as_ref()
            .is_some_and(|o| o.mode != plan.mode)
        {
            return self.reconfigure_output(plan).await;
        }
        let Some(r) = self.running.as_mut() else {
            return CallOutcome::Gone;
        };
        let req = ReconfigureRequest {
            stream_id: r.stream_id.clone(),
            bitrate_kbps: plan.bitrate_kbps,
            mode: Some(plan.mode),
        };
        let result = outcome(tokio::time::timeout(START_TIMEOUT, r.client.reconfigure(req)).await);
        match &result {
            CallOutcome::Done => {
                tracing::info!(bitrate_kbps = plan.bitrate_kbps, "media reconfigured")
            }
            CallOutcome::Refused(why) => tracing::warn!(
                bitrate_kbps = plan.bitrate_kbps,
                "media refused the reconfiguration; the stream goes on as it was: {why}"
            ),
            CallOutcome::Gone => tracing::warn!("media Reconfigure failed"),
        }
        result
    }

    /// A new mode of a compositor source: a new output at that mode, and the stream moved onto
    /// its screencast (a new stream: its first frames are flagged discontinuous); the old
    /// output stops once nothing captures it. An output that does not start is a refusal (the
    /// stream goes on as it was); a stream that does not start is restarted by the supervisor.
    async fn reconfigure_output(&mut self, plan: &supervisor::Plan) -> CallOutcome {
        let Some(old) = self.plan.output.clone() else {
            return CallOutcome::Gone;
        };
        if old.resizable {
            return self.resize_output(old, plan).await;
        }
        let new = match old.like_at(plan.mode).await {
            Ok(o) => o,
            Err(r) => return CallOutcome::Refused(r.message),
        };
        tracing::info!(old = %old.id, new = %new.id, "the client's new mode has a new output; moving the stream onto it");
        self.stop_running().await;
        tokio::spawn(old.stop());
        self.plan.output = Some(new);
        self.plan.mode = plan.mode;
        self.plan.bitrate_kbps = plan.bitrate_kbps;
        match self.start_flagged().await {
            Ok(r) => {
                tracing::info!(stream_id = r.stream_id, "media streams the new output");
                self.running = Some(r);
                CallOutcome::Done
            }
            Err(e) => {
                tracing::warn!("media did not start on the new output: {e}");
                self.last_error = Some(e);
                CallOutcome::Gone
            }
        }
    }

    /// A new mode of an output that changes its mode in place (sway): the stream stops (its
    /// node goes with the old size), the output takes the mode with its app running on, and a
    /// new stream starts on its new screencast. An output that could not change gets replaced
    /// by a new one at the mode, as for a backend that cannot resize.
    async fn resize_output(
        &mut self,
        output: crate::output::Output,
        plan: &supervisor::Plan,
    ) -> CallOutcome {
        self.stop_running().await;
        self.plan.mode = plan.mode;
        self.plan.bitrate_kbps = plan.bitrate_kbps;
        match output.resize(plan.mode).await {
            Ok(resized) => {
                tracing::info!(output = %resized.id, "the output took the client's new mode in place");
                self.plan.output = Some(resized);
            }
            Err(r) => tracing::warn!(output = %output.id, "{}; starting a new output", r.message),
        }
        match self.start_at_plan_mode().await {
            Ok(r) => {
                tracing::info!(
                    stream_id = r.stream_id,
                    "media streams the output at its new mode"
                );
                self.running = Some(r);
                CallOutcome::Done
            }
            Err(e) => {
                if let Some(e) = e {
                    tracing::warn!("media did not start at the new mode: {e}");
                    self.last_error = Some(e);
                }
                CallOutcome::Gone
            }
        }
    }

    /// A new stream on the plan, its first frames flagged discontinuous.
    async fn start_flagged(&self) -> Result<Running, MediaError> {
        start_stream(
            &self.runtime_dir,
            &self.plan,
            &self.outputs,
            &self.events_tx,
            true,
        )
        .await
    }

    /// A restart whose plan has another mode than its output (a reconfiguration that waited
    /// for media to come back) first gets an output at the plan's mode.
    async fn output_at_plan_mode(&mut self) -> Result<(), crate::session::Refusal> {
        let Some(old) = self
            .plan
            .output
            .as_ref()
            .filter(|o| o.mode != self.plan.mode)
        else {
            return Ok(());
        };
        let new = old.like_at(self.plan.mode).await?;
        if let Some(old) = self.plan.output.replace(new) {
            tokio::spawn(old.stop());
        }
        Ok(())
    }

    /// One attempt to start a new stream after media was lost; its first frames are flagged
    /// discontinuous.
    async fn restart(&mut self, restarts: u64) -> CallOutcome {
        match self.start_at_plan_mode().await {
            Ok(r) => {
                tracing::info!(
                    stream_id = r.stream_id,
                    restarts = restarts + 1,
                    "media stream restarted; the client sees a discontinuity"
                );
                self.running = Some(r);
                CallOutcome::Done
            }
            Err(None) => CallOutcome::Gone,
            // The stream we gave up may still hold its encoder until media stops or reaps it
            // (a stalled media answers StopStream late): no capacity is not final yet.
            Err(Some(MediaError::Refused {
                code: tonic::Code::ResourceExhausted,
                ..
            })) if self.lost_at.is_some_and(|t| t.elapsed() < CAPACITY_GRACE) => CallOutcome::Gone,
            Err(Some(e @ MediaError::Refused { .. })) => {
                let why = e.to_string();
                self.last_error = Some(e);
                CallOutcome::Refused(why)
            }
            Err(Some(e)) => {
                tracing::debug!("media not back yet: {e}");
                CallOutcome::Gone
            }
        }
    }

    /// Brings the output to the plan's mode (a new output when it is not) and starts a stream
    /// on it, its first frames flagged discontinuous. `Err(None)`: no output at the mode yet.
    async fn start_at_plan_mode(&mut self) -> Result<Running, Option<MediaError>> {
        if let Err(r) = self.output_at_plan_mode().await {
            tracing::warn!("no output at the session's new mode yet: {}", r.message);
            return Err(None);
        }
        self.start_flagged().await.map_err(Some)
    }
}

/// Sorts the result of a steering call.
fn outcome<T>(r: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>) -> CallOutcome {
    match r {
        Ok(Ok(_)) => CallOutcome::Done,
        Ok(Err(e)) if is_refusal(e.code()) => CallOutcome::Refused(e.message().to_string()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e.message(), "media call failed");
            CallOutcome::Gone
        }
        Err(_) => CallOutcome::Gone,
    }
}

/// Runs `f` unless `stop` fires first (None then).
async fn or_stop<F: std::future::Future>(
    stop: &mut tokio::sync::oneshot::Receiver<()>,
    f: F,
) -> Option<F::Output> {
    tokio::select! {
        _ = stop => None,
        out = f => Some(out),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Asks media to stop `stream_id` (a media that restarted no longer knows it: fine).
async fn stop_remote(mut client: MediaClient<Channel>, stream_id: String) {
    let req = StopStreamRequest {
        stream_id: stream_id.clone(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.stop_stream(req)).await {
        Ok(Ok(_)) => tracing::info!(stream_id, "media stream stopped"),
        Ok(Err(e)) => {
            tracing::debug!(stream_id, error = %e.message(), "media StopStream failed (it may have restarted)")
        }
        Err(_) => tracing::warn!(
            stream_id,
            "media StopStream timed out after {} s; media's lease reaps the stream",
            CALL_TIMEOUT.as_secs()
        ),
    }
}

/// Stops pump threads off the async workers (each join waits up to one 50 ms ring poll).
async fn stop_pumps(pumps: Vec<Pump>) {
    let _ = tokio::task::spawn_blocking(move || pumps.into_iter().for_each(Pump::shutdown)).await;
}

/// What media can do, as far as a session's policy is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaLimits {
    /// The codecs to offer a client, most preferred first (see [`order_codecs`]).
    pub codecs: Vec<Codec>,
    /// Media's bitrate ceiling, if it said.
    pub max_bitrate_kbps: Option<u32>,
    /// Media's largest mode, if it said.
    pub max_mode: Option<Mode>,
}

impl MediaLimits {
    /// Narrows a session policy to what media accepts, so that the Welcome carries the values
    /// that will hold (a bitrate above media's ceiling is clamped, not refused later).
    pub fn apply(&self, policy: &mut punktfunk_control::HostPolicy) {
        policy.codecs = self.codecs.clone();
        if let Some(max) = self.max_bitrate_kbps {
            policy.max_bitrate_kbps = policy
                .max_bitrate_kbps
                .min(max)
                .max(policy.min_bitrate_kbps);
            policy.default_bitrate_kbps = policy.default_bitrate_kbps.min(policy.max_bitrate_kbps);
        }
        if let Some(m) = self.max_mode {
            let p = &mut policy.max_mode;
            p.width = p.width.min(m.width).max(punktfunk_control::host::MIN_WIDTH);
            p.height = p
                .height
                .min(m.height)
                .max(punktfunk_control::host::MIN_HEIGHT);
            p.refresh_mhz = p
                .refresh_mhz
                .min(m.refresh_mhz)
                .max(punktfunk_control::host::MIN_REFRESH_MHZ);
        }
    }
}

/// Asks media what it can do (its Capabilities). Media unreachable: the software codec order,
/// no limits (the stream start then fails with media's own reason).
pub async fn limits(runtime_dir: &Path) -> MediaLimits {
    let caps = async {
        let mut client = connect(runtime_dir).await.ok()?;
        tokio::time::timeout(CALL_TIMEOUT, client.capabilities(CapabilitiesRequest {}))
            .await
            .ok()?
            .ok()
    };
    match caps.await {
        Some(reply) => {
            let reply = reply.into_inner();
            MediaLimits {
                codecs: order_codecs(&reply.codecs),
                max_bitrate_kbps: (reply.max_bitrate_kbps > 0).then_some(reply.max_bitrate_kbps),
                max_mode: reply.max_mode,
            }
        }
        None => MediaLimits {
            codecs: vec![Codec::H264, Codec::Hevc],
            max_bitrate_kbps: None,
            max_mode: None,
        },
    }
}

/// The codecs to offer, from what media's encoder ladder really has: hardware encoders first
/// (HEVC, then AV1, then H.264: at equal cost the better codec), then software ones with H.264
/// first (x264 serves three 720p60 streams on two cores where x265 serves none at full rate).
fn order_codecs(caps: &[CodecCapability]) -> Vec<Codec> {
    const HARDWARE: [Codec; 3] = [Codec::Hevc, Codec::Av1, Codec::H264];
    const SOFTWARE: [Codec; 2] = [Codec::H264, Codec::Hevc];
    let has = |codec: Codec, hardware: bool| {
        caps.iter()
            .any(|c| c.codec == codec as i32 && c.available && c.hardware == hardware)
    };
    let mut order: Vec<Codec> = HARDWARE.into_iter().filter(|&c| has(c, true)).collect();
    let software: Vec<Codec> = SOFTWARE
        .into_iter()
        .filter(|&c| has(c, false) && !order.contains(&c))
        .collect();
    order.extend(software);
    if order.is_empty() {
        // Nothing available: offer H.264 so the refusal comes from media, with its reason.
        order.push(Codec::H264);
    }
    order
}

async fn connect(runtime_dir: &Path) -> Result<MediaClient<Channel>, MediaError> {
    let path = paths::grpc_socket(runtime_dir, "media");
    let channel = uds::connect(&path, CALL_TIMEOUT)
        .await
        .map_err(|e| MediaError::Unreachable {
            path: path.clone(),
            why: e.source.to_string(),
        })?;
    Ok(MediaClient::new(channel))
}

/// StartStream, ring redemption and pumps.
///
/// `restart`: the next frames follow a gap, so the first of each kind is flagged
/// discontinuous (set before the pumps start, so no frame can slip past it).
async fn start_stream(
    runtime_dir: &Path,
    plan: &MediaPlan,
    outputs: &Outputs,
    events: &mpsc::UnboundedSender<PumpEvent>,
    restart: bool,
) -> Result<Running, MediaError> {
    let mut client = connect(runtime_dir).await?;
    let audio = plan.audio && outputs.audio.is_some();
    let mut req = StartStreamRequest {
        source: plan.source as i32,
        mode: Some(plan.mode),
        codec: plan.codec as i32,
        bitrate_kbps: plan.bitrate_kbps,
        audio,
        ..Default::default()
    };
    if let Some(output) = &plan.output {
        let cast = output
            .screencast()
            .await
            .map_err(|r| MediaError::Output(r.message))?;
        req.pipewire_node_id = cast.node_id;
        req.pipewire_remote = Some(cast.ticket);
        req.audio_sink = cast.audio_sink;
    }
    let reply = match tokio::time::timeout(START_TIMEOUT, client.start_stream(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(e)) => return Err(MediaError::from_status(runtime_dir, e)),
        Err(_) => {
            return Err(MediaError::TimedOut {
                call: "StartStream",
                after: START_TIMEOUT,
            });
        }
    };
    let stream_id = reply.stream_id.clone();
    match take_over(runtime_dir, reply, audio, outputs, events, restart).await {
        Ok(pumps) => Ok(Running {
            client,
            stream_id,
            pumps,
            started_ns: now_ns(),
        }),
        Err(e) => {
            // Media runs the stream, but we cannot read it: tell media now, so it does not
            // hold an encoder (and budget) until its lease reaps it.
            tokio::spawn(stop_remote(client, stream_id));
            Err(e)
        }
    }
}

/// Redeems a started stream's rings and starts the pumps that read them.
async fn take_over(
    runtime_dir: &Path,
    reply: punktfunk_proto::media::StartStreamReply,
    audio: bool,
    outputs: &Outputs,
    events: &mpsc::UnboundedSender<PumpEvent>,
    restart: bool,
) -> Result<Vec<Pump>, MediaError> {
    let stream_id = reply.stream_id.clone();
    let ticket = reply
        .rings
        .ok_or_else(|| MediaError::Rings("StartStream returned no ring ticket".into()))?;
    let expected: Vec<&str> = VIDEO_RING_FD_NAMES
        .iter()
        .chain(if audio { &AUDIO_RING_FD_NAMES[..] } else { &[] })
        .copied()
        .collect();
    if ticket.fd_names != expected {
        return Err(MediaError::Rings(format!(
            "the ticket carries {:?}, expected {expected:?}",
            ticket.fd_names
        )));
    }
    let fd_path = paths::fd_socket(runtime_dir, "media");
    let fds = tokio::task::spawn_blocking(move || fdchannel::redeem(&fd_path, &ticket))
        .await
        .map_err(|e| MediaError::Rings(e.to_string()))?
        .map_err(|e| MediaError::Rings(e.to_string()))?;
    if fds.len() != expected.len() {
        return Err(MediaError::Rings(format!(
            "expected {} fds, got {}",
            expected.len(),
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut ring = || -> Result<Consumer, MediaError> {
        let (Some(memfd), Some(doorbell)) = (fds.next(), fds.next()) else {
            return Err(MediaError::Rings("missing ring fds".into()));
        };
        Consumer::attach(RingFds { memfd, doorbell }).map_err(|e| MediaError::Rings(e.to_string()))
    };
    let video = ring()?;
    let audio_ring = if audio { Some(ring()?) } else { None };
    let pump_err = |e: std::io::Error| MediaError::Rings(format!("cannot start a pump: {e}"));
    outputs
        .video_state
        .discontinuity
        .store(restart, Ordering::Relaxed);
    let mut pumps = vec![
        Pump::start(
            video,
            PumpConfig {
                name: "video",
                sender: outputs.video.clone(),
                shared: outputs.video_state.clone(),
                keyframes: true,
                send_budget: VIDEO_SEND_BUDGET,
                max_age: None,
                events: events.clone(),
            },
        )
        .map_err(pump_err)?,
    ];
    if let (Some(ring), Some((sender, shared))) = (audio_ring, &outputs.audio) {
        shared.discontinuity.store(restart, Ordering::Relaxed);
        pumps.push(
            Pump::start(
                ring,
                PumpConfig {
                    name: "audio",
                    sender: sender.clone(),
                    shared: shared.clone(),
                    keyframes: false,
                    send_budget: AUDIO_SEND_BUDGET,
                    max_age: Some(AUDIO_MAX_AGE),
                    events: events.clone(),
                },
            )
            .map_err(pump_err)?,
        );
    }
    tracing::info!(
        stream_id,
        encoder = reply.encoder,
        audio,
        "media stream started"
    );
    Ok(pumps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(codec: Codec, available: bool, hardware: bool) -> CodecCapability {
        CodecCapability {
            codec: codec as i32,
            available,
            hardware,
            encoder: String::new(),
        }
    }

    #[test]
    fn a_software_only_host_prefers_h264() {
        let caps = [
            cap(Codec::H264, true, false),
            cap(Codec::Hevc, true, false),
            cap(Codec::Av1, false, false),
        ];
        assert_eq!(order_codecs(&caps), vec![Codec::H264, Codec::Hevc]);
    }

    #[test]
    fn media_limits_narrow_the_policy() {
        let mut policy = punktfunk_control::HostPolicy::new("host", "[::]:0", 1);
        let limits = MediaLimits {
            codecs: vec![Codec::H264],
            max_bitrate_kbps: Some(500_000),
            max_mode: Some(Mode {
                width: 8192,
                height: 8192,
                refresh_mhz: 240_000,
            }),
        };
        limits.apply(&mut policy);
        assert_eq!(policy.codecs, vec![Codec::H264]);
        assert_eq!(policy.max_bitrate_kbps, 500_000);
        assert_eq!(
            (policy.max_mode.width, policy.max_mode.refresh_mhz),
            (punktfunk_control::host::MAX_WIDTH, 240_000),
            "the narrower bound of each"
        );
        assert!(policy.validate().is_ok());
    }

    #[test]
    fn hardware_encoders_come_first() {
        let caps = [
            cap(Codec::H264, true, true),
            cap(Codec::Hevc, true, true),
            cap(Codec::Av1, true, true),
        ];
        assert_eq!(
            order_codecs(&caps),
            vec![Codec::Hevc, Codec::Av1, Codec::H264]
        );
        let caps = [cap(Codec::H264, true, true), cap(Codec::Hevc, true, false)];
        assert_eq!(order_codecs(&caps), vec![Codec::H264, Codec::Hevc]);
        assert_eq!(order_codecs(&[]), vec![Codec::H264]);
    }
}
