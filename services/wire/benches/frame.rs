//! CPU time per frame of the data-plane core (thread CPU time, one core):
//! packetize (FEC + seal) at 16 KiB, 256 KiB, 1 MiB, 4 MiB, and reassembly (open + place +
//! RS recovery) with 0 % and 2 % random loss. A memcpy of the frame is printed beside each as
//! the in-run baseline. Run with `cargo bench -p punktfunk-wire --bench frame`.

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
