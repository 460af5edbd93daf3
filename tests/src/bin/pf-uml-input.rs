//! Runs inside the UML guest (tests/tests/input_seat.rs, `just bench`): punktfunk-input and
//! punktfunk-transport (synthetic source, open pairing) under the test [`Supervisor`], the real
//! `punktfunk-client` sending an input script through QUIC, and the seat's evdev nodes read
//! back. Exits 0 when every check of the scenario held, 1 saying which did not.
//!
//! usage: pf-uml-input devices|feedback|lifecycle|bench
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use evdev::{AbsoluteAxisCode as Abs, Device, KeyCode, RelativeAxisCode as Rel};
use punktfunk_tests::evdev_nodes::{
    ABS, Devices, KEY, REL, ensure_subsequence, input_devices, kv, reader,
};
use punktfunk_tests::native::free_udp_port;
use punktfunk_tests::{Supervisor, bin};

/// How long devices may take to appear or disappear before a check fails.
const WAIT: Duration = Duration::from_secs(10);
/// The client's mode: absolute positions are scaled into it.
const MODE: &str = "1280x720@60";

fn main() {
    punktfunk_tests::uml::scenario_main(
        "pf-uml-input",
        &[
            ("devices", devices),
            ("feedback", feedback),
            ("lifecycle", lifecycle),
            ("bench", bench),
        ],
    );
}

/// input and transport under the supervisor; transport streams the synthetic source to anyone.
struct Host {
    sup: Supervisor,
    port: u16,
}

impl Host {
    /// `idle_ms`: transport's QUIC idle timeout (how soon a vanished client is noticed).
    fn start(idle_ms: u32) -> anyhow::Result<Self> {
        let mut sup = Supervisor::new(4_000_000);
        let port = free_udp_port();
        for (k, v) in [
            ("PUNKTFUNK_PORT", port.to_string()),
            ("PUNKTFUNK_MDNS", "false".into()),
            ("PUNKTFUNK_SOURCE", "synthetic".into()),
            ("PUNKTFUNK_PAIRING", "open".into()),
            ("PUNKTFUNK_IDLE_TIMEOUT_MS", idle_ms.to_string()),
            ("PUNKTFUNK_BIND", "127.0.0.1".into()),
        ] {
            sup.env.push(("transport", k.into(), v));
        }
        let t0 = Instant::now();
        sup.start("input");
        sup.start("transport");
        sup.wait_ready("input", t0);
        sup.wait_ready("transport", t0);
        Ok(Self { sup, port })
    }

    fn client(&self, script: &str, duration_s: f64, gamepads: &str) -> anyhow::Result<Child> {
        let dir = self.sup.root.path().join("client");
        std::fs::create_dir_all(&dir)?;
        let script_path = dir.join(format!("script-{}.txt", rand_suffix()));
        std::fs::write(&script_path, script)?;
        let mut c = Command::new(bin("punktfunk-client"));
        c.arg("--config-dir")
            .arg(&dir)
            .args(["--name", "guest"])
            .args(["stream", &format!("127.0.0.1:{}", self.port)])
            .args(["--duration", &duration_s.to_string(), "--mode", MODE])
            .args(["--bitrate", "2000", "--json", "--input-script"])
            .arg(&script_path)
            .env("PUNKTFUNK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !gamepads.is_empty() {
            c.args(["--gamepads", gamepads]);
        }
        c.spawn().context("starting punktfunk-client")
    }

    /// The last 30 lines of a daemon's log (info and above).
    fn log(&self, daemon: &str) -> String {
        self.sup.log_tail(daemon, 30)
    }

    fn seats(&self) -> anyhow::Result<serde_json::Value> {
        // A seat busy with a flood answers once its batch is through (UML syscalls are slow).
        self.sup.ctl_json(&["--timeout", "20", "seats", "--json"])
    }
}

fn rand_suffix() -> u64 {
    punktfunk_clock_ns()
}

fn punktfunk_clock_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn realtime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The client's JSON report once it exits.
fn report(child: Child) -> anyhow::Result<serde_json::Value> {
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "punktfunk-client failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("client report: {stdout}"))
}

/// Whether device `name` is the one meant by `want`: the exact name, or a punktfunk uinput
/// device's kind (`punktfunk keyboard` for `punktfunk keyboard (guest)`).
fn is(name: &str, want: &str) -> bool {
    name == want || name.strip_prefix(want).is_some_and(|r| r.starts_with(" ("))
}

/// The node of the device meant by `want`.
fn node(devs: &Devices, want: &str) -> anyhow::Result<PathBuf> {
    devs.iter()
        .find(|(n, _)| is(n, want))
        .map(|(_, (p, _, _))| p.clone())
        .with_context(|| format!("no device {want}"))
}

/// Waits until the devices meant by `wants` exist with their nodes; returns name → (node,
/// uniq, inputN).
fn wait_devices(wants: &[&str]) -> anyhow::Result<Devices> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Devices = input_devices()
            .into_iter()
            .filter(|(n, (p, _, _))| wants.iter().any(|w| is(n, w)) && p.exists())
            .collect();
        if wants.iter().all(|w| found.keys().any(|n| is(n, w))) {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!(
                "devices {wants:?} did not all appear within {WAIT:?}; have {:?}",
                input_devices().keys().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long until no punktfunk device is left (None: some still there after `WAIT`).
fn wait_gone(since: Instant) -> Option<Duration> {
    while since.elapsed() < WAIT {
        let left = input_devices().keys().any(|n| n.starts_with("punktfunk"));
        if !left {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Keyboard, mouse, pointer, touch, Xbox pad and DualSense events from the client arrive on the
/// nodes in order; bad events are dropped and counted while the daemon keeps serving.
fn devices() -> anyhow::Result<()> {
    let host = Host::start(5000)?;
    let script = "\
3000 key 30 down
3010 key 30 up
3020 move 5 -3
3030 abs 640 360 1280 720
3040 button 1 down
3050 button 1 up
3060 scroll 120 0
3070 touch 0 100 200 down 1280 720
3080 touch 1 300 400 down 1280 720
3090 touch 0 100 200 up 1280 720
3095 touch 1 300 400 up 1280 720
3100 pad 0 0x1 1000 -1000 0 0 200 0
3110 pad 1 0x1 0 0 32767 -32768 255 128
3120 padtouch 1 0 960 540 down
3130 motion 1 0 0 9.80665 1.0 0 0
3140 battery 1 50 discharging
3200 pad 5 0x1 0 0 0 0 0 0
3210 abs 4000000000 4000000000 1 1
3220 key 767 down
4800 key 48 down
4810 key 48 up
";
    // Long enough for a loaded machine: the client is stopped with SIGTERM (its report still
    // comes) once the seat's counters are read.
    let client = host.client(script, 120.0, "xbox,dualsense")?;
    let devs = wait_devices(&[
        "punktfunk keyboard",
        "punktfunk mouse",
        "punktfunk pointer",
        "punktfunk touch",
        "punktfunk pad 0",
        "punktfunk DualSense (guest)",
        "punktfunk DualSense (guest) Motion Sensors",
        "punktfunk DualSense (guest) Touchpad",
    ])?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = BTreeMap::new();
    for (k, name) in [
        ("keyboard", "punktfunk keyboard"),
        ("mouse", "punktfunk mouse"),
        ("pointer", "punktfunk pointer"),
        ("touch", "punktfunk touch"),
        ("xbox", "punktfunk pad 0"),
        ("ds", "punktfunk DualSense (guest)"),
        ("ds-motion", "punktfunk DualSense (guest) Motion Sensors"),
        ("ds-touch", "punktfunk DualSense (guest) Touchpad"),
    ] {
        readers.insert(k, reader(&node(&devs, name)?, stop.clone())?);
    }
    // The DualSense's battery and LEDs (hid-playstation bound).
    let ds_input = &devs["punktfunk DualSense (guest)"].2;
    let uniq = &devs["punktfunk DualSense (guest)"].1;
    let battery = format!("/sys/class/power_supply/ps-controller-battery-{uniq}");
    ensure!(Path::new(&battery).exists(), "no {battery}");
    for led in ["rgb:indicator", "white:player-1", "white:player-5"] {
        let p = format!("/sys/class/leds/{ds_input}:{led}");
        ensure!(Path::new(&p).exists(), "no LED {p}");
    }
    // A flood into a second seat, straight at input's API: its burst passes, the rest is
    // dropped and counted, and none of it reaches the client's seat.
    std::thread::sleep(Duration::from_millis(3000));
    // The battery event (3140 ms): read it while the pad exists, waiting for it to land.
    let read_capacity =
        || std::fs::read_to_string(format!("{battery}/capacity")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut battery_now = read_capacity();
    while battery_now.trim() != "55" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        battery_now = read_capacity();
    }
    let flood_counters = flood_second_seat(&host)?;
    // Counters after the bad events, while the session still runs.
    std::thread::sleep(Duration::from_millis(1400));
    let seats = host.seats()?;
    // Read while the pad still exists (it goes with the session).
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&client),
        rustix::process::Signal::TERM,
    )
    .context("stopping the client")?;
    let report = report(client)?;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let ev: BTreeMap<&str, Vec<(u16, u16, i32)>> = readers
        .into_iter()
        .map(|(k, (e, t))| {
            let _ = t.join();
            (k, kv(&e))
        })
        .collect();

    ensure!(
        ev["keyboard"] == [(KEY, 30, 1), (KEY, 30, 0), (KEY, 48, 1), (KEY, 48, 0)],
        "keyboard read {:?}; seats {seats}; client sent {} ({} refused); input log:\n{}\ntransport log:\n{}",
        ev["keyboard"],
        report["input_sent"],
        report["input_send_errors"],
        host.log("input"),
        host.log("transport")
    );
    ensure_subsequence(
        "mouse",
        &ev["mouse"],
        &[
            (REL, Rel::REL_X.0, 5),
            (REL, Rel::REL_Y.0, -3),
            (KEY, KeyCode::BTN_LEFT.0, 1),
            (KEY, KeyCode::BTN_LEFT.0, 0),
            (REL, Rel::REL_WHEEL_HI_RES.0, 120),
            (REL, Rel::REL_WHEEL.0, 1),
        ],
    )?;
    ensure!(
        ev["pointer"] == [(ABS, Abs::ABS_X.0, 640), (ABS, Abs::ABS_Y.0, 360)],
        "pointer read {:?} (the huge position must be dropped)",
        ev["pointer"]
    );
    ensure_subsequence(
        "touch",
        &ev["touch"],
        // Slot 0 is the current slot already, so the kernel does not repeat ABS_MT_SLOT 0.
        &[
            (ABS, Abs::ABS_MT_POSITION_X.0, 100),
            (ABS, Abs::ABS_MT_POSITION_Y.0, 200),
            (KEY, KeyCode::BTN_TOUCH.0, 1),
            (ABS, Abs::ABS_MT_SLOT.0, 1),
            (ABS, Abs::ABS_MT_POSITION_X.0, 300),
            (ABS, Abs::ABS_MT_POSITION_Y.0, 400),
            (ABS, Abs::ABS_MT_TRACKING_ID.0, -1),
            (ABS, Abs::ABS_MT_TRACKING_ID.0, -1),
            (KEY, KeyCode::BTN_TOUCH.0, 0),
        ],
    )?;
    ensure_subsequence(
        "xbox pad",
        &ev["xbox"],
        &[
            (KEY, KeyCode::BTN_SOUTH.0, 1),
            (ABS, Abs::ABS_X.0, 1000),
            (ABS, Abs::ABS_Y.0, -1000),
            (ABS, Abs::ABS_Z.0, 200),
        ],
    )?;
    for want in [
        (ABS, Abs::ABS_RX.0, 255),
        (ABS, Abs::ABS_RY.0, 0),
        (ABS, Abs::ABS_Z.0, 255),
        (ABS, Abs::ABS_RZ.0, 128),
        (KEY, KeyCode::BTN_SOUTH.0, 1),
        (KEY, KeyCode::BTN_TL2.0, 1),
    ] {
        ensure!(
            ev["ds"].contains(&want),
            "DualSense gamepad: no {want:?} in {:?}",
            ev["ds"]
        );
    }
    ensure_subsequence(
        "DualSense touchpad",
        &ev["ds-touch"],
        &[
            (ABS, Abs::ABS_MT_POSITION_X.0, 960),
            (ABS, Abs::ABS_MT_POSITION_Y.0, 540),
        ],
    )?;
    for want in [(ABS, Abs::ABS_RX.0, 917 * 64), (ABS, Abs::ABS_Z.0, 8192)] {
        ensure!(
            ev["ds-motion"].contains(&want),
            "DualSense motion: no {want:?} (gyro 1 rad/s = 917 raw × 64, accel 1 g = 8192) in {:?}",
            ev["ds-motion"]
        );
    }
    ensure!(
        battery_now.trim() == "55",
        "battery capacity {battery_now:?}, expected 55 (50 % → 5 × 10 + 5)"
    );

    let seat = seats["seats"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["client"] == "guest"))
        .with_context(|| format!("the client's seat is not listed: {seats}"))?;
    let c = &seat["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    ensure!(n("dropped_bad_pad") >= 1, "no bad pad counted: {c}");
    ensure!(
        n("dropped_out_of_range") >= 1,
        "no out-of-range position counted: {c}"
    );
    ensure!(n("dropped_bad_code") >= 1, "no unknown key counted: {c}");
    ensure!(
        n("dropped_rate") == 0 && n("delivered") == 18,
        "the client's seat: {c}"
    );
    let flood = |k: &str| flood_counters[k].as_u64().unwrap_or(0);
    ensure!(
        flood("dropped_rate") >= 10_000 && flood("delivered") >= 2_000,
        "the flood of 20000 events was not cut to the burst: {flood_counters}"
    );
    ensure!(
        seat["devices"].as_array().map_or(0, Vec::len) == 6,
        "seats lists {} devices: {seat}",
        seat["devices"].as_array().map_or(0, Vec::len)
    );
    println!(
        "devices: all events read back; client's seat {c}; flooded seat {flood_counters}; client sent {} events",
        report["input_sent"]
    );
    Ok(())
}

/// Opens a second seat at input's gRPC API, sends 20000 key events in one message, and
/// returns that seat's counters (from `punktfunkctl seats`) before the stream ends.
fn flood_second_seat(host: &Host) -> anyhow::Result<serde_json::Value> {
    use punktfunk_proto::input::input_client::InputClient;
    use punktfunk_proto::input::{OpenSeatRequest, SeatEvents};
    use punktfunk_proto::seat::{Key, SeatEvent, seat_event::Event};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = host.sup.socket_dir().join("input.sock");
    rt.block_on(async {
        let ch = punktfunk_common::uds::connect(&path, Duration::from_secs(5)).await?;
        let mut c = InputClient::new(ch);
        let seat = c
            .open_seat(OpenSeatRequest {
                client_name: "flood".into(),
                output_width: 640,
                output_height: 480,
                pads: vec![],
            })
            .await?
            .into_inner()
            .seat_id;
        let events: Vec<SeatEvent> = (0..20_000)
            .map(|i| SeatEvent {
                host_time_ns: 0,
                event: Some(Event::Key(Key {
                    code: 30,
                    pressed: i % 2 == 0,
                })),
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SeatEvents {
            seat_id: seat.clone(),
            events,
        })
        .await?;
        let call = tokio::spawn(async move {
            c.send_events(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        // Let input take the batch, then read the counters while the seat still lives.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seats = host.seats()?;
        drop(tx);
        let _ = call.await;
        seats["seats"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["seat"] == seat.as_str()))
            .map(|s| s["counters"].clone())
            .context("the flooded seat is not listed")
    })
}

/// Plays FF rumble on a pad node (upload + play), as a game does; the effect plays while the
/// returned handles are open.
fn play_rumble(node: &Path, strong: u16, weak: u16) -> anyhow::Result<(Device, evdev::FFEffect)> {
    use evdev::{FFEffectData, FFEffectKind, FFReplay, FFTrigger};
    let mut dev = Device::open(node).with_context(|| format!("opening {}", node.display()))?;
    let mut effect = dev
        .upload_ff_effect(FFEffectData {
            direction: 0,
            trigger: FFTrigger {
                button: 0,
                interval: 0,
            },
            replay: FFReplay {
                length: 1000,
                delay: 0,
            },
            kind: FFEffectKind::Rumble {
                strong_magnitude: strong,
                weak_magnitude: weak,
            },
        })
        .with_context(|| format!("uploading a rumble effect to {}", node.display()))?;
    effect.play(1)?;
    Ok((dev, effect))
}

/// A game's rumble on the Xbox pad and the DualSense, and the DualSense's lightbar and player
/// LEDs written in sysfs, arrive at the client as feedback.
fn feedback() -> anyhow::Result<()> {
    let host = Host::start(5000)?;
    let client = host.client("", 4.0, "xbox,dualsense")?;
    let devs = wait_devices(&["punktfunk pad 0", "punktfunk DualSense (guest)"])?;
    let xbox = play_rumble(&node(&devs, "punktfunk pad 0")?, 0x4000, 0x2000)?;
    let (ds_node, _, ds_input) = &devs["punktfunk DualSense (guest)"];
    let ds = play_rumble(ds_node, 0x8000, 0x4000)?;
    let led = |name: &str, file: &str, v: &str| {
        let p = format!("/sys/class/leds/{ds_input}:{name}/{file}");
        std::fs::write(&p, v).with_context(|| format!("writing {v} to {p}"))
    };
    led("rgb:indicator", "multi_intensity", "10 20 30")?;
    led("rgb:indicator", "brightness", "255")?;
    led("white:player-1", "brightness", "1")?;
    led("white:player-3", "brightness", "1")?;
    let report = report(client)?;
    drop((xbox, ds));
    let fb = report["feedback"].as_array().cloned().unwrap_or_default();
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| fb.iter().any(f);
    ensure!(
        has(&|f| f["kind"] == "rumble"
            && f["pad"] == 0
            && f["low"] == 0x4000
            && f["high"] == 0x2000),
        "no Rumble {{pad 0, low 0x4000, high 0x2000}} from the Xbox pad in {fb:?}"
    );
    ensure!(
        has(&|f| f["kind"] == "rumble"
            && f["pad"] == 1
            && f["low"] == 0x8080
            && f["high"] == 0x4040),
        "no Rumble {{pad 1, low 0x8080, high 0x4040}} from the DualSense in {fb:?}"
    );
    ensure!(
        has(&|f| f["kind"] == "lightbar"
            && f["pad"] == 1
            && f["r"] == 10
            && f["g"] == 20
            && f["b"] == 30),
        "no Lightbar {{10, 20, 30}} in {fb:?}"
    );
    ensure!(
        has(&|f| f["kind"] == "player_leds" && f["pad"] == 1 && f["mask"] == 0b101),
        "no PlayerLeds 0b00101 in {fb:?}"
    );
    println!("feedback: {} events, all expected ones present", fb.len());
    Ok(())
}

/// Transport's QUIC idle timeout in the lifecycle scenario: long, so that a killed client
/// noticed within 1 s was noticed by its closed data port (ICMP port-unreachable), not by the
/// timeout.
const IDLE_MS: u32 = 10_000;

/// Devices go when the client leaves or is killed; after kill -9 of input the seat comes back
/// and events flow again without the client reconnecting.
fn lifecycle() -> anyhow::Result<()> {
    let mut host = Host::start(IDLE_MS)?;
    // 1. A client that leaves (Goodbye).
    let client = host.client("", 2.0, "xbox")?;
    wait_devices(&["punktfunk keyboard", "punktfunk pad 0"])?;
    let child = client;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = Instant::now();
    let gone = wait_gone(left).context("devices still there 10 s after the client left")?;
    ensure!(
        gone < Duration::from_secs(1),
        "devices took {gone:?} to go after the client left"
    );
    // 2. A client killed with SIGKILL: transport notices its closed data port.
    let mut client = host.client("", 30.0, "dualsense")?;
    wait_devices(&["punktfunk keyboard", "punktfunk DualSense (guest) Touchpad"])?;
    client.kill()?;
    let _ = client.wait();
    let killed = Instant::now();
    let gone_killed =
        wait_gone(killed).context("devices still there 10 s after the client was killed")?;
    ensure!(
        gone_killed < Duration::from_secs(1),
        "devices took {gone_killed:?} to go after the client was killed (idle timeout {IDLE_MS} ms); transport log:\n{}",
        host.log("transport")
    );
    // 3. kill -9 of input mid-session: the seat comes back, the second key arrives.
    let script = "2500 key 30 down\n2510 key 30 up\n7000 key 48 down\n7010 key 48 up\n";
    let client = host.client(script, 8.0, "")?;
    let devs = wait_devices(&["punktfunk keyboard"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let (first, t1) = reader(&devs["punktfunk keyboard (guest)"].0, stop.clone())?;
    let deadline = Instant::now() + WAIT;
    while kv(&first).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(
        kv(&first) == [(KEY, 30, 1), (KEY, 30, 0)],
        "before the kill: {:?}; input log:\n{}\ntransport log:\n{}",
        kv(&first),
        host.log("input"),
        host.log("transport")
    );
    host.sup.signal("input", rustix::process::Signal::KILL);
    host.sup
        .wait_exit("input", Duration::from_secs(5))
        .context("input did not die")?;
    let t_kill = Instant::now();
    host.sup.start("input");
    host.sup.wait_ready("input", t_kill);
    // The old nodes went with the dead daemon; the reopened seat's keyboard is a new device.
    let devs = wait_devices(&["punktfunk keyboard"])?;
    let back = t_kill.elapsed();
    let (second, t2) = reader(&devs["punktfunk keyboard (guest)"].0, stop.clone())?;
    let report = report(client)?;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let _ = (t1.join(), t2.join());
    ensure!(
        kv(&second) == [(KEY, 48, 1), (KEY, 48, 0)],
        "after input's restart the keyboard read {:?}; transport log:\n{}",
        kv(&second),
        host.log("transport")
    );
    ensure!(
        report["error"].is_null(),
        "the client's session broke: {report}"
    );
    println!(
        "lifecycle: gone {gone:?} after leaving, {gone_killed:?} after kill -9 of the client; seat back {back:?} after kill -9 of input"
    );
    Ok(())
}

/// Client input event → evdev event latency: 500 relative mouse motions 4 ms apart, motion i
/// moving i + 1 mickeys, so each evdev event is matched with its send time (the client's
/// report) on the one clock of the guest.
fn bench() -> anyhow::Result<()> {
    let host = Host::start(5000)?;
    let n: usize = 500;
    let mut script = String::new();
    for i in 0..n {
        script.push_str(&format!("{} move {} 0\n", 2500 + i * 4, i + 1));
    }
    let client = host.client(&script, 6.0, "")?;
    let devs = wait_devices(&["punktfunk mouse"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let (events, t) = reader(&node(&devs, "punktfunk mouse")?, stop.clone())?;
    let report = report(client)?;
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    let sent: Vec<u64> = report["input_sent_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    ensure!(sent.len() == n, "the client sent {} of {n}", sent.len());
    // evdev stamps CLOCK_REALTIME; the client CLOCK_MONOTONIC.
    let real_minus_mono = realtime_ns() as i128 - punktfunk_clock_ns() as i128;
    let mut lat: Vec<f64> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|&&(ty, code, v, _)| ty == REL && code == Rel::REL_X.0 && v >= 1 && v as usize <= n)
        .map(|&(_, _, v, ts)| {
            let s = sent[v as usize - 1];
            ((ts as i128 - real_minus_mono) - s as i128) as f64 / 1000.0
        })
        .collect();
    ensure!(
        lat.len() * 10 >= n * 9,
        "only {} of {n} motions arrived",
        lat.len()
    );
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "input latency (client send → evdev event, {} of {n} motions, UML guest): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    Ok(())
}
