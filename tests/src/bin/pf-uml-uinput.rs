//! Runs inside the UML guest (tests/tests/uml_guest.rs): creates a uinput keyboard, finds its
//! evdev node, presses and releases KEY_A through uinput and reads both events back from the
//! node, in order. Exits 0 and prints what it read, or exits 1 saying what went wrong.
//!
//! usage: pf-uml-uinput key-roundtrip
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use evdev::uinput::VirtualDevice;
use evdev::{AttributeSet, Device, EventType, InputEvent, KeyCode};

/// How long to wait for the node to appear and for each event to arrive.
const WAIT: Duration = Duration::from_secs(10);

fn main() {
    punktfunk_tests::uml::scenario_main("pf-uml-uinput", &[("key-roundtrip", key_roundtrip)]);
}

fn key_roundtrip() -> anyhow::Result<()> {
    let mut keys = AttributeSet::<KeyCode>::new();
    keys.insert(KeyCode::KEY_A);
    let mut dev = VirtualDevice::builder()
        .context("opening /dev/uinput")?
        .name("pf-uml-uinput keyboard")
        .with_keys(&keys)?
        .build()
        .context("creating the uinput device")?;
    let node = event_node(&mut dev)?;
    let mut reader = Device::open(&node).with_context(|| format!("opening {}", node.display()))?;
    reader.set_nonblocking(true)?;
    dev.emit(&[InputEvent::new(EventType::KEY.0, KeyCode::KEY_A.0, 1)])?;
    dev.emit(&[InputEvent::new(EventType::KEY.0, KeyCode::KEY_A.0, 0)])?;
    let values = read_key_values(&mut reader, KeyCode::KEY_A, 2)?;
    ensure!(
        values == [1, 0],
        "KEY_A values read back {values:?}, expected [1, 0]"
    );
    println!(
        "KEY_A press and release read back from {}: {values:?}",
        node.display()
    );
    Ok(())
}

/// The device's `/dev/input/eventN`, once devtmpfs has created it.
fn event_node(dev: &mut VirtualDevice) -> anyhow::Result<std::path::PathBuf> {
    let start = Instant::now();
    loop {
        let node = dev.enumerate_dev_nodes_blocking()?.flatten().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event"))
        });
        match node {
            Some(n) if n.exists() => return Ok(n),
            _ if start.elapsed() > WAIT => bail!("no /dev/input/event node for the device"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads events until `count` events of `key` arrived; returns their values in order.
fn read_key_values(dev: &mut Device, key: KeyCode, count: usize) -> anyhow::Result<Vec<i32>> {
    let start = Instant::now();
    let mut values = Vec::new();
    while values.len() < count {
        ensure!(
            start.elapsed() < WAIT,
            "read only {values:?} of {key:?} within {WAIT:?}"
        );
        match dev.fetch_events() {
            Ok(events) => values.extend(
                events
                    .filter(|e| e.event_type() == EventType::KEY && e.code() == key.0)
                    .map(|e| e.value()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e).context("reading the evdev node"),
        }
    }
    Ok(values)
}
