//! Sans-IO: when a session's seat is (re)opened at punktfunk-input.
//!
//! A session wants its seat for as long as it lives. The seat is opened at session start; when
//! the link to input is lost (input died or restarted: the event stream or the feedback stream
//! failed) or an open fails, it is reopened after a backoff from [`RETRY_MIN`] doubling to
//! [`RETRY_MAX`], so a restarted input gets the client's devices back without the client
//! reconnecting. A seat that was up for [`STABLE`] resets the backoff.
//!
//! Call order: [`SeatPolicy::new`]; then loop: [`SeatPolicy::poll_action`] with `now` — on
//! [`SeatAction::Open`] try to open and report [`SeatPolicy::handle_opened`] or
//! [`SeatPolicy::handle_failed`]; while open, report [`SeatPolicy::handle_lost`] when the link
//! breaks, or [`SeatPolicy::handle_reconfigured`] when the shell closed it to reopen it with new
//! pads; when `poll_action` yields nothing, wait until [`SeatPolicy::poll_timeout`] (or an
//! event) and poll again.

use std::time::{Duration, Instant};

/// First retry after a loss or failure.
pub const RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// A seat up this long counts as healthy: the next loss retries after [`RETRY_MIN`] again.
pub const STABLE: Duration = Duration::from_secs(10);

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatAction {
    /// Open the seat (OpenSeat, then attach the event and feedback streams).
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not open; open at `at`.
    Waiting { at: Instant },
    /// An open is in flight.
    Opening,
    /// Open since `since`.
    Open { since: Instant },
}

/// The reopen policy of one session's seat.
#[derive(Debug)]
pub struct SeatPolicy {
    state: State,
    backoff: Duration,
    /// How many times the seat was opened (the first open included).
    pub opens: u64,
}

impl SeatPolicy {
    /// A policy that opens at once.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Waiting { at: now },
            backoff: RETRY_MIN,
            opens: 0,
        }
    }

    /// The next action, if one is due at `now`.
    pub fn poll_action(&mut self, now: Instant) -> Option<SeatAction> {
        match self.state {
            State::Waiting { at } if now >= at => {
                self.state = State::Opening;
                Some(SeatAction::Open)
            }
            _ => None,
        }
    }

    /// When to poll again (None: only after an event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            _ => None,
        }
    }

    /// The open succeeded.
    pub fn handle_opened(&mut self, now: Instant) {
        self.opens += 1;
        self.state = State::Open { since: now };
    }

    /// The open failed: retry after the backoff.
    pub fn handle_failed(&mut self, now: Instant) {
        self.retry(now);
    }

    /// The open seat's link broke: reopen, at once if it had been stable.
    pub fn handle_lost(&mut self, now: Instant) {
        if let State::Open { since } = self.state
            && now.saturating_duration_since(since) >= STABLE
        {
            self.backoff = RETRY_MIN;
        }
        self.retry(now);
    }

    /// The open seat was closed on purpose (its pads changed): reopen at once, backoff kept.
    pub fn handle_reconfigured(&mut self, now: Instant) {
        self.state = State::Waiting { at: now };
    }

    fn retry(&mut self, now: Instant) {
        self.state = State::Waiting {
            at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_once_then_waits_for_events() {
        let t0 = Instant::now();
        let mut p = SeatPolicy::new(t0);
        assert_eq!(p.poll_action(t0), Some(SeatAction::Open));
        assert_eq!(p.poll_action(t0), None);
        assert_eq!(p.poll_timeout(), None);
        p.handle_opened(t0);
        assert_eq!(p.state, State::Open { since: t0 });
        assert_eq!(p.poll_action(t0 + Duration::from_secs(60)), None);
        assert_eq!(p.opens, 1);
    }

    #[test]
    fn failures_back_off_doubling_to_the_cap() {
        let t0 = Instant::now();
        let mut p = SeatPolicy::new(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert_eq!(p.poll_action(now), Some(SeatAction::Open));
            p.handle_failed(now);
            let at = p.poll_timeout().unwrap();
            waits.push(at - now);
            assert_eq!(p.poll_action(at - Duration::from_millis(1)), None);
            now = at;
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn a_reconfigured_seat_reopens_at_once_without_growing_the_backoff() {
        let t0 = Instant::now();
        let mut p = SeatPolicy::new(t0);
        p.poll_action(t0);
        p.handle_failed(t0);
        let t1 = p.poll_timeout().unwrap();
        p.poll_action(t1);
        p.handle_opened(t1);
        let t2 = t1 + Duration::from_secs(1);
        p.handle_reconfigured(t2);
        assert_eq!(p.poll_timeout(), Some(t2));
        assert_eq!(p.poll_action(t2), Some(SeatAction::Open));
        p.handle_opened(t2);
        assert_eq!(p.opens, 2);
        // A loss afterwards still backs off from where the failures left it.
        p.handle_lost(t2);
        assert_eq!(p.poll_timeout(), Some(t2 + 2 * RETRY_MIN));
    }

    #[test]
    fn a_lost_seat_reopens_and_a_stable_one_resets_the_backoff() {
        let t0 = Instant::now();
        let mut p = SeatPolicy::new(t0);
        p.poll_action(t0);
        p.handle_opened(t0);
        // Lost after a short life: reopen after RETRY_MIN, then the backoff grows.
        p.handle_lost(t0 + Duration::from_secs(1));
        assert_eq!(
            p.poll_timeout(),
            Some(t0 + Duration::from_secs(1) + RETRY_MIN)
        );
        let t1 = p.poll_timeout().unwrap();
        assert_eq!(p.poll_action(t1), Some(SeatAction::Open));
        p.handle_failed(t1);
        assert_eq!(p.poll_timeout(), Some(t1 + 2 * RETRY_MIN));
        let t2 = p.poll_timeout().unwrap();
        p.poll_action(t2);
        p.handle_opened(t2);
        // Up for STABLE: the next loss retries after RETRY_MIN again.
        let t3 = t2 + STABLE;
        p.handle_lost(t3);
        assert_eq!(p.poll_timeout(), Some(t3 + RETRY_MIN));
        assert_eq!(p.opens, 2);
    }
}
