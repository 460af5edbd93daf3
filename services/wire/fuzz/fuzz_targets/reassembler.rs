#![no_main]
//! Arbitrary packet sequences against a Reassembler with a fixed config and key: raw bytes,
//! validly sealed packets of frames derived from the input (subsets, reordered, replayed,
//! mutated), time jumps and polls. Must never panic, never exceed its memory bound, never
//! report more than it was sent, and every delivered frame must equal what was sent.

use libfuzzer_sys::fuzz_target;
use punktfunk_wire::*;
use std::collections::BTreeMap;

fn cfg() -> DataPlaneConfig {
    DataPlaneConfig {
        // Small frames (≤ 3 blocks): every RS decode costs a fixed ~0.25 ms (GF(2^16)
        // evaluation), which dominates the execution rate.
        shard_bytes: 64,
        max_data_shards: 12,
        parity_permille: 250,
        parity_floor: 1,
        max_frame_bytes: 2 * 1024,
        frames_in_flight: 4,
        frame_interval_ns: 1_000_000,
        loss_deadline_intervals: 2,
        max_udp_payload: 1452,
    }
}

const KEY: SessionKey = SessionKey {
    key: [7; 16],
    salt: [1, 2, 3, 4],
};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = cfg();
    let mut rx = Reassembler::new(cfg, &KEY, StreamKind::Video).expect("valid config");
    let mut tx = Packetizer::new(cfg, &KEY, StreamKind::Video).expect("valid config");
    let mut batch = PacketBatch::new();
    let bound = cfg.frames_in_flight as usize
        * cfg.max_packets_per_frame() as usize
        * cfg.shard_bytes as usize;
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stash: Vec<Vec<u8>> = Vec::new();
    let mut next_index = 0u64;
    let mut now = 0u64;
    let mut input = Input(data);
    let mut delivered = 0u64;

    while let Some(op) = input.byte() {
        match op % 6 {
            0 => {
                // Raw bytes.
                let n = usize::from(input.byte().unwrap_or(0)) * 8;
                let raw = input.take(n).to_vec();
                let _ = rx.push(now, &raw);
            }
            1 | 2 => {
                // A real frame: length and content from the input, packets selected by a
                // bitmask, optionally in reverse, optionally with one byte flipped.
                let len =
                    usize::from(input.u16().unwrap_or(0)) % (cfg.max_frame_bytes as usize + 1);
                let seed = input.byte().unwrap_or(0);
                let au: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
                    .collect();
                next_index += u64::from(input.byte().unwrap_or(0) % 3);
                let index = next_index;
                next_index += 1;
                if tx.packetize(index, seed & 1 == 1, &au, &mut batch).is_err() {
                    continue;
                }
                sent.insert(index, au);
                while sent.len() > 64 {
                    sent.pop_first();
                }
                let mask = input.u16().unwrap_or(u16::MAX);
                let flip = input.u16().unwrap_or(0);
                let order: Vec<usize> = if op % 6 == 2 {
                    (0..batch.len()).rev().collect()
                } else {
                    (0..batch.len()).collect()
                };
                for (n, i) in order.into_iter().enumerate() {
                    if mask & (1 << (n % 16)) == 0 {
                        continue;
                    }
                    let Some(p) = batch.packet(i) else { continue };
                    let mut p = p.to_vec();
                    if flip != 0 && usize::from(flip >> 4) == n {
                        let at = usize::from(flip) % p.len();
                        p[at] ^= 1 << (flip % 8);
                    }
                    if stash.len() < 256 {
                        stash.push(p.clone());
                    }
                    let _ = rx.push(now, &p);
                }
            }
            3 => {
                // Replay a stashed packet, maybe truncated.
                if !stash.is_empty() {
                    let i = usize::from(input.u16().unwrap_or(0)) % stash.len();
                    let cut = usize::from(input.byte().unwrap_or(0));
                    let p = &stash[i];
                    let _ = rx.push(now, &p[..p.len().saturating_sub(cut)]);
                }
            }
            4 => {
                now = now.saturating_add(u64::from(input.u16().unwrap_or(0)) * 1000);
            }
            _ => {}
        }
        assert!(rx.buffered_bytes() <= bound);
        while let Some(ev) = rx.poll_event(now) {
            if let Event::FrameComplete(f) = ev {
                delivered += 1;
                assert!(f.data.len() <= cfg.max_frame_bytes as usize);
                if let Some(au) = sent.get(&f.index) {
                    assert_eq!(f.data, &au[..], "frame {} corrupted", f.index);
                }
            }
        }
        if let Some(d) = rx.next_deadline() {
            assert!(d <= now.saturating_add(cfg.loss_deadline_ns()));
        }
    }
    let c = rx.counters();
    assert_eq!(c.frames_completed, delivered);
    assert!(c.frames_completed <= next_index);
});
