//! Input packets (the payload of control message 0x0206) decoded into a neutral
//! [`InputEvent`].
//!
//! Layout (spec §9): `size` u32 **big-endian** (= packet length − 4), `magic` u32
//! little-endian, then the body. Byte order inside bodies is mixed and followed exactly:
//! mouse deltas, absolute positions and scroll amounts are big-endian; key codes, gamepad,
//! touch, pen and motion fields little-endian; floats f32 little-endian. [`decode_input`] is
//! total: every byte string gives an event or an [`InputError`]. Floats that are not finite
//! are refused (they would poison the seat's arithmetic).

/// Longest input packet accepted (the largest, touch and pen, are 36 bytes).
pub const MAX_INPUT_PACKET: usize = 64;
/// Gamepads a Sunshine-mode client can send (controller numbers 0..16).
pub const MAX_GAMEPADS: u8 = 16;

/// Packet magics (`magic` field).
pub mod magic {
    /// Key down.
    pub const KEY_DOWN: u32 = 0x0000_0003;
    /// Key up.
    pub const KEY_UP: u32 = 0x0000_0004;
    /// Absolute mouse position.
    pub const MOUSE_ABS: u32 = 0x0000_0005;
    /// Relative mouse move.
    pub const MOUSE_REL: u32 = 0x0000_0007;
    /// Mouse button down.
    pub const MOUSE_BUTTON_DOWN: u32 = 0x0000_0008;
    /// Mouse button up.
    pub const MOUSE_BUTTON_UP: u32 = 0x0000_0009;
    /// Vertical scroll.
    pub const SCROLL: u32 = 0x0000_000A;
    /// Multi-controller state.
    pub const GAMEPAD: u32 = 0x0000_000C;
    /// Enable haptics.
    pub const HAPTICS: u32 = 0x0000_000D;
    /// One UTF-8 code point.
    pub const UTF8_TEXT: u32 = 0x0000_0017;
    /// Horizontal scroll (Sunshine).
    pub const HSCROLL: u32 = 0x5500_0001;
    /// Touch (Sunshine).
    pub const TOUCH: u32 = 0x5500_0002;
    /// Pen (Sunshine).
    pub const PEN: u32 = 0x5500_0003;
    /// Controller arrival (Sunshine).
    pub const GAMEPAD_ARRIVAL: u32 = 0x5500_0004;
    /// Controller touchpad (Sunshine).
    pub const GAMEPAD_TOUCH: u32 = 0x5500_0005;
    /// Controller motion (Sunshine).
    pub const GAMEPAD_MOTION: u32 = 0x5500_0006;
    /// Controller battery (Sunshine).
    pub const GAMEPAD_BATTERY: u32 = 0x5500_0007;
}

/// Why an input packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Shorter than its header or its type's layout.
    #[error("input packet too short for its type")]
    Truncated,
    /// Longer than [`MAX_INPUT_PACKET`].
    #[error("input packet too long")]
    TooLong,
    /// The `size` field disagrees with the packet length.
    #[error("input packet size field disagrees with its length")]
    SizeMismatch,
    /// A magic this host does not know.
    #[error("unknown input packet type {0:#010x}")]
    UnknownType(u32),
    /// A field is out of range (controller number, non-finite float, invalid UTF-8, ...).
    #[error("input packet field {0} out of range")]
    Invalid(&'static str),
}

/// Gamepad state of one controller (absolute, never interpolated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GamepadState {
    /// Controller number 0..16.
    pub controller: u8,
    /// Bit n = pad n is present (a cleared own bit = this pad was removed).
    pub active_mask: u16,
    /// Button flags (`buttonFlags | buttonFlags2 << 16`, see [`buttons`]).
    pub buttons: u32,
    /// Left trigger 0..255.
    pub left_trigger: u8,
    /// Right trigger 0..255.
    pub right_trigger: u8,
    /// Left stick X (XInput range, Y positive = up).
    pub left_x: i16,
    /// Left stick Y.
    pub left_y: i16,
    /// Right stick X.
    pub right_x: i16,
    /// Right stick Y.
    pub right_y: i16,
}

impl GamepadState {
    /// The packet says this pad is gone (its own bit cleared).
    pub fn removed(&self) -> bool {
        self.active_mask & (1 << self.controller) == 0
    }
}

/// Gamepad button flags.
pub mod buttons {
    /// D-pad up.
    pub const UP: u32 = 0x0001;
    /// D-pad down.
    pub const DOWN: u32 = 0x0002;
    /// D-pad left.
    pub const LEFT: u32 = 0x0004;
    /// D-pad right.
    pub const RIGHT: u32 = 0x0008;
    /// Start.
    pub const START: u32 = 0x0010;
    /// Back/select.
    pub const BACK: u32 = 0x0020;
    /// Left stick click.
    pub const LEFT_STICK: u32 = 0x0040;
    /// Right stick click.
    pub const RIGHT_STICK: u32 = 0x0080;
    /// Left bumper.
    pub const LB: u32 = 0x0100;
    /// Right bumper.
    pub const RB: u32 = 0x0200;
    /// Guide.
    pub const GUIDE: u32 = 0x0400;
    /// A.
    pub const A: u32 = 0x1000;
    /// B.
    pub const B: u32 = 0x2000;
    /// X.
    pub const X: u32 = 0x4000;
    /// Y.
    pub const Y: u32 = 0x8000;
    /// Paddle 1.
    pub const PADDLE1: u32 = 0x01_0000;
    /// Paddle 2.
    pub const PADDLE2: u32 = 0x02_0000;
    /// Paddle 3.
    pub const PADDLE3: u32 = 0x04_0000;
    /// Paddle 4.
    pub const PADDLE4: u32 = 0x08_0000;
    /// Touchpad click.
    pub const TOUCHPAD: u32 = 0x10_0000;
    /// Misc (share/mic/capture).
    pub const MISC: u32 = 0x20_0000;
}

/// One decoded input packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputEvent {
    /// Key press or release.
    Key {
        /// Down (true) or up.
        down: bool,
        /// Windows virtual-key code (low byte of the client's `keyCode`).
        vk: u8,
        /// Modifiers: 0x01 Shift, 0x02 Ctrl, 0x04 Alt, 0x08 Meta.
        modifiers: u8,
        /// 0x01: the code is not normalized to a US layout.
        flags: u8,
    },
    /// Relative mouse motion.
    MouseMove {
        /// X delta.
        dx: i16,
        /// Y delta.
        dy: i16,
    },
    /// Absolute mouse position over a reference area (`x / width`, `y / height`).
    MousePosition {
        /// X.
        x: i16,
        /// Y.
        y: i16,
        /// Reference width (never 0 here).
        width: i16,
        /// Reference height (never 0 here).
        height: i16,
    },
    /// Mouse button press or release.
    MouseButton {
        /// Down (true) or up.
        down: bool,
        /// 1 left, 2 middle, 3 right, 4 X1, 5 X2.
        button: u8,
    },
    /// Vertical scroll (120 per notch, positive = away from the user).
    Scroll {
        /// Amount.
        amount: i16,
    },
    /// Horizontal scroll (120 per notch, positive = right).
    HScroll {
        /// Amount.
        amount: i16,
    },
    /// One typed character.
    Text(char),
    /// Multi-controller state.
    Gamepad(GamepadState),
    /// A controller arrived (Sunshine mode).
    GamepadArrival {
        /// Controller number.
        controller: u8,
        /// 0 unknown, 1 Xbox, 2 PlayStation, 3 Nintendo, 4 Steam.
        kind: u8,
        /// Capability bits (0x01 analog triggers, 0x02 rumble, 0x04 trigger rumble, 0x08
        /// touchpad, 0x10 accelerometer, 0x20 gyro, 0x40 battery, 0x80 RGB LED).
        capabilities: u16,
        /// Buttons the pad has.
        supported_buttons: u32,
    },
    /// A controller touchpad contact.
    GamepadTouch {
        /// Controller number.
        controller: u8,
        /// Touch event type (0 hover … 7 cancel-all).
        event: u8,
        /// Touchpad index (0 or 1).
        touchpad: u8,
        /// Pointer id.
        pointer_id: u32,
        /// X 0..1.
        x: f32,
        /// Y 0..1.
        y: f32,
        /// Pressure 0..1.
        pressure: f32,
    },
    /// A motion sample.
    GamepadMotion {
        /// Controller number.
        controller: u8,
        /// 1 accelerometer (m/s²), 2 gyroscope (deg/s).
        motion_type: u8,
        /// X.
        x: f32,
        /// Y.
        y: f32,
        /// Z.
        z: f32,
    },
    /// Battery state.
    GamepadBattery {
        /// Controller number.
        controller: u8,
        /// 0 unknown … 5 full.
        state: u8,
        /// 0..100, 0xFF unknown.
        percent: u8,
    },
    /// A touch-screen contact over the video area.
    Touch {
        /// Event type (0 hover … 7 cancel-all).
        event: u8,
        /// Rotation in degrees, 0xFFFF unknown.
        rotation: u16,
        /// Pointer id.
        pointer_id: u32,
        /// X 0..1.
        x: f32,
        /// Y 0..1.
        y: f32,
        /// Pressure or hover distance.
        pressure_or_distance: f32,
        /// Contact area major axis.
        contact_major: f32,
        /// Contact area minor axis.
        contact_minor: f32,
    },
    /// A pen sample.
    Pen {
        /// Event type.
        event: u8,
        /// 0 unknown, 1 pen, 2 eraser.
        tool: u8,
        /// 0x01 primary, 0x02 secondary, 0x04 tertiary.
        buttons: u8,
        /// X 0..1.
        x: f32,
        /// Y 0..1.
        y: f32,
        /// Pressure or hover distance.
        pressure_or_distance: f32,
        /// Rotation in degrees.
        rotation: u16,
        /// Tilt 0..90, 0xFF unknown.
        tilt: u8,
        /// Contact area major axis.
        contact_major: f32,
        /// Contact area minor axis.
        contact_minor: f32,
    },
    /// "Enable haptics" (sent once at input start; nothing to do).
    HapticsEnable,
}

struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn u8(&self, o: usize) -> u8 {
        self.0[o]
    }
    fn u16le(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.0[o], self.0[o + 1]])
    }
    fn i16le(&self, o: usize) -> i16 {
        self.u16le(o) as i16
    }
    fn i16be(&self, o: usize) -> i16 {
        i16::from_be_bytes([self.0[o], self.0[o + 1]])
    }
    fn u32le(&self, o: usize) -> u32 {
        u32::from_le_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]])
    }
    fn f32(&self, o: usize, name: &'static str) -> Result<f32, InputError> {
        let v = f32::from_le_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]]);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(InputError::Invalid(name))
        }
    }
    fn controller(&self, o: usize) -> Result<u8, InputError> {
        let c = self.u8(o);
        if c < MAX_GAMEPADS {
            Ok(c)
        } else {
            Err(InputError::Invalid("controller"))
        }
    }
}

/// The total packet length each type needs (header included).
fn min_len(magic: u32) -> Option<usize> {
    use magic::*;
    Some(match magic {
        KEY_DOWN | KEY_UP => 14,
        MOUSE_REL => 12,
        MOUSE_ABS => 18,
        MOUSE_BUTTON_DOWN | MOUSE_BUTTON_UP => 9,
        SCROLL => 14,
        HSCROLL => 10,
        UTF8_TEXT => 9,
        GAMEPAD => 34,
        GAMEPAD_ARRIVAL => 16,
        GAMEPAD_TOUCH => 28,
        GAMEPAD_MOTION => 24,
        GAMEPAD_BATTERY => 12,
        TOUCH | PEN => 36,
        HAPTICS => 10,
        _ => return None,
    })
}

/// Decodes one input packet.
pub fn decode_input(packet: &[u8]) -> Result<InputEvent, InputError> {
    if packet.len() > MAX_INPUT_PACKET {
        return Err(InputError::TooLong);
    }
    if packet.len() < 8 {
        return Err(InputError::Truncated);
    }
    let size = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]) as usize;
    if size + 4 != packet.len() {
        return Err(InputError::SizeMismatch);
    }
    let b = Body(packet);
    let magic = b.u32le(4);
    let need = min_len(magic).ok_or(InputError::UnknownType(magic))?;
    if packet.len() < need {
        return Err(InputError::Truncated);
    }
    decode_body(magic, &b)
}

fn decode_body(magic: u32, b: &Body<'_>) -> Result<InputEvent, InputError> {
    use magic::*;
    Ok(match magic {
        KEY_DOWN | KEY_UP => InputEvent::Key {
            down: magic == KEY_DOWN,
            flags: b.u8(8),
            vk: (b.u16le(9) & 0xFF) as u8,
            modifiers: b.u8(11),
        },
        MOUSE_REL => InputEvent::MouseMove {
            dx: b.i16be(8),
            dy: b.i16be(10),
        },
        MOUSE_ABS => {
            let (width, height) = (b.i16be(14), b.i16be(16));
            if width <= 0 || height <= 0 {
                return Err(InputError::Invalid("reference size"));
            }
            InputEvent::MousePosition {
                x: b.i16be(8),
                y: b.i16be(10),
                width,
                height,
            }
        }
        MOUSE_BUTTON_DOWN | MOUSE_BUTTON_UP => InputEvent::MouseButton {
            down: magic == MOUSE_BUTTON_DOWN,
            button: b.u8(8),
        },
        SCROLL => InputEvent::Scroll { amount: b.i16be(8) },
        HSCROLL => InputEvent::HScroll { amount: b.i16be(8) },
        UTF8_TEXT => {
            let bytes = &b.0[8..];
            let s = std::str::from_utf8(bytes).map_err(|_| InputError::Invalid("utf8"))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => InputEvent::Text(c),
                _ => return Err(InputError::Invalid("utf8")),
            }
        }
        GAMEPAD => {
            let controller = b.u16le(10);
            if controller >= u16::from(MAX_GAMEPADS) {
                return Err(InputError::Invalid("controller"));
            }
            InputEvent::Gamepad(GamepadState {
                controller: controller as u8,
                active_mask: b.u16le(12),
                buttons: u32::from(b.u16le(16)) | u32::from(b.u16le(30)) << 16,
                left_trigger: b.u8(18),
                right_trigger: b.u8(19),
                left_x: b.i16le(20),
                left_y: b.i16le(22),
                right_x: b.i16le(24),
                right_y: b.i16le(26),
            })
        }
        GAMEPAD_ARRIVAL => InputEvent::GamepadArrival {
            controller: b.controller(8)?,
            kind: b.u8(9),
            capabilities: b.u16le(10),
            supported_buttons: b.u32le(12),
        },
        GAMEPAD_TOUCH => InputEvent::GamepadTouch {
            controller: b.controller(8)?,
            event: b.u8(9),
            touchpad: b.u8(11),
            pointer_id: b.u32le(12),
            x: b.f32(16, "x")?,
            y: b.f32(20, "y")?,
            pressure: b.f32(24, "pressure")?,
        },
        GAMEPAD_MOTION => InputEvent::GamepadMotion {
            controller: b.controller(8)?,
            motion_type: b.u8(9),
            x: b.f32(12, "x")?,
            y: b.f32(16, "y")?,
            z: b.f32(20, "z")?,
        },
        GAMEPAD_BATTERY => InputEvent::GamepadBattery {
            controller: b.controller(8)?,
            state: b.u8(9),
            percent: b.u8(10),
        },
        TOUCH => InputEvent::Touch {
            event: b.u8(8),
            rotation: b.u16le(10),
            pointer_id: b.u32le(12),
            x: b.f32(16, "x")?,
            y: b.f32(20, "y")?,
            pressure_or_distance: b.f32(24, "pressure")?,
            contact_major: b.f32(28, "contact")?,
            contact_minor: b.f32(32, "contact")?,
        },
        PEN => InputEvent::Pen {
            event: b.u8(8),
            tool: b.u8(9),
            buttons: b.u8(10),
            x: b.f32(12, "x")?,
            y: b.f32(16, "y")?,
            pressure_or_distance: b.f32(20, "pressure")?,
            rotation: b.u16le(24),
            tilt: b.u8(26),
            contact_major: b.f32(28, "contact")?,
            contact_minor: b.f32(32, "contact")?,
        },
        HAPTICS => InputEvent::HapticsEnable,
        other => return Err(InputError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(magic: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        p.extend(magic.to_le_bytes());
        p.extend(body);
        p
    }

    #[test]
    fn spec_examples() {
        // §9.3: the first mouse wiggle and key "A" down.
        let wiggle = [0, 0, 0, 8, 7, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(
            decode_input(&wiggle),
            Ok(InputEvent::MouseMove { dx: 1, dy: 1 })
        );
        let a = [0, 0, 0, 0x0A, 3, 0, 0, 0, 0, 0x41, 0x80, 0, 0, 0];
        assert_eq!(
            decode_input(&a),
            Ok(InputEvent::Key {
                down: true,
                vk: 0x41,
                modifiers: 0,
                flags: 0
            })
        );
        assert_eq!(
            decode_input(&packet(magic::HAPTICS, &[1, 0])),
            Ok(InputEvent::HapticsEnable)
        );
    }

    #[test]
    fn mixed_byte_orders() {
        let abs = packet(
            magic::MOUSE_ABS,
            &[0x01, 0x00, 0x00, 0x80, 0, 0, 0x07, 0x7F, 0x04, 0x37],
        );
        assert_eq!(
            decode_input(&abs),
            Ok(InputEvent::MousePosition {
                x: 256,
                y: 128,
                width: 1919,
                height: 1079
            })
        );
        assert_eq!(
            decode_input(&packet(magic::SCROLL, &[0xFF, 0x88, 0xFF, 0x88, 0, 0])),
            Ok(InputEvent::Scroll { amount: -120 })
        );
        assert_eq!(
            decode_input(&packet(magic::HSCROLL, &[0, 120])),
            Ok(InputEvent::HScroll { amount: 120 })
        );
        let mut pad = vec![0x1A, 0, 3, 0, 0x08, 0, 0x14, 0];
        pad.extend(0x1001u16.to_le_bytes()); // A + up
        pad.extend([255, 10]);
        for v in [-32768i16, 32767, 1, -1] {
            pad.extend(v.to_le_bytes());
        }
        pad.extend([0x9C, 0, 0x01, 0x00, 0x55, 0]); // buttonFlags2: paddle1
        let e = decode_input(&packet(magic::GAMEPAD, &pad)).unwrap();
        let InputEvent::Gamepad(g) = e else { panic!() };
        assert_eq!(g.controller, 3);
        assert_eq!(g.buttons, buttons::A | buttons::UP | buttons::PADDLE1);
        assert_eq!((g.left_trigger, g.right_trigger), (255, 10));
        assert_eq!(
            (g.left_x, g.left_y, g.right_x, g.right_y),
            (-32768, 32767, 1, -1)
        );
        assert!(!g.removed());
        let mut motion = vec![2, 2, 0, 0];
        for v in [1.5f32, -2.0, 9.81] {
            motion.extend(v.to_le_bytes());
        }
        assert_eq!(
            decode_input(&packet(magic::GAMEPAD_MOTION, &motion)),
            Ok(InputEvent::GamepadMotion {
                controller: 2,
                motion_type: 2,
                x: 1.5,
                y: -2.0,
                z: 9.81
            })
        );
        assert_eq!(
            decode_input(&packet(magic::GAMEPAD_BATTERY, &[1, 2, 80, 0])),
            Ok(InputEvent::GamepadBattery {
                controller: 1,
                state: 2,
                percent: 80
            })
        );
        assert_eq!(
            decode_input(&packet(magic::UTF8_TEXT, "€".as_bytes())),
            Ok(InputEvent::Text('€'))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(decode_input(&[0, 0, 0]), Err(InputError::Truncated));
        assert_eq!(
            decode_input(&[0, 0, 0, 9, 7, 0, 0, 0, 0, 1, 0, 1]),
            Err(InputError::SizeMismatch)
        );
        assert_eq!(
            decode_input(&packet(magic::MOUSE_REL, &[0, 1])),
            Err(InputError::Truncated)
        );
        assert_eq!(
            decode_input(&packet(0x1234, &[])),
            Err(InputError::UnknownType(0x1234))
        );
        assert_eq!(
            decode_input(&packet(magic::GAMEPAD_BATTERY, &[16, 2, 80, 0])),
            Err(InputError::Invalid("controller"))
        );
        assert_eq!(
            decode_input(&packet(magic::UTF8_TEXT, b"ab")),
            Err(InputError::Invalid("utf8"))
        );
        assert_eq!(
            decode_input(&packet(magic::UTF8_TEXT, &[0xFF])),
            Err(InputError::Invalid("utf8"))
        );
        let abs = packet(magic::MOUSE_ABS, &[0, 1, 0, 1, 0, 0, 0, 0, 0, 10]);
        assert_eq!(
            decode_input(&abs),
            Err(InputError::Invalid("reference size"))
        );
        let mut nan = vec![0, 1, 0, 0];
        nan.extend(f32::NAN.to_le_bytes());
        nan.extend([0; 8]);
        assert!(decode_input(&packet(magic::GAMEPAD_MOTION, &nan)).is_err());
        assert_eq!(
            decode_input(&[0; MAX_INPUT_PACKET + 1]),
            Err(InputError::TooLong)
        );
    }
}
