//! punktfunk/1 control plane end to end: the real transport daemon, punktfunkctl, the reference
//! client, and a hand-driven QUIC client for what the CLI must never send.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

use punktfunk_control::framing::{self, FrameDecoder};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{
    ClientMessage, Hello, HostMessage, Stats, client_message, host_message,
};
use punktfunk_tests::native::NativeHost;
use punktfunk_tls::Identity;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pair_then_stream_10s_of_synthetic_720p60_every_frame_verified() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    let clients = json(&host.ctl(&["clients", "--json"]));
    assert_eq!(clients["clients"][0]["name"], "deck");
    let r = json(&host.client(
        "deck",
        &[
            "stream",
            &host.addr(),
            "--duration",
            "10",
            "--mode",
            "1280x720@60",
            "--bitrate",
            "20000",
            "--json",
        ],
    ));
    let received = r["frames_received"].as_u64().unwrap();
    assert!(
        received >= 590,
        "10 s at 60 fps delivers ~600 frames, got {received}: {r}"
    );
    assert_eq!(
        r["frames_verified"], received,
        "every frame byte-identical: {r}"
    );
    assert_eq!(r["verify_failures"], 0, "{r}");
    assert_eq!(r["frames_lost"], 0, "{r}");
    assert_eq!(r["skew_corrected"], true, "{r}");
    assert_eq!(r["host_verified"], true, "{r}");
    assert_eq!(r["bitrate_kbps"], 20000);
    let lat = &r["latency_us"];
    for stage in [
        "capture_to_reassembled",
        "encode",
        "capture_to_handed",
        "handed_to_first_packet",
        "first_packet_to_reassembled",
    ] {
        for q in ["p50", "p99", "max"] {
            assert!(lat[stage][q].is_number(), "stage {stage}.{q} missing: {r}");
        }
    }
    let goodput = r["goodput_mbps"].as_f64().unwrap();
    assert!(
        goodput > 10.0 && goodput < 30.0,
        "20 Mbit/s stream measured {goodput} Mbit/s"
    );
}

#[test]
fn wrong_pin_fails_clearly_and_closes_the_window() {
    let host = NativeHost::start(&[]);
    let pin = host.arm(120);
    let wrong = if pin == "000000" { "000001" } else { "000000" };
    let out = host.client("eve", &["pair", "--pin", wrong, &host.addr()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong PIN"), "{}", stderr(&out));
    // The one attempt is spent: the right PIN no longer works.
    let out = host.client("eve", &["pair", "--pin", &pin, &host.addr()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("punktfunkctl pair"),
        "{}",
        stderr(&out)
    );
    assert!(
        json(&host.ctl(&["clients", "--json"]))["clients"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The host saw both failures (issue #9, defect 7): a WARN line each with the peer's
    // address, the client's name and the reason, and the count in `punktfunkctl status`.
    // (The host learns of the wrong PIN when the client's close arrives: poll for it.)
    let failures = || -> Vec<String> {
        host.log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("pairing attempt failed"))
            .map(str::to_lowercase)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let warnings = failures();
    assert_eq!(warnings.len(), 2, "{}", host.log());
    assert!(
        warnings.iter().any(|w| w.contains("wrong pin")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("not armed")),
        "{warnings:?}"
    );
    for w in &warnings {
        assert!(w.contains("127.0.0.1") && w.contains("eve"), "{w}");
    }
    // (Only transport runs here, so `status` exits 1 for the other three; its JSON is whole.)
    let status: serde_json::Value =
        serde_json::from_slice(&host.ctl(&["status", "--json"]).stdout).expect("status --json");
    let transport = status["daemons"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "transport"))
        .expect("transport row")
        .clone();
    assert!(
        transport["status"]
            .as_str()
            .is_some_and(|s| s.ends_with("2 failed pairing attempts")),
        "{transport}"
    );
}

#[test]
fn an_expired_window_refuses() {
    let host = NativeHost::start(&[]);
    let pin = host.arm(1);
    std::thread::sleep(Duration::from_millis(1500));
    let out = host.client("late", &["pair", "--pin", &pin, &host.addr()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
}

/// A hand-driven client: its own identity (or a CLI client's), raw control streams.
struct RawClient {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl RawClient {
    async fn connect(host: &NativeHost, identity_dir: &std::path::Path) -> Self {
        let id = Identity::load_or_create(identity_dir, "client", "raw").unwrap();
        let mut cfg = quinn::ClientConfig::new(id.client_config(None).unwrap());
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(Duration::from_secs(5).try_into().unwrap()));
        cfg.transport_config(std::sync::Arc::new(t));
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cfg);
        let conn = ep
            .connect(host.addr().parse().unwrap(), "punktfunk")
            .unwrap()
            .await
            .unwrap();
        Self {
            _endpoint: ep,
            conn,
        }
    }

    /// Sends raw bytes on a new stream and returns every host message until the stream ends
    /// or the connection closes (with the close reason, if any).
    async fn exchange(&self, bytes: &[u8]) -> (Vec<HostMessage>, Option<String>) {
        let (mut send, mut recv) = self.conn.open_bi().await.unwrap();
        let _ = send.write_all(bytes).await;
        let mut dec = FrameDecoder::<HostMessage>::new();
        let mut msgs = Vec::new();
        let mut buf = vec![0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await {
                Ok(Ok(Some(n))) => msgs.extend(dec.push(&buf[..n]).unwrap_or_default()),
                Ok(Ok(None)) => break None,
                Ok(Err(e)) => break Some(e.to_string()),
                Err(_) => break Some("timeout".into()),
            }
        };
        (msgs, closed)
    }
}

fn hello(data_port: u16) -> ClientMessage {
    ClientMessage {
        msg: Some(client_message::Msg::Hello(Hello {
            version: 1,
            client_name: "raw".into(),
            mode: Some(Mode {
                width: 1280,
                height: 720,
                refresh_mhz: 60_000,
            }),
            codecs: vec![Codec::H264 as i32],
            bitrate_kbps: 5_000,
            data_port: data_port.into(),
            ..Default::default()
        })),
    }
}

fn error_of(msgs: &[HostMessage]) -> Option<(String, String)> {
    msgs.iter().find_map(|m| match &m.msg {
        Some(host_message::Msg::Error(e)) => Some((e.code.clone(), e.message.clone())),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaired_client_is_refused_and_no_data_plane_packet_reaches_it() {
    let host = NativeHost::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = data.local_addr().unwrap().port();
    let raw = RawClient::connect(&host, dir.path()).await;
    let (msgs, _) = raw
        .exchange(&framing::encode_to_vec(&hello(port)).unwrap())
        .await;
    let (code, message) = error_of(&msgs).expect("an Error message");
    assert_eq!(code, "pairing-required");
    assert!(message.contains("punktfunkctl pair"), "{message}");
    assert!(
        !msgs
            .iter()
            .any(|m| matches!(m.msg, Some(host_message::Msg::Welcome(_))))
    );
    // Nothing may arrive on the data port it announced.
    tokio::time::sleep(Duration::from_millis(700)).await;
    data.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(
        data.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "a data-plane packet reached an unpaired client"
    );
    assert!(host.log().contains("refused an unpaired client"));

    // The reference client says the same, and how to pair.
    let out = host.client("stranger", &["stream", &host.addr(), "--duration", "1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("requires pairing") && err.contains("punktfunkctl pair"),
        "{err}"
    );
}

#[test]
fn unpair_removes_access_immediately() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    let mut child = host
        .client_cmd(
            "deck",
            &["stream", &host.addr(), "--duration", "30", "--json"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the session", Duration::from_secs(10), || {
        !host.sessions().is_empty()
    });
    let out = host.ctl(&["unpair", "deck"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = Instant::now();
    let status =
        punktfunk_tests::wait_timeout(&mut child, Duration::from_secs(10)).expect("client ends");
    assert!(!status.success(), "the stream must end with an error");
    assert!(t.elapsed() < Duration::from_secs(10));
    wait_until("no sessions", Duration::from_secs(5), || {
        host.sessions().is_empty()
    });
    let out = host.client("deck", &["stream", &host.addr(), "--duration", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requires pairing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_client_is_cleaned_up_and_a_new_session_starts() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    let mut child = host
        .client_cmd("deck", &["stream", &host.addr(), "--duration", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the session", Duration::from_secs(10), || {
        !host.sessions().is_empty()
    });
    child.kill().unwrap(); // SIGKILL: no goodbye, no close frame
    child.wait().unwrap();
    // The idle timeout is 2 s in these tests.
    wait_until(
        "the dead session to be cleaned up",
        Duration::from_secs(10),
        || host.sessions().is_empty(),
    );
    let r = json(&host.client(
        "deck",
        &["stream", &host.addr(), "--duration", "2", "--json"],
    ));
    assert!(r["frames_verified"].as_u64().unwrap() > 60, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_order_control_messages_end_the_session_not_the_daemon() {
    let mut host = NativeHost::start(&[]);
    host.pair("deck");
    // The raw client uses the paired CLI client's identity, so it gets past the pairing check.
    let deck = host.root.path().join("client/deck");

    // A message before Hello.
    let stats = ClientMessage {
        msg: Some(client_message::Msg::Stats(Stats::default())),
    };
    let raw = RawClient::connect(&host, &deck).await;
    let (msgs, _) = raw.exchange(&framing::encode_to_vec(&stats).unwrap()).await;
    let (code, msg) = error_of(&msgs).expect("error for a message before Hello");
    assert_eq!(code, "protocol");
    assert!(msg.contains("Hello"), "{msg}");

    // A Hello after Welcome.
    let raw = RawClient::connect(&host, &deck).await;
    let data = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut two = framing::encode_to_vec(&hello(data.local_addr().unwrap().port())).unwrap();
    two.extend(framing::encode_to_vec(&hello(data.local_addr().unwrap().port())).unwrap());
    let (msgs, _) = raw.exchange(&two).await;
    assert!(
        msgs.iter()
            .any(|m| matches!(m.msg, Some(host_message::Msg::Welcome(_)))),
        "first Hello is welcomed"
    );
    let (code, _) = error_of(&msgs).expect("error for a second Hello");
    assert_eq!(code, "protocol");

    // A length prefix far beyond the bound, and random bytes (seeded, so a failure reproduces).
    let raw = RawClient::connect(&host, &deck).await;
    let (msgs, _) = raw.exchange(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]).await;
    assert!(
        error_of(&msgs).is_some(),
        "oversized length gets a clear error"
    );
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7075_6e6b);
    for _ in 0..40 {
        let len = rng.random_range(1..600);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let raw = RawClient::connect(&host, &deck).await;
        let _ = raw.exchange(&junk).await;
    }

    // The daemon is still there and serves a normal session.
    assert!(host.alive(), "transport died:\n{}", host.log());
    let r = json(&host.client(
        "deck",
        &["stream", &host.addr(), "--duration", "2", "--json"],
    ));
    assert!(r["frames_verified"].as_u64().unwrap() > 60, "{r}");
}

#[test]
fn speed_test_at_500_mbit_for_2_s_on_loopback() {
    let host = NativeHost::start(&[]);
    host.pair("deck");
    let r = json(&host.client(
        "deck",
        &[
            "speed-test",
            &host.addr(),
            "--kbps",
            "500000",
            "--ms",
            "2000",
            "--json",
        ],
    ));
    eprintln!("speed test: {r}");
    // Nothing is dropped on the way out (queue or socket), and the host's count is final when
    // it reports it (the send thread has drained and stopped): on loopback, where nothing is
    // lost in between, every packet it counts arrives, and nothing it did not count does.
    let sent = r["packets_sent"].as_u64().unwrap();
    let received = r["packets_received"].as_u64().unwrap();
    let drops = r["send_drops"].as_u64().unwrap();
    assert_eq!(drops, 0, "send drops: {r}");
    assert!(sent > 0, "{r}");
    assert_eq!(received, sent, "packets received vs sent: {r}");
    let pct = r["percent_of_target"].as_f64().unwrap();
    assert!(pct >= 90.0, "reached {pct:.1} % of 500 Mbit/s: {r}");
}

#[test]
fn pairing_is_required_by_default_and_open_mode_is_explicit_and_loud() {
    let host = NativeHost::start(&[]);
    // Only transport runs here, so `status` exits non-zero; its JSON still describes transport.
    let out = host.ctl(&["status", "--json"]);
    let row = punktfunk_tests::parse_status(&out.stdout)
        .into_iter()
        .find(|(n, _, _)| n == "transport")
        .unwrap()
        .2;
    assert!(
        row["status"].as_str().unwrap().contains("pairing required"),
        "{row}"
    );
    drop(host);

    let open = NativeHost::start(&[("PUNKTFUNK_PAIRING", "open")]);
    assert!(open.log().contains("PAIRING IS OFF"), "{}", open.log());
    let r = json(&open.client(
        "stranger",
        &["stream", &open.addr(), "--duration", "1", "--json"],
    ));
    assert_eq!(
        r["host_verified"], false,
        "an unpaired stream is marked as such"
    );
    assert!(r["frames_verified"].as_u64().unwrap() > 20, "{r}");
}
