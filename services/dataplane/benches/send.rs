//! Send-side cost of the data plane: thread CPU time per frame for FEC + seal + send, and the
//! goodput reached on loopback, for 16 KiB, 256 KiB, 1 MiB and 4 MiB frames, with
//! (a) sendmmsg, (b) UDP GSO, and (c) a naive baseline in the same run: the same packetize,
//! then one `send()` per packet.
//!
//! Method: for each frame size the three variants run back to back (interleaved by size, so
//! machine noise hits all three alike). Frames are sent back to back (pacing off) from this
//! thread through `SendPipeline::send_frame` (baseline: `Packetizer::packetize` + `send`);
//! CPU is `CLOCK_THREAD_CPUTIME_ID` around packetize and around the send calls. A
//! `Receiver` on its own thread (the other core) authenticates and reassembles everything;
//! goodput = AU bytes of frames it completed ÷ (last completion − first send). Data-plane
//! config: 1200-byte shards, ≤ 1024 data shards per block (1 MiB = one block), 20 % parity.
//!
//! `cargo bench -p punktfunk-dataplane --bench send`

use punktfunk_dataplane::sys::{monotonic_ns, thread_cpu_ns};
use punktfunk_dataplane::{
    ModeChoice, Receiver, ReceiverConfig, ReceiverStats, RxEvent, SendMode, SendPipeline,
    SenderConfig,
};
use punktfunk_wire::synthetic::fill;
use punktfunk_wire::{DataPlaneConfig, PacketBatch, Packetizer, SessionKey, StreamKind};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Naive,
    Mmsg,
    Gso,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Naive => "naive send()",
            Variant::Mmsg => "sendmmsg",
            Variant::Gso => "GSO",
        }
    }
}

struct Row {
    size: usize,
    variant: Variant,
    mode: Option<SendMode>,
    frames: usize,
    cpu_p50_us: f64,
    cpu_mean_us: f64,
    pk_mean_us: f64,
    send_mean_us: f64,
    per_packet_send_ns: f64,
    goodput_mbit: f64,
    delivered: u64,
    send_drops: u64,
    rx_datagrams: u64,
    sent_packets: u64,
    rx_cpu_per_datagram_ns: f64,
}

fn key() -> SessionKey {
    SessionKey {
        key: *b"bench-key-16byte",
        salt: *b"salt",
    }
}

fn dp() -> DataPlaneConfig {
    DataPlaneConfig {
        parity_permille: 200,
        frames_in_flight: 8,
        ..DataPlaneConfig::default()
    }
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn run(size: usize, frames: usize, variant: Variant) -> Row {
    let rx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
    let tx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    tx_sock
        .connect(rx_sock.local_addr().expect("addr"))
        .expect("connect");
    let delivered = Arc::new(AtomicU64::new(0));
    let delivered_bytes = Arc::new(AtomicU64::new(0));
    let last_done = Arc::new(AtomicU64::new(0));
    let (d2, b2, l2) = (
        delivered.clone(),
        delivered_bytes.clone(),
        last_done.clone(),
    );
    let rcfg = ReceiverConfig::new(StreamKind::Video, dp(), key());
    let receiver = Receiver::spawn(rx_sock, &rcfg, move |ev| {
        if let RxEvent::Frame(f) = ev {
            d2.fetch_add(1, Relaxed);
            b2.fetch_add(f.data.len() as u64, Relaxed);
            l2.store(f.delivered_ns, Relaxed);
        }
    })
    .expect("receiver");

    let mut au = Vec::new();
    let mut cpu = Vec::with_capacity(frames);
    let (mut pk_sum, mut send_sum, mut packets, mut drops) = (0u64, 0u64, 0u64, 0u64);
    let mut mode = None;
    let start;
    match variant {
        Variant::Naive => {
            let mut pz = Packetizer::new(dp(), &key(), StreamKind::Video).expect("packetizer");
            let mut batch = PacketBatch::for_config(&dp());
            start = monotonic_ns();
            for i in 0..frames {
                fill(i as u64, size, &mut au);
                let c0 = thread_cpu_ns();
                let s = pz
                    .packetize(i as u64, i == 0, &au, &mut batch)
                    .expect("packetize");
                let c1 = thread_cpu_ns();
                for p in batch.iter() {
                    if tx_sock.send(p).is_err() {
                        drops += 1;
                    }
                }
                let c2 = thread_cpu_ns();
                packets += u64::from(s.packets);
                pk_sum += c1 - c0;
                send_sum += c2 - c1;
                cpu.push(c2 - c0);
            }
        }
        Variant::Mmsg | Variant::Gso => {
            let mut cfg = SenderConfig::new(dp(), key(), StreamKind::Video);
            cfg.options.pacing = None;
            cfg.options.mode = if variant == Variant::Gso {
                ModeChoice::Gso
            } else {
                ModeChoice::Sendmmsg
            };
            let mut p = match SendPipeline::new(tx_sock, &cfg) {
                Ok(p) => p,
                Err(e) => {
                    println!("{} unavailable: {e}", variant.name());
                    return Row {
                        size,
                        variant,
                        mode: None,
                        frames: 0,
                        cpu_p50_us: 0.0,
                        cpu_mean_us: 0.0,
                        pk_mean_us: 0.0,
                        send_mean_us: 0.0,
                        per_packet_send_ns: 0.0,
                        goodput_mbit: 0.0,
                        delivered: 0,
                        send_drops: 0,
                        rx_datagrams: 0,
                        sent_packets: 0,
                        rx_cpu_per_datagram_ns: 0.0,
                    };
                }
            };
            mode = Some(p.mode());
            start = monotonic_ns();
            for i in 0..frames {
                fill(i as u64, size, &mut au);
                let r = p.send_frame(i as u64, i == 0, &au).expect("send");
                packets += u64::from(r.sent_packets);
                pk_sum += r.packetize_cpu_ns;
                send_sum += r.send_cpu_ns;
                cpu.push(r.cpu_ns());
            }
            drops = p.stats().send_drop_packets;
            mode = Some(p.stats().mode).or(mode);
        }
    }
    // Let the receiver finish (it is done when nothing arrives for 200 ms).
    let mut last = (monotonic_ns(), u64::MAX);
    loop {
        let s: ReceiverStats = receiver.stats();
        let n = s.datagrams + s.wire.frames_lost;
        let now = monotonic_ns();
        if n != last.1 {
            last = (now, n);
        }
        if delivered.load(Relaxed) as usize >= frames || now - last.0 > 200_000_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (rs, _) = receiver.stop();
    let n = frames as f64;
    let span = last_done.load(Relaxed).saturating_sub(start).max(1);
    Row {
        size,
        variant,
        mode,
        frames,
        cpu_p50_us: quantile(&mut cpu, 0.5) as f64 / 1e3,
        cpu_mean_us: cpu.iter().sum::<u64>() as f64 / n / 1e3,
        pk_mean_us: pk_sum as f64 / n / 1e3,
        send_mean_us: send_sum as f64 / n / 1e3,
        per_packet_send_ns: send_sum as f64 / packets.max(1) as f64,
        goodput_mbit: delivered_bytes.load(Relaxed) as f64 * 8.0 / span as f64 * 1e3,
        delivered: delivered.load(Relaxed),
        send_drops: drops,
        rx_datagrams: rs.datagrams,
        sent_packets: packets,
        rx_cpu_per_datagram_ns: rs.thread_cpu_ns as f64 / rs.datagrams.max(1) as f64,
    }
}

fn main() {
    if cfg!(debug_assertions) {
        println!("warning: unoptimized build; run with `cargo bench`");
    }
    let sizes = [16usize << 10, 256 << 10, 1 << 20, 4 << 20];
    println!(
        "data-plane send bench: 1200-B shards, 20 % parity, AES-128-GCM, pacing off, loopback, \
         receiver (auth + reassembly) on another thread"
    );
    let mut rows = Vec::new();
    for &size in &sizes {
        let frames = ((96usize << 20) / size).clamp(40, 2000);
        // Warm-up (allocations, page faults, caches), not reported.
        run(size, frames.min(20), Variant::Gso);
        for v in [Variant::Naive, Variant::Mmsg, Variant::Gso] {
            rows.push(run(size, frames, v));
        }
    }
    println!();
    println!(
        "| frame | variant | mode | frames | CPU/frame p50 | mean | packetize (FEC+seal) | send | send/packet | goodput | delivered | send drops | rx datagrams / sent | rx CPU/datagram |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} KiB | {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} ns | {:.0} Mbit/s | {}/{} | {} | {}/{} | {:.0} ns |",
            r.size >> 10,
            r.variant.name(),
            r.mode.map_or("-".into(), |m| format!("{m:?}")),
            r.frames,
            r.cpu_p50_us,
            r.cpu_mean_us,
            r.pk_mean_us,
            r.send_mean_us,
            r.per_packet_send_ns,
            r.goodput_mbit,
            r.delivered,
            r.frames,
            r.send_drops,
            r.rx_datagrams,
            r.sent_packets,
            r.rx_cpu_per_datagram_ns
        );
    }
    println!();
    for &size in &sizes {
        let get = |v| rows.iter().find(|r| r.size == size && r.variant == v);
        if let (Some(n), Some(m), Some(g)) =
            (get(Variant::Naive), get(Variant::Mmsg), get(Variant::Gso))
            && g.cpu_mean_us > 0.0
        {
            println!(
                "{} KiB: mean CPU naive/GSO = {:.2}x, sendmmsg/GSO = {:.2}x; send stage naive/GSO = {:.1}x",
                size >> 10,
                n.cpu_mean_us / g.cpu_mean_us,
                m.cpu_mean_us / g.cpu_mean_us,
                n.send_mean_us / g.send_mean_us.max(1e-9)
            );
        }
    }
    println!();
    println!("packetize alone (FEC + seal, nothing else running), thread CPU per frame:");
    for &size in &sizes {
        let mut pz = Packetizer::new(dp(), &key(), StreamKind::Video).expect("packetizer");
        let mut batch = PacketBatch::for_config(&dp());
        let mut au = Vec::new();
        fill(1, size, &mut au);
        let n = ((64usize << 20) / size).clamp(20, 1000);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let c0 = thread_cpu_ns();
            let _ = pz.packetize(i as u64, false, &au, &mut batch);
            v.push(thread_cpu_ns() - c0);
        }
        let mean = v.iter().sum::<u64>() as f64 / n as f64 / 1e3;
        println!(
            "  {:>5} KiB: p50 {:.0} µs, mean {:.0} µs ({} frames)",
            size >> 10,
            quantile(&mut v, 0.5) as f64 / 1e3,
            mean,
            n
        );
    }
    println!(
        "reference (docs/performance.md): 1 MiB FEC + seal + send best ~0.8 ms (GSO), ~1.7 ms with plain sendmmsg; target ≤ 1.2 ms with GSO"
    );
}
