//! A DualSense over UHID: the I/O shell around `punktfunk_hid`. One `/dev/uhid` handle per pad;
//! seat events update the pad's state and write input report 0x01; a thread answers the
//! driver's feature-report requests and turns its output reports into feedback.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use punktfunk_hid::dualsense::{self as ds, Feedback, FeedbackTracker, button};
use punktfunk_hid::uhid;
use punktfunk_proto::seat::{self, PadButton, seat_event::Event, seat_feedback::Feedback as Fb};

use crate::feedback::FeedbackTx;
use crate::policy::has;
use crate::uinput::{POLL, nodes_with_uniq};

/// Where the UHID device is.
pub const UHID_PATH: &str = "/dev/uhid";
/// How long opening a seat waits for hid-playstation to bind (gamepad, motion sensors and
/// touchpad input devices present).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(3);

/// Seat button → DualSense button.
const BUTTONS: [(PadButton, u32); 13] = [
    (PadButton::A, button::CROSS),
    (PadButton::B, button::CIRCLE),
    (PadButton::X, button::SQUARE),
    (PadButton::Y, button::TRIANGLE),
    (PadButton::Lb, button::L1),
    (PadButton::Rb, button::R1),
    (PadButton::Back, button::CREATE),
    (PadButton::Start, button::OPTIONS),
    (PadButton::Guide, button::PS),
    (PadButton::Ls, button::L3),
    (PadButton::Rs, button::R3),
    (PadButton::Touchpad, button::TOUCHPAD),
    (PadButton::Misc, button::MUTE),
];

/// One emulated DualSense.
pub struct DualSense {
    file: Arc<File>,
    state: ds::PadState,
    seq: u8,
    next_touch_id: u8,
    uniq: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    buf: Vec<u8>,
}

/// The pad's MAC for pad `index` of seat `seat`: locally administered, unique per live pad.
pub fn mac(seat: u64, index: u32) -> [u8; 6] {
    let s = seat.to_le_bytes();
    // The report carries the MAC least significant byte first; the last byte is the first
    // octet people read, with the locally-administered bit set.
    [index as u8, s[0], s[1], s[2], 0x46, 0x02]
}

/// The MAC as hid-playstation prints it into `uniq` (`%pMR`: reversed, lower-case).
pub fn uniq(mac: [u8; 6]) -> String {
    mac.iter()
        .rev()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl DualSense {
    /// Creates the device and starts its thread. Fails with the open error when `/dev/uhid`
    /// is missing or not ours to use.
    pub fn new(name: &str, index: u32, mac: [u8; 6], feedback: FeedbackTx) -> io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(UHID_PATH)?;
        let uniq = uniq(mac);
        let create = uhid::create2(&uhid::CreateParams {
            name,
            phys: &format!("punktfunk/pad{index}"),
            uniq: &uniq,
            bus: uhid::BUS_USB,
            vendor: ds::VENDOR_ID,
            product: ds::PRODUCT_ID,
            version: 0x0100,
            country: 0,
            descriptor: ds::REPORT_DESCRIPTOR,
        })
        .map_err(io::Error::other)?;
        (&file).write_all(&create)?;
        let file = Arc::new(file);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (file, stop) = (file.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("pf-ds{index}"))
                .spawn(move || uhid_loop(&file, &stop, index, mac, &feedback))?
        };
        Ok(Self {
            file,
            state: ds::PadState::default(),
            seq: 0,
            next_touch_id: 0,
            uniq,
            stop,
            thread: Some(thread),
            buf: Vec::with_capacity(6 + ds::INPUT_REPORT_SIZE),
        })
    }

    /// Waits (up to [`BIND_TIMEOUT`]) until hid-playstation has created the gamepad, motion
    /// sensor and touchpad devices; returns their names and event nodes (fewer if it did not
    /// bind in time).
    pub fn wait_bound(&self) -> Vec<(String, PathBuf)> {
        let deadline = Instant::now() + BIND_TIMEOUT;
        loop {
            let nodes = self.nodes();
            if nodes.len() >= 3 || Instant::now() >= deadline {
                return nodes;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The event nodes hid-playstation created for this pad.
    pub fn nodes(&self) -> Vec<(String, PathBuf)> {
        nodes_with_uniq(&self.uniq)
    }

    /// Applies one admitted pad event and writes the new input report.
    pub fn write(&mut self, e: &Event, now_ns: u64) -> io::Result<()> {
        match e {
            Event::Pad(p) => self.apply_pad(p),
            Event::PadMotion(m) => {
                self.state.gyro = [m.gyro_x, m.gyro_y, m.gyro_z].map(ds::gyro_raw);
                self.state.accel = [m.accel_x, m.accel_y, m.accel_z].map(ds::accel_raw);
            }
            Event::PadTouch(t) => self.apply_touch(t),
            Event::PadBattery(b) => {
                self.state.battery_percent = b.percent.min(100) as u8;
                self.state.charging = b.charging;
            }
            _ => return Ok(()),
        }
        self.seq = self.seq.wrapping_add(1);
        let report = ds::encode_input_report(&self.state, self.seq, ds::sensor_timestamp(now_ns));
        uhid::input2(&report, &mut self.buf).map_err(io::Error::other)?;
        (&*self.file).write_all(&self.buf)
    }

    fn apply_pad(&mut self, p: &seat::PadState) {
        let s = &mut self.state;
        s.buttons = BUTTONS
            .iter()
            .filter(|(b, _)| has(p.buttons, *b))
            .fold(0, |acc, (_, d)| acc | d);
        s.dpad = ds::Dpad {
            up: has(p.buttons, PadButton::DpadUp),
            down: has(p.buttons, PadButton::DpadDown),
            left: has(p.buttons, PadButton::DpadLeft),
            right: has(p.buttons, PadButton::DpadRight),
        };
        // Admitted values are in i16 and 0..=255 (policy::Gate).
        let stick = |v: i32| ds::stick(v.clamp(-32768, 32767) as i16);
        s.left = [stick(p.left_x), stick(p.left_y)];
        s.right = [stick(p.right_x), stick(p.right_y)];
        s.l2 = p.left_trigger.min(255) as u8;
        s.r2 = p.right_trigger.min(255) as u8;
    }

    fn apply_touch(&mut self, t: &seat::PadTouch) {
        let point = &mut self.state.touch[(t.finger as usize).min(1)];
        if t.down {
            if !point.active {
                point.id = self.next_touch_id;
                self.next_touch_id = (self.next_touch_id + 1) & 0x7F;
            }
            point.active = true;
            point.x = t.x.min(u32::from(ds::TOUCHPAD_WIDTH - 1)) as u16;
            point.y = t.y.min(u32::from(ds::TOUCHPAD_HEIGHT - 1)) as u16;
        } else {
            point.active = false;
        }
    }
}

impl Drop for DualSense {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Closing the fd destroys the device too; say it explicitly first.
        let _ = (&*self.file).write_all(&uhid::destroy());
    }
}

/// The pad's UHID thread: feature reports answered, output reports turned into feedback.
fn uhid_loop(file: &File, stop: &AtomicBool, pad: u32, mac: [u8; 6], feedback: &FeedbackTx) {
    let mut buf = vec![0u8; uhid::EVENT_SIZE];
    let mut tracker = FeedbackTracker::default();
    let mut changes = Vec::with_capacity(5);
    let timeout = rustix::event::Timespec::try_from(POLL).ok();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [rustix::event::PollFd::new(
            file,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pad, "DualSense thread of pad {pad} stops: poll failed: {e}");
                return;
            }
        }
        let n = match (&*file).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(pad, "DualSense thread of pad {pad} stops: read failed: {e}");
                return;
            }
        };
        let reply = match uhid::decode(&buf[..n]) {
            Ok(uhid::Event::GetReport {
                id, report_number, ..
            }) => match ds::feature_report(report_number, mac) {
                Some(r) => uhid::get_report_reply(id, 0, &r).ok(),
                None => uhid::get_report_reply(id, uhid::EIO, &[]).ok(),
            },
            Ok(uhid::Event::SetReport { id, .. }) => Some(uhid::set_report_reply(id, 0).to_vec()),
            Ok(uhid::Event::Output { data, .. }) => {
                match ds::parse_output_report(data) {
                    Ok(r) => {
                        changes.clear();
                        tracker.handle(&r, &mut changes);
                        for c in &changes {
                            feedback.send(to_seat(pad, c));
                        }
                    }
                    Err(e) => tracing::debug!(pad, "ignored output report: {e}"),
                }
                None
            }
            Ok(other) => {
                tracing::debug!(pad, ?other, "uhid");
                None
            }
            Err(e) => {
                tracing::debug!(pad, "ignored uhid record: {e}");
                None
            }
        };
        if let Some(r) = reply
            && let Err(e) = (&*file).write_all(&r)
        {
            tracing::warn!(pad, "DualSense pad {pad}: answering the driver failed: {e}");
        }
    }
}

fn to_seat(pad: u32, f: &Feedback) -> Fb {
    match *f {
        Feedback::Rumble { low, high } => Fb::Rumble(seat::Rumble {
            pad,
            low: u32::from(low),
            high: u32::from(high),
        }),
        Feedback::Lightbar([r, g, b]) => Fb::Lightbar(seat::Lightbar {
            pad,
            r: u32::from(r),
            g: u32::from(g),
            b: u32::from(b),
        }),
        Feedback::PlayerLeds(mask) => Fb::PlayerLeds(seat::PlayerLeds {
            pad,
            mask: u32::from(mask),
        }),
        Feedback::Trigger { right, effect } => Fb::TriggerEffect(seat::TriggerEffect {
            pad,
            right,
            mode: u32::from(effect.mode),
            params: effect.params.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniq_is_the_reversed_mac() {
        let m = mac(0x0201, 3);
        assert_eq!(uniq(m), "02:46:00:02:01:03");
    }
}
