//! Reading input devices back inside the UML guest (`pf-uml-input`, `pf-uml-moonlight`): the
//! evdev nodes by device name, a reader thread per node, and in-order matching of what arrived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use evdev::{Device, EventType};

/// evdev event type EV_KEY, as the tuples below carry it.
pub const KEY: u16 = 1;
/// EV_REL.
pub const REL: u16 = 2;
/// EV_ABS.
pub const ABS: u16 = 3;

/// Input devices by name: (event node, uniq, sysfs `inputN`).
pub type Devices = BTreeMap<String, (PathBuf, String, String)>;

/// The input devices /sys/class/input lists that have an event node.
pub fn input_devices() -> Devices {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("input") {
            continue;
        }
        let p = e.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let Some(event) = std::fs::read_dir(&p).ok().and_then(|d| {
            d.flatten()
                .map(|c| c.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("event"))
        }) else {
            continue;
        };
        out.insert(
            read("name"),
            (Path::new("/dev/input").join(event), read("uniq"), name),
        );
    }
    out
}

/// What a reader has read: (type, code, value, CLOCK_REALTIME ns), SYN and MSC left out.
pub type Events = Arc<Mutex<Vec<(u16, u16, i32, u64)>>>;

/// Reads `node` on a thread until `stop` (or the node goes away).
pub fn reader(
    node: &Path,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Events, std::thread::JoinHandle<()>)> {
    let mut dev = Device::open(node).with_context(|| format!("opening {}", node.display()))?;
    dev.set_nonblocking(true)?;
    let events: Events = Arc::default();
    let out = events.clone();
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match dev.fetch_events() {
                Ok(it) => {
                    let mut v = out.lock().unwrap_or_else(|p| p.into_inner());
                    for e in it {
                        let ty = e.event_type();
                        if ty == EventType::SYNCHRONIZATION || ty == EventType::MISC {
                            continue;
                        }
                        let ts = e
                            .timestamp()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0);
                        v.push((ty.0, e.code(), e.value(), ts));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => return,
            }
        }
    });
    Ok((events, t))
}

/// The events read so far as (type, code, value).
pub fn kv(e: &Events) -> Vec<(u16, u16, i32)> {
    e.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|&(t, c, v, _)| (t, c, v))
        .collect()
}

/// `want` appears in `got` in this order (other events may come between).
pub fn ensure_subsequence(
    what: &str,
    got: &[(u16, u16, i32)],
    want: &[(u16, u16, i32)],
) -> anyhow::Result<()> {
    let mut it = got.iter();
    for w in want {
        ensure!(
            it.any(|g| g == w),
            "{what}: expected {want:?} in order, missing {w:?}; read {got:?}"
        );
    }
    Ok(())
}
