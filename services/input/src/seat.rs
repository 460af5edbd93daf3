//! Seats: the virtual devices of one client session, their admission gate and counters, and the
//! registry of live seats.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use punktfunk_proto::input::{Device, PadKind, Seat as SeatInfo};
use punktfunk_proto::seat::{SeatEvent, SeatFeedback, seat_event::Event};
use tokio::sync::mpsc;

use crate::dualsense::{self, DualSense};
use crate::feedback::{FeedbackCounts, FeedbackTx};
use crate::policy::{Counters, Gate, MAX_PADS};
use crate::uinput::{self, Desktop, XboxPad, device_name};

/// Live seats one daemon holds (a seat per streaming session).
pub const MAX_SEATS: usize = 16;

/// Why a seat could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `/dev/uinput` or `/dev/uhid` cannot be used.
    #[error(
        "cannot create the {what}: {source} (is the {module} module loaded and {path} read-writable by this user? see udev/60-punktfunk.rules)"
    )]
    Device {
        /// Which device.
        what: String,
        /// The kernel module behind it.
        module: &'static str,
        /// Its node.
        path: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The daemon holds [`MAX_SEATS`] already.
    #[error("{MAX_SEATS} seats are open already; close one (end a session) first")]
    Full,
    /// More pads than [`MAX_PADS`].
    #[error("a seat has at most {MAX_PADS} pads, {0} were asked for")]
    TooManyPads(usize),
}

enum Pad {
    Xbox(XboxPad),
    DualSense(DualSense),
}

/// The devices and gate of a live seat; dropped as a whole when the seat closes, which removes
/// every device.
struct SeatIo {
    gate: Gate,
    desktop: Desktop,
    pads: Vec<Pad>,
    /// Held so the feedback stream lives as long as the seat, with or without pads.
    _feedback: FeedbackTx,
}

/// One seat.
pub struct Seat {
    /// Its id (`seat-N`).
    pub id: String,
    num: u64,
    client: String,
    opened: Instant,
    devices: Vec<Device>,
    io: Mutex<Option<SeatIo>>,
    feedback_rx: Mutex<Option<mpsc::Receiver<SeatFeedback>>>,
    feedback: Arc<FeedbackCounts>,
    attached: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn device_err(what: String, e: io::Error) -> OpenError {
    let uhid = what.contains("DualSense");
    OpenError::Device {
        what,
        module: if uhid { "uhid" } else { "uinput" },
        path: if uhid { "/dev/uhid" } else { "/dev/uinput" },
        source: e,
    }
}

impl Seat {
    /// Creates the seat's devices (blocking: uinput ioctls, and up to
    /// [`dualsense::BIND_TIMEOUT`] waiting for hid-playstation per DualSense).
    pub fn open(
        num: u64,
        client: &str,
        output: (u32, u32),
        pads: &[PadKind],
        now_ns: u64,
    ) -> Result<Self, OpenError> {
        if pads.len() > MAX_PADS {
            return Err(OpenError::TooManyPads(pads.len()));
        }
        let gate = Gate::new(output, pads, now_ns);
        let output = gate.output();
        let (tx, rx, counts) = FeedbackTx::new();
        let mut devices = Vec::new();
        let mut make =
            |kind: &str, f: &dyn Fn(&str) -> io::Result<evdev::uinput::VirtualDevice>| {
                let name = device_name(kind, client);
                let mut dev = f(&name).map_err(|e| device_err(format!("{kind} ({name})"), e))?;
                devices.push(uinput::describe(&mut dev, kind, &name, 0));
                Ok::<_, OpenError>(dev)
            };
        let desktop = Desktop::new(
            make("keyboard", &uinput::keyboard)?,
            make("mouse", &uinput::mouse)?,
            make("pointer", &|n| uinput::pointer(n, output))?,
            make("touch", &|n| uinput::touchscreen(n, output))?,
        );
        let mut seat_pads = Vec::new();
        for (i, kind) in pads.iter().enumerate() {
            let i = i as u32;
            match kind {
                PadKind::Dualsense => {
                    let name = device_name("DualSense", client);
                    let mac = dualsense::mac(num, i);
                    let pad = DualSense::new(&name, i, mac, tx.clone())
                        .map_err(|e| device_err(format!("DualSense {i} ({name})"), e))?;
                    let nodes = pad.wait_bound();
                    if nodes.len() < 3 {
                        tracing::warn!(
                            "DualSense {i} of {client}: hid-playstation created {} of its 3 input devices within {:?} (is CONFIG_HID_PLAYSTATION in the kernel?)",
                            nodes.len(),
                            dualsense::BIND_TIMEOUT
                        );
                    }
                    devices.push(Device {
                        kind: "dualsense".into(),
                        name,
                        pad: i,
                        nodes: nodes.iter().map(|(_, p)| p.display().to_string()).collect(),
                        syspath: format!("uniq {}", dualsense::uniq(mac)),
                    });
                    seat_pads.push(Pad::DualSense(pad));
                }
                _ => {
                    let name = device_name(&format!("pad {i}"), client);
                    let (pad, described) = XboxPad::new(&name, i, tx.clone())
                        .map_err(|e| device_err(format!("xbox pad {i} ({name})"), e))?;
                    devices.push(described);
                    seat_pads.push(Pad::Xbox(pad));
                }
            }
        }
        Ok(Self {
            id: format!("seat-{num}"),
            num,
            client: client.to_string(),
            opened: Instant::now(),
            devices,
            io: Mutex::new(Some(SeatIo {
                gate,
                desktop,
                pads: seat_pads,
                _feedback: tx,
            })),
            feedback_rx: Mutex::new(Some(rx)),
            feedback: counts,
            attached: AtomicBool::new(false),
        })
    }

    /// The number in its id.
    pub fn num(&self) -> u64 {
        self.num
    }

    /// The devices as created.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Marks the seat as fed by an event stream; false if one was attached already.
    pub fn attach(&self) -> bool {
        !self.attached.swap(true, Ordering::AcqRel)
    }

    /// Whether an event stream feeds it.
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Takes the feedback queue (once).
    pub fn take_feedback(&self) -> Option<mpsc::Receiver<SeatFeedback>> {
        lock(&self.feedback_rx).take()
    }

    /// Removes every device now (idempotent).
    pub fn close(&self) {
        let io = lock(&self.io).take();
        drop(io);
    }

    /// Admits and writes a batch; returns (accepted, rejected).
    pub fn send(&self, events: &[SeatEvent]) -> (u64, u64) {
        let mut guard = lock(&self.io);
        let Some(io) = guard.as_mut() else {
            return (0, events.len() as u64);
        };
        let (mut ok, mut bad) = (0, 0);
        // A batch is admitted at its arrival: the bucket measures what the client sent, not
        // how fast the kernel takes the writes.
        let now = punktfunk_clock::monotonic_ns();
        for e in events {
            let ev = e.event.as_ref();
            if io.gate.admit(ev, now).is_err() {
                bad += 1;
                continue;
            }
            let Some(ev) = ev else { continue };
            match io.write(ev, now) {
                Ok(()) => {
                    ok += 1;
                    io.gate.counters().delivered += 1;
                }
                Err(e) => {
                    bad += 1;
                    io.gate.counters().dropped_device_error += 1;
                    tracing::debug!(seat = self.num, "device write failed: {e}");
                }
            }
        }
        (ok, bad)
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        let mut c = lock(&self.io)
            .as_mut()
            .map(|io| *io.gate.counters())
            .unwrap_or_default();
        c.feedback_sent = self.feedback.sent.load(Ordering::Relaxed);
        c.feedback_dropped = self.feedback.dropped.load(Ordering::Relaxed);
        c
    }

    /// What `punktfunkctl seats` shows.
    pub fn info(&self) -> SeatInfo {
        let mut devices = self.devices.clone();
        // The DualSense's nodes may appear after the seat opened; look again.
        if let Some(io) = lock(&self.io).as_ref() {
            for (d, p) in
                devices
                    .iter_mut()
                    .filter(|d| d.kind == "dualsense")
                    .zip(io.pads.iter().filter_map(|p| match p {
                        Pad::DualSense(ds) => Some(ds),
                        Pad::Xbox(_) => None,
                    }))
            {
                d.nodes = p
                    .nodes()
                    .iter()
                    .map(|(_, n)| n.display().to_string())
                    .collect();
            }
        }
        SeatInfo {
            seat_id: self.id.clone(),
            client_name: self.client.clone(),
            age_ms: self.opened.elapsed().as_millis() as u64,
            devices,
            counters: Some(self.counters().to_proto()),
        }
    }

    /// The client's name.
    pub fn client(&self) -> &str {
        &self.client
    }
}

impl SeatIo {
    fn write(&mut self, e: &Event, now_ns: u64) -> io::Result<()> {
        let pad = match e {
            Event::Pad(p) => p.pad,
            Event::PadMotion(m) => m.pad,
            Event::PadTouch(t) => t.pad,
            Event::PadBattery(b) => b.pad,
            _ => return self.desktop.write(e),
        };
        match (self.pads.get_mut(pad as usize), e) {
            (Some(Pad::Xbox(x)), Event::Pad(p)) => x.write(p),
            (Some(Pad::DualSense(d)), _) => d.write(e, now_ns),
            // The gate admits motion, touchpad and battery for DualSense pads only.
            _ => Ok(()),
        }
    }
}

/// The live seats.
#[derive(Default)]
pub struct Seats {
    seats: Mutex<HashMap<String, Arc<Seat>>>,
    next: AtomicU64,
}

impl Seats {
    /// The next seat number (never reused within a daemon's life).
    pub fn next_num(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether another seat fits.
    pub fn has_room(&self) -> bool {
        lock(&self.seats).len() < MAX_SEATS
    }

    /// Registers an opened seat; refuses beyond [`MAX_SEATS`] (the seat is closed then).
    pub fn insert(&self, seat: Arc<Seat>) -> Result<(), OpenError> {
        let mut s = lock(&self.seats);
        if s.len() >= MAX_SEATS {
            seat.close();
            return Err(OpenError::Full);
        }
        s.insert(seat.id.clone(), seat);
        Ok(())
    }

    /// A seat by id.
    pub fn get(&self, id: &str) -> Option<Arc<Seat>> {
        lock(&self.seats).get(id).cloned()
    }

    /// Deregisters and closes a seat; false if it was not open.
    pub fn close(&self, id: &str) -> bool {
        let seat = lock(&self.seats).remove(id);
        match seat {
            Some(s) => {
                s.close();
                true
            }
            None => false,
        }
    }

    /// Every live seat.
    pub fn all(&self) -> Vec<Arc<Seat>> {
        let mut v: Vec<_> = lock(&self.seats).values().cloned().collect();
        v.sort_by_key(|s| s.num());
        v
    }
}
