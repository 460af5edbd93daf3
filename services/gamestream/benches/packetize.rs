//! CPU time per frame (thread CPU time, one core) of the GameStream video packetizer
//! (RTP + Cauchy GF(2^8) FEC + AES-GCM seal) beside punktfunk/1's (GF(2^16) FEC + seal), in
//! the same run, at 16 KiB, 256 KiB and 1 MiB; a memcpy of the frame is the in-run baseline.
//! Both at 20 % parity, both sealing. Run with
//! `cargo bench -p punktfunk-gamestream --bench packetize`.

use punktfunk_gamestream::video::{VideoConfig, VideoPacketizer};
use punktfunk_wire::{DataPlaneConfig, FrameRef, Packetize, Packetizer, SessionKey, StreamKind};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
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

fn measure(n: usize, mut f: impl FnMut()) -> u64 {
    median(
        (0..n)
            .map(|_| {
                let t = cpu_ns();
                f();
                cpu_ns() - t
            })
            .collect(),
    )
}

fn run(p: &mut dyn Packetize, au: &[u8], n: usize) -> (u64, usize) {
    let mut batch = p.new_batch();
    let mut idx = 0u64;
    let t = measure(n, || {
        p.packetize(
            FrameRef {
                index: idx,
                keyframe: false,
                data: black_box(au),
            },
            &mut batch,
        )
        .expect("packetize");
        idx += 1;
    });
    (t, batch.len())
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let key = SessionKey {
        key: [3; 16],
        salt: [0; 4],
    };
    let pf_cfg = DataPlaneConfig {
        parity_permille: 200,
        max_frame_bytes: 8 << 20,
        ..DataPlaneConfig::default()
    };
    let gs_cfg = VideoConfig {
        packet_size: 1392,
        fec_percent: 20,
        min_parity: 2,
        fps: 60,
        encryption_key: Some([3; 16]),
        max_frame_bytes: 8 << 20,
    };
    println!(
        "{:<34} {:>9} {:>8} {:>11} {:>11} {:>7}",
        "work", "frame", "packets", "median µs", "memcpy µs", "ratio"
    );
    for len in [16usize << 10, 256 << 10, 1 << 20] {
        let mut au = vec![0u8; len];
        rng.fill_bytes(&mut au);
        let n = (32 << 20) / len + 5;
        let mut copy = vec![0u8; len];
        let base = measure(n, || {
            copy.copy_from_slice(black_box(&au));
            black_box(&copy);
        });
        let mut pf = Packetizer::new(pf_cfg, &key, StreamKind::Video).expect("config");
        let (t_pf, n_pf) = run(&mut pf, &au, n);
        let mut gs = VideoPacketizer::new(gs_cfg.clone()).expect("config");
        let (t_gs, n_gs) = run(&mut gs, &au, n);
        for (name, t, pk) in [
            ("punktfunk/1 (GF(2^16) + seal)", t_pf, n_pf),
            ("GameStream (GF(2^8) + seal)", t_gs, n_gs),
        ] {
            println!(
                "{name:<34} {:>8}K {pk:>8} {:>11.1} {:>11.1} {:>7.1}",
                len >> 10,
                t as f64 / 1e3,
                base as f64 / 1e3,
                t as f64 / base.max(1) as f64
            );
        }
        println!(
            "{:<34} {:>9} {:>8} {:>11.2}",
            "  GameStream / punktfunk/1",
            "",
            "",
            t_gs as f64 / t_pf.max(1) as f64
        );
    }
}
