//! Sans-IO HID for `punktfunk-input`.
//!
//! - [`dualsense`]: a USB DualSense (054c:0ce6) as the kernel's `hid-playstation` expects it —
//!   the report descriptor, input report 0x01 built from a [`dualsense::PadState`], the replies
//!   to the feature reports the driver asks for at probe (0x09 pairing info, 0x20 firmware info,
//!   0x05 calibration), and output report 0x02 parsed into rumble, lightbar, player LEDs and
//!   adaptive-trigger effects.
//! - [`uhid`]: the `/dev/uhid` event records (`struct uhid_event`), encoded and decoded.
//!
//! Nothing here does I/O: the input daemon writes the bytes to `/dev/uhid` and feeds back what it
//! reads. Every decoder takes untrusted bytes, never panics and never allocates from a length in
//! them (fuzzed: `fuzz/`).
#![forbid(unsafe_code)]

pub mod dualsense;
pub mod uhid;
