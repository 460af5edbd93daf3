//! Runs inside the UML guest (tests/tests/gamestream.rs): punktfunk-input and
//! punktfunk-transport (GameStream on a free base port, synthetic video: the guest has no media
//! worker, and the scenario needs only the session and its seat) under the test [`Supervisor`],
//! moonlight-python (a real Moonlight client: libmoonlight-common-c's ENet control stream, AES-GCM,
//! its input encoders) pairing with the PIN typed through `punktfunkctl pair --pin`, launching
//! Desktop, announcing an Xbox controller and sending keyboard, mouse and gamepad input; the
//! seat's evdev nodes are read back. Then `quit`: no seat and no punktfunk device is left.
//! Exits 0 when every check held, 1 saying which did not.
//!
//! usage: pf-uml-moonlight input
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use evdev::{AbsoluteAxisCode as Abs, KeyCode, RelativeAxisCode as Rel};
use punktfunk_tests::Supervisor;
use punktfunk_tests::evdev_nodes::{
    ABS, Devices, KEY, REL, ensure_subsequence, input_devices, kv, reader,
};
use punktfunk_tests::moonlight::{Moonlight, report};
use punktfunk_tests::native::free_udp_port;

/// How long devices may take to disappear, or events to arrive, before a check fails (a slow
/// guest).
const WAIT: Duration = Duration::from_secs(30);
/// How long the launch may take to open the seat: the Moonlight driver is Python importing
/// numpy and PyAV over hostfs first, which in a busy guest took more than 30 s.
const LAUNCH_WAIT: Duration = Duration::from_secs(150);
/// GameStream's default HTTP port: the guest's network is its own, so Moonlight's default ports
/// are free there.
const BASE_PORT: u16 = 47989;
/// The client names the seat after its certificate: `moonlight-<8 hex>`.
const SEAT_PREFIX: &str = "moonlight-";

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let result = match arg.as_str() {
        "input" => input(),
        _ => {
            eprintln!("usage: pf-uml-moonlight input");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("pf-uml-moonlight {arg}: {e:#}");
        std::process::exit(1);
    }
}

/// The node of the seat device of kind `kind` (`punktfunk <kind> (moonlight-…)`).
fn find(devs: &Devices, kind: &str) -> Option<PathBuf> {
    let prefix = format!("punktfunk {kind} ({SEAT_PREFIX}");
    devs.iter()
        .find(|(n, (p, _, _))| n.starts_with(&prefix) && p.exists())
        .map(|(_, (p, _, _))| p.clone())
}

/// Waits until the seat has a device of every kind; their nodes by kind. Gives up early when
/// the client has exited (its launch failed).
fn wait_devices(
    kinds: &[&'static str],
    client: &mut std::process::Child,
) -> anyhow::Result<BTreeMap<&'static str, PathBuf>> {
    let deadline = Instant::now() + LAUNCH_WAIT;
    loop {
        let devs = input_devices();
        let found: BTreeMap<_, _> = kinds
            .iter()
            .filter_map(|k| find(&devs, k).map(|p| (*k, p)))
            .collect();
        if found.len() == kinds.len() {
            return Ok(found);
        }
        if let Some(status) = client.try_wait()? {
            bail!(
                "the Moonlight client exited ({status}) before the seat's devices {kinds:?} \
                 appeared; have {:?}",
                devs.keys().collect::<Vec<_>>()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the seat's devices {kinds:?} did not all appear within {LAUNCH_WAIT:?}; have {:?}",
                devs.keys().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Input and transport with GameStream on `base`.
fn start_host(base: u16) -> Supervisor {
    let mut sup = Supervisor::new(4_000_000);
    for (k, v) in [
        ("PUNKTFUNK_PORT", free_udp_port().to_string()),
        ("PUNKTFUNK_MDNS", "false".into()),
        ("PUNKTFUNK_SOURCE", "synthetic".into()),
        ("PUNKTFUNK_BIND", "127.0.0.1".into()),
        ("PUNKTFUNK_GAMESTREAM__ENABLED", "true".into()),
        ("PUNKTFUNK_GAMESTREAM__HTTP_PORT", base.to_string()),
    ] {
        sup.env.push(("transport", k.into(), v));
    }
    let t0 = Instant::now();
    sup.start("input");
    sup.start("transport");
    sup.wait_ready("input", t0);
    sup.wait_ready("transport", t0);
    sup
}

/// The seats `punktfunkctl seats --json` lists.
fn seats(sup: &Supervisor) -> anyhow::Result<Vec<serde_json::Value>> {
    let v = sup.ctl_json(&["--timeout", "20", "seats", "--json"])?;
    Ok(v["seats"].as_array().cloned().unwrap_or_default())
}

fn input() -> anyhow::Result<()> {
    let base = BASE_PORT;
    let sup = start_host(base);
    let dir = tempfile::tempdir()?;
    let client = Moonlight::new(dir.path().join("client"), "127.0.0.1", base);
    client.pair_with(&sup, "8642", WAIT * 4)?;

    // Launch with input: the driver announces controller 0 and waits for `go`.
    let go = dir.path().join("go");
    let go_arg = go.to_string_lossy().into_owned();
    let mut stream = client
        .command(&[
            "stream",
            "--frames",
            "0",
            "--input",
            "--seat-go",
            &go_arg,
            "--timeout",
            "120",
            "--settle",
            "3",
            "--quit",
            "--codec",
            "h264",
            // The synthetic video is noise to the client; little of it keeps the guest idle.
            "--bitrate",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the moonlight stream")?;
    // The announced pad is in the seat (reopened with it, or opened with it).
    let nodes = match wait_devices(&["keyboard", "mouse", "pointer", "pad 0"], &mut stream) {
        Ok(n) => n,
        Err(e) => bail!(
            "{e:#}\nclient: {}\ntransport log:\n{}\ninput log:\n{}",
            {
                let _ = stream.kill();
                let out = stream.wait_with_output()?;
                format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            },
            sup.log_tail("transport", 40),
            sup.log_tail("input", 40)
        ),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = BTreeMap::new();
    for (kind, node) in &nodes {
        readers.insert(*kind, reader(node, stop.clone())?.0);
    }
    std::fs::write(&go, b"go")?;
    // The last event of the sequence (the pad's release) read back, the seat's counters are
    // read while the client is still connected (it stays `--settle` seconds).
    let deadline = Instant::now() + WAIT;
    while !kv(&readers["pad 0"]).contains(&(KEY, KeyCode::BTN_SOUTH.0, 0))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seats_live = seats(&sup)?;
    let out = stream.wait_with_output()?;
    let r = report(&out);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    ensure!(
        r["ok"] == true,
        "the stream failed: {r}\ntransport log:\n{}",
        sup.log_tail("transport", 40)
    );
    for (name, rc) in r["input_rc"].as_object().context("input_rc")? {
        ensure!(rc == 0, "the client library refused {name}: {r}");
    }
    ensure!(r["quit"] == true, "quit failed: {r}");
    let ev: BTreeMap<&str, Vec<(u16, u16, i32)>> =
        readers.iter().map(|(k, e)| (*k, kv(e))).collect();
    let context = || {
        format!(
            "seats while streaming: {seats_live:?}; read {ev:?}\ntransport log:\n{}",
            sup.log_tail("transport", 40)
        )
    };
    ensure!(
        ev["keyboard"] == [(KEY, KeyCode::KEY_A.0, 1), (KEY, KeyCode::KEY_A.0, 0)],
        "keyboard: VK A down and up must be KEY_A 1, 0; {}",
        context()
    );
    ensure_subsequence(
        "mouse",
        &ev["mouse"],
        &[
            (REL, Rel::REL_X.0, 5),
            (REL, Rel::REL_Y.0, -5),
            (KEY, KeyCode::BTN_LEFT.0, 1),
            (KEY, KeyCode::BTN_LEFT.0, 0),
            (REL, Rel::REL_WHEEL_HI_RES.0, 60),
            (REL, Rel::REL_HWHEEL_HI_RES.0, -120),
            (REL, Rel::REL_HWHEEL.0, -1),
        ],
    )
    .with_context(context)?;
    // 640/1280 of the reference area on the launch's 1280x720 output.
    ensure!(
        ev["pointer"] == [(ABS, Abs::ABS_X.0, 640), (ABS, Abs::ABS_Y.0, 360)],
        "pointer; {}",
        context()
    );
    // Pad A with the left stick (XInput y −1000 is evdev +1000) and the left trigger, then
    // the release.
    ensure_subsequence(
        "pad",
        &ev["pad 0"],
        &[
            (KEY, KeyCode::BTN_SOUTH.0, 1),
            (ABS, Abs::ABS_X.0, 1000),
            (ABS, Abs::ABS_Y.0, 1000),
            (ABS, Abs::ABS_Z.0, 200),
            (KEY, KeyCode::BTN_SOUTH.0, 0),
            (ABS, Abs::ABS_X.0, 0),
        ],
    )
    .with_context(context)?;
    let seat = seats_live
        .iter()
        .find(|s| {
            s["client"]
                .as_str()
                .is_some_and(|n| n.starts_with(SEAT_PREFIX))
        })
        .with_context(|| format!("no Moonlight seat in {seats_live:?}"))?;
    ensure!(
        seat["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["kind"] == "xbox-pad")),
        "the seat has no pad: {seat}"
    );
    // Key 2, mouse 7 (move counts once), pointer 1, pad ≥ 2: what input wrote to the devices.
    let delivered = seat["counters"]["delivered"].as_u64().unwrap_or(0);
    ensure!(
        delivered >= 10,
        "input counted {delivered} delivered events: {seat}"
    );

    // quit: no seat, no device.
    let t = Instant::now();
    loop {
        let left = seats(&sup)?;
        let devices: Vec<String> = input_devices()
            .into_keys()
            .filter(|n| n.starts_with("punktfunk"))
            .collect();
        if left.is_empty() && devices.is_empty() {
            break;
        }
        ensure!(
            t.elapsed() < WAIT,
            "after quit: seats {left:?}, devices {devices:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Session and media do not run in this guest, so `status` exits 1; its JSON still shows
    // transport's and input's lines after the quit.
    let status = String::from_utf8_lossy(&sup.ctl(&["status", "--json"]).stdout).into_owned();
    println!(
        "keyboard {} events, mouse {}, pointer {}, pad {}; seat gone {:?} after quit; status {status}",
        ev["keyboard"].len(),
        ev["mouse"].len(),
        ev["pointer"].len(),
        ev["pad 0"].len(),
        t.elapsed()
    );
    Ok(())
}
