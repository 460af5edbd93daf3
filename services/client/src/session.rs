//! The client's commands: discover, pair, speed-test, and the session they and `stream`
//! ([`crate::stream`]) open.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use punktfunk_control::client::{ClientAction, ClientRequest, ClientSession};
use punktfunk_control::error::close;
use punktfunk_control::host::{MAX_BITRATE_KBPS, MIN_BITRATE_KBPS};
use punktfunk_control::keys::Direction;
use punktfunk_control::pairing::{PairingClient, PairingClientStep, PairingError};
use punktfunk_dataplane::{Receiver, ReceiverConfig, RxEvent};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{AudioConfig, GamepadKind, ProbeResult, Welcome};
use punktfunk_tls::{Fingerprint, Identity, peer_fingerprint};
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};

use crate::conn::{self, CLOSE_DONE, Control};
use crate::known_hosts::{KnownHost, KnownHosts};
use crate::outcome::ClientError;
use crate::report::SpeedReport;

use punktfunk_dataplane::sys::monotonic_ns as now_ns;

/// Parses `WxH@Hz` (Hz may have decimals: `1920x1080@59.94`).
pub fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    let bad = || anyhow!("mode `{s}` is not WxH@Hz (e.g. 1280x720@60)");
    let (wh, hz) = s.split_once('@').ok_or_else(bad)?;
    let (w, h) = wh.split_once('x').ok_or_else(bad)?;
    let hz: f64 = hz.parse().map_err(|_| bad())?;
    if !(1.0..=1000.0).contains(&hz) {
        return Err(bad());
    }
    Ok(Mode {
        width: w.parse().map_err(|_| bad())?,
        height: h.parse().map_err(|_| bad())?,
        refresh_mhz: (hz * 1000.0).round() as u32,
    })
}

pub async fn discover(timeout_ms: u64, json: bool) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(timeout_ms);
    let hosts = tokio::task::spawn_blocking(move || punktfunk_discovery::browse(timeout))
        .await?
        .context("mDNS browse failed")?;
    if json {
        let v = serde_json::json!({ "hosts": hosts });
        println!("{v}");
        return Ok(());
    }
    if hosts.is_empty() {
        println!(
            "no punktfunk host answered within {timeout_ms} ms (is the host on this network, with UDP 5353 open?)"
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<28} {:<9} FINGERPRINT",
        "NAME", "ADDRESS", "PAIRING"
    );
    for h in hosts {
        let addr = h
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or(h.addresses.first())
            .map(|a| SocketAddr::new(*a, h.port).to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<28} {:<9} {}",
            h.instance,
            addr,
            h.pairing.to_string(),
            &h.fingerprint_hex[..16.min(h.fingerprint_hex.len())]
        );
    }
    Ok(())
}

pub async fn pair(dir: &Path, name: &str, pin: &str, host: &str) -> anyhow::Result<()> {
    pair_within(dir, name, pin, host, conn::REPLY_TIMEOUT).await
}

/// [`pair`], giving up when the host does not answer a pairing message within `reply_timeout`.
async fn pair_within(
    dir: &Path,
    name: &str,
    pin: &str,
    host: &str,
    reply_timeout: Duration,
) -> anyhow::Result<()> {
    punktfunk_control::pairing::validate_pin(pin)?;
    let identity = Identity::load_or_create(dir, "client", name)?;
    let addr = conn::resolve(host)?;
    // Unpinned on purpose: the ceremony itself authenticates the host's fingerprint.
    let (_endpoint, connection) = conn::connect(addr, &identity, None).await?;
    let host_fp = peer_fingerprint(&connection).context("the host presented no certificate")?;
    let (mut machine, start) = PairingClient::start(pin, name, identity.fingerprint.0, host_fp.0)?;
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&PairingClient::start_message(start)).await?;
    loop {
        let msg = ctl
            .reply_within(reply_timeout, "the pairing request")
            .await?
            .context("the host closed the pairing stream without an answer")?;
        match machine.on_message(msg) {
            Ok(PairingClientStep::Reply(reply)) => ctl.send(&reply).await?,
            Ok(PairingClientStep::Paired(paired)) => {
                let mut known = KnownHosts::open(dir)?;
                known.remember(KnownHost {
                    alias: host.to_string(),
                    address: addr.to_string(),
                    host_name: paired.host_name.clone(),
                    fingerprint: Fingerprint(paired.host_fp).to_hex(),
                })?;
                let _ = ctl.send.finish();
                connection.close(CLOSE_DONE.into(), b"paired");
                println!(
                    "paired with {} ({}), fingerprint {}",
                    paired.host_name,
                    addr,
                    Fingerprint(paired.host_fp).short()
                );
                return Ok(());
            }
            Err(PairingError::WrongPin) => {
                connection.close(close::PAIRING_FAILED.into(), b"wrong pin");
                bail!(
                    "wrong PIN: the host's pairing window is closed now; run `punktfunkctl pair` \
                     on the host again"
                );
            }
            Err(e) => {
                connection.close(close::PAIRING_FAILED.into(), b"pairing failed");
                bail!(pairing_failed(&e));
            }
        }
    }
}

/// A failed ceremony in words: a refusal says so itself ("the host refused pairing: …"),
/// anything else gets the "pairing failed" context once.
fn pairing_failed(e: &PairingError) -> String {
    match e {
        PairingError::Rejected(_) => e.to_string(),
        other => format!("pairing failed: {other}"),
    }
}

fn data_socket(remote: SocketAddr) -> anyhow::Result<UdpSocket> {
    let bind = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).context("cannot open the data-plane socket")?;
    // Grown before Hello: the host streams right after Welcome, and a keyframe is larger than
    // the default receive buffer (the receive loop starts a moment later).
    use std::os::fd::AsRawFd;
    let _ = punktfunk_dataplane::sys::grow_buffer(
        socket.as_raw_fd(),
        punktfunk_dataplane::sys::BufferDir::Receive,
        32 << 20,
    );
    Ok(socket)
}

/// A connected, welcomed session.
pub struct Open {
    pub connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    pub ctl: Control,
    pub session: ClientSession,
    pub welcome: Welcome,
    pub socket: UdpSocket,
    pub host_verified: bool,
    /// CLOCK_MONOTONIC ns when connecting began (the zero of `first_frame_ms`).
    pub connect_started_ns: u64,
}

/// What the `Hello` asks for.
pub struct Ask<'a> {
    pub mode: Mode,
    pub bitrate: u32,
    pub probe_only: bool,
    pub audio: bool,
    pub codecs: &'a [Codec],
    /// The pads we bring (`Hello.gamepads`).
    pub gamepads: &'a [GamepadKind],
    /// The app to run in our output, by title (`Hello.app`; `None`: the desktop).
    pub app: Option<&'a str>,
    /// The compositor to run our output in (`Hello.compositor`; `None`: the app's or the
    /// host's default).
    pub compositor: Option<&'a str>,
}

impl Open {
    /// The data plane the Welcome configured.
    pub fn data_plane(&self) -> anyhow::Result<DataPlaneConfig> {
        self.session
            .data_plane()
            .copied()
            .context("the host sent no data-plane configuration")
    }

    /// The key of the host's data plane (from the TLS exporter, [`punktfunk_quic::export_key`]).
    pub fn key(&self) -> anyhow::Result<SessionKey> {
        Ok(punktfunk_quic::export_key(
            &self.connection,
            self.welcome.session_id,
            Direction::HostToClient,
        )?)
    }
}

/// Connects (pinning the host when this client paired with it), sends `Hello` and waits for
/// the `Welcome`: the first step of `stream` and `speed-test`.
pub async fn open_session(
    dir: &Path,
    name: &str,
    host: &str,
    ask: Ask<'_>,
) -> Result<Open, ClientError> {
    let identity = Identity::load_or_create(dir, "client", name).map_err(anyhow::Error::from)?;
    let addr = conn::resolve(host)?;
    let known = KnownHosts::open(dir)?;
    let pinned = known.find(host, &addr.to_string()).map(|(fp, _)| fp);
    let connect_started_ns = now_ns();
    let (endpoint, connection) = conn::connect(addr, &identity, pinned).await?;
    let socket = data_socket(addr)?;
    let data_port = socket
        .local_addr()
        .context("the data-plane socket has no address")?
        .port();
    let mut session = ClientSession::new(request(name, ask, data_port));
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&session.hello()).await?;
    let welcome = await_welcome(&mut ctl, &mut session).await?;
    if pinned.is_none() {
        tracing::warn!(
            "streaming from a host this client has not paired with: its identity is not verified"
        );
    }
    Ok(Open {
        connection,
        _endpoint: endpoint,
        ctl,
        session,
        welcome,
        socket,
        host_verified: pinned.is_some(),
        connect_started_ns,
    })
}

/// What the `Hello` says: `ask`, and where the data plane should go.
fn request(name: &str, ask: Ask<'_>, data_port: u16) -> ClientRequest {
    ClientRequest {
        name: name.to_string(),
        mode: ask.mode,
        codecs: ask.codecs.to_vec(),
        bitrate_kbps: ask.bitrate,
        // The host's format for the native client: 48 kHz stereo Opus in 5 ms packets.
        audio: ask.audio.then_some(AudioConfig {
            enabled: true,
            channels: punktfunk_proto::limits::AUDIO_CHANNELS,
            sample_rate: punktfunk_proto::limits::AUDIO_RATE,
        }),
        data_port,
        compositor: ask.compositor.map(str::to_string),
        app: ask.app.map(str::to_string),
        probe_only: ask.probe_only,
        gamepads: ask.gamepads.to_vec(),
    }
}

/// The host's answer to `Hello`: its `Welcome`, or its refusal with the host's code.
async fn await_welcome(
    ctl: &mut Control,
    session: &mut ClientSession,
) -> Result<Welcome, ClientError> {
    loop {
        let msg = ctl
            .reply("the session request")
            .await?
            .ok_or("the host closed the session without answering")?;
        let mut welcomed = None;
        // Every action of the batch counts: the first clock probe follows the Welcome.
        for action in session
            .on_message(now_ns(), msg)
            .map_err(|e| format!("protocol error from the host: {e}"))?
        {
            match action {
                ClientAction::Welcomed(welcome) => welcomed = Some(welcome),
                ClientAction::Closed { reason, code } => {
                    return Err(ClientError::coded(
                        format!("the host refused the session: {reason}"),
                        code,
                    ));
                }
                ClientAction::Send(m) => ctl.send(&m).await?,
                _ => {}
            }
        }
        if let Some(welcome) = welcomed {
            return Ok(welcome);
        }
    }
}

/// Parses a `--gamepads` item: `xbox` or `dualsense`.
pub fn parse_gamepad(s: &str) -> anyhow::Result<GamepadKind> {
    match s.trim().to_ascii_lowercase().as_str() {
        "xbox" => Ok(GamepadKind::Xbox),
        "dualsense" | "ds" | "ps5" => Ok(GamepadKind::Dualsense),
        other => anyhow::bail!("unknown gamepad `{other}`: xbox or dualsense"),
    }
}

/// The codecs this client decodes, most preferred first.
pub const DEFAULT_CODECS: [Codec; 2] = [Codec::Hevc, Codec::H264];

/// Parses `--codec`: `h264` or `hevc` (also `h265`) asks for that codec only.
pub fn parse_codec(s: &str) -> anyhow::Result<Codec> {
    match s.to_ascii_lowercase().as_str() {
        "h264" | "avc" => Ok(Codec::H264),
        "hevc" | "h265" => Ok(Codec::Hevc),
        _ => Err(anyhow!("codec `{s}` is not h264 or hevc")),
    }
}

/// `speed-test`: the host sends probe packets at `kbps` for `ms`; prints what arrived.
pub async fn speed_test(
    dir: &Path,
    name: &str,
    host: &str,
    kbps: u32,
    ms: u32,
    json: bool,
) -> anyhow::Result<()> {
    let mode = Mode {
        width: 1280,
        height: 720,
        refresh_mhz: 60_000,
    };
    let ask = Ask {
        mode,
        bitrate: kbps.clamp(MIN_BITRATE_KBPS, MAX_BITRATE_KBPS),
        probe_only: true,
        audio: false,
        codecs: &DEFAULT_CODECS,
        gamepads: &[],
        app: None,
        compositor: None,
    };
    let mut open = open_session(dir, name, host, ask).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let receiver = probe_receiver(&open, bytes.clone())?;
    let req = open
        .session
        .probe_request(kbps, ms)
        .context("a probe is already running")?;
    open.ctl.send(&req).await?;
    let result = await_probe_result(&mut open, ms).await?;
    // The last packets may still be in flight behind the result.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rx, _) = tokio::task::spawn_blocking(move || receiver.shutdown()).await?;
    let _ = open
        .ctl
        .send(&open.session.goodbye("speed test done"))
        .await;
    let _ = open.ctl.send.finish();
    open.connection.close(CLOSE_DONE.into(), b"done");
    let duration_ms = result.duration_ms.max(1);
    let goodput = bytes.load(Ordering::Relaxed) as f64 * 8.0 / (f64::from(duration_ms) / 1e3) / 1e6;
    let report = SpeedReport {
        host: host.to_string(),
        target_kbps: kbps,
        duration_ms,
        packets_sent: result.packets_sent,
        packets_received: rx.datagrams,
        loss_percent: if result.packets_sent == 0 {
            0.0
        } else {
            100.0 * (1.0 - (rx.datagrams as f64 / result.packets_sent as f64).min(1.0))
        },
        send_drops: result.send_drops,
        goodput_mbps: goodput,
        percent_of_target: 100.0 * goodput * 1e3 / f64::from(kbps.max(1)),
    };
    print_speed(&report, json)
}

/// The probe stream's receiver: counts the bytes of every probe frame into `bytes`.
fn probe_receiver(open: &Open, bytes: Arc<AtomicU64>) -> anyhow::Result<Receiver> {
    let socket = open
        .socket
        .try_clone()
        .context("cannot share the data-plane socket")?;
    let cfg = ReceiverConfig::new(StreamKind::Probe, open.data_plane()?, open.key()?);
    Receiver::spawn(socket, &cfg, move |ev| {
        if let RxEvent::Frame(f) = ev {
            bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
        }
    })
    .context("cannot start the receiver")
}

/// The host's result of the probe of `ms` milliseconds.
async fn await_probe_result(open: &mut Open, ms: u32) -> anyhow::Result<ProbeResult> {
    let probe_wait = Duration::from_millis(u64::from(ms)) + conn::REPLY_TIMEOUT;
    loop {
        let msg = open
            .ctl
            .reply_within(probe_wait, "the bandwidth probe")
            .await?
            .context("the host closed the session during the probe")?;
        let mut got = None;
        for a in open
            .session
            .on_message(now_ns(), msg)
            .map_err(|e| anyhow!("protocol error: {e}"))?
        {
            match a {
                ClientAction::Send(m) => open.ctl.send(&m).await?,
                ClientAction::ProbeResult(r) => got = Some(r),
                ClientAction::Closed { reason, .. } => {
                    bail!("the host ended the session: {reason}");
                }
                _ => {}
            }
        }
        if let Some(r) = got {
            return Ok(r);
        }
    }
}

fn print_speed(report: &SpeedReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).context("cannot encode the report")?
        );
    } else {
        println!(
            "speed test to {}: target {} kbit/s for {} ms → goodput {:.1} Mbit/s ({:.1} % of target), loss {:.2} %, send drops {}",
            report.host,
            report.target_kbps,
            report.duration_ms,
            report.goodput_mbps,
            report.percent_of_target,
            report.loss_percent,
            report.send_drops
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{self, Behaviour};
    use punktfunk_control::error::CODE_PAIRING_REQUIRED;

    #[test]
    fn modes_parse() {
        let m = super::parse_mode("1920x1080@59.94").unwrap();
        assert_eq!((m.width, m.height, m.refresh_mhz), (1920, 1080, 59_940));
        assert!(super::parse_mode("1920x1080").is_err());
        assert!(super::parse_mode("axb@60").is_err());
    }

    /// A test never waits long for an answer that does not come.
    const LIVENESS: Duration = Duration::from_secs(15);

    fn ask() -> Ask<'static> {
        Ask {
            mode: parse_mode("1280x720@60").unwrap(),
            bitrate: 20_000,
            probe_only: false,
            audio: false,
            codecs: &DEFAULT_CODECS,
            gamepads: &[],
            app: None,
            compositor: None,
        }
    }

    /// The error of a session request to a test host that behaves so (within [`LIVENESS`]).
    async fn session_error_from(behaviour: Behaviour) -> ClientError {
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(&dir.path().join("host"), behaviour);
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let opened = open_session(&client, "deck", &addr, ask());
        match tokio::time::timeout(LIVENESS, opened)
            .await
            .expect("the client gave up by itself")
        {
            Ok(_) => panic!("{behaviour:?} is not a session"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn pairing_gives_up_on_a_host_that_does_not_answer() {
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(&dir.path().join("host"), Behaviour::Silent);
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let attempt = pair_within(&client, "deck", "123456", &addr, Duration::from_millis(500));
        let err = tokio::time::timeout(LIVENESS, attempt)
            .await
            .expect("the client gave up by itself")
            .expect_err("no answer is no pairing");
        let err = format!("{err:#}");
        assert!(
            err.contains("did not answer the pairing request within 0.5 s"),
            "{err}"
        );
        assert!(
            err.contains("punktfunkctl status"),
            "says what to do: {err}"
        );
    }

    #[tokio::test]
    async fn a_host_that_only_closes_is_reported_with_its_reason_and_code() {
        // The host refuses and closes; its Error message never arrived, its close frame did.
        let err = session_error_from(Behaviour::Close(2, "pairing required")).await;
        assert_eq!(err.code.as_deref(), Some(CODE_PAIRING_REQUIRED), "{err}");
        assert!(
            err.message.contains("pairing required") && err.message.contains("punktfunkctl pair"),
            "{err}"
        );
        assert!(!err.message.contains("connection lost"), "{err}");
    }

    #[tokio::test]
    async fn a_session_refusal_by_close_code_5_is_reported_as_refused() {
        // The host's session refusals (media refused the mode, encoders busy, media
        // unavailable) close with code 5; the close frame may overtake the coded Error.
        let err = session_error_from(Behaviour::Close(5, "media refused 7680x4320@240")).await;
        assert_eq!(err.code.as_deref(), Some("refused"), "{err}");
        assert_eq!(
            err.message,
            "the host closed the connection: media refused 7680x4320@240 (refused)"
        );
    }

    #[tokio::test]
    async fn an_oversized_control_message_is_malformed_and_never_waited_for() {
        // A length prefix of 1 GiB: the shared bounded reader (punktfunk-quic) refuses it as
        // soon as the varint shows it, instead of waiting for (or allocating) the body.
        let err = session_error_from(Behaviour::Send(&[0x80, 0x80, 0x80, 0x80, 0x04])).await;
        assert!(
            err.message.starts_with("malformed message from the host: ")
                && err.message.contains("exceeds the limit of 65536 bytes"),
            "{err}"
        );
        assert_eq!(err.code, None, "{err}");
    }

    #[tokio::test]
    async fn a_pairing_refused_by_a_close_frame_shows_the_hosts_reason() {
        let dir = tempfile::tempdir().unwrap();
        let host = testhost::start(
            &dir.path().join("host"),
            Behaviour::Close(4, "pairing not armed"),
        );
        let (client, addr) = (dir.path().join("client"), host.addr.to_string());
        let attempt = pair(&client, "deck", "123456", &addr);
        let err = tokio::time::timeout(LIVENESS, attempt)
            .await
            .expect("an answer")
            .expect_err("refused");
        let err = format!("{err:#}");
        assert!(
            err.contains("the host closed the connection: pairing not armed (pairing-failed)"),
            "{err}"
        );
    }

    #[test]
    fn a_pairing_refusal_is_named_once() {
        let refused = PairingError::Rejected("pairing is not armed on the host".into());
        assert_eq!(
            pairing_failed(&refused),
            "the host refused pairing: pairing is not armed on the host"
        );
        assert_eq!(
            pairing_failed(&PairingError::Finished),
            "pairing failed: this pairing attempt is already finished"
        );
    }

    #[test]
    fn codecs_parse() {
        use punktfunk_proto::common::Codec;
        assert_eq!(super::parse_codec("H264").ok(), Some(Codec::H264));
        assert_eq!(super::parse_codec("h265").ok(), Some(Codec::Hevc));
        assert!(super::parse_codec("av1").is_err());
    }
}
