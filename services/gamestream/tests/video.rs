//! The video packetizer against the spec's byte layout and a receiver that decodes like
//! moonlight-common-c (Cauchy RS over GF(2^8) from the fecInfo fields only).

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes128Gcm, KeyInit, Nonce, Tag};
use punktfunk_gamestream::fec;
use punktfunk_gamestream::video::*;
use punktfunk_wire::{FrameRef, PacketBatch, Packetize, PacketizeError};
use reed_solomon_erasure::galois_8;

fn cfg(s: u32, key: Option<[u8; 16]>) -> VideoConfig {
    VideoConfig {
        packet_size: s,
        fec_percent: 20,
        min_parity: 2,
        fps: 60,
        encryption_key: key,
        max_frame_bytes: 8 << 20,
    }
}

fn au(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn packetize(p: &mut VideoPacketizer, index: u64, keyframe: bool, data: &[u8]) -> Vec<Vec<u8>> {
    let mut batch = p.new_batch();
    p.packetize(
        FrameRef {
            index,
            keyframe,
            data,
        },
        &mut batch,
    )
    .unwrap();
    batch.iter().map(<[u8]>::to_vec).collect()
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn the_spec_worked_example() {
    let mut p = VideoPacketizer::new(cfg(1392, None)).unwrap();
    let data = au(30_000, 1);
    let pk = packetize(&mut p, 0, false, &data);
    assert_eq!(pk.len(), 27);
    assert!(pk.iter().all(|d| d.len() == 1408));
    for (i, d) in pk.iter().enumerate() {
        assert_eq!(d[0], 0x90);
        assert_eq!(u16::from_be_bytes([d[2], d[3]]), i as u16, "seq");
        assert_eq!(&d[4..8], &[0, 0, 0, 0], "ts of frame 0");
        assert_eq!(le32(d, 20), 1, "frame index starts at 1");
        assert_eq!(d[27], 0, "one block");
        if i < 22 {
            // Parity shards keep their parity bytes at 24..27.
            assert_eq!(d[26], 0x10);
        }
    }
    assert_eq!(&pk[3][28..32], &[0x40, 0x31, 0x80, 0x05]);
    assert_eq!(&pk[5][16..20], &[0, 5, 0, 0]);
    assert_eq!(pk[0][24], 0x05, "SOF + picture data");
    assert_eq!(pk[1][24], 0x01);
    assert_eq!(pk[21][24], 0x03, "EOF + picture data");
    // Frame header: type 1, P-frame, lastPayloadLen 1112.
    assert_eq!(&pk[0][32..40], &[0x01, 0, 0, 1, 0x58, 0x04, 0, 0]);
    assert_eq!(&pk[0][40..48], &data[..8]);
    // Parity shard 0 of the block: shard index 22.
    assert_eq!(le32(&pk[22], 28), (22 << 12) | (22 << 22) | (20 << 4));
    // Parity is over the whole data images; only RTP 0-11, frameIndex, byte 27 and fecInfo
    // are overwritten afterwards.
    let mut parity = vec![vec![0u8; 1408]; 5];
    fec::encode_video(&pk[..22], &mut parity);
    for (j, par) in parity.iter().enumerate() {
        let sent = &pk[22 + j];
        assert_eq!(&sent[12..20], &par[12..20]);
        assert_eq!(&sent[24..27], &par[24..27]);
        assert_eq!(&sent[32..], &par[32..]);
        assert_eq!(u16::from_be_bytes([sent[2], sent[3]]), 22 + j as u16);
    }
    // The next frame continues the sequence, frame 2, 90 kHz timestamp.
    let pk2 = packetize(&mut p, 1, true, &au(500, 2));
    assert_eq!(pk2.len(), 3, "1 data + 2 parity at 200 %");
    assert_eq!(u16::from_be_bytes([pk2[0][2], pk2[0][3]]), 27);
    assert_eq!(le32(&pk2[0], 20), 2);
    assert_eq!(u32::from_be_bytes(pk2[0][4..8].try_into().unwrap()), 1500);
    assert_eq!(pk2[0][35], FRAME_TYPE_IDR);
    assert_eq!(le32(&pk2[0], 28), (1 << 22) | (200 << 4));
    assert_eq!(pk2[0][24], 0x07, "SOF and EOF on a one-shard block");
    assert_eq!(p.next_sequence(), 30);
}

/// Solves for the data shards of a block from any `d` of its shards, the way the client
/// does: the generator is identity (data) over Cauchy rows built from `p`.
fn rs_decode(d: usize, p: usize, shards: &mut [Option<Vec<u8>>]) {
    let len = shards.iter().flatten().next().unwrap().len();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = shards
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
        .take(d)
        .map(|(k, s)| {
            let row = (0..d)
                .map(|i| {
                    if k < d {
                        u8::from(i == k)
                    } else {
                        fec::cauchy(p, i, k - d)
                    }
                })
                .collect();
            (row, s.clone())
        })
        .collect();
    assert_eq!(rows.len(), d, "not enough shards");
    // Gauss-Jordan over GF(2^8).
    let (mut m, mut v): (Vec<Vec<u8>>, Vec<Vec<u8>>) = rows.into_iter().unzip();
    for col in 0..d {
        let piv = (col..d).find(|&r| m[r][col] != 0).expect("singular");
        m.swap(col, piv);
        v.swap(col, piv);
        let inv = galois_8::div(1, m[col][col]);
        for x in m[col].iter_mut() {
            *x = galois_8::mul(*x, inv);
        }
        let row = v[col].clone();
        v[col]
            .iter_mut()
            .zip(&row)
            .for_each(|(o, &b)| *o = galois_8::mul(b, inv));
        for r in 0..d {
            if r != col && m[r][col] != 0 {
                let f = m[r][col];
                let (mc, vc) = (m[col].clone(), v[col].clone());
                m[r].iter_mut()
                    .zip(&mc)
                    .for_each(|(o, &b)| *o ^= galois_8::mul(f, b));
                let mut acc = vec![0u8; len];
                galois_8::mul_slice(f, &vc, &mut acc);
                v[r].iter_mut().zip(&acc).for_each(|(o, &b)| *o ^= b);
            }
        }
    }
    for (i, s) in v.into_iter().enumerate() {
        shards[i] = Some(s);
    }
}

/// A receiver like the client's: groups one frame's datagrams into blocks using only the
/// header fields, recovers lost data shards, and returns the access unit.
fn receive(packets: &[Option<Vec<u8>>], s: usize) -> Vec<u8> {
    let l = s - 16;
    let mut payload = Vec::new();
    let mut i = 0;
    let mut first_hdr = None;
    while i < packets.len() {
        let any = packets[i..].iter().flatten().next().unwrap();
        let info = le32(any, 28);
        let d = (info >> 22) as usize;
        let pct = (info >> 4) & 0xFF;
        let p = fec::client_parity(d as u32, pct) as usize;
        let mut shards: Vec<Option<Vec<u8>>> = packets[i..i + d + p].to_vec();
        if shards[..d].iter().any(Option::is_none) {
            rs_decode(d, p, &mut shards);
        }
        for (k, sh) in shards[..d].iter().enumerate() {
            let sh = sh.as_ref().unwrap();
            let flags = sh[24];
            assert_eq!(flags & 0x04 != 0, k == 0, "SOF per block");
            assert_eq!(flags & 0x02 != 0, k + 1 == d, "EOF per block");
            payload.extend_from_slice(&sh[32..32 + l]);
        }
        if first_hdr.is_none() {
            first_hdr = Some(payload[..8].to_vec());
        }
        i += d + p;
    }
    let total = payload.len();
    let last = u16::from_le_bytes([payload[4], payload[5]]) as usize;
    let len = total - l + last;
    payload[8..len].to_vec()
}

#[test]
fn multi_block_frames_recover_from_losses_per_block() {
    let s = 1024;
    let mut p = VideoPacketizer::new(cfg(s, None)).unwrap();
    let data = au(400_000, 3);
    let pk = packetize(&mut p, 4, true, &data);
    let dtot = (8 + data.len()).div_ceil(s as usize - 16);
    let plan = fec::plan_frame(dtot as u32, 20, 2).unwrap();
    assert_eq!(plan.count, 2);
    assert_eq!(pk.len() as u32, plan.packets());
    // Block fields and loss of `parity` shards in each block (data shards included).
    let mut lossy: Vec<Option<Vec<u8>>> = pk.iter().cloned().map(Some).collect();
    let mut at = 0;
    for b in 0..plan.count {
        let blk = plan.blocks[b];
        assert_eq!(pk[at][27], ((b as u8) << 4) | (1 << 6));
        for k in 0..blk.parity as usize {
            lossy[at + k * 7 % blk.data as usize + k] = None;
        }
        at += (blk.data + blk.parity) as usize;
    }
    assert_eq!(receive(&lossy, s as usize), data);
    assert_eq!(
        receive(&pk.into_iter().map(Some).collect::<Vec<_>>(), s as usize),
        data
    );
}

#[test]
fn encrypted_datagrams_are_the_sealed_plain_images() {
    let key = [9u8; 16];
    let mut plain = VideoPacketizer::new(cfg(1392, None)).unwrap();
    let mut sealed = VideoPacketizer::new(cfg(1392, Some(key))).unwrap();
    let data = au(5000, 4);
    let a = packetize(&mut plain, 0, true, &data);
    let b = packetize(&mut sealed, 0, true, &data);
    assert_eq!(a.len(), b.len());
    let cipher = Aes128Gcm::new(&key.into());
    for (k, (pa, pb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(pb.len(), 1392 + 48);
        assert_eq!(&pb[..8], &(k as u64).to_le_bytes());
        assert_eq!(&pb[8..12], &[0, 0, 0, b'V']);
        assert_eq!(le32(pb, 12), 1, "frame number");
        let mut body = pb[32..].to_vec();
        let tag = Tag::<aes_gcm::aead::consts::U16>::try_from(&pb[16..32]).unwrap();
        cipher
            .decrypt_inout_detached(
                &Nonce::try_from(&pb[..12]).unwrap(),
                &[],
                InOutBuf::from(&mut body[..]),
                &tag,
            )
            .unwrap();
        assert_eq!(&body, pa);
    }
    // IVs continue across frames.
    let c = packetize(&mut sealed, 1, false, &data);
    assert_eq!(&c[0][..8], &(b.len() as u64).to_le_bytes());
}

#[test]
fn bounds_come_from_the_configuration() {
    assert!(VideoPacketizer::new(cfg(1000, None)).is_err());
    assert!(
        VideoPacketizer::new(VideoConfig {
            fec_percent: 256,
            ..cfg(1392, None)
        })
        .is_err()
    );
    assert!(
        VideoPacketizer::new(VideoConfig {
            fps: 0,
            ..cfg(1392, None)
        })
        .is_err()
    );
    let mut p = VideoPacketizer::new(VideoConfig {
        max_frame_bytes: 10_000,
        ..cfg(1392, None)
    })
    .unwrap();
    let mut batch = PacketBatch::new();
    let big = vec![0u8; 10_001];
    assert!(matches!(
        p.packetize(
            FrameRef {
                index: 0,
                keyframe: false,
                data: &big
            },
            &mut batch
        ),
        Err(PacketizeError::FrameTooLarge {
            len: 10_001,
            max: 10_000
        })
    ));
    assert_eq!(
        p.next_sequence(),
        0,
        "a refused frame uses no sequence numbers"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn any_frame_survives_parity_losses(len in 0usize..200_000, s in proptest::strategy::Strategy::prop_map(16u32..=90, |k| k * 16), drop_seed in 0u64..1000) {
        let mut p = VideoPacketizer::new(cfg(s, None)).unwrap();
        let data = au(len, drop_seed as u8);
        let pk = packetize(&mut p, 0, false, &data);
        let dtot = (8 + len).div_ceil(s as usize - 16) as u32;
        let plan = fec::plan_frame(dtot, 20, 2).unwrap();
        let mut lossy: Vec<Option<Vec<u8>>> = pk.into_iter().map(Some).collect();
        let mut at = 0usize;
        for blk in &plan.blocks[..plan.count] {
            let n = (blk.data + blk.parity) as usize;
            for k in 0..blk.parity as usize {
                lossy[at + (drop_seed as usize * 13 + k * 7) % n] = None;
            }
            at += n;
        }
        proptest::prop_assert_eq!(receive(&lossy, s as usize), data);
    }
}
