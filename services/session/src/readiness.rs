//! When is an output ready? A sans-IO state machine walks the steps in order, each with its own
//! deadline and its own error:
//!
//! 1. [`Step::ProcessAlive`]: the compositor process runs;
//! 2. [`Step::Socket`]: its Wayland socket exists;
//! 3. [`Step::Roundtrip`]: a `wl_display.sync` round trip on it completes;
//! 4. [`Step::Globals`]: the globals the backend needs are advertised;
//! 5. [`Step::Screencast`]: the screencast node is obtained.
//!
//! A check that is "not yet" is retried with backoff ([`BACKOFF_MIN`] doubling to
//! [`BACKOFF_MAX`]) until the step's budget is spent; a check that fails for good, or the
//! compositor exiting at any point, ends readiness at once.
//!
//! Call order (the shell owns processes, sockets and clocks):
//!
//! ```text
//! let mut r = Readiness::new(now, budgets);
//! loop {
//!     if let Some(result) = r.outcome() { break }          // Ok(()) or the ReadinessError
//!     match r.poll_action(now) {
//!         Some(step) => { /* run the check for `step`, at most r.check_budget(now) long */
//!                         r.handle_check(now, step, result) }
//!         None => sleep until r.poll_timeout()             // or until the process exits:
//!     }                                                    // r.handle_exited(now, status)
//! }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// A readiness step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The compositor process runs.
    ProcessAlive,
    /// Its Wayland socket exists.
    Socket,
    /// A `wl_display` round trip completes.
    Roundtrip,
    /// The backend's globals are advertised.
    Globals,
    /// The screencast node is obtained.
    Screencast,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 5] = [
        Step::ProcessAlive,
        Step::Socket,
        Step::Roundtrip,
        Step::Globals,
        Step::Screencast,
    ];

    /// 1-based position.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    /// The step's name in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Step::ProcessAlive => "process alive",
            Step::Socket => "Wayland socket",
            Step::Roundtrip => "wl_display round trip",
            Step::Globals => "Wayland globals",
            Step::Screencast => "screencast",
        }
    }

    /// What to do when this step fails.
    pub fn hint(self) -> &'static str {
        match self {
            Step::ProcessAlive => {
                "read compositor.log in the output's state directory and run the compositor by \
                 hand with the same arguments"
            }
            Step::Socket => {
                "the compositor runs but never created its socket: check that it honours the \
                 socket name it was given and read compositor.log"
            }
            Step::Roundtrip => {
                "the socket exists but the compositor does not answer: it may be hung; read \
                 compositor.log"
            }
            Step::Globals => {
                "the compositor lacks a protocol the backend needs: upgrade it to the version \
                 floor (`punktfunkctl doctor`) or, for KWin, check the punktfunk-session \
                 .desktop grant (X-KDE-Wayland-Interfaces)"
            }
            Step::Screencast => {
                "no screencast: check that PipeWire and WirePlumber run in the output \
                 (pipewire.log, wireplumber.log) and read screencast.log"
            }
        }
    }

    fn next(self) -> Option<Step> {
        Step::ALL.get(self.number()).copied()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({})", self.number(), self.name())
    }
}

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Step 1.
    pub process_alive: Duration,
    /// Step 2.
    pub socket: Duration,
    /// Step 3.
    pub roundtrip: Duration,
    /// Step 4.
    pub globals: Duration,
    /// Step 5.
    pub screencast: Duration,
}

impl Default for Budgets {
    /// Measured on 2 cores without a GPU: mutter answers in 0.13–0.35 s, KWin ~0.4 s, sway
    /// 0.05–0.35 s, a mutter ScreenCast node 6–16 ms after Start. KWin creates its socket
    /// long before it answers on it, and on a loaded machine (6 builds on 2 cores) it took
    /// over 3 s: the budgets leave that ~5× room.
    fn default() -> Self {
        Self {
            process_alive: Duration::from_secs(2),
            socket: Duration::from_secs(10),
            roundtrip: Duration::from_secs(15),
            globals: Duration::from_secs(3),
            screencast: Duration::from_secs(10),
        }
    }
}

impl Budgets {
    /// The budget of `step`.
    pub fn of(&self, step: Step) -> Duration {
        match step {
            Step::ProcessAlive => self.process_alive,
            Step::Socket => self.socket,
            Step::Roundtrip => self.roundtrip,
            Step::Globals => self.globals,
            Step::Screencast => self.screencast,
        }
    }

    /// The longest readiness can take.
    pub fn total(&self) -> Duration {
        Step::ALL.iter().map(|&s| self.of(s)).sum()
    }
}

/// First retry delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Not yet (retry after backoff while the step's budget lasts).
    NotYet(String),
    /// Failed for good (no retry).
    Fatal(String),
}

/// Why an output did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadinessError {
    /// The compositor exited (step 1 failed while `during` was being waited for).
    #[error(
        "{alive} failed: the compositor exited ({status}) while waiting for {during}; {hint}",
        alive = Step::ProcessAlive,
        hint = Step::ProcessAlive.hint()
    )]
    Exited {
        /// The step readiness was in.
        during: Step,
        /// The exit status, as text.
        status: String,
    },
    /// A step's budget ran out.
    #[error("{step} failed: not done within {budget:?} ({attempts} attempts; last: {last}); {hint}", hint = step.hint())]
    Timeout {
        /// The step.
        step: Step,
        /// Its budget.
        budget: Duration,
        /// How many checks ran.
        attempts: u32,
        /// The last check's answer.
        last: String,
    },
    /// A check failed for good.
    #[error("{step} failed: {reason}; {hint}", hint = step.hint())]
    Failed {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
}

impl ReadinessError {
    /// The step that failed (for [`ReadinessError::Exited`]: [`Step::ProcessAlive`]).
    pub fn step(&self) -> Step {
        match self {
            ReadinessError::Exited { .. } => Step::ProcessAlive,
            ReadinessError::Timeout { step, .. } | ReadinessError::Failed { step, .. } => *step,
        }
    }
}

/// The readiness state machine (see the module docs for the call order).
#[derive(Debug)]
pub struct Readiness {
    budgets: Budgets,
    step: Step,
    step_deadline: Instant,
    /// When the next check may run; `None` while one is in flight.
    next_check: Option<Instant>,
    backoff: Duration,
    attempts: u32,
    last: String,
    outcome: Option<Result<(), ReadinessError>>,
    passed: Vec<(Step, Instant)>,
}

impl Readiness {
    /// Starts at step 1; its first check is due at once.
    pub fn new(now: Instant, budgets: Budgets) -> Self {
        Self {
            budgets,
            step: Step::ProcessAlive,
            step_deadline: now + budgets.process_alive,
            next_check: Some(now),
            backoff: BACKOFF_MIN,
            attempts: 0,
            last: "no check ran yet".into(),
            outcome: None,
            passed: Vec::new(),
        }
    }

    /// The step being worked on.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The final result, once there is one.
    pub fn outcome(&self) -> Option<&Result<(), ReadinessError>> {
        self.outcome.as_ref()
    }

    /// The steps passed so far and when.
    pub fn passed(&self) -> &[(Step, Instant)] {
        &self.passed
    }

    /// The check to run now, if one is due. Ends readiness with a timeout when the step's
    /// budget is spent and no check is in flight.
    pub fn poll_action(&mut self, now: Instant) -> Option<Step> {
        if self.outcome.is_some() {
            return None;
        }
        let due = self.next_check?;
        if now >= self.step_deadline && self.attempts > 0 {
            self.fail_timeout();
            return None;
        }
        if now < due {
            return None;
        }
        self.next_check = None;
        self.attempts += 1;
        Some(self.step)
    }

    /// How long the check handed out by [`Readiness::poll_action`] may take (the rest of its
    /// step's budget, at least [`BACKOFF_MIN`]).
    pub fn check_budget(&self, now: Instant) -> Duration {
        self.step_deadline
            .saturating_duration_since(now)
            .max(BACKOFF_MIN)
    }

    /// When to call [`Readiness::poll_action`] again (`None`: a check is in flight or done).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        self.next_check.map(|due| {
            if self.attempts > 0 {
                due.min(self.step_deadline)
            } else {
                due
            }
        })
    }

    /// The result of the check for `step`.
    pub fn handle_check(&mut self, now: Instant, step: Step, result: Result<(), CheckError>) {
        if self.outcome.is_some() || step != self.step || self.next_check.is_some() {
            return;
        }
        match result {
            Ok(()) => {
                self.passed.push((step, now));
                match step.next() {
                    Some(next) => {
                        self.step = next;
                        self.step_deadline = now + self.budgets.of(next);
                        self.next_check = Some(now);
                        self.backoff = BACKOFF_MIN;
                        self.attempts = 0;
                        self.last = "no check ran yet".into();
                    }
                    None => self.outcome = Some(Ok(())),
                }
            }
            Err(CheckError::Fatal(reason)) => {
                self.outcome = Some(Err(ReadinessError::Failed { step, reason }));
            }
            Err(CheckError::NotYet(why)) => {
                self.last = why;
                if now >= self.step_deadline {
                    self.fail_timeout();
                } else {
                    self.next_check = Some((now + self.backoff).min(self.step_deadline));
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The compositor exited (`status` as text, e.g. "exit status 1").
    pub fn handle_exited(&mut self, _now: Instant, status: String) {
        if self.outcome.is_none() {
            self.outcome = Some(Err(ReadinessError::Exited {
                during: self.step,
                status,
            }));
        }
    }

    fn fail_timeout(&mut self) {
        self.outcome = Some(Err(ReadinessError::Timeout {
            step: self.step,
            budget: self.budgets.of(self.step),
            attempts: self.attempts,
            last: std::mem::take(&mut self.last),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn all_steps_pass_in_order() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, Budgets::default());
        let mut now = t0;
        for step in Step::ALL {
            assert_eq!(r.poll_action(now), Some(step));
            assert_eq!(r.poll_action(now), None, "one check at a time");
            now += ms(5);
            r.handle_check(now, step, Ok(()));
        }
        assert_eq!(r.outcome(), Some(&Ok(())));
        assert_eq!(r.passed().len(), 5);
        assert_eq!(r.poll_action(now), None);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn not_yet_retries_with_doubling_backoff_then_times_out_naming_the_step() {
        let t0 = Instant::now();
        let budgets = Budgets {
            socket: ms(500),
            ..Budgets::default()
        };
        let mut r = Readiness::new(t0, budgets);
        assert_eq!(r.poll_action(t0), Some(Step::ProcessAlive));
        r.handle_check(t0, Step::ProcessAlive, Ok(()));
        let mut now = t0;
        let mut delays = Vec::new();
        loop {
            match r.poll_action(now) {
                Some(step) => {
                    assert_eq!(step, Step::Socket);
                    r.handle_check(now, step, Err(CheckError::NotYet("no socket".into())));
                }
                None => {
                    let Some(next) = r.poll_timeout() else { break };
                    delays.push(next - now);
                    now = next;
                }
            }
            if r.outcome().is_some() {
                break;
            }
        }
        assert_eq!(&delays[..5], &[ms(10), ms(20), ms(40), ms(80), ms(160)]);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        let Some(Err(e)) = r.outcome() else {
            panic!("timed out")
        };
        assert_eq!(e.step(), Step::Socket);
        assert!(now <= t0 + ms(500), "gave up at its deadline");
        let text = e.to_string();
        assert!(text.starts_with("step 2 (Wayland socket) failed"), "{text}");
        assert!(text.contains("last: no socket"), "{text}");
        assert!(text.contains("never created its socket"), "{text}");
    }

    #[test]
    fn a_slow_check_that_overruns_its_step_times_out_when_it_answers() {
        let t0 = Instant::now();
        let budgets = Budgets {
            process_alive: ms(100),
            ..Budgets::default()
        };
        let mut r = Readiness::new(t0, budgets);
        assert_eq!(r.poll_action(t0), Some(Step::ProcessAlive));
        assert_eq!(r.check_budget(t0), ms(100));
        r.handle_check(
            t0 + ms(150),
            Step::ProcessAlive,
            Err(CheckError::NotYet("slow".into())),
        );
        assert!(matches!(
            r.outcome(),
            Some(Err(ReadinessError::Timeout {
                step: Step::ProcessAlive,
                attempts: 1,
                ..
            }))
        ));
    }

    #[test]
    fn exit_fails_the_alive_step_and_says_where_it_was() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, Budgets::default());
        r.poll_action(t0);
        r.handle_check(t0, Step::ProcessAlive, Ok(()));
        r.poll_action(t0);
        r.handle_exited(t0 + ms(3), "exit status 1".into());
        let Some(Err(e)) = r.outcome() else {
            panic!("failed")
        };
        assert_eq!(e.step(), Step::ProcessAlive);
        let text = e.to_string();
        assert!(text.contains("step 1 (process alive) failed"), "{text}");
        assert!(text.contains("exit status 1"), "{text}");
        assert!(
            text.contains("while waiting for step 2 (Wayland socket)"),
            "{text}"
        );
        // A late answer changes nothing.
        r.handle_check(t0 + ms(4), Step::Socket, Ok(()));
        assert_eq!(
            r.outcome().unwrap().as_ref().unwrap_err().step(),
            Step::ProcessAlive
        );
    }

    #[test]
    fn fatal_ends_at_once() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, Budgets::default());
        let mut now = t0;
        for step in [Step::ProcessAlive, Step::Socket, Step::Roundtrip] {
            assert_eq!(r.poll_action(now), Some(step));
            r.handle_check(now, step, Ok(()));
            now += ms(1);
        }
        assert_eq!(r.poll_action(now), Some(Step::Globals));
        r.handle_check(
            now,
            Step::Globals,
            Err(CheckError::Fatal(
                "zkde_screencast_unstable_v1 is not advertised".into(),
            )),
        );
        let e = r.outcome().unwrap().as_ref().unwrap_err();
        assert_eq!(e.step(), Step::Globals);
        assert!(
            e.to_string()
                .contains("step 4 (Wayland globals) failed: zkde"),
            "{e}"
        );
    }

    #[test]
    fn answers_for_another_step_or_unasked_are_ignored() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, Budgets::default());
        r.handle_check(t0, Step::ProcessAlive, Ok(()));
        assert_eq!(r.step(), Step::ProcessAlive, "no check was handed out");
        assert_eq!(r.poll_action(t0), Some(Step::ProcessAlive));
        r.handle_check(t0, Step::Socket, Ok(()));
        assert_eq!(r.step(), Step::ProcessAlive);
        r.handle_check(t0, Step::ProcessAlive, Ok(()));
        assert_eq!(r.step(), Step::Socket);
    }

    #[test]
    fn total_budget_bounds_start_output() {
        let b = Budgets::default();
        assert_eq!(b.total(), Duration::from_secs(40));
    }
}
