//! Property tests of the sans-IO core: random AU sizes (1 B – 4 MiB), random loss up to the
//! parity of each block, reordering across interleaved frames, duplication, tampering.

use proptest::prelude::*;
use punktfunk_wire::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

const MAX: usize = 4 << 20;

fn key() -> SessionKey {
    SessionKey {
        key: [0x42; 16],
        salt: [9, 8, 7, 6],
    }
}

/// AU sizes biased toward small, but reaching the 4 MiB top.
fn au_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..4096,
        3 => 4096usize..262_144,
        1 => 262_144usize..=MAX,
        1 => Just(MAX),
    ]
}

/// Random valid configs: shard size, block size and parity vary; parity floor ≥ 1 so every
/// block can lose at least one shard.
fn config() -> impl Strategy<Value = DataPlaneConfig> {
    (
        128u32..=700,
        prop_oneof![1 => 8u32..64, 3 => 64u32..=1024],
        0u32..=300,
        1u32..=4,
    )
        .prop_map(|(half, maxd, pm, floor)| DataPlaneConfig {
            shard_bytes: half * 2,
            max_data_shards: maxd,
            parity_permille: pm,
            parity_floor: floor,
            max_frame_bytes: MAX as u32,
            ..DataPlaneConfig::default()
        })
}

struct Sent {
    index: u64,
    data: Vec<u8>,
    /// (packet bytes, block index)
    packets: Vec<(Vec<u8>, u16)>,
    layout: FrameLayout,
}

fn send_frames(cfg: DataPlaneConfig, lens: &[usize], rng: &mut StdRng) -> Vec<Sent> {
    let mut tx = Packetizer::new(cfg, &key(), StreamKind::Video).expect("valid config");
    let mut batch = PacketBatch::new();
    lens.iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let s = tx
                .packetize(i as u64, i == 0, &data, &mut batch)
                .expect("packetize");
            assert_eq!(s.packets as usize, batch.len());
            let packets = batch
                .iter()
                .map(|p| {
                    let (h, _) = PacketHeader::parse(p).expect("own packets parse");
                    (p.to_vec(), h.block_index)
                })
                .collect();
            Sent {
                index: i as u64,
                layout: cfg.layout(len as u32).expect("fits"),
                data,
                packets,
            }
        })
        .collect()
}

/// Drops a random subset of each block's packets: at most `parity` of them, except in
/// `overload` blocks, where `parity + 1` are dropped.
fn lose(sent: &Sent, rng: &mut StdRng, overload: Option<u32>) -> Vec<Vec<u8>> {
    let mut by_block: Vec<Vec<&Vec<u8>>> = vec![Vec::new(); sent.layout.blocks as usize];
    for (p, bi) in &sent.packets {
        by_block[usize::from(*bi)].push(p);
    }
    let mut out = Vec::new();
    for (b, mut pk) in by_block.into_iter().enumerate() {
        let b = b as u32;
        let blk = sent.layout.block(b);
        assert_eq!(pk.len() as u32, blk.data + blk.parity);
        pk.shuffle(rng);
        let drop = if overload == Some(b) {
            blk.parity + 1
        } else {
            rng.random_range(0..=blk.parity)
        };
        out.extend(pk.into_iter().skip(drop as usize).cloned());
    }
    out
}

fn duplicate_some(pkts: &mut Vec<Vec<u8>>, rng: &mut StdRng) {
    let n = pkts.len();
    for _ in 0..rng.random_range(0..=n.min(20)) {
        let i = rng.random_range(0..n);
        let p = pkts[i].clone();
        pkts.push(p);
    }
}

#[derive(Default, Debug)]
struct Outcome {
    done: Vec<(u64, Vec<u8>)>,
    lost: Vec<u64>,
}

fn drain(rx: &mut Reassembler, now: u64, out: &mut Outcome) {
    while let Some(ev) = rx.poll_event(now) {
        match ev {
            Event::FrameComplete(f) => out.done.push((f.index, f.data.to_vec())),
            Event::FrameLost { index } => out.lost.push(index),
            Event::FramesSkipped { first, count } => {
                out.lost.extend(first..first + count.min(1000))
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn bound(cfg: &DataPlaneConfig) -> usize {
    cfg.receive_memory_bound() as usize
}

proptest! {
    // 24 cases per property by default (debug builds spend most time in unoptimised AES and
    // Reed-Solomon code); PROPTEST_CASES overrides.
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20, ..ProptestConfig::default() })]

    /// Loss up to the parity of every block, reordering across up to 3 interleaved frames and
    /// duplicates: every AU comes out byte-identical, nothing is reported lost.
    #[test]
    fn recovers_within_parity(cfg in config(), lens in prop::collection::vec(au_len(), 1..=3), seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let sent = send_frames(cfg, &lens, &mut rng);
        let mut pkts: Vec<Vec<u8>> = sent.iter().flat_map(|s| lose(s, &mut rng, None)).collect();
        duplicate_some(&mut pkts, &mut rng);
        pkts.shuffle(&mut rng);

        let mut rx = Reassembler::new(cfg, &key(), StreamKind::Video).expect("valid");
        let mut out = Outcome::default();
        for (t, p) in pkts.iter().enumerate() {
            match rx.push(t as u64, p) {
                Ok(()) | Err(PushError::Duplicate) => {}
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
            drain(&mut rx, t as u64, &mut out);
        }
        prop_assert!(out.lost.is_empty(), "lost {:?}", out.lost);
        out.done.sort_by_key(|d| d.0);
        prop_assert_eq!(out.done.len(), sent.len());
        for (d, s) in out.done.iter().zip(&sent) {
            prop_assert_eq!(d.0, s.index);
            prop_assert!(d.1 == s.data, "frame {} differs", s.index);
        }
        let c = rx.counters();
        prop_assert_eq!(c.frames_completed, sent.len() as u64);
        prop_assert_eq!(c.auth_failures + c.malformed + c.late, 0);
        prop_assert!(rx.buffered_bytes() <= bound(&cfg));
    }

    /// One frame loses parity + 1 shards of one block: it is reported lost with its index
    /// (at its deadline), and every other frame, before and after it, is delivered intact.
    #[test]
    fn too_much_loss_reports_lost(cfg in config(), lens in prop::collection::vec(au_len(), 2..=4), victim in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let sent = send_frames(cfg, &lens, &mut rng);
        // Not the last frame: a frame lost entirely with nothing after it cannot be noticed.
        let v = victim.index(sent.len() - 1);
        let vblock = rng.random_range(0..sent[v].layout.blocks);
        let mut rx = Reassembler::new(cfg, &key(), StreamKind::Video).expect("valid");
        let mut out = Outcome::default();
        let interval = cfg.frame_interval_ns;
        for s in &sent {
            let now = s.index * interval;
            let mut pkts = lose(s, &mut rng, (s.index as usize == v).then_some(vblock));
            duplicate_some(&mut pkts, &mut rng);
            pkts.shuffle(&mut rng);
            for p in &pkts {
                let _ = rx.push(now, p);
            }
            drain(&mut rx, now, &mut out);
        }
        let end = sent.len() as u64 * interval + cfg.loss_deadline_ns();
        drain(&mut rx, end, &mut out);
        prop_assert_eq!(&out.lost, &vec![v as u64]);
        let want: Vec<u64> = sent.iter().map(|s| s.index).filter(|&i| i != v as u64).collect();
        let got: Vec<u64> = out.done.iter().map(|d| d.0).collect();
        prop_assert_eq!(got, want);
        for (i, d) in &out.done {
            prop_assert!(*d == sent[*i as usize].data);
        }
        prop_assert_eq!(rx.counters().frames_lost, 1);
        prop_assert!(rx.buffered_bytes() <= bound(&cfg));
    }

    /// Any modified byte (header or payload) in any packet is rejected, never delivered;
    /// the frame still completes from the untouched packets (one loss is within parity).
    #[test]
    fn tampered_packets_are_rejected(cfg in config(), len in au_len(), which in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), mask in 1u8..=255, seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let sent = send_frames(cfg, &[len], &mut rng);
        let s = &sent[0];
        let w = which.index(s.packets.len());
        let mut bad = s.packets[w].0.clone();
        let at = pos.index(bad.len());
        bad[at] ^= mask;
        let mut rx = Reassembler::new(cfg, &key(), StreamKind::Video).expect("valid");
        let r = rx.push(0, &bad);
        prop_assert!(matches!(r, Err(PushError::AuthFailed | PushError::Malformed(_) | PushError::Layout(_) | PushError::WrongStream(_))), "byte {} of packet {}: {:?}", at, w, r);
        prop_assert!(rx.poll_event(0).is_none());
        let c = rx.counters();
        prop_assert_eq!(c.auth_failures + c.malformed, 1);
        prop_assert_eq!(c.received, 0);
        let mut out = Outcome::default();
        for (i, (p, _)) in s.packets.iter().enumerate() {
            if i != w {
                let _ = rx.push(1, p);
            }
        }
        drain(&mut rx, 1, &mut out);
        prop_assert_eq!(out.done.len(), 1);
        prop_assert!(out.done[0].1 == s.data);
    }
}
