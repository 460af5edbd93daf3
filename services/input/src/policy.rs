//! Sans-IO: what a seat accepts. Every event from transport goes through [`Gate::admit`]
//! before it reaches a device: a pad index the seat does not have, a value outside its range, a
//! key code outside the keyboard's set, or an event beyond the seat's rate is dropped and
//! counted, never an error of the stream and never a panic.
//!
//! Call order: [`Gate::new`] with the seat's shape; then, per event, [`Gate::admit`] with the
//! time it arrived (CLOCK_MONOTONIC ns); [`Gate::counters`] at any time. The caller records what
//! the devices did with the admitted ones ([`Counters::delivered`], `dropped_device_error`).

use punktfunk_proto::input::{PadKind, SeatCounters};
use punktfunk_proto::seat::{PadButton, seat_event::Event};

/// Pads one seat may have.
pub const MAX_PADS: usize = punktfunk_proto::limits::MAX_SEAT_PADS;
/// Touchscreen slots (fingers) of a seat.
pub const TOUCH_SLOTS: u32 = punktfunk_proto::limits::SEAT_TOUCH_SLOTS;
/// Events per second a seat sustains (a 1000 Hz mouse, four 1000 Hz pads with motion and a
/// typist fit with room to spare) ...
pub const RATE_PER_S: u64 = 12_000;
/// ... and the burst above it a seat may send at once.
pub const BURST: u64 = 2_000;
/// Largest relative motion in one event (mickeys per axis).
pub const MAX_MOTION: u32 = 32_767;
/// Largest wheel movement in one event (1/120 notch units): 64 notches.
pub const MAX_SCROLL: u32 = 120 * 64;
/// Largest acceleration a pad reports, m/s² (the DualSense's ±8 g, with margin).
pub const MAX_ACCEL: f32 = 16.0 * 9.81;
/// Largest rotation rate, rad/s (the DualSense's ±2000 °/s).
pub const MAX_GYRO: f32 = 35.0;
/// Largest output size a seat's absolute devices span (the largest mode punktfunk streams).
pub const MAX_OUTPUT: (u32, u32) = (
    punktfunk_proto::limits::MAX_WIDTH,
    punktfunk_proto::limits::MAX_HEIGHT,
);
/// Keyboard codes a seat's keyboard has: `KEY_ESC` (1) to `KEY_MICMUTE` (248), every key a PC
/// keyboard (with media and laptop keys) sends. Mouse and pad buttons are not keys.
pub const KEY_CODES: std::ops::RangeInclusive<u32> = 1..=248;
/// Mouse buttons 1..=5 (left, right, middle, side, extra).
pub const MOUSE_BUTTONS: std::ops::RangeInclusive<u32> = 1..=5;
/// Every `PadButton` bit.
pub const PAD_BUTTONS: u32 = 0x1_FFFF;
/// DualSense touchpad size (its own units).
pub const PAD_TOUCHPAD: (u32, u32) = (1920, 1080);

/// Why an event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// A pad index the seat does not have, or a pad without that sensor.
    BadPad,
    /// A value outside its range.
    OutOfRange,
    /// A key code or button outside the allowed set, or an empty event.
    BadCode,
    /// Beyond the seat's rate.
    Rate,
}

/// A seat's counters (what `punktfunkctl seats` shows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events written to a device.
    pub delivered: u64,
    /// [`Drop::BadPad`].
    pub dropped_bad_pad: u64,
    /// [`Drop::OutOfRange`].
    pub dropped_out_of_range: u64,
    /// [`Drop::BadCode`].
    pub dropped_bad_code: u64,
    /// [`Drop::Rate`].
    pub dropped_rate: u64,
    /// A device write failed.
    pub dropped_device_error: u64,
    /// Feedback events handed to transport.
    pub feedback_sent: u64,
    /// Feedback events transport did not take in time.
    pub feedback_dropped: u64,
}

impl Counters {
    /// Counts a drop.
    pub fn count(&mut self, d: Drop) {
        let c = match d {
            Drop::BadPad => &mut self.dropped_bad_pad,
            Drop::OutOfRange => &mut self.dropped_out_of_range,
            Drop::BadCode => &mut self.dropped_bad_code,
            Drop::Rate => &mut self.dropped_rate,
        };
        *c = c.saturating_add(1);
    }

    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_bad_pad
            + self.dropped_out_of_range
            + self.dropped_bad_code
            + self.dropped_rate
            + self.dropped_device_error
    }

    /// The wire form.
    pub fn to_proto(self) -> SeatCounters {
        SeatCounters {
            delivered: self.delivered,
            dropped_bad_pad: self.dropped_bad_pad,
            dropped_out_of_range: self.dropped_out_of_range,
            dropped_bad_code: self.dropped_bad_code,
            dropped_rate: self.dropped_rate,
            dropped_device_error: self.dropped_device_error,
            feedback_sent: self.feedback_sent,
            feedback_dropped: self.feedback_dropped,
        }
    }
}

/// A token bucket: [`RATE_PER_S`] tokens a second, at most [`BURST`] saved up. Kept in
/// millitokens so it needs no floats.
#[derive(Debug)]
struct Bucket {
    millitokens: u64,
    last_ns: u64,
}

impl Bucket {
    fn new(now_ns: u64) -> Self {
        Self {
            millitokens: BURST * 1000,
            last_ns: now_ns,
        }
    }

    fn take(&mut self, now_ns: u64) -> bool {
        // Capped at 10 s (longer refills the bucket anyway), so the product stays in u64.
        let elapsed = now_ns.saturating_sub(self.last_ns).min(10_000_000_000);
        // RATE_PER_S tokens per 1e9 ns = RATE_PER_S millitokens per 1e6 ns.
        let refill = elapsed * RATE_PER_S / 1_000_000;
        self.millitokens = (self.millitokens + refill).min(BURST * 1000);
        self.last_ns = self.last_ns.max(now_ns);
        if self.millitokens >= 1000 {
            self.millitokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// The admission gate of one seat.
#[derive(Debug)]
pub struct Gate {
    output: (u32, u32),
    pads: Vec<PadKind>,
    bucket: Bucket,
    counters: Counters,
}

impl Gate {
    /// A gate for a seat of `output` pixels (clamped to [`MAX_OUTPUT`]) and these pads.
    pub fn new(output: (u32, u32), pads: &[PadKind], now_ns: u64) -> Self {
        Self {
            output: (
                output.0.clamp(1, MAX_OUTPUT.0),
                output.1.clamp(1, MAX_OUTPUT.1),
            ),
            pads: pads.iter().take(MAX_PADS).copied().collect(),
            bucket: Bucket::new(now_ns),
            counters: Counters::default(),
        }
    }

    /// The output size absolute positions are in.
    pub fn output(&self) -> (u32, u32) {
        self.output
    }

    /// Whether `event` may reach a device; a refusal is counted.
    pub fn admit(&mut self, event: Option<&Event>, now_ns: u64) -> Result<(), Drop> {
        let verdict = self.check(event).and_then(|()| {
            if self.bucket.take(now_ns) {
                Ok(())
            } else {
                Err(Drop::Rate)
            }
        });
        if let Err(d) = verdict {
            self.counters.count(d);
        }
        verdict
    }

    /// The seat's counters, for the caller to add its own to.
    pub fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    fn pad(&self, pad: u32) -> Result<PadKind, Drop> {
        self.pads.get(pad as usize).copied().ok_or(Drop::BadPad)
    }

    fn dualsense(&self, pad: u32) -> Result<(), Drop> {
        match self.pad(pad)? {
            PadKind::Dualsense => Ok(()),
            _ => Err(Drop::BadPad),
        }
    }

    fn check(&self, event: Option<&Event>) -> Result<(), Drop> {
        let within = |ok: bool| if ok { Ok(()) } else { Err(Drop::OutOfRange) };
        let known = |ok: bool| if ok { Ok(()) } else { Err(Drop::BadCode) };
        let (w, h) = self.output;
        match event.ok_or(Drop::BadCode)? {
            Event::Key(k) => known(KEY_CODES.contains(&k.code)),
            Event::PointerMotion(m) => {
                within(m.dx.unsigned_abs() <= MAX_MOTION && m.dy.unsigned_abs() <= MAX_MOTION)
            }
            Event::PointerPosition(p) => within(p.x < w && p.y < h),
            Event::PointerButton(b) => known(MOUSE_BUTTONS.contains(&b.button)),
            Event::Scroll(s) => within(
                s.vertical.unsigned_abs() <= MAX_SCROLL
                    && s.horizontal.unsigned_abs() <= MAX_SCROLL,
            ),
            Event::Touch(t) => {
                within(t.slot < TOUCH_SLOTS)?;
                within(!t.down || (t.x < w && t.y < h))
            }
            Event::Pad(p) => {
                self.pad(p.pad)?;
                known(p.buttons & !PAD_BUTTONS == 0)?;
                let stick = |v: i32| i16::try_from(v).is_ok();
                within(
                    stick(p.left_x)
                        && stick(p.left_y)
                        && stick(p.right_x)
                        && stick(p.right_y)
                        && p.left_trigger <= 255
                        && p.right_trigger <= 255,
                )
            }
            Event::PadMotion(m) => {
                self.dualsense(m.pad)?;
                let a = [m.accel_x, m.accel_y, m.accel_z];
                let g = [m.gyro_x, m.gyro_y, m.gyro_z];
                within(
                    a.iter().all(|v| v.is_finite() && v.abs() <= MAX_ACCEL)
                        && g.iter().all(|v| v.is_finite() && v.abs() <= MAX_GYRO),
                )
            }
            Event::PadTouch(t) => {
                self.dualsense(t.pad)?;
                within(t.finger < 2)?;
                within(!t.down || (t.x < PAD_TOUCHPAD.0 && t.y < PAD_TOUCHPAD.1))
            }
            Event::PadBattery(b) => {
                self.dualsense(b.pad)?;
                within(b.percent <= 100)
            }
        }
    }
}

/// Whether a `PadButton` bit is set.
pub fn has(buttons: u32, b: PadButton) -> bool {
    buttons & b as u32 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_proto::seat::*;

    fn gate() -> Gate {
        Gate::new((1920, 1080), &[PadKind::Xbox, PadKind::Dualsense], 0)
    }

    #[test]
    fn admits_what_is_in_range() {
        let mut g = gate();
        let ok = [
            Event::Key(Key {
                code: 30,
                pressed: true,
            }),
            Event::PointerPosition(PointerPosition { x: 1919, y: 1079 }),
            Event::PointerButton(PointerButton {
                button: 5,
                pressed: true,
            }),
            Event::Touch(Touch {
                slot: 9,
                x: 0,
                y: 0,
                down: true,
            }),
            Event::Pad(PadState {
                pad: 1,
                buttons: PAD_BUTTONS,
                left_x: -32768,
                right_trigger: 255,
                ..Default::default()
            }),
            Event::PadMotion(PadMotion {
                pad: 1,
                accel_z: 9.81,
                gyro_x: 1.0,
                ..Default::default()
            }),
            Event::PadTouch(PadTouch {
                pad: 1,
                finger: 1,
                x: 1919,
                y: 1079,
                down: true,
            }),
            Event::PadBattery(PadBattery {
                pad: 1,
                percent: 100,
                charging: false,
            }),
        ];
        for e in &ok {
            assert_eq!(g.admit(Some(e), 0), Ok(()), "{e:?}");
        }
        assert_eq!(g.counters().dropped(), 0);
    }

    #[test]
    fn drops_and_counts_what_is_not() {
        let mut g = gate();
        let cases = [
            (
                Event::Key(Key {
                    code: 0x110,
                    pressed: true,
                }),
                Drop::BadCode,
            ),
            (
                Event::Key(Key {
                    code: 0,
                    pressed: true,
                }),
                Drop::BadCode,
            ),
            (
                Event::PointerButton(PointerButton {
                    button: 6,
                    pressed: true,
                }),
                Drop::BadCode,
            ),
            (
                Event::PointerPosition(PointerPosition { x: 1920, y: 0 }),
                Drop::OutOfRange,
            ),
            (
                Event::PointerPosition(PointerPosition {
                    x: u32::MAX,
                    y: u32::MAX,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PointerMotion(PointerMotion {
                    dx: i32::MIN,
                    dy: 0,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::Scroll(Scroll {
                    vertical: MAX_SCROLL as i32 + 1,
                    horizontal: 0,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::Touch(Touch {
                    slot: 10,
                    x: 0,
                    y: 0,
                    down: true,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::Pad(PadState {
                    pad: 2,
                    ..Default::default()
                }),
                Drop::BadPad,
            ),
            (
                Event::Pad(PadState {
                    pad: u32::MAX,
                    ..Default::default()
                }),
                Drop::BadPad,
            ),
            (
                Event::Pad(PadState {
                    pad: 0,
                    buttons: 1 << 20,
                    ..Default::default()
                }),
                Drop::BadCode,
            ),
            (
                Event::Pad(PadState {
                    pad: 0,
                    left_x: 40_000,
                    ..Default::default()
                }),
                Drop::OutOfRange,
            ),
            (
                Event::Pad(PadState {
                    pad: 0,
                    left_trigger: 256,
                    ..Default::default()
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PadMotion(PadMotion {
                    pad: 0,
                    ..Default::default()
                }),
                Drop::BadPad,
            ),
            (
                Event::PadMotion(PadMotion {
                    pad: 1,
                    gyro_x: f32::NAN,
                    ..Default::default()
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PadMotion(PadMotion {
                    pad: 1,
                    accel_x: f32::INFINITY,
                    ..Default::default()
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PadTouch(PadTouch {
                    pad: 1,
                    finger: 2,
                    x: 0,
                    y: 0,
                    down: true,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PadTouch(PadTouch {
                    pad: 1,
                    finger: 0,
                    x: 1920,
                    y: 0,
                    down: true,
                }),
                Drop::OutOfRange,
            ),
            (
                Event::PadBattery(PadBattery {
                    pad: 1,
                    percent: 101,
                    charging: false,
                }),
                Drop::OutOfRange,
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(g.admit(Some(e), 0), Err(*want), "{e:?}");
        }
        assert_eq!(g.admit(None, 0), Err(Drop::BadCode));
        let c = *g.counters();
        assert_eq!(c.dropped_bad_code, 5);
        assert_eq!(c.dropped_bad_pad, 3);
        assert_eq!(c.dropped_out_of_range, 12);
        assert_eq!(c.dropped(), cases.len() as u64 + 1);
    }

    #[test]
    fn a_flood_is_cut_to_the_rate() {
        let mut g = gate();
        let e = Event::PointerMotion(PointerMotion { dx: 1, dy: 1 });
        // 10,000 events at one instant: the burst passes, the rest is dropped.
        let passed = (0..10_000)
            .filter(|_| g.admit(Some(&e), 1_000).is_ok())
            .count() as u64;
        assert_eq!(passed, BURST);
        assert_eq!(g.counters().dropped_rate, 10_000 - BURST);
        // One second later the bucket has refilled to the burst, no more.
        let later = (0..10_000)
            .filter(|_| g.admit(Some(&e), 1_000_001_000).is_ok())
            .count() as u64;
        assert_eq!(later, BURST);
        // A steady stream at the rate passes whole: one event every 1e9 / RATE ns.
        let step = 1_000_000_000 / RATE_PER_S;
        let mut t = 3_000_000_000;
        let steady = (0..RATE_PER_S)
            .filter(|_| {
                t += step;
                g.admit(Some(&e), t).is_ok()
            })
            .count() as u64;
        assert_eq!(steady, RATE_PER_S);
    }

    #[test]
    fn pads_beyond_the_limit_are_not_kept() {
        let mut g = Gate::new((10, 10), &[PadKind::Xbox; 9], 0);
        let e = Event::Pad(PadState {
            pad: MAX_PADS as u32,
            ..Default::default()
        });
        assert_eq!(g.admit(Some(&e), 0), Err(Drop::BadPad));
        let huge = Gate::new((u32::MAX, 0), &[], 0);
        assert_eq!(huge.output(), (MAX_OUTPUT.0, 1));
    }
}
