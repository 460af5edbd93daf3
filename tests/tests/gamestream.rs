//! GameStream against a real Moonlight client (moonlight-python: Moonlight's pairing, and
//! libmoonlight-common-c for the stream) and the whole appliance under the test supervisor.
//!
//! Pairing is Moonlight's way round: the client shows a PIN and waits; the user types it on
//! the host with `punktfunkctl pair --pin NNNN`.

use std::process::Child;
use std::time::{Duration, Instant};

use punktfunk_tests::moonlight::{Moonlight, report};
use punktfunk_tests::stack::Stack;
use serde_json::Value;

fn clients(stack: &Stack) -> Value {
    let out = stack.sup.ctl(&["clients", "--json"]);
    assert!(
        out.status.success(),
        "punktfunkctl clients: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("clients --json")
}

fn gamestream_clients(stack: &Stack) -> Vec<Value> {
    clients(stack)["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["protocol"] == "gamestream")
        .collect()
}

/// Starts `pair --pin client_pin` and waits until the host lists it as waiting to pair.
fn start_pairing(stack: &Stack, client: &Moonlight, client_pin: &str) -> Child {
    let (child, pending) = client
        .start_pairing(&stack.sup, client_pin, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.log("transport")));
    assert_eq!(pending["protocol"], "gamestream");
    child
}

fn https_status(client: &Moonlight, verb: &str, query: Option<&str>) -> i64 {
    let mut args = vec!["https", verb];
    args.extend(query);
    let r = client.run(&args);
    assert_eq!(r["ok"], true, "https {verb}: {r}");
    r["status_code"].as_i64().expect("status_code")
}

/// A wrong PIN fails and pairs nothing; an unpaired client's HTTPS requests get the XML 401;
/// the right PIN pairs and the app list then has Desktop; `unpair` takes it away again.
#[test]
fn moonlight_pairs_with_the_pin_typed_on_the_host_and_only_then_sees_apps() {
    let stack = Stack::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = stack.gamestream_port;
    let stranger = Moonlight::new(dir.path().join("stranger"), "127.0.0.1", port);
    let friend = Moonlight::new(dir.path().join("friend"), "127.0.0.1", port);

    // Nobody waits: a PIN typed on the host is refused with what to do.
    let out = stack.sup.ctl(&["pair", "--pin", "1234"]);
    assert!(
        !out.status.success(),
        "a PIN with no pairing waiting must be refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Moonlight client is waiting"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong PIN: Moonlight shows 1111, the host user types 2222.
    let child = start_pairing(&stack, &stranger, "1111");
    assert!(
        stack.daemon_status("transport").contains("waits to pair"),
        "status: {}",
        stack.daemon_status("transport")
    );
    let out = stack.sup.ctl(&["pair", "--pin", "2222"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&child.wait_with_output().unwrap());
    assert_eq!(r["ok"], false, "a wrong PIN must not pair: {r}");
    assert_eq!(r["kind"], "WrongPinError", "{r}");
    assert!(
        gamestream_clients(&stack).is_empty(),
        "a wrong PIN paired someone"
    );
    assert!(
        clients(&stack)["pending"]
            .as_array()
            .is_none_or(|p| p.is_empty()),
        "the failed attempt is still pending"
    );
    assert!(
        stack
            .daemon_status("transport")
            .contains("1 failed pairing attempt"),
        "status: {}",
        stack.daemon_status("transport")
    );

    // Unpaired: every HTTPS verb gets the XML 401, and nothing is launched.
    for (verb, query) in [
        ("serverinfo", None),
        ("applist", None),
        (
            "launch",
            Some("appid=1&mode=1280x720x60&rikey=00112233445566778899aabbccddeeff&rikeyid=1"),
        ),
        ("cancel", None),
    ] {
        assert_eq!(https_status(&stranger, verb, query), 401, "{verb}");
    }

    // The right PIN.
    let child = start_pairing(&stack, &friend, "4321");
    let out = stack.sup.ctl(&["pair", "--pin", "4321"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&child.wait_with_output().unwrap());
    assert_eq!(
        r["ok"],
        true,
        "pairing with the right PIN failed: {r}\n{}",
        stack.log("transport")
    );
    let apps: Vec<&str> = r["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(apps.contains(&"Desktop"), "apps: {apps:?}");
    assert_eq!(r["app_version"], "7.1.431.-1");
    let paired = gamestream_clients(&stack);
    assert_eq!(paired.len(), 1, "{paired:?}");
    assert_eq!(https_status(&friend, "applist", None), 200);
    assert_eq!(
        https_status(&stranger, "applist", None),
        401,
        "pairing one client must not admit another"
    );

    // unpair removes it: its certificate is a stranger's again.
    let name = paired[0]["name"].as_str().unwrap().to_string();
    let out = stack.sup.ctl(&["unpair", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gamestream_clients(&stack).is_empty());
    assert_eq!(https_status(&friend, "applist", None), 401);
}

/// Pairs `client` (Moonlight shows `pin`, the host user types it).
fn pair_client(stack: &Stack, client: &Moonlight, pin: &str) {
    client
        .pair_with(&stack.sup, pin, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.log("transport")));
}

/// The number before `what` in the transport status line's GameStream input counters.
fn input_count(status: &str, what: &str) -> u64 {
    let tail = status
        .split("GameStream input: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no input counters in the status line: {status}"));
    tail.split(", ")
        .find_map(|part| {
            part.strip_suffix(what)
                .or_else(|| part.strip_suffix(&format!("{what} events")))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what} count in: {status}"))
}

/// A paired Moonlight client launches Desktop: the RTSP handshake (DESCRIBE, SETUP ×3,
/// ANNOUNCE, PLAY) and the ENet control stream (its CONNECT carrying the connect data, AES-GCM
/// v2 messages) come up, and the keyboard, mouse and gamepad events it sends arrive decrypted
/// and decoded in transport's input counters. `/cancel` ends the launch. No video is pulled:
/// this covers the control plane only.
#[test]
fn moonlight_input_reaches_the_counters_over_the_control_stream_without_video() {
    let stack = Stack::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let client = Moonlight::new(
        dir.path().join("client"),
        "127.0.0.1",
        stack.gamestream_port,
    );
    pair_client(&stack, &client, "2468");
    let before = stack.daemon_status("transport");
    assert!(
        !before.contains("GameStream input"),
        "input counted before any was sent: {before}"
    );

    let r = client.run(&[
        "stream", "--frames", "0", "--input", "--quit", "--codec", "h264", "--settle", "1.5",
    ]);
    assert_eq!(
        r["ok"],
        true,
        "launch/connect failed: {r}\n{}",
        stack.log("transport")
    );
    for (name, rc) in r["input_rc"].as_object().expect("input_rc") {
        assert_eq!(rc, 0, "the client library refused {name}: {r}");
    }
    assert_eq!(r["quit"], true, "{r}");
    let status = stack.daemon_status("transport");
    assert!(
        input_count(&status, "keyboard") >= 2,
        "key down + up: {status}"
    );
    // The client library's own wake-up wiggle (+1,+1 / -1,-1) plus our click and move.
    assert!(input_count(&status, "mouse") >= 3, "{status}");
    assert!(input_count(&status, "gamepad") >= 2, "{status}");
    assert!(
        !status.contains("Moonlight launched"),
        "quit left the launch: {status}"
    );
}

/// Desktop at 1280x720@60 in `codec`: at least 95 % of 300 frames decode, the counter drawn
/// by media's test source reads back strictly increasing, audio packets arrive and decode, and
/// `quit` leaves media idle.
fn stream_desktop(codec: &str) {
    let stack = Stack::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let client = Moonlight::new(
        dir.path().join("client"),
        "127.0.0.1",
        stack.gamestream_port,
    );
    pair_client(&stack, &client, "1357");
    let r = client.run(&[
        "stream",
        "--app",
        "Desktop",
        "--width",
        "1280",
        "--height",
        "720",
        "--fps",
        "60",
        "--bitrate",
        "8000",
        "--codec",
        codec,
        "--frames",
        "300",
        "--timeout",
        "40",
        "--quit",
    ]);
    assert_eq!(
        r["ok"],
        true,
        "stream failed: {r}\n{}",
        stack.log("transport")
    );
    let frames = r["frames"].as_array().expect("frames").len();
    assert!(
        frames >= 285,
        "{frames} of 300 frames decoded ({} decode errors); termination {}\n{}",
        r["decode_errors"],
        r["termination_error"],
        stack.log("transport")
    );
    assert_eq!(r["sizes"], serde_json::json!(["1280x720"]), "{r}");
    let counters: Vec<u64> = r["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_u64())
        .collect();
    assert!(
        counters.len() >= 285,
        "the frame counter read back from only {} pictures",
        counters.len()
    );
    assert!(
        counters.windows(2).all(|w| w[0] < w[1]),
        "the counter is not strictly increasing: {counters:?}"
    );
    let audio = r["audio_packets"].as_u64().unwrap_or(0);
    let decoded = r["audio_decoded"].as_u64().unwrap_or(0);
    // ~5 s of 5 ms Opus packets, less the first 500 ms the client discards.
    assert!(audio >= 400, "only {audio} audio packets arrived: {r}");
    assert_eq!(r["audio_decode_errors"], 0, "{r}");
    assert!(
        decoded * 100 >= audio * 99,
        "{decoded} of {audio} audio packets decoded"
    );
    assert_eq!(r["quit"], true, "{r}");
    eprintln!(
        "{codec}: {audio} audio packets, {decoded} decoded, loss {}",
        r["audio_loss"]
    );
    eprintln!(
        "{codec}: {frames} frames decoded, counters {}..{}, connect {:.2} s, first frame {:.2} s, {} decode errors",
        counters[0],
        counters[counters.len() - 1],
        r["connected_s"].as_f64().unwrap_or(-1.0),
        r["first_frame_s"].as_f64().unwrap_or(-1.0),
        r["decode_errors"]
    );
    let t = Instant::now();
    while !stack.daemon_status("media").starts_with("idle") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "media still streams after quit: {}",
            stack.daemon_status("media")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gamestream_clients(&stack).len() == 1);
    assert_nothing_left(&stack);
}

/// After `quit`: no session in transport's status, no seat at input, no output at session.
/// (This host's kernel has no uinput, so input never had a seat here: the assertion holds the
/// seat list to empty all the same, for the day it has one.)
fn assert_nothing_left(stack: &Stack) {
    let json = |args: &[&str]| -> Value {
        let out = stack.sup.ctl(args);
        assert!(
            out.status.success(),
            "punktfunkctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let seats = json(&["seats", "--json"]);
    assert!(
        seats["seats"].as_array().is_none_or(|s| s.is_empty()),
        "a seat is left after quit: {seats}"
    );
    let outputs = json(&["outputs", "--json"]);
    assert!(
        outputs["outputs"].as_array().is_none_or(|o| o.is_empty()),
        "an output is left after quit: {outputs}"
    );
    let status = stack.daemon_status("transport");
    assert!(
        !status.contains("Moonlight launched"),
        "quit left the launch: {status}"
    );
}

/// H.264 at 1280x720@60, with stereo Opus audio, to a real Moonlight client.
#[test]
fn moonlight_streams_desktop_h264_720p60_with_audio() {
    stream_desktop("h264");
}

/// HEVC at 1280x720@60, with stereo Opus audio, to a real Moonlight client.
#[test]
fn moonlight_streams_desktop_hevc_720p60_with_audio() {
    stream_desktop("hevc");
}

/// Drops `permille` ‰ of the UDP datagrams arriving in namespace `ns` (the client's side:
/// video, audio and the ENet control stream alike; the host sends video from an ephemeral
/// port, so ports cannot single it out); [`dropped`] counts them.
fn add_loss(ns: &str, permille: u32) {
    let rules = format!(
        "add table inet pfgs\n\
         add chain inet pfgs input {{ type filter hook input priority 0 ; policy accept ; }}\n\
         add rule inet pfgs input meta l4proto udp numgen random mod 1000 < {permille} counter drop\n"
    );
    let path = std::env::temp_dir().join(format!("{ns}-gs-loss.nft"));
    std::fs::write(&path, rules).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f"])
        .arg(&path)
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dropped(ns: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "chain", "inet", "pfgs", "input",
        ])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// 2 % random loss of the UDP datagrams on a veth pair between two network namespaces
/// (transport in one, the Moonlight client in the other): FEC recovers what it can, the rest
/// is answered with IDRs on the client's request, and at least 99 % of the frames the host
/// numbered reach the client's decoder.
#[test]
fn moonlight_h264_under_two_percent_loss_between_namespaces() {
    use punktfunk_testsupport::netlab::{NetnsPair, Side};
    let pair = NetnsPair::create(&format!("gs{}", std::process::id())).expect("netns pair");
    let stack = Stack::start(&[("transport", "PUNKTFUNK_TEST_NETNS", pair.name(Side::A))]);
    let dir = tempfile::tempdir().unwrap();
    let mut client = Moonlight::new(
        dir.path().join("client"),
        &pair.addr(Side::A).to_string(),
        stack.gamestream_port,
    );
    client.netns = Some(pair.name(Side::B).to_string());
    pair_client(&stack, &client, "9753");
    add_loss(pair.name(Side::B), 20);
    let r = client.run(&[
        "stream",
        "--app",
        "Desktop",
        "--width",
        "1280",
        "--height",
        "720",
        "--fps",
        "60",
        "--bitrate",
        "8000",
        "--codec",
        "h264",
        "--frames",
        "600",
        "--timeout",
        "40",
        "--quit",
    ]);
    assert_eq!(
        r["ok"],
        true,
        "stream failed: {r}\n{}",
        stack.log("transport")
    );
    let lost_on_wire = dropped(pair.name(Side::B));
    let numbers: Vec<u64> = r["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_u64())
        .collect();
    assert!(
        numbers.len() >= 300,
        "only {} frames arrived: {r}",
        numbers.len()
    );
    let span = numbers[numbers.len() - 1] - numbers[0] + 1;
    let delivered = numbers.len() as f64 / span as f64;
    eprintln!(
        "2 % loss: {} datagrams dropped, {} of {span} frames delivered ({:.2} %)",
        lost_on_wire,
        numbers.len(),
        delivered * 100.0
    );
    assert!(
        lost_on_wire > 50,
        "the loss rule dropped only {lost_on_wire} datagrams"
    );
    assert!(
        delivered >= 0.99,
        "{:.2} % of frames delivered",
        delivered * 100.0
    );
    // What the client told the host: the FEC blocks it repaired (its FEC status reports) and
    // the frames it could not rebuild (its IDR requests), each answered with an IDR.
    let status = stack.daemon_status("transport");
    let video = video_counters(&status);
    eprintln!("2 % loss: {video:?} ({status})");
    assert!(
        video.recovered_shards > 0 && video.recovered_blocks > 0,
        "the client reported no FEC recovery under 2 % loss: {status}"
    );
    assert!(
        video.lost_blocks == 0 || video.idr_requests > 0,
        "{} FEC blocks were lost but the client asked for no IDR: {status}",
        video.lost_blocks
    );
    assert_eq!(
        video.idr_answered, video.idr_requests,
        "every IDR request is answered with an IDR: {status}"
    );
}

/// The status line's GameStream video counters.
#[derive(Debug)]
struct VideoCounters {
    recovered_shards: u64,
    recovered_blocks: u64,
    lost_blocks: u64,
    idr_requests: u64,
    idr_answered: u64,
}

/// Parses "GameStream video: FEC recovered S shards in B blocks, L blocks lost, I IDR requests
/// (A answered)" out of transport's status line.
fn video_counters(status: &str) -> VideoCounters {
    let tail = status
        .split("GameStream video: FEC recovered ")
        .nth(1)
        .unwrap_or_else(|| panic!("no video counters in the status line: {status}"));
    let numbers: Vec<u64> = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .take(5)
        .map(|t| t.parse().expect("a number"))
        .collect();
    assert_eq!(numbers.len(), 5, "video counters in: {status}");
    VideoCounters {
        recovered_shards: numbers[0],
        recovered_blocks: numbers[1],
        lost_blocks: numbers[2],
        idr_requests: numbers[3],
        idr_answered: numbers[4],
    }
}

/// Keyboard, mouse and gamepad input from a real Moonlight client reaches the seat's evdev
/// nodes, inside the UML guest (this host's kernel has no uinput): input and transport
/// (GameStream, synthetic video: the guest runs no media worker) and moonlight-python, which
/// pairs, launches Desktop, announces an Xbox controller (the seat reopens with a pad), sends
/// key A, a relative move, a click, high-resolution wheels, an absolute position and pad A with
/// stick and trigger; `tests/src/bin/pf-uml-moonlight.rs` reads them back from the nodes in
/// order. After `quit`, `punktfunkctl seats` is empty and no punktfunk device is left.
#[test]
fn uml_moonlight_input_reaches_the_seats_evdev_nodes_and_quit_removes_the_seat() {
    // The venv is created here: the guest's root (the host's, over hostfs) is read-only. The
    // guest may not see the clone (under /tmp it has its own tmpfs): the driver goes in a copy.
    let _ = punktfunk_tests::moonlight::python();
    let driver = punktfunk_tests::moonlight::guest_visible_dir();
    let out = punktfunk_tests::uml::Guest::new()
        .mem("1G")
        .env(
            punktfunk_tests::moonlight::DIR_ENV,
            &driver.to_string_lossy(),
        )
        .timeout(Duration::from_secs(330))
        .run_program(env!("CARGO_BIN_EXE_pf-uml-moonlight"), &["input"])
        .expect("the UML guest ran");
    out.assert_success();
    println!("{}", out.stdout);
}
