//! NTP-style clock offset between the client's and the host's `CLOCK_MONOTONIC`.
//!
//! One round: the client sends `ClockProbe { client_send_ns = t0 }`, the host answers
//! `ClockEcho { host_recv_ns = t1, host_send_ns = t2 }`, the client receives it at `t3`.
//!
//! ```text
//! offset = ((t1 − t0) + (t2 − t3)) / 2      (host clock − client clock)
//! rtt    = (t3 − t0) − (t2 − t1)            (network round trip, host processing removed)
//! ```
//!
//! If the two one-way delays are `d_up` and `d_down`, the computed offset is off by
//! `(d_up − d_down) / 2`, which is at most `rtt / 2` in magnitude. [`ClockSync`] therefore keeps
//! the sample with the smallest RTT of its rounds: it has the tightest error bound
//! ([`ClockEstimate::error_bound_ns`]). All arithmetic is done in `i128`; results saturate
//! instead of overflowing, so hostile timestamps cannot panic anything.

/// Rounds of one clock synchronisation (docs/protocol.md, "Clock sync").
pub const CLOCK_ROUNDS: u32 = 8;

/// The four timestamps of one probe round, each in its own clock's ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// `t0`: client clock when the probe was sent.
    pub client_send_ns: u64,
    /// `t1`: host clock when the probe was received.
    pub host_recv_ns: u64,
    /// `t2`: host clock when the echo was sent.
    pub host_send_ns: u64,
    /// `t3`: client clock when the echo was received.
    pub client_recv_ns: u64,
}

/// Why a [`ClockSample`] is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The echo arrived (per the client clock) before the probe was sent.
    #[error("clock sample: client receive time precedes send time")]
    ClientTimeReversed,
    /// The host claims to have sent the echo before it received the probe.
    #[error("clock sample: host send time precedes receive time")]
    HostTimeReversed,
    /// The host claims to have held the probe longer than the whole round trip took.
    #[error("clock sample: host processing time exceeds the round trip")]
    NegativeRtt,
}

fn saturate_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl ClockSample {
    /// `((t1 − t0) + (t2 − t3)) / 2`: host clock minus client clock (saturating).
    pub fn offset_ns(&self) -> i64 {
        let t0 = i128::from(self.client_send_ns);
        let t1 = i128::from(self.host_recv_ns);
        let t2 = i128::from(self.host_send_ns);
        let t3 = i128::from(self.client_recv_ns);
        saturate_i64(((t1 - t0) + (t2 - t3)).div_euclid(2))
    }

    /// `(t3 − t0) − (t2 − t1)`, or an error if the sample is inconsistent.
    pub fn rtt_ns(&self) -> Result<u64, ClockError> {
        let round = self
            .client_recv_ns
            .checked_sub(self.client_send_ns)
            .ok_or(ClockError::ClientTimeReversed)?;
        let held = self
            .host_send_ns
            .checked_sub(self.host_recv_ns)
            .ok_or(ClockError::HostTimeReversed)?;
        round.checked_sub(held).ok_or(ClockError::NegativeRtt)
    }

    /// The estimate from this one sample.
    pub fn estimate(&self) -> Result<ClockEstimate, ClockError> {
        Ok(ClockEstimate {
            offset_ns: self.offset_ns(),
            rtt_ns: self.rtt_ns()?,
        })
    }
}

/// Result of a synchronisation: `host_time = client_time + offset_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockEstimate {
    /// Host clock minus client clock, ns.
    pub offset_ns: i64,
    /// Round trip of the sample the offset came from, ns.
    pub rtt_ns: u64,
}

impl ClockEstimate {
    /// Host `CLOCK_MONOTONIC` ns → client `CLOCK_MONOTONIC` ns (saturating at 0 and `u64::MAX`).
    pub fn to_client_time(&self, host_ns: u64) -> u64 {
        let v = i128::from(host_ns) - i128::from(self.offset_ns);
        v.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Client `CLOCK_MONOTONIC` ns → host `CLOCK_MONOTONIC` ns (saturating at 0 and `u64::MAX`).
    pub fn to_host_time(&self, client_ns: u64) -> u64 {
        let v = i128::from(client_ns) + i128::from(self.offset_ns);
        v.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Worst-case error of `offset_ns` (however asymmetric the path): `rtt_ns / 2`, rounded up.
    pub fn error_bound_ns(&self) -> u64 {
        self.rtt_ns.div_ceil(2)
    }
}

/// Collects samples and keeps the one with the smallest RTT.
#[derive(Clone, Debug, Default)]
pub struct ClockSync {
    best: Option<ClockEstimate>,
    accepted: u32,
    rejected: u32,
}

impl ClockSync {
    /// An empty estimator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample; an inconsistent one is counted and otherwise ignored.
    pub fn add(&mut self, sample: ClockSample) -> Result<ClockEstimate, ClockError> {
        match sample.estimate() {
            Ok(e) => {
                self.accepted = self.accepted.saturating_add(1);
                if self.best.is_none_or(|b| e.rtt_ns < b.rtt_ns) {
                    self.best = Some(e);
                }
                Ok(e)
            }
            Err(err) => {
                self.rejected = self.rejected.saturating_add(1);
                Err(err)
            }
        }
    }

    /// The minimum-RTT estimate so far.
    pub fn best(&self) -> Option<ClockEstimate> {
        self.best
    }

    /// Samples accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    /// Samples rejected as inconsistent so far.
    pub fn rejected(&self) -> u32 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round with the host clock = client clock + `skew`, one-way delays `up`/`down`, host
    /// holding the probe for `hold`.
    fn round(t0: u64, skew: i64, up: u64, hold: u64, down: u64) -> ClockSample {
        let host = |client: u64| (i128::from(client) + i128::from(skew)) as u64;
        ClockSample {
            client_send_ns: t0,
            host_recv_ns: host(t0 + up),
            host_send_ns: host(t0 + up + hold),
            client_recv_ns: t0 + up + hold + down,
        }
    }

    #[test]
    fn symmetric_delay_recovers_skew_exactly() {
        for skew in [0i64, 1, -1, 5_000_000_000, -7_123_456_789] {
            let s = round(10_000_000_000, skew, 300_000, 50_000, 300_000);
            let e = s.estimate().unwrap();
            assert_eq!(e.offset_ns, skew);
            assert_eq!(e.rtt_ns, 600_000);
            let host_t = s.host_recv_ns;
            assert_eq!(e.to_client_time(host_t), 10_000_300_000);
            assert_eq!(e.to_host_time(10_000_300_000), host_t);
        }
    }

    #[test]
    fn asymmetric_delay_error_is_within_half_rtt() {
        let skew = -3_000_000_000i64;
        let s = round(20_000_000_000, skew, 900_000, 10_000, 100_000);
        let e = s.estimate().unwrap();
        assert_eq!(e.rtt_ns, 1_000_000);
        let err = (e.offset_ns - skew).unsigned_abs();
        assert_eq!(err, 400_000); // (up − down) / 2
        assert!(err <= e.error_bound_ns());
    }

    #[test]
    fn min_rtt_sample_wins() {
        let skew = 123_456_789i64;
        let mut sync = ClockSync::new();
        let delays = [
            (5_000_000, 100_000),
            (200_000, 200_000),
            (100_000, 4_000_000),
            (300_000, 250_000),
        ];
        for (i, (up, down)) in delays.into_iter().enumerate() {
            sync.add(round(1_000_000_000 * (i as u64 + 1), skew, up, 1_000, down))
                .unwrap();
        }
        let best = sync.best().unwrap();
        assert_eq!(best.rtt_ns, 400_000);
        assert_eq!(best.offset_ns, skew);
        assert_eq!(sync.accepted(), 4);
    }

    #[test]
    fn inconsistent_samples_are_rejected_not_panicking() {
        let mut sync = ClockSync::new();
        let bad = [
            ClockSample {
                client_send_ns: 10,
                host_recv_ns: 0,
                host_send_ns: 0,
                client_recv_ns: 5,
            },
            ClockSample {
                client_send_ns: 0,
                host_recv_ns: 10,
                host_send_ns: 5,
                client_recv_ns: 20,
            },
            ClockSample {
                client_send_ns: 0,
                host_recv_ns: 0,
                host_send_ns: 100,
                client_recv_ns: 20,
            },
        ];
        assert_eq!(sync.add(bad[0]), Err(ClockError::ClientTimeReversed));
        assert_eq!(sync.add(bad[1]), Err(ClockError::HostTimeReversed));
        assert_eq!(sync.add(bad[2]), Err(ClockError::NegativeRtt));
        assert_eq!(sync.best(), None);
        assert_eq!(sync.rejected(), 3);
    }

    #[test]
    fn extreme_values_saturate() {
        let s = ClockSample {
            client_send_ns: 0,
            host_recv_ns: u64::MAX,
            host_send_ns: u64::MAX,
            client_recv_ns: 0,
        };
        assert_eq!(s.offset_ns(), i64::MAX);
        let e = ClockEstimate {
            offset_ns: i64::MIN,
            rtt_ns: u64::MAX,
        };
        assert_eq!(e.to_client_time(u64::MAX), u64::MAX);
        assert_eq!(e.to_host_time(0), 0);
        assert_eq!(e.error_bound_ns(), u64::MAX / 2 + 1);
    }
}
