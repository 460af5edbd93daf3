//! CPU time per frame of the data-plane core (thread CPU time, one core):
//! packetize (FEC + seal) at 16 KiB, 256 KiB, 1 MiB, 4 MiB, and reassembly (open + place +
//! RS recovery) with 0 % and 2 % random loss. A memcpy of the frame is printed beside each as
//! the in-run baseline. First, the sealing seam's two AES-128-GCM backends (ring, aes-gcm)
//! side by side in the same run, interleaved round by round: seal and open of one packet in
//! place with our 32-byte header as AAD (min / median per packet over rounds of 874 packets,
//! one 1 MiB frame's data packets), and packetize of a 1 MiB frame with each.
//! Run with `cargo bench -p punktfunk-wire --bench frame`.

use punktfunk_wire::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustix::time::{ClockId, clock_gettime};
use std::hint::black_box;

fn cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn iters(len: usize) -> usize {
    (64 << 20) / len.max(1) + 5
}

fn main() {
    let key = SessionKey {
        key: [3; 16],
        salt: [0; 4],
    };
    let cfg = DataPlaneConfig::default();
    let mut rng = StdRng::seed_from_u64(1);
    println!(
        "config: shard {} B, max {} data shards/block, parity {}‰ (floor {}), packet {} B",
        cfg.shard_bytes,
        cfg.max_data_shards,
        cfg.parity_permille,
        cfg.parity_floor,
        cfg.packet_len()
    );
    compare_backends(&key, cfg);
    println!(
        "{:<26} {:>9} {:>8} {:>12} {:>12} {:>8}",
        "work", "frame", "packets", "median µs", "memcpy µs", "ratio"
    );
    for len in [16 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let mut au = vec![0u8; len];
        rng.fill_bytes(&mut au);
        let mut copy = vec![0u8; len];
        let n = iters(len);
        let base = median(
            (0..n)
                .map(|_| {
                    let t = cpu_ns();
                    copy.copy_from_slice(black_box(&au));
                    black_box(&copy);
                    cpu_ns() - t
                })
                .collect(),
        );

        // Packetize: FEC + seal into a reused batch.
        let mut tx = Packetizer::new(cfg, &key, StreamKind::Video).expect("config");
        let mut batch = PacketBatch::for_config(&cfg);
        let mut idx = 0u64;
        let times: Vec<u64> = (0..n)
            .map(|_| {
                let t = cpu_ns();
                tx.packetize(idx, false, black_box(&au), &mut batch)
                    .expect("packetize");
                idx += 1;
                cpu_ns() - t
            })
            .collect();
        let pk = median(times);
        report("packetize (FEC+seal)", len, batch.len(), pk, base);

        // Reassembly with 0 % and 2 % loss.
        for loss in [0.0f64, 0.02] {
            let mut tx = Packetizer::new(cfg, &key, StreamKind::Video).expect("config");
            let mut rx = Reassembler::new(cfg, &key, StreamKind::Video).expect("config");
            let mut times = Vec::with_capacity(n);
            let mut lost = 0;
            for i in 0..n as u64 {
                tx.packetize(i, false, &au, &mut batch).expect("packetize");
                let keep: Vec<bool> = (0..batch.len()).map(|_| !rng.random_bool(loss)).collect();
                let now = i * cfg.frame_interval_ns;
                let t = cpu_ns();
                for (p, k) in batch.iter().zip(&keep) {
                    if *k {
                        let _ = rx.push(now, p);
                    }
                }
                while let Some(ev) = rx.poll_event(now) {
                    match ev {
                        Event::FrameComplete(f) => {
                            black_box(f.data);
                        }
                        _ => lost += 1,
                    }
                }
                times.push(cpu_ns() - t);
            }
            let c = rx.counters();
            let name = format!("reassemble {:>2.0}% ({}/{} lost)", loss * 100.0, lost, n);
            report(&name, len, batch.len(), median(times), base);
            assert_eq!(c.frames_completed + lost, n as u64);
        }
    }
}

fn min_median(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (v[0], v[v.len() / 2])
}

/// Seal / open per packet and packetize per 1 MiB frame, each backend in turn within every
/// round, so both see the same machine noise.
fn compare_backends(key: &SessionKey, cfg: DataPlaneConfig) {
    const PACKETS: usize = 874;
    const ROUNDS: usize = 200;
    let shard = cfg.shard_bytes as usize;
    let stride = cfg.packet_len();
    let mut pkts = vec![0u8; PACKETS * stride];
    StdRng::seed_from_u64(2).fill_bytes(&mut pkts);
    let mut opened = vec![0u8; shard];
    let mut au = vec![0u8; 1 << 20];
    StdRng::seed_from_u64(3).fill_bytes(&mut au);
    let mut batch = PacketBatch::for_config(&cfg);
    let backends = AeadBackend::ALL;
    let mut seal = vec![Vec::new(); backends.len()];
    let mut open = vec![Vec::new(); backends.len()];
    let mut pack = vec![Vec::new(); backends.len()];
    let mut packetizers: Vec<Packetizer> = backends
        .iter()
        .map(|&b| {
            let sealer = Sealer::with_backend(key, StreamKind::Video, 0, b);
            Packetizer::with_sealer(cfg, StreamKind::Video, sealer).expect("config")
        })
        .collect();
    for round in 0..ROUNDS {
        for (i, &b) in backends.iter().enumerate() {
            let mut sealer = Sealer::with_backend(key, StreamKind::Video, 0, b);
            let opener = Opener::with_backend(key, StreamKind::Video, b);
            let t = cpu_ns();
            for p in pkts.chunks_exact_mut(stride) {
                sealer.seal(black_box(p)).expect("seal");
            }
            seal[i].push((cpu_ns() - t) / PACKETS as u64);
            let t = cpu_ns();
            for (seq, p) in pkts.chunks_exact(stride).enumerate() {
                opener
                    .open(seq as u64, black_box(p), &mut opened)
                    .expect("open");
            }
            open[i].push((cpu_ns() - t) / PACKETS as u64);
            let t = cpu_ns();
            packetizers[i]
                .packetize(round as u64, false, black_box(&au), &mut batch)
                .expect("packetize");
            pack[i].push(cpu_ns() - t);
        }
    }
    println!(
        "AES-128-GCM backends, same run, interleaved ({ROUNDS} rounds; {shard}-B body, 32-B AAD):"
    );
    println!(
        "{:<10} {:>22} {:>22} {:>26}",
        "backend", "seal ns/pkt min/med", "open ns/pkt min/med", "packetize 1 MiB µs min/med"
    );
    for (i, b) in backends.iter().enumerate() {
        let (s0, s1) = min_median(seal[i].clone());
        let (o0, o1) = min_median(open[i].clone());
        let (p0, p1) = min_median(pack[i].clone());
        println!(
            "{:<10} {:>22} {:>22} {:>26}",
            b.name(),
            format!("{s0} / {s1}"),
            format!("{o0} / {o1}"),
            format!("{:.0} / {:.0}", p0 as f64 / 1e3, p1 as f64 / 1e3)
        );
    }
    let (_, ring) = min_median(seal[0].clone());
    let (_, rc) = min_median(seal[1].clone());
    println!(
        "data plane uses {} (AeadBackend::FASTEST); median seal ratio aes-gcm / ring = {:.2}",
        AeadBackend::FASTEST.name(),
        rc as f64 / ring.max(1) as f64
    );
    println!();
}

fn report(name: &str, len: usize, packets: usize, ns: u64, base: u64) {
    println!(
        "{:<26} {:>8}K {:>8} {:>12.1} {:>12.1} {:>8.1}",
        name,
        len >> 10,
        packets,
        ns as f64 / 1000.0,
        base as f64 / 1000.0,
        ns as f64 / base.max(1) as f64
    );
}
