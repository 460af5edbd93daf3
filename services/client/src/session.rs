//! The client's commands: discover, pair, stream, speed-test.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use punktfunk_control::client::{ClientAction, ClientRequest, ClientSession};
use punktfunk_control::clock::ClockEstimate;
use punktfunk_control::keys::{self, Direction};
use punktfunk_control::pairing::{PairingClient, PairingClientStep, PairingError};
use punktfunk_dataplane::{Receiver, ReceiverConfig, RxEvent};
use punktfunk_proto::common::{Codec, Mode};
use punktfunk_proto::control::{ClientMessage, Stats, Welcome};
use punktfunk_tls::{Fingerprint, Identity, peer_fingerprint};
use punktfunk_wire::StreamKind;
use punktfunk_wire::au::AuTiming;

use crate::conn::{self, Control};
use crate::known_hosts::{KnownHost, KnownHosts};
use crate::report::{self, SpeedReport, StreamReport};

use punktfunk_dataplane::sys::monotonic_ns as now_ns;

/// Parses `WxH@Hz` (Hz may have decimals: `1920x1080@59.94`).
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    let bad = || format!("mode `{s}` is not WxH@Hz (e.g. 1280x720@60)");
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

pub async fn discover(timeout_ms: u64, json: bool) -> Result<(), String> {
    let timeout = Duration::from_millis(timeout_ms);
    let hosts = tokio::task::spawn_blocking(move || punktfunk_discovery::browse(timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("mDNS browse failed: {e}"))?;
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

pub async fn pair(dir: &Path, name: &str, pin: &str, host: &str) -> Result<(), String> {
    punktfunk_control::pairing::validate_pin(pin).map_err(|e| e.to_string())?;
    let identity = Identity::load_or_create(dir, "client", name).map_err(|e| e.to_string())?;
    let addr = conn::resolve(host)?;
    // Unpinned on purpose: the ceremony itself authenticates the host's fingerprint.
    let (_endpoint, connection) = conn::connect(addr, &identity, None).await?;
    let host_fp = peer_fingerprint(&connection).ok_or("the host presented no certificate")?;
    let (mut machine, start) = PairingClient::start(pin, name, identity.fingerprint.0, host_fp.0)
        .map_err(|e| e.to_string())?;
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&PairingClient::start_message(start)).await?;
    loop {
        let msg = ctl
            .next()
            .await?
            .ok_or("the host closed the pairing stream without an answer")?;
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
                connection.close(0u32.into(), b"paired");
                println!(
                    "paired with {} ({}), fingerprint {}",
                    paired.host_name,
                    addr,
                    Fingerprint(paired.host_fp).short()
                );
                return Ok(());
            }
            Err(PairingError::WrongPin) => {
                connection.close(4u32.into(), b"wrong pin");
                return Err("wrong PIN: the host's pairing window is closed now; run `punktfunkctl pair` on the host again".into());
            }
            Err(e) => {
                connection.close(4u32.into(), b"pairing failed");
                return Err(format!("pairing failed: {e}"));
            }
        }
    }
}

/// One received frame as the verifier thread sees it.
struct RxRecord {
    index: u64,
    data: Vec<u8>,
    first_arrival_ns: u64,
    delivered_ns: u64,
}

/// What the verifier thread found.
#[derive(Default)]
struct Verified {
    frames: u64,
    ok: u64,
    failures: u64,
    bytes: u64,
    first_delivered_ns: Option<u64>,
    /// (timing, first arrival, delivered) per verified frame, bounded.
    samples: Vec<(AuTiming, u64, u64)>,
}

const MAX_SAMPLES: usize = 1 << 20;

fn spawn_verifier(rx: mpsc::Receiver<RxRecord>) -> std::thread::JoinHandle<Verified> {
    std::thread::spawn(move || {
        let mut v = Verified::default();
        for r in rx {
            v.frames += 1;
            v.bytes += r.data.len() as u64;
            v.first_delivered_ns.get_or_insert(r.delivered_ns);
            match AuTiming::parse(&r.data) {
                Ok((timing, au)) => match punktfunk_wire::synthetic::verify(r.index, au) {
                    Ok(()) => {
                        v.ok += 1;
                        if v.samples.len() < MAX_SAMPLES {
                            v.samples.push((timing, r.first_arrival_ns, r.delivered_ns));
                        }
                    }
                    Err(e) => {
                        v.failures += 1;
                        tracing::warn!(index = r.index, error = %e, "frame failed verification");
                    }
                },
                Err(e) => {
                    v.failures += 1;
                    tracing::warn!(index = r.index, error = %e, "frame has no valid AU envelope");
                }
            }
        }
        v
    })
}

fn data_socket(remote: SocketAddr) -> Result<UdpSocket, String> {
    let bind = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket =
        UdpSocket::bind(bind).map_err(|e| format!("cannot open the data-plane socket: {e}"))?;
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

fn export_key(
    connection: &quinn::Connection,
    session_id: u64,
) -> Result<punktfunk_wire::SessionKey, String> {
    let mut material = [0u8; keys::KEY_MATERIAL_LEN];
    connection
        .export_keying_material(
            &mut material,
            Direction::HostToClient.exporter_label(),
            &keys::exporter_context(session_id),
        )
        .map_err(|_| "TLS exporter failed".to_string())?;
    keys::session_key_from_material(&material).map_err(|e| format!("key material: {e:?}"))
}

/// A connected, welcomed session.
struct Open {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    ctl: Control,
    session: ClientSession,
    welcome: Welcome,
    socket: UdpSocket,
    host_verified: bool,
    /// CLOCK_MONOTONIC ns when connecting began (the zero of `first_frame_ms`).
    connect_started_ns: u64,
}

async fn open_session(
    dir: &Path,
    name: &str,
    host: &str,
    mode: Mode,
    bitrate: u32,
    probe_only: bool,
) -> Result<Open, String> {
    let identity = Identity::load_or_create(dir, "client", name).map_err(|e| e.to_string())?;
    let addr = conn::resolve(host)?;
    let known = KnownHosts::open(dir)?;
    let pinned = known.find(host, &addr.to_string()).map(|(fp, _)| fp);
    let connect_started_ns = now_ns();
    let (endpoint, connection) = conn::connect(addr, &identity, pinned).await?;
    let socket = data_socket(addr)?;
    let data_port = socket.local_addr().map_err(|e| e.to_string())?.port();
    let mut session = ClientSession::new(ClientRequest {
        name: name.to_string(),
        mode,
        codecs: vec![Codec::Hevc, Codec::H264],
        bitrate_kbps: bitrate,
        audio: None,
        data_port,
        compositor: None,
        probe_only,
    });
    let mut ctl = Control::open(&connection).await?;
    ctl.send(&session.hello()).await?;
    loop {
        let msg = ctl
            .next()
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
                    return Err(match code.as_deref() {
                        Some("pairing-required") => format!("refused: {reason}"),
                        _ => format!("the host ended the session: {reason}"),
                    });
                }
                ClientAction::Send(m) => ctl.send(&m).await?,
                _ => {}
            }
        }
        if let Some(welcome) = welcomed {
            if pinned.is_none() {
                tracing::warn!(
                    "streaming from a host this client has not paired with: its identity is not verified"
                );
            }
            return Ok(Open {
                connection,
                _endpoint: endpoint,
                ctl,
                session,
                welcome,
                socket,
                host_verified: pinned.is_some(),
                connect_started_ns,
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn stream(
    dir: &Path,
    name: &str,
    host: &str,
    duration: f64,
    mode: Mode,
    bitrate: u32,
    json: bool,
) -> Result<(), String> {
    let mut open = open_session(dir, name, host, mode, bitrate, false).await?;
    let data_plane = *open
        .session
        .data_plane()
        .ok_or("the host sent no data-plane configuration")?;
    let key = export_key(&open.connection, open.welcome.session_id)?;
    let (frames_tx, frames_rx) = mpsc::sync_channel::<RxRecord>(1024);
    let verifier = spawn_verifier(frames_rx);
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let lost = Arc::new(AtomicU64::new(0));
    let overflow = Arc::new(AtomicU64::new(0));
    let (lost2, overflow2) = (lost.clone(), overflow.clone());
    let socket = open.socket.try_clone().map_err(|e| e.to_string())?;
    let receiver = Receiver::spawn(
        socket,
        &ReceiverConfig::new(StreamKind::Video, data_plane, key),
        move |ev| match ev {
            RxEvent::Frame(f) => {
                let rec = RxRecord {
                    index: f.index,
                    data: f.data.to_vec(),
                    first_arrival_ns: f.first_arrival_ns,
                    delivered_ns: f.delivered_ns,
                };
                if frames_tx.try_send(rec).is_err() {
                    overflow2.fetch_add(1, Ordering::Relaxed);
                }
            }
            RxEvent::Lost { index, .. } => {
                lost2.fetch_add(1, Ordering::Relaxed);
                let _ = lost_tx.send(index);
            }
            RxEvent::Skipped { first, count, .. } => {
                lost2.fetch_add(count, Ordering::Relaxed);
                let _ = lost_tx.send(first);
            }
        },
    )
    .map_err(|e| format!("cannot start the receiver: {e}"))?;

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(duration.max(0.0));
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut clock: Option<ClockEstimate> = None;
    let mut keyframe_requests = 0u64;
    let end: Result<(), String> = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break Ok(()),
            m = open.ctl.next() => {
                let msg = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => break Err("the host closed the session".into()),
                    Err(e) => break Err(e),
                };
                let actions = match open.session.on_message(now_ns(), msg) {
                    Ok(a) => a,
                    Err(e) => break Err(format!("protocol error from the host: {e}")),
                };
                let mut closed = None;
                for a in actions {
                    match a {
                        ClientAction::Send(m) => { let _ = open.ctl.send(&m).await; }
                        ClientAction::ClockSynced(c) => clock = Some(c),
                        ClientAction::Closed { reason, .. } => closed = Some(reason),
                        _ => {}
                    }
                }
                if let Some(r) = closed {
                    break Err(format!("the host ended the session: {r}"));
                }
            }
            Some(index) = lost_rx.recv() => {
                keyframe_requests += 1;
                let _ = open.ctl.send(&open.session.keyframe_request(index)).await;
            }
            _ = stats_tick.tick() => {
                let s = receiver.stats();
                let stats = Stats {
                    frames_received: s.wire.frames_completed,
                    frames_lost: lost.load(Ordering::Relaxed),
                    fec_recovered_shards: s.wire.recovered_shards,
                    bytes_received: s.bytes,
                    ..Default::default()
                };
                let _ = open.ctl.send(&open.session.stats(stats)).await;
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let goodbye: ClientMessage = open.session.goodbye("done");
    let _ = open.ctl.send(&goodbye).await;
    let _ = open.ctl.send.finish();
    let (rx_stats, _) = receiver.stop();
    let verified = verifier
        .join()
        .map_err(|_| "the verifier thread panicked")?;
    open.connection.close(0u32.into(), b"done");
    end?;

    let offset = clock.or_else(|| open.session.clock());
    let est = offset.unwrap_or(ClockEstimate {
        offset_ns: 0,
        rtt_ns: 0,
    });
    let us = |a: u64, b: u64| (a as f64 - b as f64) / 1e3;
    let mut stages: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for (t, first_arrival, delivered) in &verified.samples {
        let captured = est.to_client_time(t.captured_ns);
        let handed = est.to_client_time(t.handed_ns);
        stages
            .entry("encode")
            .or_default()
            .push(us(t.encode_end_ns, t.encode_start_ns));
        stages
            .entry("capture_to_handed")
            .or_default()
            .push(us(t.handed_ns, t.captured_ns));
        stages
            .entry("handed_to_first_packet")
            .or_default()
            .push(us(*first_arrival, handed));
        stages
            .entry("first_packet_to_reassembled")
            .or_default()
            .push(us(*delivered, *first_arrival));
        stages
            .entry("capture_to_reassembled")
            .or_default()
            .push(us(*delivered, captured));
    }
    let latency_us = stages
        .into_iter()
        .filter_map(|(k, mut v)| report::stage(&mut v).map(|s| (k, s)))
        .collect();
    let first_frame_ms = verified
        .first_delivered_ns
        .map(|d| d.saturating_sub(open.connect_started_ns) as f64 / 1e6);
    let report = StreamReport {
        host: host.to_string(),
        mode: format!(
            "{}x{}@{}",
            mode.width,
            mode.height,
            f64::from(mode.refresh_mhz) / 1000.0
        ),
        bitrate_kbps: open.welcome.bitrate_kbps,
        duration_s: elapsed,
        frames_received: verified.frames,
        frames_verified: verified.ok,
        verify_failures: verified.failures + overflow.load(Ordering::Relaxed),
        frames_lost: lost.load(Ordering::Relaxed),
        keyframe_requests,
        fec_recovered_shards: rx_stats.wire.recovered_shards,
        goodput_mbps: verified.bytes as f64 * 8.0 / elapsed.max(1e-9) / 1e6,
        first_frame_ms,
        skew_corrected: offset.is_some(),
        clock_offset_us: offset.map(|c| c.offset_ns as f64 / 1e3),
        clock_rtt_us: offset.map(|c| c.rtt_ns as f64 / 1e3),
        decoded_frames: None,
        host_verified: open.host_verified,
        latency_us,
    };
    print_stream(&report, json);
    Ok(())
}

fn print_stream(r: &StreamReport, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
        return;
    }
    println!(
        "host {}  {}  {} kbit/s  {:.1} s",
        r.host, r.mode, r.bitrate_kbps, r.duration_s
    );
    println!(
        "frames {} received, {} verified, {} failed, {} lost ({} keyframe requests), {} shards recovered by FEC",
        r.frames_received,
        r.frames_verified,
        r.verify_failures,
        r.frames_lost,
        r.keyframe_requests,
        r.fec_recovered_shards
    );
    println!(
        "goodput {:.2} Mbit/s, first frame {} ms, clock {}",
        r.goodput_mbps,
        r.first_frame_ms
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".into()),
        match (r.clock_offset_us, r.clock_rtt_us) {
            (Some(o), Some(rtt)) => format!("offset {o:.1} µs (rtt {rtt:.1} µs)"),
            _ => "not synchronised".into(),
        }
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "latency (µs)", "p50", "p99", "max"
    );
    for (k, s) in &r.latency_us {
        println!("{k:<30} {:>10.1} {:>10.1} {:>10.1}", s.p50, s.p99, s.max);
    }
}

pub async fn speed_test(
    dir: &Path,
    name: &str,
    host: &str,
    kbps: u32,
    ms: u32,
    json: bool,
) -> Result<(), String> {
    let mode = Mode {
        width: 1280,
        height: 720,
        refresh_mhz: 60_000,
    };
    let mut open = open_session(dir, name, host, mode, kbps.clamp(500, 2_000_000), true).await?;
    let data_plane = *open
        .session
        .data_plane()
        .ok_or("the host sent no data-plane configuration")?;
    let key = export_key(&open.connection, open.welcome.session_id)?;
    let bytes = Arc::new(AtomicU64::new(0));
    let b2 = bytes.clone();
    let socket = open.socket.try_clone().map_err(|e| e.to_string())?;
    let receiver = Receiver::spawn(
        socket,
        &ReceiverConfig::new(StreamKind::Probe, data_plane, key),
        move |ev| {
            if let RxEvent::Frame(f) = ev {
                b2.fetch_add(f.data.len() as u64, Ordering::Relaxed);
            }
        },
    )
    .map_err(|e| format!("cannot start the receiver: {e}"))?;
    let req = open
        .session
        .probe_request(kbps, ms)
        .ok_or("a probe is already running")?;
    open.ctl.send(&req).await?;
    let result = loop {
        let msg = open
            .ctl
            .next()
            .await?
            .ok_or("the host closed the session during the probe")?;
        let mut got = None;
        for a in open
            .session
            .on_message(now_ns(), msg)
            .map_err(|e| format!("protocol error: {e}"))?
        {
            match a {
                ClientAction::Send(m) => open.ctl.send(&m).await?,
                ClientAction::ProbeResult(r) => got = Some(r),
                ClientAction::Closed { reason, .. } => {
                    return Err(format!("the host ended the session: {reason}"));
                }
                _ => {}
            }
        }
        if let Some(r) = got {
            break r;
        }
    };
    // The last packets may still be in flight behind the result.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rx, _) = receiver.stop();
    let _ = open
        .ctl
        .send(&open.session.goodbye("speed test done"))
        .await;
    let _ = open.ctl.send.finish();
    open.connection.close(0u32.into(), b"done");
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
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
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
    #[test]
    fn modes_parse() {
        let m = super::parse_mode("1920x1080@59.94").unwrap();
        assert_eq!((m.width, m.height, m.refresh_mhz), (1920, 1080, 59_940));
        assert!(super::parse_mode("1920x1080").is_err());
        assert!(super::parse_mode("axb@60").is_err());
    }
}
