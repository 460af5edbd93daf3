//! The media supervisor of one client session, sans-IO: it decides when to ask media whether a
//! silent stream is alive, when to give a stream up, when and how often to start a new one,
//! and when to stop trying. It does no I/O and reads no clock: the shell
//! ([`crate::media`]) feeds it events with the time they happened and carries out what it asks.
//!
//! # Call order
//!
//! 1. [`Supervisor::new`] once the first stream runs (its start is the session's own business:
//!    a refusal there goes to the client directly).
//! 2. Whenever something happens, the matching `handle_*` with `now`: a record arrived
//!    ([`handle_record`](Supervisor::handle_record)), a keyframe is wanted, a call the shell made
//!    on our behalf returned, the session asks for a new bitrate or mode, or the time returned by
//!    [`poll_timeout`](Supervisor::poll_timeout) has come
//!    ([`handle_timeout`](Supervisor::handle_timeout)).
//! 3. After each `handle_*`, drain [`poll_action`](Supervisor::poll_action) until it returns
//!    `None`, carrying out each [`Action`] in order; an action that is a call is answered with
//!    its `handle_*_result` (the shell may do that later, after other events).
//! 4. Wait until [`poll_timeout`](Supervisor::poll_timeout) (or the next event) and go to 2.
//!
//! # States
//!
//! ```text
//!  Running ──silence ≥ SILENCE──▶ Probing ──alive──▶ Running
//!     │  ▲                          │ gone
//!     │  └──────started─────────┐   ▼
//!     └──call failed──────▶ Restarting (StartStream now, then backoff 200 ms … 5 s)
//!                               │ refused
//!                               ▼
//!                             Ended (final: the session tells the client why)
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use punktfunk_proto::common::Mode;

/// No record for this long while running: ask media whether the stream is alive.
pub const SILENCE: Duration = Duration::from_millis(600);
/// The first retry of a StartStream that media could not answer; each further one waits twice
/// as long, up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between two attempts to start a stream on a media daemon that is not back.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Keyframe requests closer together than this are one request (a burst of losses).
pub const KEYFRAME_COALESCE: Duration = Duration::from_millis(50);

/// What the session wants from media: handed back with every start.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    pub bitrate_kbps: u32,
}

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Ask media whether the running stream is alive (`Stats`); answer with
    /// [`Supervisor::handle_probe_result`].
    Probe,
    /// Ask media for an IDR; answer with [`Supervisor::handle_call_result`].
    RequestKeyframe,
    /// Ask media for a new bitrate/mode of the running stream; answer with
    /// [`Supervisor::handle_reconfigure_result`].
    Reconfigure(Plan),
    /// The running stream is given up: stop its pumps and tell media to stop it (without
    /// waiting: a stalled media answers late or never, and its lease reaps the stream).
    Abandon,
    /// Start a new stream with this plan; its first frames follow a gap, so they are flagged
    /// DISCONTINUITY. Answer with [`Supervisor::handle_start_result`].
    Restart(Plan),
    /// Media refused to run the stream again: final. The session ends and tells its client.
    Refused(String),
    /// Media refused a reconfiguration: the stream goes on with this plan (what held before);
    /// the session tells its client what is in effect, and why.
    Kept(Plan, String),
}

/// How a call to media ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Media did it.
    Done,
    /// Media answered no on the merits (this mode, bitrate, codec, budget): asking again the
    /// same way will not help.
    Refused(String),
    /// Media did not answer, or no longer knows the stream (it restarted, or it is gone).
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// A `Probe` is out.
    Probing,
    /// Waiting to (re)start; `Some(at)`: next attempt at `at`, `None`: an attempt is out.
    Restarting {
        next: Option<Instant>,
        attempts: u32,
    },
    Ended,
}

/// The supervisor of one session's media stream. See the module docs for the call order.
#[derive(Debug)]
pub struct Supervisor {
    state: State,
    plan: Plan,
    /// The newest of: the last record, the stream's start, the last answer that it is alive.
    heard: Instant,
    last_keyframe: Option<Instant>,
    /// A keyframe was wanted while a request was out or coalesced: send one when allowed.
    keyframe_pending: bool,
    keyframe_out: bool,
    /// A reconfiguration waiting for the running stream (only the newest is kept).
    reconfigure_pending: Option<Plan>,
    reconfigure_out: Option<Plan>,
    actions: VecDeque<Action>,
    restarts: u64,
}

impl Supervisor {
    /// A supervisor for a stream that started at `now` with `plan`.
    pub fn new(now: Instant, plan: Plan) -> Self {
        Self {
            state: State::Running,
            plan,
            heard: now,
            last_keyframe: None,
            keyframe_pending: false,
            keyframe_out: false,
            reconfigure_pending: None,
            reconfigure_out: None,
            actions: VecDeque::new(),
            restarts: 0,
        }
    }

    /// The plan in effect (what a restart would ask for).
    #[cfg(test)]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Streams started again after media was lost.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether the supervisor gave up for good ([`Action::Refused`] was emitted).
    #[cfg(test)]
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// A record came out of the stream's rings at `now`.
    pub fn handle_record(&mut self, now: Instant) {
        if matches!(self.state, State::Running | State::Probing) {
            self.heard = self.heard.max(now);
        }
    }

    /// A pump found its ring closed (media stopped writing for good): ask at once.
    pub fn handle_ring_closed(&mut self, _now: Instant) {
        if self.state == State::Running {
            self.probe();
        }
    }

    /// The client or a pump wants an IDR (after a loss, a dropped frame, a ring gap).
    pub fn handle_keyframe_wanted(&mut self, now: Instant) {
        self.keyframe_pending = true;
        self.flush_keyframe(now);
    }

    /// The session asks for a new bitrate and/or mode.
    pub fn handle_reconfigure(&mut self, now: Instant, bitrate_kbps: u32, mode: Option<Mode>) {
        let mut plan = self.reconfigure_pending.take().unwrap_or(self.plan.clone());
        plan.bitrate_kbps = bitrate_kbps;
        if let Some(m) = mode {
            plan.mode = m;
        }
        match self.state {
            State::Running if self.reconfigure_out.is_none() => {
                self.reconfigure_out = Some(plan.clone());
                self.actions.push_back(Action::Reconfigure(plan));
            }
            // Between attempts: the next start asks for it directly.
            State::Restarting { next: Some(_), .. } => self.plan = plan,
            State::Ended => {}
            // A call is out (or the stream is being probed): send it once that is settled.
            _ => self.reconfigure_pending = Some(plan),
        }
        self.flush_keyframe(now);
    }

    /// The answer to [`Action::Probe`].
    pub fn handle_probe_result(&mut self, now: Instant, alive: bool) {
        if self.state != State::Probing {
            return;
        }
        if alive {
            // Alive but silent (a stalled source): do not ask again at once.
            self.state = State::Running;
            self.heard = now;
            self.after_running(now);
        } else {
            self.lose(now);
        }
    }

    /// The answer to [`Action::RequestKeyframe`].
    pub fn handle_call_result(&mut self, now: Instant, outcome: CallOutcome) {
        self.keyframe_out = false;
        match outcome {
            CallOutcome::Gone if matches!(self.state, State::Running | State::Probing) => {
                self.lose(now)
            }
            _ => self.flush_keyframe(now),
        }
    }

    /// The answer to [`Action::Reconfigure`]. A refusal leaves the stream as it was.
    pub fn handle_reconfigure_result(&mut self, now: Instant, outcome: CallOutcome) {
        let Some(asked) = self.reconfigure_out.take() else {
            return;
        };
        match outcome {
            CallOutcome::Done => self.plan = asked,
            // (A newer request waits: it goes out next and its answer is what the client
            // hears; telling it the old plan holds now would contradict that.)
            CallOutcome::Refused(reason) if self.reconfigure_pending.is_none() => {
                self.actions
                    .push_back(Action::Kept(self.plan.clone(), reason));
            }
            CallOutcome::Refused(_) => {}
            CallOutcome::Gone => {
                // The client was told `asked` holds: the next stream asks for it (unless a
                // newer request supersedes it).
                if self.reconfigure_pending.is_none() {
                    self.reconfigure_pending = Some(asked);
                }
                if matches!(self.state, State::Running | State::Probing) {
                    self.lose(now);
                }
                return;
            }
        }
        self.after_running(now);
    }

    /// The answer to [`Action::Restart`]: `Done` when the new stream runs.
    pub fn handle_start_result(&mut self, now: Instant, outcome: CallOutcome) {
        let State::Restarting {
            next: None,
            attempts,
        } = self.state
        else {
            return;
        };
        match outcome {
            CallOutcome::Done => {
                self.restarts += 1;
                self.state = State::Running;
                self.heard = now;
                // The first frame of a new stream is an IDR: nothing to ask for.
                self.keyframe_pending = false;
                self.last_keyframe = Some(now);
                self.after_running(now);
            }
            CallOutcome::Refused(reason) => {
                self.state = State::Ended;
                self.actions.push_back(Action::Refused(reason));
            }
            CallOutcome::Gone => {
                self.state = State::Restarting {
                    next: Some(now + backoff(attempts)),
                    attempts,
                };
            }
        }
    }

    /// The time from [`Supervisor::poll_timeout`] has come (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Running if now >= self.heard + SILENCE => self.probe(),
            State::Running => self.flush_keyframe(now),
            State::Restarting {
                next: Some(at),
                attempts,
            } if now >= at => self.start(attempts + 1),
            _ => {}
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Supervisor::handle_timeout`] must be called next (None: only events matter).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Running => {
                let silence = self.heard + SILENCE;
                let keyframe = self
                    .keyframe_pending
                    .then(|| self.last_keyframe.map(|t| t + KEYFRAME_COALESCE))
                    .flatten();
                Some(keyframe.map_or(silence, |k| k.min(silence)))
            }
            State::Restarting { next, .. } => next,
            State::Probing | State::Ended => None,
        }
    }

    fn probe(&mut self) {
        self.state = State::Probing;
        self.actions.push_back(Action::Probe);
    }

    fn lose(&mut self, _now: Instant) {
        self.actions.push_back(Action::Abandon);
        self.keyframe_out = false;
        if let Some(p) = self
            .reconfigure_out
            .take()
            .or(self.reconfigure_pending.take())
        {
            // Ask the next stream for what the session wanted last.
            self.plan = p;
        }
        self.start(1);
    }

    fn start(&mut self, attempts: u32) {
        self.state = State::Restarting {
            next: None,
            attempts,
        };
        self.actions.push_back(Action::Restart(self.plan.clone()));
    }

    /// Back to running: send what waited for it.
    fn after_running(&mut self, now: Instant) {
        if self.state != State::Running {
            return;
        }
        if self.reconfigure_out.is_none()
            && let Some(p) = self.reconfigure_pending.take()
        {
            self.reconfigure_out = Some(p.clone());
            self.actions.push_back(Action::Reconfigure(p));
        }
        self.flush_keyframe(now);
    }

    fn flush_keyframe(&mut self, now: Instant) {
        let due = self
            .last_keyframe
            .is_none_or(|t| now >= t + KEYFRAME_COALESCE);
        if self.state == State::Running && self.keyframe_pending && !self.keyframe_out && due {
            self.keyframe_pending = false;
            self.keyframe_out = true;
            self.last_keyframe = Some(now);
            self.actions.push_back(Action::RequestKeyframe);
        }
    }
}

/// The wait after the `attempts`-th failed start: 200 ms, 400 ms, … up to [`RETRY_MAX`].
fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    RETRY_MIN.saturating_mul(factor).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODE: Mode = Mode {
        width: 1280,
        height: 720,
        refresh_mhz: 60_000,
    };

    fn plan() -> Plan {
        Plan {
            mode: MODE,
            bitrate_kbps: 20_000,
        }
    }

    fn drain(s: &mut Supervisor) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    /// Runs the supervisor to its next timeout and returns what it asked for there.
    fn at_timeout(s: &mut Supervisor) -> (Instant, Vec<Action>) {
        let t = s.poll_timeout().expect("a timeout");
        s.handle_timeout(t);
        (t, drain(s))
    }

    #[test]
    fn records_keep_it_quiet_and_silence_asks_media() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        assert_eq!(s.poll_timeout(), Some(t0 + SILENCE));
        for i in 1..=10 {
            s.handle_record(t0 + Duration::from_millis(16 * i));
        }
        let last = t0 + Duration::from_millis(160);
        assert_eq!(s.poll_timeout(), Some(last + SILENCE));
        s.handle_timeout(last + SILENCE - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty(), "not silent yet");
        let (t, actions) = at_timeout(&mut s);
        assert_eq!(t, last + SILENCE);
        assert_eq!(actions, vec![Action::Probe]);
        assert_eq!(s.poll_timeout(), None, "waits for the probe's answer");
        // Alive but silent: the clock starts again from the answer.
        s.handle_probe_result(t + Duration::from_millis(5), true);
        assert!(drain(&mut s).is_empty());
        assert_eq!(
            s.poll_timeout(),
            Some(t + Duration::from_millis(5) + SILENCE)
        );
    }

    #[test]
    fn lost_then_restart_with_bounded_backoff_then_resumed() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        let (t, actions) = at_timeout(&mut s);
        assert_eq!(actions, vec![Action::Probe]);
        s.handle_probe_result(t, false);
        assert_eq!(
            drain(&mut s),
            vec![Action::Abandon, Action::Restart(plan())],
            "gives the stream up and starts a new one at once"
        );
        // Media is not back: 200, 400, 800 ms … capped at RETRY_MAX.
        let mut now = t;
        let mut waits = Vec::new();
        for _ in 0..8 {
            s.handle_start_result(now, CallOutcome::Gone);
            assert!(drain(&mut s).is_empty());
            let (at, actions) = at_timeout(&mut s);
            assert_eq!(actions, vec![Action::Restart(plan())]);
            waits.push(at - now);
            now = at;
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // Back: running again, one restart counted, silence watched from the start.
        s.handle_start_result(now, CallOutcome::Done);
        assert!(drain(&mut s).is_empty(), "a new stream starts with an IDR");
        assert_eq!(s.restarts(), 1);
        assert_eq!(s.poll_timeout(), Some(now + SILENCE));
    }

    #[test]
    fn a_refused_restart_is_final_and_carries_the_reason() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_keyframe_wanted(t0);
        assert_eq!(drain(&mut s), vec![Action::RequestKeyframe]);
        s.handle_call_result(t0, CallOutcome::Gone);
        assert_eq!(
            drain(&mut s),
            vec![Action::Abandon, Action::Restart(plan())]
        );
        s.handle_start_result(t0, CallOutcome::Refused("budget".into()));
        assert_eq!(drain(&mut s), vec![Action::Refused("budget".into())]);
        assert!(s.is_ended());
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(60));
        s.handle_keyframe_wanted(t0 + Duration::from_secs(60));
        assert!(drain(&mut s).is_empty(), "nothing after the end");
    }

    #[test]
    fn keyframe_requests_are_coalesced() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_keyframe_wanted(t0);
        assert_eq!(drain(&mut s), vec![Action::RequestKeyframe]);
        // A burst while the first is out and within the window: one more, once allowed.
        for i in 1..=5 {
            s.handle_keyframe_wanted(t0 + Duration::from_millis(i));
        }
        assert!(drain(&mut s).is_empty());
        s.handle_call_result(t0 + Duration::from_millis(6), CallOutcome::Done);
        assert!(drain(&mut s).is_empty(), "still inside the window");
        assert_eq!(s.poll_timeout(), Some(t0 + KEYFRAME_COALESCE));
        let (_, actions) = at_timeout(&mut s);
        assert_eq!(actions, vec![Action::RequestKeyframe]);
        s.handle_call_result(t0 + KEYFRAME_COALESCE, CallOutcome::Done);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + SILENCE), "nothing pending");
    }

    #[test]
    fn a_refused_reconfigure_keeps_the_stream_and_the_plan() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_reconfigure(t0, 900_000, None);
        let asked = Plan {
            bitrate_kbps: 900_000,
            ..plan()
        };
        assert_eq!(drain(&mut s), vec![Action::Reconfigure(asked)]);
        s.handle_reconfigure_result(t0, CallOutcome::Refused("above 500000".into()));
        assert_eq!(
            drain(&mut s),
            vec![Action::Kept(plan(), "above 500000".into())],
            "no restart, no abandon: the session is told what holds"
        );
        assert_eq!(s.plan(), &plan());
        // An accepted one becomes the plan a restart would use.
        s.handle_reconfigure(t0, 10_000, None);
        drain(&mut s);
        s.handle_reconfigure_result(t0, CallOutcome::Done);
        assert_eq!(s.plan().bitrate_kbps, 10_000);
    }

    #[test]
    fn a_reconfigure_lost_with_the_stream_goes_into_the_next_start() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_reconfigure(t0, 8_000, None);
        drain(&mut s);
        s.handle_reconfigure_result(t0, CallOutcome::Gone);
        let asked = Plan {
            bitrate_kbps: 8_000,
            ..plan()
        };
        assert_eq!(drain(&mut s), vec![Action::Abandon, Action::Restart(asked)]);
    }

    #[test]
    fn a_refusal_superseded_by_a_newer_request_is_not_reported() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_reconfigure(t0, 900_000, None);
        drain(&mut s);
        s.handle_reconfigure(t0, 9_000, None);
        assert!(drain(&mut s).is_empty(), "waits for the first answer");
        s.handle_reconfigure_result(t0, CallOutcome::Refused("too much".into()));
        let newer = Plan {
            bitrate_kbps: 9_000,
            ..plan()
        };
        assert_eq!(drain(&mut s), vec![Action::Reconfigure(newer)]);
    }

    #[test]
    fn a_reconfigure_while_media_is_away_goes_into_the_next_start() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0, plan());
        s.handle_ring_closed(t0);
        assert_eq!(drain(&mut s), vec![Action::Probe]);
        s.handle_reconfigure(t0, 5_000, None);
        assert!(drain(&mut s).is_empty(), "waits for the probe");
        s.handle_probe_result(t0, false);
        let wanted = Plan {
            bitrate_kbps: 5_000,
            ..plan()
        };
        assert_eq!(
            drain(&mut s),
            vec![Action::Abandon, Action::Restart(wanted.clone())]
        );
        s.handle_start_result(t0, CallOutcome::Done);
        assert_eq!(s.plan(), &wanted);
    }
}
