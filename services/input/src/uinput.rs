//! The uinput devices of a seat, through the `evdev` crate: keyboard, relative mouse, absolute
//! pointer, multitouch screen (type B slots) and Xbox-style pads with rumble.
//!
//! Every device is named `punktfunk <kind> (<client>)`, which `udev/60-punktfunk.rules` tags.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use evdev::uinput::VirtualDevice;
use evdev::{
    AbsInfo, AbsoluteAxisCode, AttributeSet, BusType, EventSummary, FFEffectCode, FFEffectKind,
    InputEvent, InputId, KeyCode, PropType, RelativeAxisCode, UInputCode, UinputAbsSetup,
};
use punktfunk_proto::input::Device;
use punktfunk_proto::seat::{self, PadButton};

use crate::feedback::FeedbackTx;
use crate::policy::{self, has};

/// How often device threads look at their stop flag.
pub const POLL: Duration = Duration::from_millis(100);
/// Rumble effects one pad holds at once.
const FF_EFFECTS_MAX: u32 = 16;
const EV_KEY: u16 = 0x01;
const EV_REL: u16 = 0x02;
const EV_ABS: u16 = 0x03;

/// A device name the kernel accepts (under 80 bytes): `punktfunk <kind> (<client>)`, the
/// client's name cut to 40 bytes of printable ASCII.
pub fn device_name(kind: &str, client: &str) -> String {
    let client: String = client
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    format!("punktfunk {kind} ({client})")
}

fn build(
    name: &str,
    id: InputId,
    f: impl FnOnce(
        evdev::uinput::VirtualDeviceBuilder<'_>,
    ) -> io::Result<evdev::uinput::VirtualDeviceBuilder<'_>>,
) -> io::Result<VirtualDevice> {
    f(VirtualDevice::builder()?.name(name).input_id(id))?.build()
}

fn abs(code: AbsoluteAxisCode, min: i32, max: i32, res: i32) -> UinputAbsSetup {
    UinputAbsSetup::new(code, AbsInfo::new(0, min, max, 0, 0, res))
}

fn ev(kind: u16, code: u16, value: i32) -> InputEvent {
    InputEvent::new(kind, code, value)
}

/// The device's entry for `punktfunkctl seats`: its sysfs path and /dev/input/event* nodes.
pub fn describe(dev: &mut VirtualDevice, kind: &str, name: &str, pad: u32) -> Device {
    let syspath = dev.get_syspath().unwrap_or_default();
    let nodes = dev
        .enumerate_dev_nodes_blocking()
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    Device {
        kind: kind.into(),
        name: name.into(),
        pad,
        nodes,
        syspath: syspath.display().to_string(),
    }
}

/// The id of the keyboard, mice and touchscreen: bus virtual, "PF".
fn virtual_id() -> InputId {
    InputId::new(BusType::BUS_VIRTUAL, 0x5046, 0x0001, 1)
}

/// A keyboard with every key of [`policy::KEY_CODES`].
pub fn keyboard(name: &str) -> io::Result<VirtualDevice> {
    let keys: AttributeSet<KeyCode> = policy::KEY_CODES.map(|c| KeyCode(c as u16)).collect();
    build(name, virtual_id(), |b| b.with_keys(&keys))
}

const MOUSE_BUTTONS: [KeyCode; 5] = [
    KeyCode::BTN_LEFT,
    KeyCode::BTN_RIGHT,
    KeyCode::BTN_MIDDLE,
    KeyCode::BTN_SIDE,
    KeyCode::BTN_EXTRA,
];

/// A relative mouse: motion, five buttons, wheels with high resolution.
pub fn mouse(name: &str) -> io::Result<VirtualDevice> {
    let keys: AttributeSet<KeyCode> = MOUSE_BUTTONS.iter().copied().collect();
    let rel: AttributeSet<RelativeAxisCode> = [
        RelativeAxisCode::REL_X,
        RelativeAxisCode::REL_Y,
        RelativeAxisCode::REL_WHEEL,
        RelativeAxisCode::REL_HWHEEL,
        RelativeAxisCode::REL_WHEEL_HI_RES,
        RelativeAxisCode::REL_HWHEEL_HI_RES,
    ]
    .into_iter()
    .collect();
    build(name, virtual_id(), |b| {
        b.with_keys(&keys)?.with_relative_axes(&rel)
    })
}

/// An absolute pointer spanning the output (`w` × `h` pixels). It has the mouse buttons so
/// libinput treats it as a pointer; the clicks themselves go through the mouse.
pub fn pointer(name: &str, (w, h): (u32, u32)) -> io::Result<VirtualDevice> {
    let keys: AttributeSet<KeyCode> = MOUSE_BUTTONS[..3].iter().copied().collect();
    let (w, h) = (w as i32, h as i32);
    build(name, virtual_id(), |b| {
        b.with_keys(&keys)?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_X, 0, w - 1, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_Y, 0, h - 1, 0))
    })
}

/// A multitouch screen (type B, [`policy::TOUCH_SLOTS`] slots) over the output.
pub fn touchscreen(name: &str, (w, h): (u32, u32)) -> io::Result<VirtualDevice> {
    let keys: AttributeSet<KeyCode> = [KeyCode::BTN_TOUCH].into_iter().collect();
    let props: AttributeSet<PropType> = [PropType::DIRECT].into_iter().collect();
    let (w, h) = (w as i32, h as i32);
    let slots = policy::TOUCH_SLOTS as i32;
    build(name, virtual_id(), |b| {
        b.with_keys(&keys)?
            .with_properties(&props)?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_X, 0, w - 1, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_Y, 0, h - 1, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_MT_SLOT, 0, slots - 1, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_MT_TRACKING_ID, -1, 65535, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_MT_POSITION_X, 0, w - 1, 0))?
            .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_MT_POSITION_Y, 0, h - 1, 0))
    })
}

/// Per-seat state of the keyboard, mice and touchscreen, turning seat events into evdev
/// events.
pub struct Desktop {
    /// The keyboard.
    pub keyboard: VirtualDevice,
    /// The relative mouse.
    pub mouse: VirtualDevice,
    /// The absolute pointer.
    pub pointer: VirtualDevice,
    /// The touchscreen.
    pub touch: VirtualDevice,
    wheel_rest: [i32; 2],
    touch_ids: [i32; policy::TOUCH_SLOTS as usize],
    next_tracking_id: i32,
    buf: Vec<InputEvent>,
}

impl Desktop {
    /// Wraps the four devices.
    pub fn new(
        keyboard: VirtualDevice,
        mouse: VirtualDevice,
        pointer: VirtualDevice,
        touch: VirtualDevice,
    ) -> Self {
        Self {
            keyboard,
            mouse,
            pointer,
            touch,
            wheel_rest: [0; 2],
            touch_ids: [-1; policy::TOUCH_SLOTS as usize],
            next_tracking_id: 0,
            buf: Vec::with_capacity(16),
        }
    }

    /// Writes one admitted desktop event (key, pointer, scroll, touch) to its device.
    pub fn write(&mut self, e: &seat::seat_event::Event) -> io::Result<()> {
        use seat::seat_event::Event as E;
        self.buf.clear();
        let b = &mut self.buf;
        match e {
            E::Key(k) => {
                b.push(ev(EV_KEY, k.code as u16, i32::from(k.pressed)));
                self.keyboard.emit(b)
            }
            E::PointerMotion(m) => {
                b.push(ev(EV_REL, RelativeAxisCode::REL_X.0, m.dx));
                b.push(ev(EV_REL, RelativeAxisCode::REL_Y.0, m.dy));
                self.mouse.emit(b)
            }
            E::PointerPosition(p) => {
                b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_X.0, p.x as i32));
                b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_Y.0, p.y as i32));
                self.pointer.emit(b)
            }
            E::PointerButton(pb) => {
                let code = MOUSE_BUTTONS[(pb.button as usize).saturating_sub(1).min(4)];
                b.push(ev(EV_KEY, code.0, i32::from(pb.pressed)));
                self.mouse.emit(b)
            }
            E::Scroll(s) => {
                for (i, (v, hi, lo)) in [
                    (
                        s.vertical,
                        RelativeAxisCode::REL_WHEEL_HI_RES,
                        RelativeAxisCode::REL_WHEEL,
                    ),
                    (
                        s.horizontal,
                        RelativeAxisCode::REL_HWHEEL_HI_RES,
                        RelativeAxisCode::REL_HWHEEL,
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    if v == 0 {
                        continue;
                    }
                    b.push(ev(EV_REL, hi.0, v));
                    // Whole notches for programs that read only the classic wheel.
                    let total = self.wheel_rest[i] + v;
                    let notches = total / 120;
                    self.wheel_rest[i] = total % 120;
                    if notches != 0 {
                        b.push(ev(EV_REL, lo.0, notches));
                    }
                }
                self.mouse.emit(b)
            }
            E::Touch(t) => self.touch(t),
            _ => Ok(()),
        }
    }

    fn touch(&mut self, t: &seat::Touch) -> io::Result<()> {
        let slot = t.slot as usize % self.touch_ids.len();
        let b = &mut self.buf;
        b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_MT_SLOT.0, slot as i32));
        if t.down {
            if self.touch_ids[slot] < 0 {
                self.touch_ids[slot] = self.next_tracking_id;
                self.next_tracking_id = (self.next_tracking_id + 1) & 0xFFFF;
                b.push(ev(
                    EV_ABS,
                    AbsoluteAxisCode::ABS_MT_TRACKING_ID.0,
                    self.touch_ids[slot],
                ));
            }
            b.push(ev(
                EV_ABS,
                AbsoluteAxisCode::ABS_MT_POSITION_X.0,
                t.x as i32,
            ));
            b.push(ev(
                EV_ABS,
                AbsoluteAxisCode::ABS_MT_POSITION_Y.0,
                t.y as i32,
            ));
        } else {
            self.touch_ids[slot] = -1;
            b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_MT_TRACKING_ID.0, -1));
        }
        // Single-touch emulation follows the lowest active slot.
        let first = self.touch_ids.iter().position(|id| *id >= 0);
        b.push(ev(EV_KEY, KeyCode::BTN_TOUCH.0, i32::from(first.is_some())));
        if t.down && first == Some(slot) {
            b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_X.0, t.x as i32));
            b.push(ev(EV_ABS, AbsoluteAxisCode::ABS_Y.0, t.y as i32));
        }
        self.touch.emit(b)
    }
}

/// Xbox layout: seat button bit → evdev key.
const PAD_KEYS: [(PadButton, KeyCode); 11] = [
    (PadButton::A, KeyCode::BTN_SOUTH),
    (PadButton::B, KeyCode::BTN_EAST),
    (PadButton::X, KeyCode::BTN_NORTH),
    (PadButton::Y, KeyCode::BTN_WEST),
    (PadButton::Lb, KeyCode::BTN_TL),
    (PadButton::Rb, KeyCode::BTN_TR),
    (PadButton::Back, KeyCode::BTN_SELECT),
    (PadButton::Start, KeyCode::BTN_START),
    (PadButton::Guide, KeyCode::BTN_MODE),
    (PadButton::Ls, KeyCode::BTN_THUMBL),
    (PadButton::Rs, KeyCode::BTN_THUMBR),
];

/// An Xbox-style pad (the kernel's xpad layout: BTN_X is the north button) with FF_RUMBLE. A
/// thread answers the kernel's effect uploads and turns played effects into `Rumble`.
pub struct XboxPad {
    dev: Arc<Mutex<VirtualDevice>>,
    last: Option<seat::PadState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    buf: Vec<InputEvent>,
}

impl XboxPad {
    /// Creates pad `index` and starts its feedback thread; returns it with its description.
    pub fn new(name: &str, index: u32, feedback: FeedbackTx) -> io::Result<(Self, Device)> {
        let keys: AttributeSet<KeyCode> = PAD_KEYS.iter().map(|(_, k)| *k).collect();
        let ff: AttributeSet<FFEffectCode> = [FFEffectCode::FF_RUMBLE].into_iter().collect();
        // Microsoft's vendor id and the Xbox 360 pad's product id: SDL and Steam map it.
        let id = InputId::new(BusType::BUS_USB, 0x045e, 0x028e, 0x0114);
        let stick = |c| abs(c, -32768, 32767, 0);
        let mut dev = build(name, id, |b| {
            Ok(b.with_keys(&keys)?
                .with_absolute_axis(&stick(AbsoluteAxisCode::ABS_X))?
                .with_absolute_axis(&stick(AbsoluteAxisCode::ABS_Y))?
                .with_absolute_axis(&stick(AbsoluteAxisCode::ABS_RX))?
                .with_absolute_axis(&stick(AbsoluteAxisCode::ABS_RY))?
                .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_Z, 0, 255, 0))?
                .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_RZ, 0, 255, 0))?
                .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_HAT0X, -1, 1, 0))?
                .with_absolute_axis(&abs(AbsoluteAxisCode::ABS_HAT0Y, -1, 1, 0))?
                .with_ff(&ff)?
                .with_ff_effects_max(FF_EFFECTS_MAX))
        })?;
        let described = describe(&mut dev, "xbox-pad", name, index);
        // The thread polls its own handle of the fd and takes the lock only to read.
        let poll_fd = dev.as_fd().try_clone_to_owned()?;
        let dev = Arc::new(Mutex::new(dev));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dev, stop) = (dev.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("pf-pad{index}-ff"))
                .spawn(move || ff_loop(&dev, &poll_fd, &stop, index, &feedback))?
        };
        let pad = Self {
            dev,
            last: None,
            stop,
            thread: Some(thread),
            buf: Vec::with_capacity(32),
        };
        Ok((pad, described))
    }

    /// Writes the pad's new state: only what changed since the last one.
    pub fn write(&mut self, p: &seat::PadState) -> io::Result<()> {
        let last = self.last.unwrap_or(seat::PadState {
            left_trigger: u32::MAX,
            ..Default::default()
        });
        let b = &mut self.buf;
        b.clear();
        for (bit, key) in PAD_KEYS {
            if self.last.is_none() || has(p.buttons, bit) != has(last.buttons, bit) {
                b.push(ev(EV_KEY, key.0, i32::from(has(p.buttons, bit))));
            }
        }
        let hat = |neg, pos| i32::from(has(p.buttons, pos)) - i32::from(has(p.buttons, neg));
        let last_hat =
            |neg, pos| i32::from(has(last.buttons, pos)) - i32::from(has(last.buttons, neg));
        let axes = [
            (AbsoluteAxisCode::ABS_X, p.left_x, last.left_x),
            (AbsoluteAxisCode::ABS_Y, p.left_y, last.left_y),
            (AbsoluteAxisCode::ABS_RX, p.right_x, last.right_x),
            (AbsoluteAxisCode::ABS_RY, p.right_y, last.right_y),
            (
                AbsoluteAxisCode::ABS_Z,
                p.left_trigger as i32,
                last.left_trigger as i32,
            ),
            (
                AbsoluteAxisCode::ABS_RZ,
                p.right_trigger as i32,
                last.right_trigger as i32,
            ),
            (
                AbsoluteAxisCode::ABS_HAT0X,
                hat(PadButton::DpadLeft, PadButton::DpadRight),
                last_hat(PadButton::DpadLeft, PadButton::DpadRight),
            ),
            (
                AbsoluteAxisCode::ABS_HAT0Y,
                hat(PadButton::DpadUp, PadButton::DpadDown),
                last_hat(PadButton::DpadUp, PadButton::DpadDown),
            ),
        ];
        for (code, v, was) in axes {
            if self.last.is_none() || v != was {
                b.push(ev(EV_ABS, code.0, v));
            }
        }
        self.last = Some(*p);
        if b.is_empty() {
            return Ok(());
        }
        lock(&self.dev).emit(b)
    }
}

impl Drop for XboxPad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(dev: &Mutex<VirtualDevice>) -> std::sync::MutexGuard<'_, VirtualDevice> {
    // A panic while holding the lock left the device as it was; keep using it.
    dev.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The pad's feedback thread: answers effect uploads and erasures, and reports played effects
/// as rumble (a stopped effect as 0/0).
fn ff_loop(
    dev: &Mutex<VirtualDevice>,
    poll_fd: &OwnedFd,
    stop: &AtomicBool,
    pad: u32,
    feedback: &FeedbackTx,
) {
    let mut effects: HashMap<u16, (u16, u16)> = HashMap::new();
    let timeout = rustix::event::Timespec::try_from(POLL).ok();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [rustix::event::PollFd::new(
            poll_fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pad, "rumble thread of pad {pad} stops: poll failed: {e}");
                return;
            }
        }
        let mut d = lock(dev);
        let events: Vec<InputEvent> = match d.fetch_events() {
            Ok(it) => it.collect(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(pad, "rumble thread of pad {pad} stops: read failed: {e}");
                return;
            }
        };
        for e in events {
            match e.destructure() {
                EventSummary::UInput(u, UInputCode::UI_FF_UPLOAD, _) => {
                    if let Ok(mut up) = d.process_ff_upload(u) {
                        if effects.len() < FF_EFFECTS_MAX as usize
                            || effects.contains_key(&(up.effect_id() as u16))
                        {
                            if let FFEffectKind::Rumble {
                                strong_magnitude,
                                weak_magnitude,
                            } = up.effect().kind
                            {
                                effects.insert(
                                    up.effect_id() as u16,
                                    (strong_magnitude, weak_magnitude),
                                );
                            }
                            up.set_retval(0);
                        } else {
                            up.set_retval(-libc_enospc());
                        }
                    }
                }
                EventSummary::UInput(u, UInputCode::UI_FF_ERASE, _) => {
                    if let Ok(er) = d.process_ff_erase(u) {
                        effects.remove(&(er.effect_id() as u16));
                    }
                }
                EventSummary::ForceFeedback(_, code, value) => {
                    let (low, high) = match effects.get(&code.0) {
                        Some(m) if value > 0 => *m,
                        Some(_) => (0, 0),
                        None => continue,
                    };
                    feedback.send(seat::seat_feedback::Feedback::Rumble(seat::Rumble {
                        pad,
                        low: u32::from(low),
                        high: u32::from(high),
                    }));
                }
                _ => {}
            }
        }
    }
}

/// `ENOSPC`: the pad holds no more effects.
fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// The /dev/input/event* nodes of input devices whose `uniq` is `uniq` (how the DualSense's
/// three input devices are found: hid-playstation gives them the controller's MAC).
pub fn nodes_with_uniq(uniq: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let is_input = e.file_name().to_string_lossy().starts_with("input");
        if !is_input {
            continue;
        }
        let u = std::fs::read_to_string(p.join("uniq")).unwrap_or_default();
        if u.trim() != uniq {
            continue;
        }
        let name = std::fs::read_to_string(p.join("name")).unwrap_or_default();
        if let Ok(children) = std::fs::read_dir(&p) {
            for c in children.flatten() {
                let n = c.file_name().to_string_lossy().into_owned();
                if n.starts_with("event") {
                    out.push((name.trim().to_string(), PathBuf::from("/dev/input").join(n)));
                }
            }
        }
    }
    out.sort();
    out
}
