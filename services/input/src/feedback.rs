//! The feedback path of a seat: device threads push, transport's `Feedback` stream pulls. The
//! queue is bounded; what transport does not take in time is dropped and counted, so a stalled
//! transport never blocks a device thread or grows memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use punktfunk_proto::seat::{SeatFeedback, seat_feedback::Feedback};
use tokio::sync::mpsc;

/// Feedback events queued for transport per seat.
pub const QUEUE: usize = 256;

/// Counts of one seat's feedback.
#[derive(Debug, Default)]
pub struct FeedbackCounts {
    /// Queued for transport.
    pub sent: AtomicU64,
    /// Dropped: the queue was full or nobody listens.
    pub dropped: AtomicU64,
}

/// The sending half, cloned into every device thread of a seat.
#[derive(Clone, Debug)]
pub struct FeedbackTx {
    tx: mpsc::Sender<SeatFeedback>,
    counts: Arc<FeedbackCounts>,
}

impl FeedbackTx {
    /// A new queue: the sender, its receiver and the shared counts.
    pub fn new() -> (Self, mpsc::Receiver<SeatFeedback>, Arc<FeedbackCounts>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(FeedbackCounts::default());
        (
            Self {
                tx,
                counts: counts.clone(),
            },
            rx,
            counts,
        )
    }

    /// Queues one event without waiting.
    pub fn send(&self, f: Feedback) {
        tracing::debug!(?f, "feedback");
        match self.tx.try_send(SeatFeedback { feedback: Some(f) }) {
            Ok(()) => self.counts.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}
