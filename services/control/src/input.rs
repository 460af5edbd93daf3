//! punktfunk/1 input and feedback datagrams, mapped to and from the protocol-neutral seat model
//! (`punktfunk.seat.v1`, spoken by punktfunk-input).
//!
//! - [`decode_input`]: one QUIC datagram → `InputEvent`, bounded by [`MAX_INPUT_DATAGRAM`].
//! - [`InputMapper`]: `InputEvent` → `SeatEvent`. Absolute mouse and touch positions are scaled
//!   from the client's surface (the event's `width` × `height`) to the output mode; pad fields
//!   keep their units (the seat model uses the same). The client's timestamp is turned into the
//!   host's clock with a [`SkewEstimator`]. Values out of range are passed on as they are (or
//!   as `u32::MAX` when scaling overflows): punktfunk-input drops and counts them per seat.
//! - [`feedback_datagram`]: `SeatFeedback` → an encoded `FeedbackEvent`.
//!
//! Call order: [`InputMapper::new`] with the output size; per datagram, [`decode_input`] then
//! [`InputMapper::map`] with the host's receive time; [`InputMapper::set_output`] when the mode
//! changes.

use prost::Message;
use punktfunk_proto::control::{FeedbackEvent, InputEvent, feedback_event, input_event};
use punktfunk_proto::seat::{self, SeatEvent, SeatFeedback, seat_event, seat_feedback};
use thiserror::Error;

/// The largest input datagram accepted: an `InputEvent` encodes to under 100 bytes.
pub const MAX_INPUT_DATAGRAM: usize = 256;
/// How long one skew window lasts (ns); the estimate is the minimum over the current and the
/// previous window, so it follows clock drift within two windows.
pub const SKEW_WINDOW_NS: u64 = 5_000_000_000;

/// Why a datagram is not an input event.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    /// Longer than [`MAX_INPUT_DATAGRAM`].
    #[error("an input datagram of {0} bytes exceeds {MAX_INPUT_DATAGRAM}")]
    TooLong(usize),
    /// Not a protobuf `InputEvent`.
    #[error("malformed input datagram: {0}")]
    Malformed(String),
    /// No event in it (or one this version does not know).
    #[error("an input datagram without an event")]
    Empty,
}

/// Decodes one input datagram.
pub fn decode_input(bytes: &[u8]) -> Result<InputEvent, InputError> {
    if bytes.len() > MAX_INPUT_DATAGRAM {
        return Err(InputError::TooLong(bytes.len()));
    }
    let ev = InputEvent::decode(bytes).map_err(|e| InputError::Malformed(e.to_string()))?;
    if ev.event.is_none() {
        return Err(InputError::Empty);
    }
    Ok(ev)
}

/// Estimates `host clock − client clock` from events stamped by the client and received by
/// the host: the smallest `received − stamped` seen recently (that of the fastest delivery,
/// closest to the true offset; the rest is network delay). Timestamps then map to when the
/// event would have arrived over the fastest path, so input latency can be measured on the
/// host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SkewEstimator {
    window_start: u64,
    current: Option<i128>,
    previous: Option<i128>,
}

impl SkewEstimator {
    /// Feeds one observation; returns the current offset estimate (host − client, ns).
    pub fn observe(&mut self, client_ns: u64, host_ns: u64) -> i128 {
        if host_ns.saturating_sub(self.window_start) >= SKEW_WINDOW_NS {
            self.previous = self.current;
            self.current = None;
            self.window_start = host_ns;
        }
        let d = i128::from(host_ns) - i128::from(client_ns);
        self.current = Some(self.current.map_or(d, |c| c.min(d)));
        self.offset().unwrap_or(d)
    }

    /// The estimate, once something was observed.
    pub fn offset(&self) -> Option<i128> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Maps punktfunk/1 input events into seat events for one session.
#[derive(Debug)]
pub struct InputMapper {
    output: (u32, u32),
    skew: SkewEstimator,
}

/// `v` on a surface of `from` units scaled to `to` units; `u32::MAX` when it does not fit (the
/// seat drops it as out of range).
fn scale(v: u32, from: u32, to: u32) -> u32 {
    if from == 0 {
        return v;
    }
    u32::try_from(u64::from(v) * u64::from(to) / u64::from(from)).unwrap_or(u32::MAX)
}

impl InputMapper {
    /// A mapper into an output of `width` × `height` pixels.
    pub fn new(output: (u32, u32)) -> Self {
        Self {
            output,
            skew: SkewEstimator::default(),
        }
    }

    /// The output size changed (a reconfiguration).
    pub fn set_output(&mut self, output: (u32, u32)) {
        self.output = output;
    }

    /// The clock offset estimate so far (host − client, ns).
    pub fn offset_ns(&self) -> Option<i128> {
        self.skew.offset()
    }

    /// Maps one event received at `host_ns` (CLOCK_MONOTONIC); `None` for an empty one.
    pub fn map(&mut self, ev: &InputEvent, host_ns: u64) -> Option<SeatEvent> {
        use input_event::Event as In;
        use seat_event::Event as Out;
        let (w, h) = self.output;
        let event = match ev.event.as_ref()? {
            In::Key(k) => Out::Key(seat::Key {
                code: k.code,
                pressed: k.pressed,
            }),
            In::MouseMove(m) => Out::PointerMotion(seat::PointerMotion { dx: m.dx, dy: m.dy }),
            In::MouseAbs(m) => Out::PointerPosition(seat::PointerPosition {
                x: scale(m.x, m.width, w),
                y: scale(m.y, m.height, h),
            }),
            In::MouseButton(b) => Out::PointerButton(seat::PointerButton {
                button: b.button,
                pressed: b.pressed,
            }),
            In::Scroll(s) => Out::Scroll(seat::Scroll {
                vertical: s.vertical,
                horizontal: s.horizontal,
            }),
            In::Touch(t) => Out::Touch(seat::Touch {
                slot: t.id,
                x: scale(t.x, t.width, w),
                y: scale(t.y, t.height, h),
                down: t.down,
            }),
            In::Gamepad(g) => Out::Pad(seat::PadState {
                pad: g.pad,
                buttons: g.buttons,
                left_x: g.left_x,
                left_y: g.left_y,
                right_x: g.right_x,
                right_y: g.right_y,
                left_trigger: g.left_trigger,
                right_trigger: g.right_trigger,
            }),
            In::Motion(m) => Out::PadMotion(seat::PadMotion {
                pad: m.pad,
                accel_x: m.accel_x,
                accel_y: m.accel_y,
                accel_z: m.accel_z,
                gyro_x: m.gyro_x,
                gyro_y: m.gyro_y,
                gyro_z: m.gyro_z,
            }),
            In::GamepadTouch(t) => Out::PadTouch(seat::PadTouch {
                pad: t.pad,
                finger: t.finger,
                x: t.x,
                y: t.y,
                down: t.down,
            }),
            In::GamepadBattery(b) => Out::PadBattery(seat::PadBattery {
                pad: b.pad,
                percent: b.percent,
                charging: b.charging,
            }),
        };
        let host_time_ns = if ev.timestamp_ns == 0 {
            0
        } else {
            let offset = self.skew.observe(ev.timestamp_ns, host_ns);
            u64::try_from(i128::from(ev.timestamp_ns) + offset).unwrap_or(0)
        };
        Some(SeatEvent {
            host_time_ns,
            event: Some(event),
        })
    }
}

/// Encodes a seat's feedback as a punktfunk/1 `FeedbackEvent` datagram; `None` for an empty one.
pub fn feedback_datagram(f: &SeatFeedback) -> Option<Vec<u8>> {
    use feedback_event::Event as Out;
    use punktfunk_proto::control as c;
    use seat_feedback::Feedback as In;
    let event = match f.feedback.as_ref()? {
        In::Rumble(r) => Out::Rumble(c::Rumble {
            pad: r.pad,
            low: r.low,
            high: r.high,
        }),
        In::Lightbar(l) => Out::Lightbar(c::Lightbar {
            pad: l.pad,
            r: l.r,
            g: l.g,
            b: l.b,
        }),
        In::PlayerLeds(p) => Out::PlayerLeds(c::PlayerLeds {
            pad: p.pad,
            mask: p.mask,
        }),
        In::TriggerEffect(t) => {
            // The wire carries the mode byte followed by its ten parameters.
            let mut effect = Vec::with_capacity(11);
            effect.push(t.mode.min(255) as u8);
            effect.extend(t.params.iter().take(10));
            Out::TriggerEffect(c::TriggerEffect {
                pad: t.pad,
                right: t.right,
                effect,
            })
        }
    };
    Some(FeedbackEvent { event: Some(event) }.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_proto::control::{GamepadState, MouseAbs, Touch};

    fn ev(e: input_event::Event, ts: u64) -> InputEvent {
        InputEvent {
            timestamp_ns: ts,
            event: Some(e),
        }
    }

    #[test]
    fn absolute_positions_scale_to_the_output() {
        let mut m = InputMapper::new((1920, 1080));
        let out = m
            .map(
                &ev(
                    input_event::Event::MouseAbs(MouseAbs {
                        x: 640,
                        y: 360,
                        width: 1280,
                        height: 720,
                    }),
                    0,
                ),
                5,
            )
            .unwrap();
        assert_eq!(
            out.event,
            Some(seat_event::Event::PointerPosition(seat::PointerPosition {
                x: 960,
                y: 540
            }))
        );
        assert_eq!(out.host_time_ns, 0);
        let t = m
            .map(
                &ev(
                    input_event::Event::Touch(Touch {
                        id: 1,
                        x: 99,
                        y: 0,
                        down: true,
                        width: 100,
                        height: 10,
                    }),
                    0,
                ),
                5,
            )
            .unwrap();
        assert_eq!(
            t.event,
            Some(seat_event::Event::Touch(seat::Touch {
                slot: 1,
                x: 1900,
                y: 0,
                down: true
            }))
        );
        // Huge coordinates stay out of range (the seat drops and counts them).
        let huge = m
            .map(
                &ev(
                    input_event::Event::MouseAbs(MouseAbs {
                        x: u32::MAX,
                        y: u32::MAX,
                        width: 1,
                        height: 1,
                    }),
                    0,
                ),
                5,
            )
            .unwrap();
        assert_eq!(
            huge.event,
            Some(seat_event::Event::PointerPosition(seat::PointerPosition {
                x: u32::MAX,
                y: u32::MAX
            }))
        );
    }

    #[test]
    fn timestamps_move_to_the_hosts_clock() {
        let mut m = InputMapper::new((10, 10));
        let pad = input_event::Event::Gamepad(GamepadState::default());
        // Client clock = host clock − 1 s; delays 3 ms, then 1 ms, then 5 ms.
        let skew = 1_000_000_000u64;
        let a = m.map(&ev(pad, 10_000_000), 10_000_000 + skew + 3_000_000);
        assert_eq!(a.unwrap().host_time_ns, 10_000_000 + skew + 3_000_000);
        let b = m.map(&ev(pad, 20_000_000), 20_000_000 + skew + 1_000_000);
        assert_eq!(b.unwrap().host_time_ns, 20_000_000 + skew + 1_000_000);
        // The slower delivery is measured against the fastest path: 4 ms late.
        let c = m
            .map(&ev(pad, 30_000_000), 30_000_000 + skew + 5_000_000)
            .unwrap();
        assert_eq!(c.host_time_ns, 30_000_000 + skew + 1_000_000);
        assert_eq!(m.offset_ns(), Some(i128::from(skew + 1_000_000)));
    }

    #[test]
    fn the_skew_follows_drift_across_windows() {
        let mut s = SkewEstimator::default();
        s.observe(0, 100);
        s.observe(SKEW_WINDOW_NS, SKEW_WINDOW_NS + 200);
        assert_eq!(s.offset(), Some(100));
        s.observe(2 * SKEW_WINDOW_NS, 2 * SKEW_WINDOW_NS + 300);
        // The window holding 100 has aged out.
        assert_eq!(s.offset(), Some(200));
    }

    #[test]
    fn decoding_is_bounded_and_strict() {
        assert_eq!(
            decode_input(&[0; MAX_INPUT_DATAGRAM + 1]),
            Err(InputError::TooLong(MAX_INPUT_DATAGRAM + 1))
        );
        assert_eq!(decode_input(&[]), Err(InputError::Empty));
        assert!(matches!(
            decode_input(&[0xFF]),
            Err(InputError::Malformed(_))
        ));
        let bytes = ev(input_event::Event::Gamepad(GamepadState::default()), 1).encode_to_vec();
        assert!(decode_input(&bytes).is_ok());
    }

    #[test]
    fn feedback_maps_to_the_wire() {
        let f = SeatFeedback {
            feedback: Some(seat_feedback::Feedback::TriggerEffect(
                seat::TriggerEffect {
                    pad: 1,
                    right: true,
                    mode: 0x25,
                    params: vec![0x84, 0, 7, 0, 0, 0, 0, 0, 0, 0],
                },
            )),
        };
        let bytes = feedback_datagram(&f).unwrap();
        let back = FeedbackEvent::decode(&bytes[..]).unwrap();
        match back.event {
            Some(feedback_event::Event::TriggerEffect(t)) => {
                assert_eq!((t.pad, t.right), (1, true));
                assert_eq!(t.effect, [0x25, 0x84, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(feedback_datagram(&SeatFeedback { feedback: None }), None);
    }

    proptest::proptest! {
        #[test]
        fn decode_and_map_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), now in proptest::prelude::any::<u64>()) {
            if let Ok(e) = decode_input(&bytes) {
                let mut m = InputMapper::new((1920, 1080));
                let _ = m.map(&e, now);
            }
        }
    }
}
