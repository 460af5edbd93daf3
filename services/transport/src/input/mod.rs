//! A session's input seat at punktfunk-input: the async shell of [`policy::SeatPolicy`].
//!
//! [`SeatLink::start`] spawns one task per session that opens the seat (`OpenSeat`), attaches
//! the event stream (`SendEvents`) and the feedback stream (`Feedback`), and forwards between
//! them and the protocol shell's [`SeatPort`]: seat events in, seat feedback out — both in the
//! protocol-neutral seat model, so punktfunk/1 and GameStream shells map their own messages.
//! When the link to input breaks (input died or restarted), the task reopens the seat after the
//! policy's backoff; events meanwhile are dropped and counted. [`SeatLink::stop`] ends the event
//! stream, which makes input remove the seat's devices at once.
//!
//! A seat's pads are fixed when input opens it (`OpenSeat`). A protocol whose clients announce
//! pads during the session (GameStream's controller arrival) sends [`SeatInput::Pads`] through
//! the same queue as its events: events before it go to the old seat, the seat is closed and
//! reopened at once with the new pads, and events after it (queued meanwhile) go to the new one.

pub mod policy;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use punktfunk_common::{paths, uds};
use punktfunk_proto::input::input_client::InputClient;
use punktfunk_proto::input::{FeedbackRequest, OpenSeatRequest, PadKind, SeatEvents};
use punktfunk_proto::seat::{SeatEvent, SeatFeedback};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::Channel;

use self::policy::{SeatAction, SeatPolicy};

/// Connecting to input and each call but `OpenSeat` are bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// `OpenSeat` may wait for hid-playstation to bind each DualSense (input's own bound is 3 s).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Seat events queued from the protocol shell to the link.
pub const EVENT_QUEUE: usize = 1024;
/// Feedback events queued from the link to the protocol shell.
pub const FEEDBACK_QUEUE: usize = 256;
/// Events in one `SeatEvents` message (what was queued when the link woke up).
const BATCH: usize = 256;

/// What a session's seat has.
#[derive(Debug, Clone)]
pub struct SeatSpec {
    /// The client's name (part of the device names).
    pub client_name: String,
    /// The output mode's size: absolute positions are in these pixels.
    pub output: (u32, u32),
    /// The pads, by index.
    pub pads: Vec<PadKind>,
}

/// Counters of one session's link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Times the seat was opened (1 + reopens).
    pub opens: AtomicU64,
    /// Events handed to input.
    pub forwarded: AtomicU64,
    /// Events dropped: the seat was not open, or a queue was full.
    pub dropped: AtomicU64,
    /// Feedback events received from input.
    pub feedback: AtomicU64,
    /// Times the seat was reopened because its pads changed.
    pub reconfigured: AtomicU64,
}

/// What a protocol shell puts into its seat's queue, in order.
#[derive(Debug, Clone)]
pub enum SeatInput {
    /// An event for the seat's devices.
    Event(SeatEvent),
    /// The seat's pads changed (by index): reopen the seat with these.
    Pads(Vec<PadKind>),
}

impl From<SeatEvent> for SeatInput {
    fn from(e: SeatEvent) -> Self {
        Self::Event(e)
    }
}

/// The protocol shell's side: push seat events, pull feedback.
pub struct SeatPort {
    /// Seat events and pad changes (`try_send`; a full queue drops the event, counted by the
    /// shell).
    pub events: mpsc::Sender<SeatInput>,
    /// Feedback from the seat's devices.
    pub feedback: mpsc::Receiver<SeatFeedback>,
    /// The link's counters.
    pub stats: Arc<LinkStats>,
}

/// A running link (owned by the session).
pub struct SeatLink {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<LinkStats>,
}

impl SeatLink {
    /// Starts the link's task; the seat opens in the background.
    pub fn start(runtime_dir: PathBuf, spec: SeatSpec) -> (Self, SeatPort) {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (feedback_tx, feedback_rx) = mpsc::channel(FEEDBACK_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(LinkStats::default());
        let task = tokio::spawn(run(
            runtime_dir,
            spec,
            events_rx,
            feedback_tx,
            stop_rx,
            stats.clone(),
        ));
        let port = SeatPort {
            events: events_tx,
            feedback: feedback_rx,
            stats: stats.clone(),
        };
        (
            Self {
                stop: Some(stop_tx),
                task,
                stats,
            },
            port,
        )
    }

    /// Ends the event stream (input removes the devices) and waits briefly for the task.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(CALL_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        let s = &self.stats;
        tracing::info!(
            opens = s.opens.load(Ordering::Relaxed),
            forwarded = s.forwarded.load(Ordering::Relaxed),
            dropped = s.dropped.load(Ordering::Relaxed),
            feedback = s.feedback.load(Ordering::Relaxed),
            "input seat closed"
        );
    }
}

/// Why an open link ended.
enum LinkEnd {
    /// The session ended (stop, or the shell dropped its port).
    Stopped,
    /// The shell changed the pads: the seat was closed, reopen it with these.
    Reconfigure(Vec<PadKind>),
    /// The link to input broke.
    Lost(String),
}

/// An open seat: the event stream's sender, the call carrying it, and the feedback stream.
struct Open {
    seat_id: String,
    events: mpsc::Sender<SeatEvents>,
    call: tokio::task::JoinHandle<
        Result<tonic::Response<punktfunk_proto::input::SendEventsReply>, tonic::Status>,
    >,
    feedback: tonic::Streaming<SeatFeedback>,
}

async fn run(
    runtime_dir: PathBuf,
    mut spec: SeatSpec,
    mut events: mpsc::Receiver<SeatInput>,
    feedback: mpsc::Sender<SeatFeedback>,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<LinkStats>,
) {
    let mut policy = SeatPolicy::new(Instant::now().into_std());
    let mut last_error = String::new();
    loop {
        if policy.poll_action(Instant::now().into_std()) == Some(SeatAction::Open) {
            let opened = tokio::select! {
                o = open(&runtime_dir, &spec) => o,
                _ = &mut stop => return,
            };
            match opened {
                Ok(link) => {
                    policy.handle_opened(Instant::now().into_std());
                    stats.opens.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(client = %spec.client_name, seat = %link.seat_id, opens = policy.opens, "input seat open");
                    last_error.clear();
                    match forward(link, &mut events, &feedback, &mut stop, &stats).await {
                        LinkEnd::Stopped => return,
                        LinkEnd::Reconfigure(pads) => {
                            tracing::info!(client = %spec.client_name, pads = pads.len(), "input seat reopens with new pads");
                            stats.reconfigured.fetch_add(1, Ordering::Relaxed);
                            spec.pads = pads;
                            policy.handle_reconfigured(Instant::now().into_std());
                        }
                        LinkEnd::Lost(why) => {
                            tracing::warn!(client = %spec.client_name, "input seat lost ({why}); reopening when punktfunk-input is back");
                            policy.handle_lost(Instant::now().into_std());
                        }
                    }
                }
                Err(e) => {
                    if e != last_error {
                        tracing::warn!(client = %spec.client_name, "cannot open the input seat: {e}; retrying");
                        last_error = e;
                    }
                    policy.handle_failed(Instant::now().into_std());
                }
            }
            continue;
        }
        // Not open: wait for the retry, dropping (and counting) what the client sends.
        let until = policy
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + policy::RETRY_MAX);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = &mut stop => return,
            e = events.recv() => match e {
                Some(SeatInput::Event(_)) => { stats.dropped.fetch_add(1, Ordering::Relaxed); }
                // The next open uses them.
                Some(SeatInput::Pads(pads)) => spec.pads = pads,
                None => return,
            },
        }
    }
}

async fn connect(runtime_dir: &std::path::Path) -> Result<InputClient<Channel>, String> {
    let path = paths::grpc_socket(runtime_dir, "input");
    let channel = uds::connect(&path, CALL_TIMEOUT).await.map_err(|e| {
        format!(
            "punktfunk-input is not reachable at {}: {}",
            path.display(),
            e.source
        )
    })?;
    Ok(InputClient::new(channel))
}

async fn open(runtime_dir: &std::path::Path, spec: &SeatSpec) -> Result<Open, String> {
    let mut client = connect(runtime_dir).await?;
    let req = OpenSeatRequest {
        client_name: spec.client_name.clone(),
        output_width: spec.output.0,
        output_height: spec.output.1,
        pads: spec.pads.iter().map(|p| *p as i32).collect(),
    };
    let reply = tokio::time::timeout(OPEN_TIMEOUT, client.open_seat(req))
        .await
        .map_err(|_| "OpenSeat did not answer in time".to_string())?
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let seat_id = reply.seat_id;
    let feedback = tokio::time::timeout(
        CALL_TIMEOUT,
        client.feedback(FeedbackRequest {
            seat_id: seat_id.clone(),
        }),
    )
    .await
    .map_err(|_| "Feedback did not answer in time".to_string())?
    .map_err(|s| s.message().to_string())?
    .into_inner();
    let (tx, rx) = mpsc::channel(64);
    // The first message names the seat.
    tx.try_send(SeatEvents {
        seat_id: seat_id.clone(),
        events: Vec::new(),
    })
    .map_err(|e| e.to_string())?;
    let call = tokio::spawn(async move {
        client
            .send_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    Ok(Open {
        seat_id,
        events: tx,
        call,
        feedback,
    })
}

/// Forwards events and feedback until the session ends, the pads change or the link breaks.
async fn forward(
    mut link: Open,
    events: &mut mpsc::Receiver<SeatInput>,
    feedback: &mpsc::Sender<SeatFeedback>,
    stop: &mut oneshot::Receiver<()>,
    stats: &LinkStats,
) -> LinkEnd {
    let end = loop {
        tokio::select! {
            _ = &mut *stop => break LinkEnd::Stopped,
            e = events.recv() => {
                let Some(first) = e else { break LinkEnd::Stopped };
                let mut batch = Vec::with_capacity(8);
                let mut pads = None;
                let mut next = Some(first);
                while let Some(input) = next.take() {
                    match input {
                        SeatInput::Event(e) => batch.push(e),
                        SeatInput::Pads(p) => {
                            pads = Some(p);
                            break;
                        }
                    }
                    if batch.len() < BATCH {
                        next = events.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    let n = batch.len() as u64;
                    match link.events.try_send(SeatEvents { seat_id: String::new(), events: batch }) {
                        Ok(()) => { stats.forwarded.fetch_add(n, Ordering::Relaxed); }
                        Err(mpsc::error::TrySendError::Full(_)) => { stats.dropped.fetch_add(n, Ordering::Relaxed); }
                        Err(mpsc::error::TrySendError::Closed(_)) => break LinkEnd::Lost("the event stream closed".into()),
                    }
                }
                if let Some(p) = pads {
                    break LinkEnd::Reconfigure(p);
                }
            }
            f = link.feedback.message() => match f {
                Ok(Some(f)) => {
                    stats.feedback.fetch_add(1, Ordering::Relaxed);
                    let _ = feedback.try_send(f);
                }
                Ok(None) => break LinkEnd::Lost("input ended the feedback stream".into()),
                Err(s) => break LinkEnd::Lost(format!("feedback stream: {}", s.message())),
            },
            r = &mut link.call => break LinkEnd::Lost(match r {
                Ok(Ok(_)) => "input ended the event stream".into(),
                Ok(Err(s)) => format!("event stream: {}", s.message()),
                Err(e) => format!("event stream task: {e}"),
            }),
        }
    };
    if matches!(end, LinkEnd::Stopped | LinkEnd::Reconfigure(_)) {
        // Ending the stream is what closes the seat; give input a moment to see it.
        drop(link.events);
        let _ = tokio::time::timeout(CALL_TIMEOUT, &mut link.call).await;
    }
    end
}
