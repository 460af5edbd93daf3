//! Sans-IO: Moonlight's decoded input packets (`punktfunk_gamestream::input::InputEvent`) into
//! the protocol-neutral seat model (seat.proto), and the seat's feedback back into GameStream
//! control messages. The GameStream half of "one input model for every protocol"; punktfunk/1's
//! is `punktfunk_control::input`.
//!
//! Call order: [`GsInputMapper::new`] with the output mode's size; then [`GsInputMapper::map`]
//! for every decoded packet, in arrival order, sending what it returns to the seat's queue in
//! order (a [`SeatInput::Pads`] before the events that need the new pad). [`rumble_message`]
//! turns a seat's feedback into the control message Moonlight understands.
//!
//! Units and conventions converted here (docs/gamestream.md, "Input"):
//! - keys: Windows virtual-key codes (US positions) → evdev `KEY_*` ([`vk_to_evdev`]);
//! - mouse buttons 1 left, 2 middle, 3 right, 4 X1, 5 X2 → the seat's 1 left, 2 right,
//!   3 middle, 4 side, 5 extra;
//! - absolute positions over the client's reference area → output pixels;
//! - wheels: both are 1/120 notch, positive up / right, as the seat's;
//! - pads: Moonlight's controller numbers (0..16, announced by arrival or first seen in the
//!   active mask) → seat pad indices, the present controllers in number order, at most
//!   [`MAX_SEAT_PADS`]; a PlayStation controller becomes a DualSense, any other an Xbox pad;
//!   sticks' Y flips (XInput up = positive, evdev down = positive); button bits are remapped;
//!   motion arrives per sensor in deg/s and is sent per pad with the other sensor's last sample,
//!   gyro in rad/s.

use punktfunk_gamestream::control::HostMessage;
use punktfunk_gamestream::input::{GamepadState, InputEvent, MAX_GAMEPADS, buttons as gs};
use punktfunk_proto::input::PadKind;
use punktfunk_proto::limits::{MAX_SEAT_PADS, SEAT_TOUCH_SLOTS};
use punktfunk_proto::seat::{self, PadButton, SeatEvent, SeatFeedback, seat_event::Event};

use crate::input::SeatInput;

/// A DualSense touchpad's resolution in the seat model (seat.proto `PadTouch`).
const PAD_TOUCH_SIZE: (f32, f32) = (1920.0, 1080.0);
/// Moonlight's controller type for PlayStation pads (controller arrival).
const KIND_PLAYSTATION: u8 = 2;
/// Moonlight's motion types.
const MOTION_ACCEL: u8 = 1;
const MOTION_GYRO: u8 = 2;
/// Battery state "charging" (controller battery).
const BATTERY_CHARGING: u8 = 3;

/// GameStream gamepad button bits → the seat's `PadButton` bits.
const PAD_BUTTONS: [(u32, PadButton); 17] = [
    (gs::A, PadButton::A),
    (gs::B, PadButton::B),
    (gs::X, PadButton::X),
    (gs::Y, PadButton::Y),
    (gs::LB, PadButton::Lb),
    (gs::RB, PadButton::Rb),
    (gs::BACK, PadButton::Back),
    (gs::START, PadButton::Start),
    (gs::GUIDE, PadButton::Guide),
    (gs::LEFT_STICK, PadButton::Ls),
    (gs::RIGHT_STICK, PadButton::Rs),
    (gs::UP, PadButton::DpadUp),
    (gs::DOWN, PadButton::DpadDown),
    (gs::LEFT, PadButton::DpadLeft),
    (gs::RIGHT, PadButton::DpadRight),
    (gs::TOUCHPAD, PadButton::Touchpad),
    (gs::MISC, PadButton::Misc),
];

/// The evdev key code of a Windows virtual-key code (US layout positions), if the seat's
/// keyboard has one. Written out here: no crate maps VK codes to evdev, and the table is the
/// fact this shell owns.
pub fn vk_to_evdev(vk: u8) -> Option<u32> {
    // A-Z in VK order.
    const LETTERS: [u32; 26] = [
        30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17,
        45, 21, 44,
    ];
    // Numpad 0-9 in VK order.
    const NUMPAD: [u32; 10] = [82, 79, 80, 81, 75, 76, 77, 71, 72, 73];
    Some(match vk {
        0x08 => 14,                                     // Backspace
        0x09 => 15,                                     // Tab
        0x0D => 28,                                     // Enter
        0x10 | 0xA0 => 42,                              // Shift, LShift
        0x11 | 0xA2 => 29,                              // Ctrl, LCtrl
        0x12 | 0xA4 => 56,                              // Alt, LAlt
        0x13 => 119,                                    // Pause
        0x14 => 58,                                     // CapsLock
        0x1B => 1,                                      // Esc
        0x20 => 57,                                     // Space
        0x21 => 104,                                    // PgUp
        0x22 => 109,                                    // PgDn
        0x23 => 107,                                    // End
        0x24 => 102,                                    // Home
        0x25 => 105,                                    // Left
        0x26 => 103,                                    // Up
        0x27 => 106,                                    // Right
        0x28 => 108,                                    // Down
        0x2C => 99,                                     // PrintScreen (SysRq)
        0x2D => 110,                                    // Insert
        0x2E => 111,                                    // Delete
        0x30 => 11,                                     // 0
        0x31..=0x39 => u32::from(vk - 0x31) + 2,        // 1-9
        0x41..=0x5A => LETTERS[usize::from(vk - 0x41)], // A-Z
        0x5B => 125,                                    // LWin
        0x5C => 126,                                    // RWin
        0x5D => 127,                                    // Apps (Compose)
        0x60..=0x69 => NUMPAD[usize::from(vk - 0x60)],
        0x6A => 55,                                // Numpad *
        0x6B => 78,                                // Numpad +
        0x6C => 121,                               // Numpad separator
        0x6D => 74,                                // Numpad -
        0x6E => 83,                                // Numpad .
        0x6F => 98,                                // Numpad /
        0x70..=0x79 => u32::from(vk - 0x70) + 59,  // F1-F10
        0x7A => 87,                                // F11
        0x7B => 88,                                // F12
        0x7C..=0x87 => u32::from(vk - 0x7C) + 183, // F13-F24
        0x90 => 69,                                // NumLock
        0x91 => 70,                                // ScrollLock
        0xA1 => 54,                                // RShift
        0xA3 => 97,                                // RCtrl
        0xA5 => 100,                               // RAlt
        0xA6 => 158,                               // Browser back
        0xA7 => 159,                               // Browser forward
        0xA8 => 173,                               // Browser refresh
        0xAD => 113,                               // Mute
        0xAE => 114,                               // Volume down
        0xAF => 115,                               // Volume up
        0xB0 => 163,                               // Next track
        0xB1 => 165,                               // Previous track
        0xB2 => 166,                               // Stop
        0xB3 => 164,                               // Play/pause
        0xBA => 39,                                // ;
        0xBB => 13,                                // =
        0xBC => 51,                                // ,
        0xBD => 12,                                // -
        0xBE => 52,                                // .
        0xBF => 53,                                // /
        0xC0 => 41,                                // `
        0xDB => 26,                                // [
        0xDC => 43,                                // \
        0xDD => 27,                                // ]
        0xDE => 40,                                // '
        0xE2 => 86,                                // OEM 102 (<>)
        _ => return None,
    })
}

/// The seat's `PadButton` bits of GameStream gamepad button flags (paddles have no seat button).
pub fn pad_buttons(flags: u32) -> u32 {
    PAD_BUTTONS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .fold(0, |acc, (_, b)| acc | *b as u32)
}

/// An XInput stick Y (positive up) as evdev's (positive down).
fn flip_y(y: i16) -> i32 {
    // −32768 (full up) becomes 32767, the largest evdev value.
    -(i32::from(y).max(-i32::from(i16::MAX)))
}

/// `v` over `0..=reference` as a pixel in `0..size`; `None` if outside.
fn to_pixel(v: i16, reference: i16, size: u32) -> Option<u32> {
    let (v, reference) = (u32::try_from(v).ok()?, u32::try_from(reference).ok()?);
    if v > reference || reference == 0 {
        return None;
    }
    let px = u64::from(v) * u64::from(size) / u64::from(reference);
    Some((px as u32).min(size.saturating_sub(1)))
}

/// A normalized 0..1 coordinate as a pixel in `0..size`; `None` if outside.
fn unit_to_pixel(v: f32, size: f32) -> Option<u32> {
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    Some((v * size).min(size - 1.0).max(0.0) as u32)
}

/// What [`GsInputMapper::map`] made of one packet, in the order to queue it.
#[derive(Debug, Default, PartialEq)]
pub struct Mapped {
    /// The seat's pads changed: reopen it with these (queued before `event`).
    pub pads: Option<Vec<PadKind>>,
    /// The seat event.
    pub event: Option<SeatEvent>,
}

impl Mapped {
    /// The queue entries, in order.
    pub fn into_inputs(self) -> impl Iterator<Item = SeatInput> {
        self.pads
            .map(SeatInput::Pads)
            .into_iter()
            .chain(self.event.map(SeatInput::Event))
    }
}

/// The last motion sample of one pad (the seat wants both sensors in one event).
#[derive(Debug, Clone, Copy, Default)]
struct Motion {
    accel: [f32; 3],
    gyro: [f32; 3],
}

/// Maps one GameStream session's input into its seat.
#[derive(Debug)]
pub struct GsInputMapper {
    output: (u32, u32),
    /// Per controller number: present, and its kind.
    present: [Option<PadKind>; MAX_GAMEPADS as usize],
    motion: [Motion; MAX_GAMEPADS as usize],
    /// Touch pointer ids by seat slot.
    touch_slots: [Option<u32>; SEAT_TOUCH_SLOTS as usize],
}

impl GsInputMapper {
    /// A mapper into an output of `width` × `height` pixels, with no pads yet.
    pub fn new(output: (u32, u32)) -> Self {
        Self {
            output,
            present: [None; MAX_GAMEPADS as usize],
            motion: [Motion::default(); MAX_GAMEPADS as usize],
            touch_slots: [None; SEAT_TOUCH_SLOTS as usize],
        }
    }

    /// The seat's pads: present controllers in number order, at most [`MAX_SEAT_PADS`].
    pub fn pads(&self) -> Vec<PadKind> {
        self.present
            .iter()
            .flatten()
            .copied()
            .take(MAX_SEAT_PADS)
            .collect()
    }

    /// The seat pad index of controller `c`, if it has one.
    fn pad_index(&self, c: u8) -> Option<u32> {
        if self.present.get(usize::from(c))?.is_none() {
            return None;
        }
        let index = self.present[..usize::from(c)].iter().flatten().count();
        (index < MAX_SEAT_PADS).then_some(index as u32)
    }

    /// Sets controller `c`'s presence; the new pad list if the seat's pads changed.
    fn set_present(&mut self, c: u8, kind: Option<PadKind>) -> Option<Vec<PadKind>> {
        let before = self.pads();
        let slot = self.present.get_mut(usize::from(c))?;
        *slot = kind;
        let after = self.pads();
        (after != before).then_some(after)
    }

    /// Maps one decoded packet received at `host_ns` (CLOCK_MONOTONIC).
    pub fn map(&mut self, ev: &InputEvent, host_ns: u64) -> Mapped {
        let mut out = Mapped::default();
        let event = match *ev {
            InputEvent::Key { down, vk, .. } => vk_to_evdev(vk).map(|code| {
                Event::Key(seat::Key {
                    code,
                    pressed: down,
                })
            }),
            InputEvent::MouseMove { dx, dy } => Some(Event::PointerMotion(seat::PointerMotion {
                dx: i32::from(dx),
                dy: i32::from(dy),
            })),
            InputEvent::MousePosition {
                x,
                y,
                width,
                height,
            } => to_pixel(x, width, self.output.0)
                .zip(to_pixel(y, height, self.output.1))
                .map(|(x, y)| Event::PointerPosition(seat::PointerPosition { x, y })),
            InputEvent::MouseButton { down, button } => {
                let button = match button {
                    2 => Some(3),
                    3 => Some(2),
                    1 | 4 | 5 => Some(u32::from(button)),
                    _ => None,
                };
                button.map(|button| {
                    Event::PointerButton(seat::PointerButton {
                        button,
                        pressed: down,
                    })
                })
            }
            InputEvent::Scroll { amount } => Some(Event::Scroll(seat::Scroll {
                vertical: i32::from(amount),
                horizontal: 0,
            })),
            InputEvent::HScroll { amount } => Some(Event::Scroll(seat::Scroll {
                vertical: 0,
                horizontal: i32::from(amount),
            })),
            InputEvent::Gamepad(g) => self.gamepad(&g, &mut out),
            InputEvent::GamepadArrival {
                controller, kind, ..
            } => {
                let kind = if kind == KIND_PLAYSTATION {
                    PadKind::Dualsense
                } else {
                    PadKind::Xbox
                };
                out.pads = self.set_present(controller, Some(kind));
                None
            }
            InputEvent::GamepadTouch {
                controller,
                event,
                pointer_id,
                x,
                y,
                ..
            } => self.pad_index(controller).and_then(|pad| {
                let (w, h) = PAD_TOUCH_SIZE;
                Some(Event::PadTouch(seat::PadTouch {
                    pad,
                    finger: pointer_id % 2,
                    x: unit_to_pixel(x, w)?,
                    y: unit_to_pixel(y, h)?,
                    down: matches!(event, 1 | 3),
                }))
            }),
            InputEvent::GamepadMotion {
                controller,
                motion_type,
                x,
                y,
                z,
            } => self.motion(controller, motion_type, [x, y, z]),
            InputEvent::GamepadBattery {
                controller,
                state,
                percent,
            } => self.pad_index(controller).and_then(|pad| {
                (percent <= 100).then_some(Event::PadBattery(seat::PadBattery {
                    pad,
                    percent: u32::from(percent),
                    charging: state == BATTERY_CHARGING,
                }))
            }),
            InputEvent::Touch {
                event,
                pointer_id,
                x,
                y,
                ..
            } => self.touch(event, pointer_id, x, y),
            // Text has no key position (the seat has a keyboard, not an IME); pen and haptics
            // have no seat device.
            InputEvent::Text(_) | InputEvent::Pen { .. } | InputEvent::HapticsEnable => None,
        };
        out.event = event.map(|e| SeatEvent {
            host_time_ns: host_ns,
            event: Some(e),
        });
        out
    }

    fn gamepad(&mut self, g: &GamepadState, out: &mut Mapped) -> Option<Event> {
        if g.removed() {
            out.pads = self.set_present(g.controller, None);
            return None;
        }
        if self.present[usize::from(g.controller)].is_none() {
            // First sight of the pad without an arrival (legacy clients): an Xbox pad.
            out.pads = self.set_present(g.controller, Some(PadKind::Xbox));
        }
        let pad = self.pad_index(g.controller)?;
        Some(Event::Pad(seat::PadState {
            pad,
            buttons: pad_buttons(g.buttons),
            left_x: i32::from(g.left_x),
            left_y: flip_y(g.left_y),
            right_x: i32::from(g.right_x),
            right_y: flip_y(g.right_y),
            left_trigger: u32::from(g.left_trigger),
            right_trigger: u32::from(g.right_trigger),
        }))
    }

    fn motion(&mut self, controller: u8, kind: u8, v: [f32; 3]) -> Option<Event> {
        let pad = self.pad_index(controller)?;
        let m = &mut self.motion[usize::from(controller)];
        match kind {
            MOTION_ACCEL => m.accel = v,
            MOTION_GYRO => m.gyro = v.map(f32::to_radians),
            _ => return None,
        }
        Some(Event::PadMotion(seat::PadMotion {
            pad,
            accel_x: m.accel[0],
            accel_y: m.accel[1],
            accel_z: m.accel[2],
            gyro_x: m.gyro[0],
            gyro_y: m.gyro[1],
            gyro_z: m.gyro[2],
        }))
    }

    fn touch(&mut self, event: u8, pointer_id: u32, x: f32, y: f32) -> Option<Event> {
        let (w, h) = (self.output.0 as f32, self.output.1 as f32);
        let held = self.touch_slots.iter().position(|s| *s == Some(pointer_id));
        let (slot, down) = match (event, held) {
            // Down or move: the pointer's slot, or a free one.
            (1 | 3, Some(s)) => (s, true),
            (1 | 3, None) => (self.touch_slots.iter().position(Option::is_none)?, true),
            // Up or cancel: lift it.
            (2 | 4, Some(s)) => (s, false),
            _ => return None,
        };
        self.touch_slots[slot] = down.then_some(pointer_id);
        Some(Event::Touch(seat::Touch {
            slot: slot as u32,
            x: unit_to_pixel(x, w)?,
            y: unit_to_pixel(y, h)?,
            down,
        }))
    }

    /// The controller number of seat pad `pad`.
    pub fn controller_of(&self, pad: u32) -> Option<u16> {
        self.present
            .iter()
            .enumerate()
            .filter(|(_, k)| k.is_some())
            .nth(pad as usize)
            .map(|(c, _)| c as u16)
    }
}

/// The control message carrying a seat's rumble back to Moonlight (`None` for other feedback:
/// Moonlight's LED and trigger messages have no seat source yet).
pub fn rumble_message(f: &SeatFeedback, mapper: &GsInputMapper) -> Option<HostMessage> {
    match f.feedback.as_ref()? {
        seat::seat_feedback::Feedback::Rumble(r) => Some(HostMessage::Rumble {
            controller: mapper.controller_of(r.pad)?,
            low: u16::try_from(r.low).unwrap_or(u16::MAX),
            high: u16::try_from(r.high).unwrap_or(u16::MAX),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(m: Mapped) -> Event {
        m.event.expect("an event").event.expect("a payload")
    }

    fn pad_state(controller: u8, mask: u16, buttons: u32) -> InputEvent {
        InputEvent::Gamepad(GamepadState {
            controller,
            active_mask: mask,
            buttons,
            left_trigger: 10,
            right_trigger: 255,
            left_x: -32768,
            left_y: -32768,
            right_x: 5,
            right_y: 32767,
        })
    }

    #[test]
    fn keys_map_by_us_position() {
        let mut m = GsInputMapper::new((1280, 720));
        let key = |m: &mut GsInputMapper, vk| {
            m.map(
                &InputEvent::Key {
                    down: true,
                    vk,
                    modifiers: 0,
                    flags: 0,
                },
                7,
            )
        };
        let e = key(&mut m, 0x41).event.unwrap();
        assert_eq!(e.host_time_ns, 7);
        assert_eq!(
            e.event,
            Some(Event::Key(seat::Key {
                code: 30,
                pressed: true
            }))
        );
        // Digits, F keys, modifiers and punctuation land on their evdev codes.
        for (vk, code) in [
            (0x30, 11),
            (0x31, 2),
            (0x39, 10),
            (0x5A, 44),
            (0x51, 16),
            (0x70, 59),
            (0x7B, 88),
            (0x87, 194),
            (0xA1, 54),
            (0xA5, 100),
            (0x0D, 28),
            (0x1B, 1),
            (0xDE, 40),
            (0x6B, 78),
        ] {
            assert_eq!(vk_to_evdev(vk), Some(code), "vk {vk:#x}");
        }
        // Unknown VK codes send nothing.
        assert_eq!(key(&mut m, 0xFF), Mapped::default());
        // Every mapped code is one the seat's keyboard has (KEY_ESC..=KEY_MICMUTE).
        assert!(
            (0..=255u8)
                .filter_map(vk_to_evdev)
                .all(|c| (1..=248).contains(&c))
        );
    }

    #[test]
    fn mouse_buttons_positions_and_wheels() {
        let mut m = GsInputMapper::new((1280, 720));
        let button = |m: &mut GsInputMapper, b| {
            event(m.map(
                &InputEvent::MouseButton {
                    down: true,
                    button: b,
                },
                0,
            ))
        };
        let seat_button = |b| {
            Event::PointerButton(seat::PointerButton {
                button: b,
                pressed: true,
            })
        };
        assert_eq!(button(&mut m, 1), seat_button(1));
        assert_eq!(button(&mut m, 2), seat_button(3), "middle");
        assert_eq!(button(&mut m, 3), seat_button(2), "right");
        assert_eq!(button(&mut m, 5), seat_button(5));
        assert_eq!(
            m.map(
                &InputEvent::MouseButton {
                    down: true,
                    button: 9
                },
                0
            ),
            Mapped::default()
        );
        // The client's reference area (its size − 1) scales to the output.
        let pos = |m: &mut GsInputMapper, x, y| {
            m.map(
                &InputEvent::MousePosition {
                    x,
                    y,
                    width: 1919,
                    height: 1079,
                },
                0,
            )
            .event
            .and_then(|e| e.event)
        };
        assert_eq!(
            pos(&mut m, 0, 0),
            Some(Event::PointerPosition(seat::PointerPosition { x: 0, y: 0 }))
        );
        assert_eq!(
            pos(&mut m, 1919, 1079),
            Some(Event::PointerPosition(seat::PointerPosition {
                x: 1279,
                y: 719
            }))
        );
        assert_eq!(
            pos(&mut m, 959, 539),
            Some(Event::PointerPosition(seat::PointerPosition {
                x: 639,
                y: 359
            }))
        );
        assert_eq!(pos(&mut m, -1, 0), None);
        assert_eq!(pos(&mut m, 1920, 0), None);
        assert_eq!(
            event(m.map(&InputEvent::MouseMove { dx: -5, dy: 3 }, 0)),
            Event::PointerMotion(seat::PointerMotion { dx: -5, dy: 3 })
        );
        assert_eq!(
            event(m.map(&InputEvent::Scroll { amount: -30 }, 0)),
            Event::Scroll(seat::Scroll {
                vertical: -30,
                horizontal: 0
            })
        );
        assert_eq!(
            event(m.map(&InputEvent::HScroll { amount: 120 }, 0)),
            Event::Scroll(seat::Scroll {
                vertical: 0,
                horizontal: 120
            })
        );
    }

    #[test]
    fn pads_arrive_map_and_leave() {
        let mut m = GsInputMapper::new((1280, 720));
        // A PlayStation pad arrives as controller 2: the seat gets a DualSense at index 0.
        let r = m.map(
            &InputEvent::GamepadArrival {
                controller: 2,
                kind: KIND_PLAYSTATION,
                capabilities: 0,
                supported_buttons: 0,
            },
            0,
        );
        assert_eq!(r.pads, Some(vec![PadKind::Dualsense]));
        assert_eq!(r.event, None);
        // Its state needs no reopen; buttons are remapped and Y flips.
        let r = m.map(&pad_state(2, 0b100, gs::A | gs::UP | gs::GUIDE), 0);
        assert_eq!(r.pads, None);
        assert_eq!(
            event(r),
            Event::Pad(seat::PadState {
                pad: 0,
                buttons: PadButton::A as u32 | PadButton::DpadUp as u32 | PadButton::Guide as u32,
                left_x: -32768,
                left_y: 32767,
                right_x: 5,
                right_y: -32767,
                left_trigger: 10,
                right_trigger: 255,
            })
        );
        // Controller 0 shows up without an arrival: an Xbox pad, before the DualSense.
        let r = m.map(&pad_state(0, 0b101, gs::B), 0);
        assert_eq!(r.pads, Some(vec![PadKind::Xbox, PadKind::Dualsense]));
        let Event::Pad(p) = r.event.unwrap().event.unwrap() else {
            panic!()
        };
        assert_eq!((p.pad, p.buttons), (0, PadButton::B as u32));
        let Event::Pad(p) = event(m.map(&pad_state(2, 0b101, 0), 0)) else {
            panic!()
        };
        assert_eq!(p.pad, 1, "controller 2 moved to index 1");
        assert_eq!(m.controller_of(1), Some(2));
        // Controller 0 leaves: its own bit cleared.
        let r = m.map(&pad_state(0, 0b100, 0), 0);
        assert_eq!(r.pads, Some(vec![PadKind::Dualsense]));
        assert_eq!(r.event, None);
        // Events of an unknown controller go nowhere.
        assert_eq!(
            m.map(
                &InputEvent::GamepadBattery {
                    controller: 7,
                    state: 2,
                    percent: 50
                },
                0
            ),
            Mapped::default()
        );
    }

    #[test]
    fn at_most_the_seats_pads_and_the_rest_are_dropped() {
        let mut m = GsInputMapper::new((1280, 720));
        for c in 0..6u8 {
            m.map(&pad_state(c, 0x3F, 0), 0);
        }
        assert_eq!(m.pads().len(), MAX_SEAT_PADS);
        assert_eq!(m.map(&pad_state(5, 0x3F, gs::A), 0), Mapped::default());
    }

    #[test]
    fn motion_touch_and_battery() {
        let mut m = GsInputMapper::new((1000, 500));
        m.map(&pad_state(1, 0b10, 0), 0);
        let accel = InputEvent::GamepadMotion {
            controller: 1,
            motion_type: MOTION_ACCEL,
            x: 0.0,
            y: 9.80665,
            z: 0.0,
        };
        m.map(&accel, 0);
        let Event::PadMotion(p) = event(m.map(
            &InputEvent::GamepadMotion {
                controller: 1,
                motion_type: MOTION_GYRO,
                x: 180.0,
                y: 0.0,
                z: 0.0,
            },
            0,
        )) else {
            panic!()
        };
        assert_eq!((p.pad, p.accel_y), (0, 9.80665));
        assert!((p.gyro_x - std::f32::consts::PI).abs() < 1e-5);
        let Event::PadTouch(t) = event(m.map(
            &InputEvent::GamepadTouch {
                controller: 1,
                event: 1,
                touchpad: 0,
                pointer_id: 4,
                x: 0.5,
                y: 1.0,
                pressure: 1.0,
            },
            0,
        )) else {
            panic!()
        };
        assert_eq!((t.pad, t.finger, t.x, t.y, t.down), (0, 0, 960, 1079, true));
        assert_eq!(
            event(m.map(
                &InputEvent::GamepadBattery {
                    controller: 1,
                    state: BATTERY_CHARGING,
                    percent: 80
                },
                0
            )),
            Event::PadBattery(seat::PadBattery {
                pad: 0,
                percent: 80,
                charging: true
            })
        );
        // Screen touch: pointer ids get slots, up frees them.
        let touch = |m: &mut GsInputMapper, event, id, x| {
            m.map(
                &InputEvent::Touch {
                    event,
                    rotation: 0,
                    pointer_id: id,
                    x,
                    y: 0.5,
                    pressure_or_distance: 1.0,
                    contact_major: 0.0,
                    contact_minor: 0.0,
                },
                0,
            )
            .event
            .and_then(|e| e.event)
        };
        let t = |slot, x, down| {
            Some(Event::Touch(seat::Touch {
                slot,
                x,
                y: 250,
                down,
            }))
        };
        assert_eq!(touch(&mut m, 1, 77, 0.1), t(0, 100, true));
        assert_eq!(touch(&mut m, 1, 88, 0.2), t(1, 200, true));
        assert_eq!(touch(&mut m, 3, 77, 0.3), t(0, 300, true));
        assert_eq!(touch(&mut m, 2, 77, 0.3), t(0, 300, false));
        assert_eq!(touch(&mut m, 1, 99, 0.4), t(0, 400, true));
        assert_eq!(
            touch(&mut m, 2, 12345, 0.4),
            None,
            "up of an unknown pointer"
        );
    }

    proptest::proptest! {
        /// Whatever a client sends (any decodable packet, in any order), the mapper neither
        /// panics nor hands the seat a pad index, slot or position outside its shape.
        #[test]
        fn any_packets_map_inside_the_seats_shape(
            packets in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..64),
            magics in proptest::collection::vec(0usize..17, 0..64),
        ) {
            const MAGICS: [u32; 17] = [3, 4, 5, 7, 8, 9, 0xA, 0xC, 0xD, 0x17, 0x5500_0001,
                0x5500_0002, 0x5500_0003, 0x5500_0004, 0x5500_0005, 0x5500_0006, 0x5500_0007];
            let mut m = GsInputMapper::new((1280, 720));
            for (body, magic) in packets.iter().zip(magics.iter().cycle()) {
                let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
                p.extend(MAGICS[*magic].to_le_bytes());
                p.extend(body);
                let Ok(ev) = punktfunk_gamestream::input::decode_input(&p) else { continue };
                let out = m.map(&ev, 0);
                if let Some(pads) = &out.pads {
                    proptest::prop_assert!(pads.len() <= MAX_SEAT_PADS);
                }
                let npads = m.pads().len() as u32;
                match out.event.and_then(|e| e.event) {
                    Some(Event::Pad(p)) => proptest::prop_assert!(p.pad < npads),
                    Some(Event::PadMotion(p)) => proptest::prop_assert!(p.pad < npads),
                    Some(Event::PadTouch(p)) => proptest::prop_assert!(p.pad < npads && p.x < 1920 && p.y < 1080),
                    Some(Event::PadBattery(p)) => proptest::prop_assert!(p.pad < npads && p.percent <= 100),
                    Some(Event::PointerPosition(p)) => proptest::prop_assert!(p.x < 1280 && p.y < 720),
                    Some(Event::Touch(t)) => proptest::prop_assert!(t.slot < SEAT_TOUCH_SLOTS && t.x < 1280 && t.y < 720),
                    Some(Event::Key(k)) => proptest::prop_assert!((1..=248).contains(&k.code)),
                    Some(Event::PointerButton(b)) => proptest::prop_assert!((1..=5).contains(&b.button)),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn rumble_goes_back_to_the_pads_controller() {
        let mut m = GsInputMapper::new((1280, 720));
        m.map(&pad_state(3, 0b1000, 0), 0);
        let f = SeatFeedback {
            feedback: Some(seat::seat_feedback::Feedback::Rumble(seat::Rumble {
                pad: 0,
                low: 1000,
                high: 70000,
            })),
        };
        assert_eq!(
            rumble_message(&f, &m),
            Some(HostMessage::Rumble {
                controller: 3,
                low: 1000,
                high: u16::MAX
            })
        );
        let f = SeatFeedback {
            feedback: Some(seat::seat_feedback::Feedback::Rumble(seat::Rumble {
                pad: 1,
                low: 1,
                high: 1,
            })),
        };
        assert_eq!(rumble_message(&f, &m), None, "no pad 1");
    }
}
