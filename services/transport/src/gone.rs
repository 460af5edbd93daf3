//! Noticing a killed client by its closed data port, long before the QUIC idle timeout.
//!
//! The video sender's socket is connected to the client's data port. When the client's process
//! dies, its kernel answers our next datagrams with ICMP port-unreachable, and the next send on
//! the connected socket fails with ECONNREFUSED (the sender counts it:
//! `SenderStats::refused`, and retries). A live client never closes its data port during a
//! session, and a client that merely went quiet (Wi-Fi hiccup, machine asleep) sends no ICMP,
//! so it still gets the full idle timeout. On loopback ICMP is not rate-limited; towards a LAN
//! peer Linux allows a burst of 6 and then one per second, so the threshold below is reached
//! within the first frames after the death either way.
//!
//! [`PortWatch`] is the sans-IO policy. Call order: [`PortWatch::handle_sample`] with the
//! sender's cumulative `refused` count every [`SAMPLE_INTERVAL`] (any cadence works: the
//! window is in time), then [`PortWatch::poll_gone`].

use std::collections::VecDeque;
use std::time::Duration;

/// How often the session samples its video sender's refusal count.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Refusals within [`WINDOW`] that mean the client's port is closed: more than one stray ICMP
/// (a datagram of an earlier session on a reused port) can explain.
pub const REFUSALS: u64 = 3;

/// The window [`REFUSALS`] must fall in.
pub const WINDOW: Duration = Duration::from_millis(500);

/// Counts refused sends over a sliding window; says when the client is gone.
#[derive(Debug, Default)]
pub struct PortWatch {
    /// (time, cumulative refusals) samples no older than [`WINDOW`] before the newest, plus
    /// the one just before them (the window's baseline).
    samples: VecDeque<(u64, u64)>,
}

impl PortWatch {
    /// One sample at `now_ns` of the sender's cumulative refusal count.
    pub fn handle_sample(&mut self, now_ns: u64, refused_total: u64) {
        self.samples.push_back((now_ns, refused_total));
        let window = WINDOW.as_nanos() as u64;
        // Keep one sample at or before the window's start as the baseline.
        while self.samples.len() > 2 && now_ns.saturating_sub(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
    }

    /// `Some(refusals)` once [`REFUSALS`] or more sends were refused within the window.
    pub fn poll_gone(&self) -> Option<u64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let refused = last.1.saturating_sub(first.1);
        (refused >= REFUSALS).then_some(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn feed(w: &mut PortWatch, samples: &[(u64, u64)]) {
        for &(t, r) in samples {
            w.handle_sample(t * MS, r);
        }
    }

    #[test]
    fn a_closed_port_is_noticed_within_a_few_samples() {
        let mut w = PortWatch::default();
        feed(&mut w, &[(0, 0), (100, 0), (200, 0)]);
        assert_eq!(w.poll_gone(), None);
        // The client dies: every frame's first send is refused.
        feed(&mut w, &[(300, 6)]);
        assert_eq!(w.poll_gone(), Some(6));
    }

    #[test]
    fn stray_refusals_spread_over_time_are_not_a_death() {
        let mut w = PortWatch::default();
        let mut total = 0;
        for i in 0..50 {
            // One refusal every 400 ms: never three within 500 ms.
            if i % 4 == 0 {
                total += 1;
            }
            w.handle_sample(i * 100 * MS, total);
            assert_eq!(w.poll_gone(), None, "at {} ms", i * 100);
        }
    }

    #[test]
    fn refusals_counted_before_the_window_do_not_add_up() {
        let mut w = PortWatch::default();
        feed(&mut w, &[(0, 0), (100, 2), (700, 2), (800, 3)]);
        assert_eq!(w.poll_gone(), None);
        feed(&mut w, &[(900, 5)]);
        assert_eq!(w.poll_gone(), Some(3));
    }

    #[test]
    fn a_slow_sampler_still_sees_the_burst() {
        let mut w = PortWatch::default();
        feed(&mut w, &[(0, 0), (2000, 4)]);
        assert_eq!(w.poll_gone(), Some(4));
    }
}
