//! A USB DualSense (Sony 054c:0ce6) as the kernel's `hid-playstation` driver sees it.
//!
//! The byte layouts follow the driver (`drivers/hid/hid-playstation.c`, Linux 6.1) and the
//! controller's USB reports:
//!
//! - **Input report 0x01**, 64 bytes: `[0]` id; `[1..=4]` sticks LX LY RX RY (0..255, 128
//!   centre); `[5]` L2, `[6]` R2 (0..255); `[7]` sequence; `[8]` D-pad hat (low nibble, 8 =
//!   released) and Square/Cross/Circle/Triangle (bits 4..7); `[9]` L1 R1 L2 R2 Create Options L3
//!   R3; `[10]` PS, touchpad click, mute; `[16..22]` gyro X Y Z and `[22..28]` accel X Y Z (i16
//!   LE, raw); `[28..32]` sensor timestamp (u32 LE, 1/3 µs); `[33..41]` two touch points of four
//!   bytes (bit 7 of the first byte set = not touching, low 7 bits the contact id; then x 12 bits
//!   and y 12 bits); `[53]` battery (low nibble capacity 0..10, high nibble charging state).
//! - **Feature reports** the driver reads at probe and that must have exactly these sizes:
//!   0x09 pairing info (20 bytes, MAC at `[1..7]`), 0x20 firmware info (64 bytes, hardware
//!   version u32 at `[24]`, firmware version u32 at `[28]`, update version u16 at `[44]`), 0x05
//!   calibration (41 bytes; the driver divides by the ranges, so they must not be zero).
//! - **Output report 0x02**, 63 bytes: `[1]`/`[2]` valid flags 0/1, `[3]` right (weak) motor,
//!   `[4]` left (strong) motor, `[9]` mic LED, `[11..22]` right and `[22..33]` left
//!   adaptive-trigger effect (mode byte + 10 parameters), `[39]` valid flags 2, `[44]` player
//!   LEDs, `[45..48]` lightbar RGB.
//!
//! Our calibration is chosen so that raw units are exact: 16 raw gyro units per °/s (the driver
//! reports 1024 per °/s, i.e. raw × 64) and 8192 raw accel units per g (the driver reports raw
//! unchanged, 8192 per g).

use thiserror::Error;

/// Sony's USB vendor id.
pub const VENDOR_ID: u32 = 0x054c;
/// The DualSense's USB product id.
pub const PRODUCT_ID: u32 = 0x0ce6;
/// Input report id (USB).
pub const INPUT_REPORT_ID: u8 = 0x01;
/// Input report size including the id (USB).
pub const INPUT_REPORT_SIZE: usize = 64;
/// Output report id (USB).
pub const OUTPUT_REPORT_ID: u8 = 0x02;
/// Output report size including the id (USB).
pub const OUTPUT_REPORT_SIZE: usize = 63;
/// Feature report: IMU calibration.
pub const FEATURE_CALIBRATION: u8 = 0x05;
/// Feature report: pairing info (the MAC).
pub const FEATURE_PAIRING_INFO: u8 = 0x09;
/// Feature report: firmware info.
pub const FEATURE_FIRMWARE_INFO: u8 = 0x20;
const CALIBRATION_SIZE: usize = 41;
const PAIRING_INFO_SIZE: usize = 20;
const FIRMWARE_INFO_SIZE: usize = 64;

/// Touchpad width in its own units (x is 0..WIDTH).
pub const TOUCHPAD_WIDTH: u16 = 1920;
/// Touchpad height (y is 0..HEIGHT).
pub const TOUCHPAD_HEIGHT: u16 = 1080;
/// Raw gyro units per degree per second under our calibration.
pub const GYRO_RAW_PER_DEG_S: f32 = 16.0;
/// Raw accelerometer units per g under our calibration (the driver reports the same value).
pub const ACCEL_RAW_PER_G: f32 = 8192.0;
/// Standard gravity, m/s².
const G: f32 = 9.806_65;
/// What the driver reports per raw gyro unit (its 1024 per °/s over our 16).
pub const GYRO_EVDEV_PER_RAW: i32 = 64;

const GYRO_PLUS: i16 = 8640;
const GYRO_SPEED: i16 = 540;
const ACCEL_PLUS: i16 = 8192;
const HARDWARE_VERSION: u32 = 0x0000_0411;
const FIRMWARE_VERSION: u32 = 0x0110_0008;
const UPDATE_VERSION: u16 = 0x0224;

/// Button bits of [`PadState::buttons`], in the report's own layout (byte 8 bits 4..7, byte 9
/// and byte 10 shifted by 8 and 16). The D-pad is [`PadState::dpad`].
pub mod button {
    /// Square.
    pub const SQUARE: u32 = 0x10;
    /// Cross.
    pub const CROSS: u32 = 0x20;
    /// Circle.
    pub const CIRCLE: u32 = 0x40;
    /// Triangle.
    pub const TRIANGLE: u32 = 0x80;
    /// L1.
    pub const L1: u32 = 0x01 << 8;
    /// R1.
    pub const R1: u32 = 0x02 << 8;
    /// L2 pressed (set by the encoder when the left trigger is above 0).
    pub const L2: u32 = 0x04 << 8;
    /// R2 pressed (set by the encoder when the right trigger is above 0).
    pub const R2: u32 = 0x08 << 8;
    /// Create.
    pub const CREATE: u32 = 0x10 << 8;
    /// Options.
    pub const OPTIONS: u32 = 0x20 << 8;
    /// L3.
    pub const L3: u32 = 0x40 << 8;
    /// R3.
    pub const R3: u32 = 0x80 << 8;
    /// PS.
    pub const PS: u32 = 0x01 << 16;
    /// Touchpad click.
    pub const TOUCHPAD: u32 = 0x02 << 16;
    /// Mic mute.
    pub const MUTE: u32 = 0x04 << 16;
    /// Every bit the report carries.
    pub const ALL: u32 = 0xF0 | 0xFF << 8 | 0x07 << 16;
}

/// The D-pad as four booleans; the report carries it as an 8-way hat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dpad {
    /// Up held.
    pub up: bool,
    /// Down held.
    pub down: bool,
    /// Left held.
    pub left: bool,
    /// Right held.
    pub right: bool,
}

impl Dpad {
    /// The hat value: 0 = N, clockwise to 7 = NW, 8 = released. Opposite directions cancel.
    pub fn hat(self) -> u8 {
        let v = i8::from(self.down) - i8::from(self.up);
        let h = i8::from(self.right) - i8::from(self.left);
        match (v, h) {
            (-1, 0) => 0,
            (-1, 1) => 1,
            (0, 1) => 2,
            (1, 1) => 3,
            (1, 0) => 4,
            (1, -1) => 5,
            (0, -1) => 6,
            (-1, -1) => 7,
            _ => 8,
        }
    }
}

/// One finger on the touchpad.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TouchPoint {
    /// Touching.
    pub active: bool,
    /// The contact id (7 bits; a new touch gets a new id).
    pub id: u8,
    /// 0..[`TOUCHPAD_WIDTH`].
    pub x: u16,
    /// 0..[`TOUCHPAD_HEIGHT`].
    pub y: u16,
}

/// Everything input report 0x01 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadState {
    /// Left stick X, Y (0..255, 128 centre, +y down).
    pub left: [u8; 2],
    /// Right stick X, Y.
    pub right: [u8; 2],
    /// Left trigger 0..255.
    pub l2: u8,
    /// Right trigger 0..255.
    pub r2: u8,
    /// [`button`] bits.
    pub buttons: u32,
    /// The D-pad.
    pub dpad: Dpad,
    /// Gyro X, Y, Z, raw ([`GYRO_RAW_PER_DEG_S`]).
    pub gyro: [i16; 3],
    /// Accelerometer X, Y, Z, raw ([`ACCEL_RAW_PER_G`]).
    pub accel: [i16; 3],
    /// Two touchpad fingers.
    pub touch: [TouchPoint; 2],
    /// Battery 0..=100 %.
    pub battery_percent: u8,
    /// On the charger.
    pub charging: bool,
}

impl Default for PadState {
    fn default() -> Self {
        Self {
            left: [128; 2],
            right: [128; 2],
            l2: 0,
            r2: 0,
            buttons: 0,
            dpad: Dpad::default(),
            gyro: [0; 3],
            // At rest on a table: 1 g along +Y (the driver's orientation).
            accel: [0, ACCEL_RAW_PER_G as i16, 0],
            touch: [TouchPoint::default(); 2],
            battery_percent: 100,
            charging: true,
        }
    }
}

/// A stick axis from the evdev/XInput range (-32768..32767) to the report's byte.
pub fn stick(v: i16) -> u8 {
    ((i32::from(v) + 32768) >> 8) as u8
}

/// A gyro rate in rad/s to raw units (saturating).
pub fn gyro_raw(rad_per_s: f32) -> i16 {
    saturate(rad_per_s.to_degrees() * GYRO_RAW_PER_DEG_S)
}

/// An acceleration in m/s² to raw units (saturating).
pub fn accel_raw(m_per_s2: f32) -> i16 {
    saturate(m_per_s2 / G * ACCEL_RAW_PER_G)
}

fn saturate(v: f32) -> i16 {
    if v.is_nan() {
        0
    } else {
        // `as` saturates floats to the integer range.
        v.round() as i16
    }
}

/// The sensor timestamp for a CLOCK_MONOTONIC time: 1/3 µs units, wrapping (the driver takes
/// deltas).
pub fn sensor_timestamp(ns: u64) -> u32 {
    (ns / 1000).wrapping_mul(3) as u32
}

/// Encodes input report 0x01. `seq` is the report's sequence byte, `timestamp` from
/// [`sensor_timestamp`].
pub fn encode_input_report(s: &PadState, seq: u8, timestamp: u32) -> [u8; INPUT_REPORT_SIZE] {
    let mut r = [0u8; INPUT_REPORT_SIZE];
    r[0] = INPUT_REPORT_ID;
    r[1] = s.left[0];
    r[2] = s.left[1];
    r[3] = s.right[0];
    r[4] = s.right[1];
    r[5] = s.l2;
    r[6] = s.r2;
    r[7] = seq;
    let mut buttons = s.buttons & button::ALL & !(button::L2 | button::R2);
    if s.l2 > 0 {
        buttons |= button::L2;
    }
    if s.r2 > 0 {
        buttons |= button::R2;
    }
    r[8] = (buttons & 0xF0) as u8 | s.dpad.hat();
    r[9] = (buttons >> 8) as u8;
    r[10] = (buttons >> 16) as u8;
    for (i, v) in s.gyro.iter().chain(s.accel.iter()).enumerate() {
        r[16 + 2 * i..18 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    r[28..32].copy_from_slice(&timestamp.to_le_bytes());
    for (i, t) in s.touch.iter().enumerate() {
        let at = 33 + 4 * i;
        let x = t.x.min(TOUCHPAD_WIDTH - 1);
        let y = t.y.min(TOUCHPAD_HEIGHT - 1);
        r[at] = (t.id & 0x7F) | if t.active { 0 } else { 0x80 };
        r[at + 1] = (x & 0xFF) as u8;
        r[at + 2] = ((x >> 8) & 0x0F) as u8 | ((y & 0x0F) << 4) as u8;
        r[at + 3] = (y >> 4) as u8;
    }
    let capacity = (s.battery_percent.min(100) / 10) & 0x0F;
    let charge = match (s.charging, s.battery_percent >= 100) {
        (true, true) => 0x2,
        (true, false) => 0x1,
        (false, _) => 0x0,
    };
    r[53] = capacity | charge << 4;
    r
}

/// The reply to a feature-report request for `report_id`, or `None` for one we do not have
/// (answer it with an error). `mac` is the controller's address as the pairing report carries
/// it (least significant byte first; the driver prints it reversed as `uniq`).
pub fn feature_report(report_id: u8, mac: [u8; 6]) -> Option<Vec<u8>> {
    match report_id {
        FEATURE_PAIRING_INFO => {
            let mut r = vec![0u8; PAIRING_INFO_SIZE];
            r[0] = report_id;
            r[1..7].copy_from_slice(&mac);
            Some(r)
        }
        FEATURE_FIRMWARE_INFO => {
            let mut r = vec![0u8; FIRMWARE_INFO_SIZE];
            r[0] = report_id;
            // Build date and time, as text the way the controller has them.
            r[1..12].copy_from_slice(b"Dec 03 2026");
            r[12..20].copy_from_slice(b"05:00:00");
            r[24..28].copy_from_slice(&HARDWARE_VERSION.to_le_bytes());
            r[28..32].copy_from_slice(&FIRMWARE_VERSION.to_le_bytes());
            r[44..46].copy_from_slice(&UPDATE_VERSION.to_le_bytes());
            Some(r)
        }
        FEATURE_CALIBRATION => Some(calibration()),
        _ => None,
    }
}

fn calibration() -> Vec<u8> {
    let mut r = vec![0u8; CALIBRATION_SIZE];
    r[0] = FEATURE_CALIBRATION;
    let words: [i16; 17] = [
        0, // gyro pitch bias
        0, // gyro yaw bias
        0, // gyro roll bias
        GYRO_PLUS,
        -GYRO_PLUS, // pitch +/-
        GYRO_PLUS,
        -GYRO_PLUS, // yaw +/-
        GYRO_PLUS,
        -GYRO_PLUS, // roll +/-
        GYRO_SPEED,
        GYRO_SPEED, // speed +/-
        ACCEL_PLUS,
        -ACCEL_PLUS, // accel x +/-
        ACCEL_PLUS,
        -ACCEL_PLUS, // accel y +/-
        ACCEL_PLUS,
        -ACCEL_PLUS, // accel z +/-
    ];
    for (i, w) in words.iter().enumerate() {
        r[1 + 2 * i..3 + 2 * i].copy_from_slice(&w.to_le_bytes());
    }
    r
}

/// A HID report descriptor that declares the reports above with their sizes.
///
/// `hid-playstation` decodes the raw bytes itself and asks the HID core only to route reports
/// by id, so the descriptor's job is the ids and lengths: input 0x01 (the axes as Generic
/// Desktop usages, the rest vendor-defined), output 0x02, features 0x05, 0x09, 0x20. Written
/// from the HID 1.11 item encoding; the comments name each item.
pub const REPORT_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x05, // Usage (Game Pad)
    0xA1, 0x01, // Collection (Application)
    0x85, 0x01, //   Report ID (1)
    0x09, 0x30, //   Usage (X)
    0x09, 0x31, //   Usage (Y)
    0x09, 0x32, //   Usage (Z)
    0x09, 0x35, //   Usage (Rz)
    0x09, 0x33, //   Usage (Rx)
    0x09, 0x34, //   Usage (Ry)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xFF, 0x00, // Logical Maximum (255)
    0x75, 0x08, //   Report Size (8)
    0x95, 0x06, //   Report Count (6)
    0x81, 0x02, //   Input (Data, Variable, Absolute)
    0x06, 0x00, 0xFF, // Usage Page (Vendor 0xFF00)
    0x09, 0x20, //   Usage (0x20)
    0x95, 0x39, //   Report Count (57): the rest of the 63 payload bytes
    0x81, 0x02, //   Input (Data, Variable, Absolute)
    0x85, 0x02, //   Report ID (2)
    0x09, 0x21, //   Usage (0x21)
    0x95, 0x3E, //   Report Count (62)
    0x91, 0x02, //   Output (Data, Variable, Absolute)
    0x85, 0x05, //   Report ID (5): calibration
    0x09, 0x22, //   Usage (0x22)
    0x95, 0x28, //   Report Count (40)
    0xB1, 0x02, //   Feature (Data, Variable, Absolute)
    0x85, 0x09, //   Report ID (9): pairing info
    0x09, 0x23, //   Usage (0x23)
    0x95, 0x13, //   Report Count (19)
    0xB1, 0x02, //   Feature (Data, Variable, Absolute)
    0x85, 0x20, //   Report ID (0x20): firmware info
    0x09, 0x24, //   Usage (0x24)
    0x95, 0x3F, //   Report Count (63)
    0xB1, 0x02, //   Feature (Data, Variable, Absolute)
    0xC0, // End Collection
];

/// An adaptive-trigger effect: the mode byte and its ten parameters, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerEffect {
    /// The mode (0x00/0x05 off, 0x01/0x02/0x06 the simple modes, 0x21 feedback, 0x25 weapon,
    /// 0x26 vibration, others passed through).
    pub mode: u8,
    /// Parameters.
    pub params: [u8; 10],
}

/// A trigger effect's meaning, for the modes whose layout is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMode {
    /// No resistance (mode 0x00 or 0x05).
    Off,
    /// Resistance per zone (0x21): `strength[z]` is 0 (zone inactive) or 1..=8 for the ten zones
    /// of the trigger's travel.
    Feedback {
        /// Strength per zone, 0 = inactive.
        strength: [u8; 10],
    },
    /// A trigger that gives way like a gun's (0x25): resistance from zone `start` to `end`.
    Weapon {
        /// First zone (2..=7).
        start: u8,
        /// Last zone (start+1..=8).
        end: u8,
        /// Strength 1..=8.
        strength: u8,
    },
    /// Vibration per zone (0x26) at `frequency` Hz.
    Vibration {
        /// Amplitude per zone, 0 = inactive.
        amplitude: [u8; 10],
        /// Hz.
        frequency: u8,
    },
    /// Any other mode: the raw bytes are all there is.
    Other(u8),
}

impl TriggerEffect {
    /// Decodes the effect's meaning.
    pub fn decode(&self) -> TriggerMode {
        let p = &self.params;
        match self.mode {
            0x00 | 0x05 => TriggerMode::Off,
            0x21 => TriggerMode::Feedback { strength: zones(p) },
            0x25 => {
                let bits = u16::from_le_bytes([p[0], p[1]]);
                let start = bits.trailing_zeros().min(15) as u8;
                let end = (15 - bits.leading_zeros().min(15)) as u8;
                TriggerMode::Weapon {
                    start,
                    end,
                    strength: p[2].saturating_add(1),
                }
            }
            0x26 => TriggerMode::Vibration {
                amplitude: zones(p),
                frequency: p[8],
            },
            other => TriggerMode::Other(other),
        }
    }
}

/// The per-zone layout of modes 0x21 and 0x26: a 10-bit active mask (u16 LE) then 3 bits per
/// zone (u32 LE) holding strength − 1.
fn zones(p: &[u8; 10]) -> [u8; 10] {
    let active = u16::from_le_bytes([p[0], p[1]]);
    let values = u32::from_le_bytes([p[2], p[3], p[4], p[5]]);
    let mut out = [0u8; 10];
    for (z, o) in out.iter_mut().enumerate() {
        if active & (1 << z) != 0 {
            *o = ((values >> (3 * z)) & 0x7) as u8 + 1;
        }
    }
    out
}

/// What one output report sets; `None` where its valid flag is clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputReport {
    /// Strong (left, low-frequency) and weak (right, high-frequency) motor, 0..255.
    pub rumble: Option<(u8, u8)>,
    /// Lightbar red, green, blue.
    pub lightbar: Option<[u8; 3]>,
    /// Player LEDs, bit 0 = leftmost of five.
    pub player_leds: Option<u8>,
    /// Mic mute LED.
    pub mic_led: Option<u8>,
    /// Right trigger effect.
    pub right_trigger: Option<TriggerEffect>,
    /// Left trigger effect.
    pub left_trigger: Option<TriggerEffect>,
}

/// Why bytes are not a USB output report.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OutputError {
    /// Not report 0x02 (or empty).
    #[error("output report id {0:?} is not the DualSense's USB output report 0x02")]
    ReportId(Option<u8>),
    /// Shorter than the common part.
    #[error("a DualSense output report of {0} bytes is shorter than 48")]
    Short(usize),
}

const FLAG0_COMPATIBLE_VIBRATION: u8 = 0x01;
const FLAG0_HAPTICS_SELECT: u8 = 0x02;
const FLAG0_RIGHT_TRIGGER: u8 = 0x04;
const FLAG0_LEFT_TRIGGER: u8 = 0x08;
const FLAG1_MIC_LED: u8 = 0x01;
const FLAG1_LIGHTBAR: u8 = 0x04;
const FLAG1_PLAYER_LEDS: u8 = 0x10;
const FLAG2_COMPATIBLE_VIBRATION2: u8 = 0x04;

/// Parses output report 0x02 (the driver's, or one a game writes to hidraw).
pub fn parse_output_report(data: &[u8]) -> Result<OutputReport, OutputError> {
    match data.first() {
        Some(&OUTPUT_REPORT_ID) => {}
        other => return Err(OutputError::ReportId(other.copied())),
    }
    if data.len() < 48 {
        return Err(OutputError::Short(data.len()));
    }
    let c = &data[1..48];
    let (f0, f1, f2) = (c[0], c[1], c[38]);
    let trigger = |at: usize| {
        let mut params = [0u8; 10];
        params.copy_from_slice(&c[at + 1..at + 11]);
        TriggerEffect {
            mode: c[at],
            params,
        }
    };
    let vibration = f0 & (FLAG0_COMPATIBLE_VIBRATION | FLAG0_HAPTICS_SELECT) != 0
        || f2 & FLAG2_COMPATIBLE_VIBRATION2 != 0;
    Ok(OutputReport {
        rumble: vibration.then_some((c[3], c[2])),
        lightbar: (f1 & FLAG1_LIGHTBAR != 0).then_some([c[44], c[45], c[46]]),
        player_leds: (f1 & FLAG1_PLAYER_LEDS != 0).then_some(c[43] & 0x1F),
        mic_led: (f1 & FLAG1_MIC_LED != 0).then_some(c[8]),
        right_trigger: (f0 & FLAG0_RIGHT_TRIGGER != 0).then(|| trigger(10)),
        left_trigger: (f0 & FLAG0_LEFT_TRIGGER != 0).then(|| trigger(21)),
    })
}

/// One change of the controller's outputs, for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Motors, 0..65535 (strong/low-frequency, weak/high-frequency).
    Rumble {
        /// Strong motor.
        low: u16,
        /// Weak motor.
        high: u16,
    },
    /// Lightbar colour.
    Lightbar([u8; 3]),
    /// Player LEDs mask.
    PlayerLeds(u8),
    /// A trigger's effect.
    Trigger {
        /// Right (R2) or left (L2).
        right: bool,
        /// The effect.
        effect: TriggerEffect,
    },
}

/// Turns a stream of output reports into changes: games rewrite the whole report many times a
/// second, the client wants to hear about what changed.
#[derive(Debug, Default)]
pub struct FeedbackTracker {
    rumble: Option<(u8, u8)>,
    lightbar: Option<[u8; 3]>,
    player_leds: Option<u8>,
    right: Option<TriggerEffect>,
    left: Option<TriggerEffect>,
}

impl FeedbackTracker {
    /// Feeds one parsed report; pushes what changed onto `out` (at most five items).
    pub fn handle(&mut self, r: &OutputReport, out: &mut Vec<Feedback>) {
        if let Some(v) = r.rumble.filter(|v| self.rumble != Some(*v)) {
            self.rumble = Some(v);
            out.push(Feedback::Rumble {
                low: u16::from(v.0) * 257,
                high: u16::from(v.1) * 257,
            });
        }
        if let Some(v) = r.lightbar.filter(|v| self.lightbar != Some(*v)) {
            self.lightbar = Some(v);
            out.push(Feedback::Lightbar(v));
        }
        if let Some(v) = r.player_leds.filter(|v| self.player_leds != Some(*v)) {
            self.player_leds = Some(v);
            out.push(Feedback::PlayerLeds(v));
        }
        if let Some(v) = r.right_trigger.filter(|v| self.right != Some(*v)) {
            self.right = Some(v);
            out.push(Feedback::Trigger {
                right: true,
                effect: v,
            });
        }
        if let Some(v) = r.left_trigger.filter(|v| self.left != Some(*v)) {
            self.left = Some(v);
            out.push(Feedback::Trigger {
                right: false,
                effect: v,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_report_layout() {
        let s = PadState {
            left: [0, 255],
            right: [10, 20],
            l2: 200,
            r2: 0,
            buttons: button::CROSS | button::OPTIONS | button::PS,
            dpad: Dpad {
                up: true,
                right: true,
                ..Dpad::default()
            },
            gyro: [1, -2, 300],
            accel: [-8192, 8192, 0],
            touch: [
                TouchPoint {
                    active: true,
                    id: 5,
                    x: 0x123,
                    y: 0x345,
                },
                TouchPoint::default(),
            ],
            battery_percent: 50,
            charging: true,
        };
        let r = encode_input_report(&s, 9, 0xA1B2C3D4);
        assert_eq!(r.len(), 64);
        assert_eq!(&r[..8], &[0x01, 0, 255, 10, 20, 200, 0, 9]);
        // NE hat (1) with Cross (0x20).
        assert_eq!(r[8], 0x21);
        // Options and L2 (trigger above 0).
        assert_eq!(r[9], 0x20 | 0x04);
        assert_eq!(r[10], 0x01);
        assert_eq!(&r[16..22], &[1, 0, 0xFE, 0xFF, 0x2C, 0x01]);
        assert_eq!(&r[22..28], &[0x00, 0xE0, 0x00, 0x20, 0, 0]);
        assert_eq!(&r[28..32], &[0xD4, 0xC3, 0xB2, 0xA1]);
        // x = 0x123, y = 0x345: x_lo 0x23, x_hi 1 | y_lo 5 << 4, y_hi 0x34.
        assert_eq!(&r[33..37], &[5, 0x23, 0x51, 0x34]);
        assert_eq!(r[37] & 0x80, 0x80);
        assert_eq!(r[53], 0x15);
    }

    #[test]
    fn hat_covers_eight_ways_and_release() {
        let d = |up, down, left, right| Dpad {
            up,
            down,
            left,
            right,
        };
        assert_eq!(d(false, false, false, false).hat(), 8);
        assert_eq!(d(true, false, false, false).hat(), 0);
        assert_eq!(d(false, true, false, true).hat(), 3);
        assert_eq!(d(false, false, true, false).hat(), 6);
        assert_eq!(d(true, false, true, false).hat(), 7);
        assert_eq!(d(true, true, false, false).hat(), 8);
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(stick(-32768), 0);
        assert_eq!(stick(0), 128);
        assert_eq!(stick(32767), 255);
        assert_eq!(gyro_raw(std::f32::consts::PI), 2880); // 180 °/s × 16
        assert_eq!(gyro_raw(1e9), i16::MAX);
        assert_eq!(gyro_raw(f32::NAN), 0);
        assert_eq!(accel_raw(-G), -8192);
        assert_eq!(sensor_timestamp(2_000), 6);
    }

    #[test]
    fn feature_reports_have_the_drivers_sizes() {
        let mac = [1, 2, 3, 4, 5, 6];
        let p = feature_report(0x09, mac).unwrap();
        assert_eq!((p.len(), p[0], &p[1..7]), (20, 0x09, &mac[..]));
        let f = feature_report(0x20, mac).unwrap();
        assert_eq!((f.len(), f[0]), (64, 0x20));
        assert_eq!(
            u32::from_le_bytes([f[24], f[25], f[26], f[27]]),
            HARDWARE_VERSION
        );
        assert_eq!(
            u32::from_le_bytes([f[28], f[29], f[30], f[31]]),
            FIRMWARE_VERSION
        );
        let c = feature_report(0x05, mac).unwrap();
        assert_eq!((c.len(), c[0]), (41, 0x05));
        let w = |i: usize| i16::from_le_bytes([c[1 + 2 * i], c[2 + 2 * i]]);
        // The driver's denominators: pitch/yaw/roll plus − minus, and accel plus − minus.
        for i in [3, 5, 7] {
            assert_ne!(w(i) - w(i + 1), 0);
        }
        for i in [11, 13, 15] {
            assert_eq!(i32::from(w(i)) - i32::from(w(i + 1)), 16384);
            // bias = plus − range/2 = 0, so the driver reports raw accel unchanged.
            assert_eq!(
                i32::from(w(i)) - (i32::from(w(i)) - i32::from(w(i + 1))) / 2,
                0
            );
        }
        // Gyro: speed_2x × 1024 / (plus − minus) = 64 evdev units per raw unit.
        assert_eq!(
            (i32::from(w(9)) + i32::from(w(10))) * 1024 / (i32::from(w(3)) - i32::from(w(4))),
            GYRO_EVDEV_PER_RAW
        );
        assert_eq!(feature_report(0x22, mac), None);
    }

    #[test]
    fn descriptor_declares_the_report_sizes() {
        // Sum Report Count × 8 bits per report id and kind by walking the short items.
        let d = REPORT_DESCRIPTOR;
        let (mut i, mut id, mut count) = (0, 0u8, 0u32);
        let mut sizes = std::collections::BTreeMap::new();
        while i < d.len() {
            let prefix = d[i];
            let len = match prefix & 3 {
                3 => 4,
                n => n as usize,
            };
            let v = d[i + 1..i + 1 + len]
                .iter()
                .rev()
                .fold(0u32, |a, b| a << 8 | u32::from(*b));
            match prefix & 0xFC {
                0x84 => id = v as u8,
                0x94 => count = v,
                0x80 | 0x90 | 0xB0 => *sizes.entry((prefix & 0xFC, id)).or_insert(0) += count,
                _ => {}
            }
            i += 1 + len;
        }
        assert_eq!(sizes[&(0x80, 1)] as usize, INPUT_REPORT_SIZE - 1);
        assert_eq!(sizes[&(0x90, 2)] as usize, OUTPUT_REPORT_SIZE - 1);
        assert_eq!(sizes[&(0xB0, 5)] as usize, CALIBRATION_SIZE - 1);
        assert_eq!(sizes[&(0xB0, 9)] as usize, PAIRING_INFO_SIZE - 1);
        assert_eq!(sizes[&(0xB0, 0x20)] as usize, FIRMWARE_INFO_SIZE - 1);
    }

    /// The output report hid-playstation writes for an FF rumble (strong 0x80, weak 0x40) with
    /// the lightbar and player LEDs, byte for byte.
    fn driver_report() -> [u8; OUTPUT_REPORT_SIZE] {
        let mut r = [0u8; OUTPUT_REPORT_SIZE];
        r[0] = 0x02;
        r[1] = FLAG0_COMPATIBLE_VIBRATION | FLAG0_HAPTICS_SELECT;
        r[2] = FLAG1_LIGHTBAR | FLAG1_PLAYER_LEDS;
        r[3] = 0x40; // motor_right (weak)
        r[4] = 0x80; // motor_left (strong)
        r[44] = 0b00100;
        r[45] = 0x10;
        r[46] = 0x20;
        r[47] = 0x30;
        r
    }

    #[test]
    fn parses_rumble_lightbar_and_player_leds() {
        let r = parse_output_report(&driver_report()).unwrap();
        assert_eq!(r.rumble, Some((0x80, 0x40)));
        assert_eq!(r.lightbar, Some([0x10, 0x20, 0x30]));
        assert_eq!(r.player_leds, Some(0b00100));
        assert_eq!(
            (r.right_trigger, r.left_trigger, r.mic_led),
            (None, None, None)
        );
        // Vibration v2 (valid_flag2 bit 2) also carries the motors.
        let mut v2 = [0u8; OUTPUT_REPORT_SIZE];
        v2[0] = 0x02;
        v2[39] = FLAG2_COMPATIBLE_VIBRATION2;
        v2[4] = 0xFF;
        assert_eq!(parse_output_report(&v2).unwrap().rumble, Some((0xFF, 0)));
    }

    #[test]
    fn rejects_other_reports() {
        assert_eq!(parse_output_report(&[]), Err(OutputError::ReportId(None)));
        assert_eq!(
            parse_output_report(&[0x31; 78]),
            Err(OutputError::ReportId(Some(0x31)))
        );
        assert_eq!(
            parse_output_report(&[0x02; 47]),
            Err(OutputError::Short(47))
        );
    }

    /// Trigger effects at their known layouts (the modes games use through SDL/Steam).
    #[test]
    fn adaptive_trigger_effects() {
        let mut r = [0u8; OUTPUT_REPORT_SIZE];
        r[0] = 0x02;
        r[1] = FLAG0_RIGHT_TRIGGER | FLAG0_LEFT_TRIGGER;
        // Right: weapon from zone 2 to zone 7, strength 8: zones (1<<2)|(1<<7) = 0x0084.
        r[11..22].copy_from_slice(&[0x25, 0x84, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0]);
        // Left: feedback in zones 0..=9 at strength 5 (4 in each 3-bit field).
        let forces: u32 = (0..10).map(|z| 4u32 << (3 * z)).sum();
        let f = forces.to_le_bytes();
        r[22..33].copy_from_slice(&[0x21, 0xFF, 0x03, f[0], f[1], f[2], f[3], 0, 0, 0, 0]);
        let p = parse_output_report(&r).unwrap();
        let right = p.right_trigger.unwrap();
        assert_eq!(right.mode, 0x25);
        assert_eq!(right.params[..3], [0x84, 0x00, 0x07]);
        assert_eq!(
            right.decode(),
            TriggerMode::Weapon {
                start: 2,
                end: 7,
                strength: 8
            }
        );
        assert_eq!(
            p.left_trigger.unwrap().decode(),
            TriggerMode::Feedback { strength: [5; 10] }
        );
        // Vibration in zones 5..=9 at amplitude 8, 40 Hz.
        let amps: u32 = (5..10).map(|z| 7u32 << (3 * z)).sum();
        let a = amps.to_le_bytes();
        let vib = TriggerEffect {
            mode: 0x26,
            params: [0xE0, 0x03, a[0], a[1], a[2], a[3], 0, 0, 40, 0],
        };
        assert_eq!(
            vib.decode(),
            TriggerMode::Vibration {
                amplitude: [0, 0, 0, 0, 0, 8, 8, 8, 8, 8],
                frequency: 40
            }
        );
        let off = TriggerEffect {
            mode: 0x05,
            params: [0; 10],
        };
        assert_eq!(off.decode(), TriggerMode::Off);
        assert_eq!(
            TriggerEffect {
                mode: 0x01,
                params: [0; 10]
            }
            .decode(),
            TriggerMode::Other(0x01)
        );
    }

    #[test]
    fn tracker_reports_changes_only() {
        let mut t = FeedbackTracker::default();
        let mut out = Vec::new();
        let r = parse_output_report(&driver_report()).unwrap();
        t.handle(&r, &mut out);
        assert_eq!(
            out,
            [
                Feedback::Rumble {
                    low: 0x8080,
                    high: 0x4040
                },
                Feedback::Lightbar([0x10, 0x20, 0x30]),
                Feedback::PlayerLeds(0b00100),
            ]
        );
        out.clear();
        t.handle(&r, &mut out);
        assert!(out.is_empty());
        let mut stop = driver_report();
        stop[3] = 0;
        stop[4] = 0;
        t.handle(&parse_output_report(&stop).unwrap(), &mut out);
        assert_eq!(out, [Feedback::Rumble { low: 0, high: 0 }]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            if let Ok(r) = parse_output_report(&bytes) {
                let _ = r.right_trigger.map(|t| t.decode());
                let _ = r.left_trigger.map(|t| t.decode());
            }
        }
    }
}
