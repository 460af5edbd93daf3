//! The stream lease: when a stream has lost its consumer (sans-IO, no clock, no GStreamer).
//!
//! A stream lives until `StopStream` — or until nobody consumes it. Transport may give up on a
//! stream without saying so (its supervisor declared media lost, a Reconfigure was refused,
//! transport was killed or is wedged); media then reaps the orphan itself. A stream is orphaned
//! when:
//!
//! * its ring ticket was **not redeemed** before the fd channel let it expire
//!   (`ipc.ticket_ttl_ms`): nobody will ever read these rings;
//! * records **wait unread** in its rings while the consumer's read counter (`records_read`, in
//!   the ring's shared memory) has not moved for [`LEASE`]. Both rings count: a read of either
//!   the video or the audio ring is progress, and records waiting in either are unread. The
//!   lease asks whether the consumer is alive, not whether each of its pumps is healthy: a
//!   consumer that reads audio but not video is transport's own bug, and reaping would take
//!   its audio away too. A source that produces nothing leaves nothing unread, so it is never
//!   reaped for that alone;
//! * its **pipeline is dead** (GStreamer failed it, or a mode change did not come back) for
//!   [`LEASE`]: it produces nothing for anyone, yet holds its budget and its consumer waits on
//!   a ring that never closes.
//!
//! Only time between observations at most [`MAX_OBSERVATION_STEP`] apart counts towards the
//! lease: if media itself was stopped (SIGSTOP) or starved, the consumer cannot be blamed for
//! the records that piled up meanwhile, so a long gap adds only that step.
//!
//! # Call order
//!
//! Per check (the daemon's reaper does one every [`REAP_INTERVAL`]), with the same `now`:
//!
//! 1. [`Lease::handle_ticket`] with what the fd channel says of the ring ticket;
//! 2. [`Lease::handle_pipeline`] with whether the pipeline is alive;
//! 3. [`Lease::handle_rings`] with the rings' counters ([`RingProgress`]);
//! 4. [`Lease::poll_orphaned`]: `Some(reason)` → stop the stream (once: the lease stays
//!    expired).
//!
//! [`Lease::poll_timeout`] says when, without further progress, the verdict would change.

use std::fmt;
use std::time::{Duration, Instant};

/// How long records may wait unread, or a pipeline stay dead, before the stream is reaped.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often the daemon checks its streams' leases.
pub const REAP_INTERVAL: Duration = Duration::from_millis(250);
/// The most one observation adds to a stall: a longer gap between two checks means the reaper
/// itself was not running (media stopped or starved), not that the consumer is gone.
pub const MAX_OBSERVATION_STEP: Duration = Duration::from_millis(500);

/// What the fd channel knows about the stream's ring ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    /// Issued, not yet redeemed, still valid.
    Pending,
    /// The consumer took the ring fds.
    Redeemed,
    /// It expired unredeemed (or the fd channel forgot it without a redemption).
    Expired,
}

/// The rings' counters, summed over the video and (if any) audio ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingProgress {
    /// Records the consumer has released (`RingStats::records_read`).
    pub records_read: u64,
    /// Records published and not yet released (`RingStats::lag_records`).
    pub unread: u64,
}

/// Why a stream was found orphaned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphaned {
    /// The ring ticket expired unredeemed.
    TicketNotRedeemed,
    /// `unread` records waited while the consumer read none for `stalled`.
    ConsumerStalled {
        /// Records waiting in the ring.
        unread: u64,
        /// How long the consumer read none of them.
        stalled: Duration,
    },
    /// The pipeline was dead for `dead`.
    PipelineDead {
        /// How long the pipeline has been dead.
        dead: Duration,
    },
}

impl fmt::Display for Orphaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Orphaned::TicketNotRedeemed => write!(
                f,
                "its ring ticket expired unredeemed (nobody took the rings)"
            ),
            Orphaned::ConsumerStalled { unread, stalled } => write!(
                f,
                "its consumer read nothing for {:.1} s while {unread} records waited",
                stalled.as_secs_f64()
            ),
            Orphaned::PipelineDead { dead } => write!(
                f,
                "its pipeline has been dead for {:.1} s",
                dead.as_secs_f64()
            ),
        }
    }
}

/// One stream's lease. See the module docs for the rules and the call order.
#[derive(Clone, Debug)]
pub struct Lease {
    lease: Duration,
    ticket: Ticket,
    last_observation: Instant,
    /// `records_read` at the last observation.
    last_read: Option<u64>,
    unread: u64,
    /// Time counted towards the lease while records waited unread.
    stalled: Duration,
    /// Time counted while the pipeline was dead.
    dead: Duration,
    pipeline_alive: bool,
    orphaned: Option<Orphaned>,
}

impl Lease {
    /// A lease for a stream started at `now`, expiring after `lease` without progress.
    pub fn new(now: Instant, lease: Duration) -> Self {
        Lease {
            lease,
            ticket: Ticket::Pending,
            last_observation: now,
            last_read: None,
            unread: 0,
            stalled: Duration::ZERO,
            dead: Duration::ZERO,
            pipeline_alive: true,
            orphaned: None,
        }
    }

    /// The time since the previous observation that counts (capped), and advances the clock.
    fn step(&mut self, now: Instant) -> Duration {
        let step = now
            .saturating_duration_since(self.last_observation)
            .min(MAX_OBSERVATION_STEP);
        self.last_observation = self.last_observation.max(now);
        step
    }

    /// What the fd channel says of the ring ticket. A redemption is final.
    pub fn handle_ticket(&mut self, _now: Instant, ticket: Ticket) {
        if self.ticket != Ticket::Redeemed {
            self.ticket = ticket;
        }
    }

    /// Whether the pipeline is alive (not failed, not torn down by a failed mode change).
    pub fn handle_pipeline(&mut self, _now: Instant, alive: bool) {
        if alive {
            self.dead = Duration::ZERO;
        }
        self.pipeline_alive = alive;
    }

    /// The rings' counters at `now`. Call after [`Self::handle_pipeline`]: this observation
    /// advances both the stall and the dead-pipeline clocks.
    pub fn handle_rings(&mut self, now: Instant, rings: RingProgress) {
        let step = self.step(now);
        let progressed = self.last_read.is_some_and(|r| r != rings.records_read);
        // Until the rings are redeemed nobody can read them: the ticket's own expiry judges
        // that time, not the stall clock (a slow redemption is not a stalled consumer).
        if progressed || rings.unread == 0 || self.ticket != Ticket::Redeemed {
            self.stalled = Duration::ZERO;
        } else if self.last_read.is_some() && self.unread > 0 {
            // Records waited over the whole step (they were there at its start and still are).
            self.stalled += step;
        }
        if !self.pipeline_alive {
            self.dead += step;
        }
        self.last_read = Some(rings.records_read);
        self.unread = rings.unread;
    }

    /// `Some(reason)` once the stream is orphaned; it stays orphaned.
    pub fn poll_orphaned(&mut self, _now: Instant) -> Option<Orphaned> {
        if self.orphaned.is_none() {
            self.orphaned = self.verdict();
        }
        self.orphaned.clone()
    }

    fn verdict(&self) -> Option<Orphaned> {
        if self.ticket == Ticket::Expired {
            return Some(Orphaned::TicketNotRedeemed);
        }
        if self.stalled >= self.lease {
            return Some(Orphaned::ConsumerStalled {
                unread: self.unread,
                stalled: self.stalled,
            });
        }
        if self.dead >= self.lease {
            return Some(Orphaned::PipelineDead { dead: self.dead });
        }
        None
    }

    /// When the stream would be orphaned if no progress came (and the reaper kept checking);
    /// `None` while nothing is running down (nothing unread, pipeline alive), or once orphaned.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.orphaned.is_some() {
            return None;
        }
        let left = |used: Duration| self.last_observation + self.lease.saturating_sub(used);
        let stall = (self.unread > 0).then(|| left(self.stalled));
        let dead = (!self.pipeline_alive).then(|| left(self.dead));
        match (stall, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The ticket as last reported.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = REAP_INTERVAL;

    fn progress(records_read: u64, unread: u64) -> RingProgress {
        RingProgress {
            records_read,
            unread,
        }
    }

    /// Drives one check at `now` in the documented order.
    fn check(
        l: &mut Lease,
        now: Instant,
        ticket: Ticket,
        alive: bool,
        rings: RingProgress,
    ) -> Option<Orphaned> {
        l.handle_ticket(now, ticket);
        l.handle_pipeline(now, alive);
        l.handle_rings(now, rings);
        l.poll_orphaned(now)
    }

    #[test]
    fn a_consumer_that_reads_keeps_the_stream() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        // 60 s of checks: 15 new records per tick, all but the newest 2 read.
        for i in 1..=240u64 {
            let now = t0 + TICK * i as u32;
            let r = check(&mut l, now, Ticket::Redeemed, true, progress(15 * i, 2));
            assert_eq!(r, None, "tick {i}");
        }
    }

    #[test]
    fn a_consumer_that_stops_reading_is_reaped_after_the_lease() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        let mut read = 0;
        for i in 1..=8u32 {
            read += 15;
            assert_eq!(
                check(
                    &mut l,
                    t0 + TICK * i,
                    Ticket::Redeemed,
                    true,
                    progress(read, 1)
                ),
                None
            );
        }
        // From tick 8 on, nothing more is read while records pile up.
        let stop = t0 + TICK * 8;
        let mut reaped_at = None;
        for i in 9..=40u32 {
            let now = t0 + TICK * i;
            if let Some(why) = check(
                &mut l,
                now,
                Ticket::Redeemed,
                true,
                progress(read, u64::from(i)),
            ) {
                assert!(
                    matches!(why, Orphaned::ConsumerStalled { stalled, .. } if stalled >= LEASE),
                    "{why:?}"
                );
                reaped_at = Some(now);
                break;
            }
        }
        let reaped_at = reaped_at.expect("reaped");
        let after = reaped_at - stop;
        assert!(after >= LEASE && after <= LEASE + TICK, "{after:?}");
    }

    #[test]
    fn a_source_that_produces_nothing_is_not_reaped() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        for i in 1..=400u32 {
            let r = check(
                &mut l,
                t0 + TICK * i,
                Ticket::Redeemed,
                true,
                progress(7, 0),
            );
            assert_eq!(r, None, "tick {i}");
            assert_eq!(l.poll_timeout(), None);
        }
    }

    #[test]
    fn a_first_record_after_a_long_silence_starts_the_lease_from_zero() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        for i in 1..=100u32 {
            assert_eq!(
                check(
                    &mut l,
                    t0 + TICK * i,
                    Ticket::Redeemed,
                    true,
                    progress(5, 0)
                ),
                None
            );
        }
        // One record arrives; the consumer is slow to take it but does within the lease.
        for i in 101..=110u32 {
            assert_eq!(
                check(
                    &mut l,
                    t0 + TICK * i,
                    Ticket::Redeemed,
                    true,
                    progress(5, 1)
                ),
                None,
                "tick {i}"
            );
        }
        assert_eq!(
            check(
                &mut l,
                t0 + TICK * 111,
                Ticket::Redeemed,
                true,
                progress(6, 0)
            ),
            None
        );
    }

    #[test]
    fn an_unredeemed_ticket_is_reaped_when_it_expires() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        // No records either (a source that has not produced yet): only the ticket decides.
        for i in 1..=20u32 {
            let r = check(&mut l, t0 + TICK * i, Ticket::Pending, true, progress(0, 0));
            assert_eq!(r, None);
        }
        let r = check(
            &mut l,
            t0 + TICK * 21,
            Ticket::Expired,
            true,
            progress(0, 0),
        );
        assert_eq!(r, Some(Orphaned::TicketNotRedeemed));
        // It stays orphaned.
        assert_eq!(
            l.poll_orphaned(t0 + TICK * 22),
            Some(Orphaned::TicketNotRedeemed)
        );
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_redeemed_ticket_stays_redeemed() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        l.handle_ticket(t0, Ticket::Redeemed);
        // The fd channel forgets spent tickets eventually; that is not an expiry.
        assert_eq!(
            check(&mut l, t0 + TICK, Ticket::Expired, true, progress(0, 0)),
            None
        );
        assert_eq!(l.ticket(), Ticket::Redeemed);
    }

    #[test]
    fn media_being_stopped_does_not_blame_the_consumer() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        assert_eq!(
            check(&mut l, t0 + TICK, Ticket::Redeemed, true, progress(10, 0)),
            None
        );
        assert_eq!(
            check(
                &mut l,
                t0 + TICK * 2,
                Ticket::Redeemed,
                true,
                progress(20, 1)
            ),
            None
        );
        // Media was stopped for 10 s (no checks); frames piled up; the consumer is alive and
        // reads again at the next check.
        let resumed = t0 + TICK * 2 + Duration::from_secs(10);
        assert_eq!(
            check(&mut l, resumed, Ticket::Redeemed, true, progress(20, 40)),
            None,
            "a stall seen across one long gap counts one capped step"
        );
        assert_eq!(
            check(
                &mut l,
                resumed + TICK,
                Ticket::Redeemed,
                true,
                progress(60, 1)
            ),
            None
        );
        // But a consumer that is really gone is still reaped: the lease runs from the resume.
        let mut reaped = None;
        for i in 2..=40u32 {
            let now = resumed + TICK * i;
            if let Some(why) = check(&mut l, now, Ticket::Redeemed, true, progress(60, 10)) {
                reaped = Some((now - resumed, why));
                break;
            }
        }
        let (after, why) = reaped.expect("reaped");
        assert!(matches!(why, Orphaned::ConsumerStalled { .. }), "{why:?}");
        assert!(
            after >= LEASE - MAX_OBSERVATION_STEP && after <= LEASE + TICK * 2,
            "{after:?}"
        );
    }

    #[test]
    fn a_slow_redemption_is_not_a_stalled_consumer() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        // Records pile up for 4.5 s while the ticket is still live (not yet redeemed).
        for i in 1..=18u32 {
            assert_eq!(
                check(
                    &mut l,
                    t0 + TICK * i,
                    Ticket::Pending,
                    true,
                    progress(0, u64::from(i))
                ),
                None
            );
        }
        // Redeemed: the consumer gets its full lease from now.
        let redeemed = t0 + TICK * 19;
        assert_eq!(
            check(&mut l, redeemed, Ticket::Redeemed, true, progress(0, 19)),
            None
        );
        assert_eq!(
            check(
                &mut l,
                redeemed + TICK,
                Ticket::Redeemed,
                true,
                progress(19, 1)
            ),
            None
        );
    }

    #[test]
    fn a_dead_pipeline_is_reaped_after_the_lease_and_revival_resets_it() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        for i in 1..=8u32 {
            assert_eq!(
                check(
                    &mut l,
                    t0 + TICK * i,
                    Ticket::Redeemed,
                    false,
                    progress(3, 0)
                ),
                None
            );
        }
        // 2 s of the 3 s are used up at t0 + 2 s.
        assert_eq!(l.poll_timeout(), Some(t0 + LEASE));
        // It came back (a slow rebuild): the clock resets.
        assert_eq!(
            check(
                &mut l,
                t0 + TICK * 9,
                Ticket::Redeemed,
                true,
                progress(3, 0)
            ),
            None
        );
        let mut reaped = None;
        for i in 10..=40u32 {
            let now = t0 + TICK * i;
            if let Some(why) = check(&mut l, now, Ticket::Redeemed, false, progress(3, 0)) {
                reaped = Some((now - (t0 + TICK * 9), why));
                break;
            }
        }
        let (after, why) = reaped.expect("reaped");
        assert!(matches!(why, Orphaned::PipelineDead { .. }), "{why:?}");
        assert_eq!(after, LEASE);
    }

    #[test]
    fn poll_timeout_tracks_the_stall() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, LEASE);
        assert_eq!(l.poll_timeout(), None);
        l.handle_ticket(t0, Ticket::Redeemed);
        l.handle_rings(t0 + TICK, progress(0, 4));
        assert_eq!(l.poll_timeout(), Some(t0 + TICK + LEASE));
        l.handle_rings(t0 + TICK * 2, progress(0, 9));
        assert_eq!(l.poll_timeout(), Some(t0 + TICK + LEASE));
        l.handle_rings(t0 + TICK * 3, progress(9, 0));
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn the_reasons_read_as_sentences() {
        let s = Orphaned::ConsumerStalled {
            unread: 181,
            stalled: Duration::from_millis(3_000),
        }
        .to_string();
        assert_eq!(
            s,
            "its consumer read nothing for 3.0 s while 181 records waited"
        );
        assert!(
            Orphaned::TicketNotRedeemed
                .to_string()
                .contains("expired unredeemed")
        );
    }
}
