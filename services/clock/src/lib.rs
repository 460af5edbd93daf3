//! The one clock of punktfunk: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Every timestamp the system passes around — ring records, data-plane arrivals, send stages,
//! control-plane clock probes — is this clock's. It is system-wide, so stamps taken in
//! different processes on one host are comparable; the client maps the host's stamps to its
//! own through the control plane's clock offset. Both readings go through the vDSO (no system
//! call).
#![forbid(unsafe_code)]

use rustix::time::{ClockId, Timespec, clock_gettime};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of every timestamp.
#[inline]
pub fn monotonic_ns() -> u64 {
    ns(clock_gettime(ClockId::Monotonic))
}

/// CPU time the calling thread has consumed, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
#[inline]
pub fn thread_cpu_ns() -> u64 {
    ns(clock_gettime(ClockId::ThreadCPUTime))
}

/// A timespec of a clock that is never negative as nanoseconds; `max(0)` only guards the
/// conversions, and the sum saturates (after 584 years).
#[inline]
fn ns(ts: Timespec) -> u64 {
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let mut last = monotonic_ns();
        assert!(last > 0);
        for _ in 0..1000 {
            let now = monotonic_ns();
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        let deadline = monotonic_ns() + 20_000_000;
        while monotonic_ns() < deadline {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(thread_cpu_ns() > before, "no CPU time counted ({x})");
    }

    #[test]
    fn is_the_clock_of_std_instant() {
        // std's Instant is CLOCK_MONOTONIC on Linux: each Instant reading lies between the two
        // of ours around it, so an interval of Instant lies within the bracketing intervals.
        let t0 = monotonic_ns();
        let start = std::time::Instant::now();
        let t1 = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let t2 = monotonic_ns();
        let elapsed = start.elapsed().as_nanos() as u64;
        let t3 = monotonic_ns();
        assert!(t1 >= t0 && t3 >= t2);
        assert!(
            (t2 - t1..=t3 - t0).contains(&elapsed),
            "{elapsed} outside {}..={}",
            t2 - t1,
            t3 - t0
        );
    }
}
