//! Unit tests of the sans-IO data-plane core.

use punktfunk_wire::synthetic::{self, SyntheticConfig, SyntheticSource, VerifyError};
use punktfunk_wire::*;

const MS: u64 = 1_000_000;

fn key() -> SessionKey {
    SessionKey {
        key: *b"0123456789abcdef",
        salt: [1, 2, 3, 4],
    }
}

fn cfg() -> DataPlaneConfig {
    DataPlaneConfig::default()
}

fn pair(cfg: DataPlaneConfig) -> (Packetizer, Reassembler, PacketBatch) {
    let tx = Packetizer::new(cfg, &key(), StreamKind::Video).expect("config");
    let rx = Reassembler::new(cfg, &key(), StreamKind::Video).expect("config");
    (tx, rx, PacketBatch::new())
}

fn au(index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ index.wrapping_mul(31)) as u8)
        .collect()
}

/// Drains events into (completed (index, data), lost indices).
fn drain(rx: &mut Reassembler, now: u64) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
    let mut done = Vec::new();
    let mut lost = Vec::new();
    while let Some(ev) = rx.poll_event(now) {
        match ev {
            Event::FrameComplete(f) => done.push((f.index, f.data.to_vec())),
            Event::FrameLost { index } => lost.push(index),
            Event::FramesSkipped { first, count } => lost.extend(first..first + count.min(1000)),
        }
    }
    (done, lost)
}

#[test]
fn header_round_trip() {
    let h = PacketHeader {
        kind: StreamKind::Audio,
        flags: FLAG_KEYFRAME | FLAG_PARITY | FLAG_LAST_BLOCK,
        seq: 0x0102_0304_0506_0708,
        frame_index: 0xdead_beef,
        frame_len: 123_456,
        block_index: 2,
        block_count: 3,
        shard_index: 40,
        data_shards: 35,
        parity_shards: 6,
    };
    let mut buf = vec![0u8; HEADER_LEN + 100 + TAG_LEN];
    h.write((&mut buf[..HEADER_LEN]).try_into().expect("32 bytes"));
    let (back, payload) = PacketHeader::parse(&buf).expect("parses");
    assert_eq!(back, h);
    assert_eq!(payload.len(), 100 + TAG_LEN);
    assert_eq!(peek_kind(&buf), Some(StreamKind::Audio));
    assert_eq!(&buf[4..12], &h.seq.to_be_bytes());

    // Structural errors.
    assert_eq!(
        PacketHeader::parse(&buf[..40]),
        Err(ParseError::TooShort(40))
    );
    let mut b = buf.clone();
    b[0] = 2;
    assert_eq!(PacketHeader::parse(&b), Err(ParseError::Version(2)));
    let mut b = buf.clone();
    b[1] = 9;
    assert_eq!(PacketHeader::parse(&b), Err(ParseError::Kind(9)));
    let mut b = buf.clone();
    b[2] |= 0x80;
    assert!(matches!(PacketHeader::parse(&b), Err(ParseError::Flags(_))));
    let mut b = buf.clone();
    b[31] = 1;
    assert_eq!(PacketHeader::parse(&b), Err(ParseError::Reserved));
    let mut b = buf.clone();
    b[2] &= !FLAG_PARITY;
    assert_eq!(PacketHeader::parse(&b), Err(ParseError::ParityFlag));
    let mut b = buf.clone();
    b[2] &= !FLAG_LAST_BLOCK;
    assert_eq!(PacketHeader::parse(&b), Err(ParseError::LastBlockFlag));
    let mut b = buf.clone();
    b[21] = 3; // block index 3 of 3
    assert!(matches!(
        PacketHeader::parse(&b),
        Err(ParseError::BlockIndex { .. })
    ));
    let mut b = buf.clone();
    b[25] = 41; // shard 41 of 35 + 6
    assert!(matches!(
        PacketHeader::parse(&b),
        Err(ParseError::ShardIndex { .. })
    ));
}

#[test]
fn config_validation() {
    assert_eq!(cfg().validate(), Ok(()));
    assert_eq!(cfg().packet_len(), 1248);
    let bad = |f: fn(&mut DataPlaneConfig)| {
        let mut c = cfg();
        f(&mut c);
        c.validate()
    };
    assert_eq!(
        bad(|c| c.shard_bytes = 1201),
        Err(ConfigError::ShardBytes(1201))
    );
    assert_eq!(bad(|c| c.shard_bytes = 0), Err(ConfigError::ShardBytes(0)));
    assert!(matches!(
        bad(|c| c.shard_bytes = 1420),
        Err(ConfigError::PacketTooLarge {
            packet: 1468,
            max: 1452
        })
    ));
    assert_eq!(
        bad(|c| c.max_udp_payload = 70_000),
        Err(ConfigError::UdpPayload(70_000))
    );
    assert_eq!(
        bad(|c| c.max_data_shards = 0),
        Err(ConfigError::MaxDataShards(0))
    );
    assert_eq!(
        bad(|c| c.max_data_shards = 40_000),
        Err(ConfigError::MaxDataShards(40_000))
    );
    assert_eq!(
        bad(|c| c.parity_permille = 1001),
        Err(ConfigError::ParityPermille(1001))
    );
    assert_eq!(
        bad(|c| c.parity_floor = 2000),
        Err(ConfigError::ParityFloor(2000))
    );
    assert_eq!(
        bad(|c| c.max_frame_bytes = 0),
        Err(ConfigError::MaxFrameBytes(0))
    );
    assert!(matches!(
        bad(|c| {
            c.max_frame_bytes = 256 << 20;
            c.shard_bytes = 2;
            c.max_data_shards = 1;
            c.parity_floor = 0;
        }),
        Err(ConfigError::TooManyBlocks(_))
    ));
    assert_eq!(
        bad(|c| c.frames_in_flight = 0),
        Err(ConfigError::FramesInFlight(0))
    );
    assert_eq!(
        bad(|c| c.frame_interval_ns = 0),
        Err(ConfigError::FrameInterval(0))
    );
    assert_eq!(
        bad(|c| c.loss_deadline_intervals = 0),
        Err(ConfigError::LossDeadline(0))
    );
    // Receivers and senders refuse invalid configs.
    let mut c = cfg();
    c.shard_bytes = 3;
    assert!(Reassembler::new(c, &key(), StreamKind::Video).is_err());
    assert!(Packetizer::new(c, &key(), StreamKind::Video).is_err());
}

#[test]
fn parity_computation() {
    let c = cfg(); // 10 %, floor 2
    assert_eq!(c.parity_for(1), 2);
    assert_eq!(c.parity_for(20), 2);
    assert_eq!(c.parity_for(21), 3);
    assert_eq!(c.parity_for(874), 88);
    assert_eq!(c.parity_for(1024), 103);
    let mut z = c;
    z.parity_permille = 0;
    z.parity_floor = 0;
    assert_eq!(z.parity_for(500), 0);
    let mut full = c;
    full.parity_permille = 1000;
    full.max_data_shards = 32_768;
    // 32768 + 32768 is exactly GF(2^16): still supported.
    assert_eq!(full.parity_for(32_768), 32_768);
    assert!(full.parity_for(1000) == 1000);

    // Layout: balanced blocks.
    let l = c.layout(4 << 20).expect("fits");
    assert_eq!(l.data_shards, 3496);
    assert_eq!(l.blocks, 4);
    let sizes: Vec<u32> = (0..4).map(|b| l.block(b).data).collect();
    assert_eq!(sizes, vec![874, 874, 874, 874]);
    assert_eq!(l.parity_shards(), 4 * 88);
    let l = c.layout(1025 * 1200).expect("fits");
    assert_eq!((l.blocks, l.block(0).data, l.block(1).data), (2, 513, 512));
    assert_eq!(l.block(1).first_data_shard, 513);
    assert_eq!(l.block(1).first_parity_shard, c.parity_for(513));
    assert!(c.layout((4 << 20) + 1).is_none());
    assert_eq!(c.layout(0).expect("empty").data_shards, 1);
    assert!(c.max_packets_per_frame() >= l.packets());
}

#[test]
fn nonce_exhaustion() {
    let c = cfg();
    let sealer = Sealer::with_initial_sequence(&key(), StreamKind::Video, SEQ_LIMIT - 5);
    let mut tx = Packetizer::with_sealer(c, StreamKind::Video, sealer).expect("config");
    let mut batch = PacketBatch::new();
    // A 1-shard frame needs 3 packets (1 data + 2 parity): fits once.
    let s = tx.packetize(0, false, &[7; 100], &mut batch).expect("fits");
    assert_eq!((s.packets, s.first_seq), (3, SEQ_LIMIT - 5));
    assert_eq!(tx.sealer().remaining(), 2);
    // The next frame would reach 2^64-1: refused, and nothing is consumed.
    assert_eq!(
        tx.packetize(1, false, &[7; 100], &mut batch),
        Err(PacketizeError::Seal(SealError::SequenceExhausted))
    );
    assert_eq!(tx.sealer().remaining(), 2);
    // The last sequence ever used is 2^64-2; 2^64-1 is never used.
    let mut last = Sealer::with_initial_sequence(&key(), StreamKind::Video, SEQ_LIMIT - 1);
    let mut pkt = vec![0u8; 1248];
    assert_eq!(last.seal(&mut pkt), Ok(u64::MAX - 1));
    assert_eq!(last.remaining(), 0);
    assert_eq!(last.seal(&mut pkt), Err(SealError::SequenceExhausted));
    assert_eq!(&pkt[4..12], &(u64::MAX - 1).to_be_bytes());
}

#[test]
fn pacing_schedule_shapes() {
    let pc = PacingConfig {
        burst_bytes: 64 * 1024,
        spread_permille: 750,
        frame_interval_ns: 16_000_000,
    };
    let mut out = Vec::new();
    pacing_schedule(&pc, 0, 1248, &mut out);
    assert!(out.is_empty());
    // Small frame: one burst at 0.
    pacing_schedule(&pc, 52, 1248, &mut out);
    assert_eq!(
        out,
        vec![PaceChunk {
            packets: 0..52,
            offset_ns: 0
        }]
    );
    // A mid-size frame: chunks of at most 52 packets (one GSO send each), shared out evenly,
    // spread over < 12 ms.
    pacing_schedule(&pc, 300, 1248, &mut out);
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|c| c.packets.len() == 50));
    assert_eq!(out[5].offset_ns, 10_000_000);
    // A large frame would need 20 chunks of 52, but chunks start at least MIN_CHUNK_GAP_NS
    // (1 ms) apart: 12 chunks over the 12 ms spread, 84 or 83 packets each.
    pacing_schedule(&pc, 1000, 1248, &mut out);
    assert_eq!(out.len(), 12);
    assert_eq!(out[0].offset_ns, 0);
    assert_eq!(out[0].packets, 0..84);
    let mut next = 0;
    let mut prev: Option<u64> = None;
    for c in &out {
        assert_eq!(c.packets.start, next);
        assert!((83..=84).contains(&c.packets.len()), "{c:?}");
        assert!(c.offset_ns < 12_000_000);
        if let Some(p) = prev {
            assert!(
                c.offset_ns - p >= MIN_CHUNK_GAP_NS,
                "{p} then {}",
                c.offset_ns
            );
        }
        next = c.packets.end;
        prev = Some(c.offset_ns);
    }
    assert_eq!(next, 1000);
    assert_eq!(out.last().expect("chunks").offset_ns, 11_000_000);
    // Tiny burst cap still makes progress.
    pacing_schedule(
        &PacingConfig {
            burst_bytes: 1,
            ..pc
        },
        3,
        1248,
        &mut out,
    );
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].offset_ns, 8_000_000);
}

#[test]
fn synthetic_verify_catches_flipped_byte() {
    let mut src = SyntheticSource::new(SyntheticConfig {
        keyframe_every: 10,
        keyframe_factor: 8,
        ..SyntheticConfig::default()
    });
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..20 {
        let f = src.next_frame(&mut buf);
        assert_eq!(f.index, i);
        assert_eq!(f.keyframe, i % 10 == 0);
        assert_eq!(buf.len(), f.len);
        synthetic::verify(i, &buf).expect("verifies");
        sizes.push(f.len);
    }
    assert!(sizes[0] > 5 * sizes[1] && sizes[10] > 5 * sizes[11]);
    // Average over a keyframe period matches the bitrate within 5 %.
    let per_period: usize = sizes[..10].iter().sum();
    let want = 20_000_000 / 8 * 10 / 60;
    assert!(
        (per_period as f64 / want as f64 - 1.0).abs() < 0.05,
        "{per_period} vs {want}"
    );

    synthetic::fill(3, 5000, &mut buf);
    for pos in [0, 5, 13, 20, 24, 100, 4999] {
        let mut b = buf.clone();
        b[pos] ^= 0x01;
        assert!(
            synthetic::verify(3, &b).is_err(),
            "flip at {pos} not caught"
        );
    }
    assert_eq!(
        synthetic::verify(4, &buf),
        Err(VerifyError::Index {
            expected: 4,
            found: 3
        })
    );
    assert!(matches!(
        synthetic::verify(3, &buf[..4000]),
        Err(VerifyError::Length { .. })
    ));
    assert_eq!(
        synthetic::verify(3, &buf[..10]),
        Err(VerifyError::TooShort(10))
    );
}

#[test]
fn loss_free_round_trip_without_decoder() {
    let (mut tx, mut rx, mut batch) = pair(cfg());
    for (i, len) in [1usize, 1200, 1201, 50_000, 2 << 20]
        .into_iter()
        .enumerate()
    {
        let data = au(i as u64, len);
        let s = tx
            .packetize(i as u64, i == 0, &data, &mut batch)
            .expect("packetize");
        assert_eq!(batch.len(), s.packets as usize);
        assert_eq!(batch.bytes().len(), batch.len() * batch.stride());
        for p in batch.iter() {
            assert_eq!(p.len(), 1248);
            let _ = rx.push(i as u64 * 16 * MS, p);
        }
        match rx.poll_event(i as u64 * 16 * MS) {
            Some(Event::FrameComplete(f)) => {
                assert_eq!(f.index, i as u64);
                assert_eq!(f.keyframe, i == 0);
                assert_eq!(f.data, &data[..]);
                assert_eq!(f.recovered_shards, 0);
            }
            other => panic!("{other:?}"),
        }
    }
    let c = rx.counters();
    assert_eq!(c.frames_completed, 5);
    assert_eq!(c.recovered_blocks, 0);
    assert_eq!(c.auth_failures + c.malformed + c.duplicates + c.late, 0);
    assert!(c.redundant > 0); // parity after the data shards completed the blocks
}

#[test]
fn recovers_lost_data_shards() {
    let (mut tx, mut rx, mut batch) = pair(cfg());
    let data = au(0, 100_000); // 84 data + 9 parity
    tx.packetize(0, false, &data, &mut batch)
        .expect("packetize");
    for (i, p) in batch.iter().enumerate() {
        if i % 10 != 3 {
            rx.push(0, p).expect("accepted or redundant");
        }
    }
    let (done, lost) = drain(&mut rx, 0);
    assert!(lost.is_empty());
    assert_eq!(done, vec![(0, data)]);
    assert_eq!(rx.counters().recovered_blocks, 1);
    assert!(rx.counters().recovered_shards >= 8);
}

#[test]
fn late_and_duplicate_packets() {
    let (mut tx, mut rx, mut batch) = pair(cfg());
    let data = au(0, 3000); // 3 data + 2 parity
    tx.packetize(0, false, &data, &mut batch)
        .expect("packetize");
    let pkts: Vec<Vec<u8>> = batch.iter().map(<[u8]>::to_vec).collect();
    rx.push(0, &pkts[0]).expect("fresh");
    assert_eq!(rx.push(0, &pkts[0]), Err(PushError::Duplicate));
    rx.push(0, &pkts[1]).expect("fresh");
    rx.push(0, &pkts[2]).expect("fresh");
    let (done, _) = drain(&mut rx, 0);
    assert_eq!(done.len(), 1);
    // Parity after completion: redundant, not an error; data again: duplicate.
    rx.push(0, &pkts[3]).expect("redundant");
    assert_eq!(rx.push(0, &pkts[1]), Err(PushError::Duplicate));
    assert!(PushError::Duplicate.is_benign());
    let c = rx.counters();
    assert_eq!((c.duplicates, c.redundant, c.frames_completed), (2, 1, 1));
    assert!(rx.poll_event(0).is_none());

    // Frame 1 loses everything but one packet and is given up; its later packets are late.
    tx.packetize(1, false, &data, &mut batch)
        .expect("packetize");
    let pkts: Vec<Vec<u8>> = batch.iter().map(<[u8]>::to_vec).collect();
    rx.push(MS, &pkts[0]).expect("fresh");
    let dl = rx.next_deadline().expect("frame 1 pending");
    assert_eq!(dl, MS + 3 * cfg().frame_interval_ns);
    let (done, lost) = drain(&mut rx, dl);
    assert!(done.is_empty());
    assert_eq!(lost, vec![1]);
    assert_eq!(rx.push(dl, &pkts[1]), Err(PushError::Late));
    assert_eq!(rx.counters().late, 1);
    assert!(rx.poll_event(dl).is_none());
}

#[test]
fn loss_deadline_rule() {
    let c = cfg();
    let k = u64::from(c.loss_deadline_intervals);
    let (mut tx, mut rx, mut batch) = pair(c);
    let data = au(0, 10_000);
    let t0 = 1_000 * MS;
    // Frame 0: only its first packet arrives.
    tx.packetize(0, false, &data, &mut batch)
        .expect("packetize");
    rx.push(t0, batch.packet(0).expect("p0")).expect("fresh");
    assert_eq!(rx.next_deadline(), Some(t0 + k * c.frame_interval_ns));
    // Frame 2 arrives complete 5 ms later; frame 1 (never seen) gets a deadline from it.
    tx.packetize(1, false, &data, &mut batch)
        .expect("packetize");
    let mut b2 = PacketBatch::new();
    tx.packetize(2, false, &data, &mut b2).expect("packetize");
    for p in b2.iter() {
        let _ = rx.push(t0 + 5 * MS, p);
    }
    let (done, lost) = drain(&mut rx, t0 + 5 * MS);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 2);
    assert!(lost.is_empty());
    // Just before the deadline nothing is lost; at it frame 0 is.
    let d0 = t0 + k * c.frame_interval_ns;
    assert!(rx.poll_event(d0 - 1).is_none());
    assert_eq!(rx.poll_event(d0), Some(Event::FrameLost { index: 0 }));
    assert!(rx.poll_event(d0).is_none());
    // Frame 1 can still complete before its own deadline (reordering).
    for p in batch.iter() {
        let _ = rx.push(d0 + MS, p);
    }
    let (done, lost) = drain(&mut rx, d0 + MS);
    assert_eq!((done.len(), done[0].0, lost.len()), (1, 1, 0));
    assert_eq!(rx.next_deadline(), None);
    assert_eq!(rx.counters().frames_lost, 1);
}

#[test]
fn window_eviction_and_skips() {
    let c = cfg(); // 4 frames in flight
    let (mut tx, mut rx, mut batch) = pair(c);
    let data = au(0, 5000);
    tx.packetize(0, false, &data, &mut batch)
        .expect("packetize");
    rx.push(0, batch.packet(0).expect("p")).expect("fresh"); // frame 0 incomplete
    // Frame 4 pushes frame 0 out of the window; 1..=3 become waiting.
    tx.packetize(4, false, &data, &mut batch)
        .expect("packetize");
    for p in batch.iter() {
        let _ = rx.push(MS, p);
    }
    let (done, lost) = drain(&mut rx, MS);
    assert_eq!(lost, vec![0]);
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![4]);
    // Frame 20: 1..=3 fall out (lost), 5..=16 never seen (skipped), 17..=19 waiting.
    tx.packetize(20, false, &data, &mut batch)
        .expect("packetize");
    for p in batch.iter() {
        let _ = rx.push(2 * MS, p);
    }
    let (done, lost) = drain(&mut rx, 2 * MS);
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![20]);
    assert_eq!(lost, (1..=3).chain(5..=16).collect::<Vec<_>>());
    assert_eq!(rx.counters().frames_lost, 1 + 3 + 12);
}

#[test]
fn frame_index_wraps_32_bits() {
    let (mut tx, mut rx, mut batch) = pair(cfg());
    let start = u64::from(u32::MAX) - 2;
    rx.set_expected_first_index(Some(start));
    for i in start..start + 6 {
        let data = au(i, 2500);
        tx.packetize(i, false, &data, &mut batch)
            .expect("packetize");
        for p in batch.iter() {
            let _ = rx.push(0, p);
        }
        let (done, lost) = drain(&mut rx, 0);
        assert!(lost.is_empty());
        assert_eq!(done, vec![(i, data)]);
    }
}

#[test]
fn tampering_and_wrong_key_or_kind() {
    let (mut tx, mut rx, mut batch) = pair(cfg());
    let data = au(0, 1500);
    tx.packetize(0, false, &data, &mut batch)
        .expect("packetize");
    let p = batch.packet(0).expect("p").to_vec();
    for pos in [4, 13, 17, 40, p.len() - 1] {
        let mut b = p.clone();
        b[pos] ^= 0x40;
        assert!(rx.push(0, &b).is_err(), "tampered byte {pos} accepted");
    }
    let mut other = key();
    other.key[0] ^= 1;
    let mut rx2 = Reassembler::new(cfg(), &other, StreamKind::Video).expect("cfg");
    assert_eq!(rx2.push(0, &p), Err(PushError::AuthFailed));
    assert_eq!(rx2.counters().auth_failures, 1);
    let mut rx3 = Reassembler::new(cfg(), &key(), StreamKind::Audio).expect("cfg");
    assert_eq!(
        rx3.push(0, &p),
        Err(PushError::WrongStream(StreamKind::Video))
    );
    // A receiver with a smaller max_frame_bytes rejects the layout before decrypting.
    let mut small = cfg();
    small.max_frame_bytes = 1000;
    let mut rx4 = Reassembler::new(small, &key(), StreamKind::Video).expect("cfg");
    assert!(matches!(rx4.push(0, &p), Err(PushError::Layout(_))));
    // The untampered packet still works.
    rx.push(0, &p).expect("fresh");
}

#[test]
fn replay_window() {
    let mut w = ReplayWindow::new(100); // 128 bits
    assert_eq!(w.check(5), Replay::Fresh);
    w.commit(5);
    assert_eq!(w.check(5), Replay::Duplicate);
    assert_eq!(w.check(4), Replay::Fresh);
    w.commit(200);
    assert_eq!(w.check(5), Replay::TooOld);
    assert_eq!(w.check(199), Replay::Fresh);
    assert_eq!(w.check(200), Replay::Duplicate);
    w.commit(199);
    w.commit(201);
    assert_eq!(w.check(199), Replay::Duplicate);
    assert_eq!(w.check(74), Replay::Fresh);
    assert_eq!(w.check(73), Replay::TooOld);
}

#[test]
fn stream_start_expectations() {
    let data = au(0, 3000);
    // Default: the stream starts at frame 0; a first packet of frame 6 reports 0..=2 skipped
    // (outside the 4-frame window) and 3..=5 lost at their deadline.
    let (mut tx, mut rx, mut batch) = pair(cfg());
    tx.packetize(6, false, &data, &mut batch)
        .expect("packetize");
    for p in batch.iter() {
        let _ = rx.push(0, p);
    }
    assert_eq!(
        rx.poll_event(0),
        Some(Event::FramesSkipped { first: 0, count: 3 })
    );
    assert!(matches!(rx.poll_event(0), Some(Event::FrameComplete(f)) if f.index == 6));
    let (_, lost) = drain(&mut rx, cfg().loss_deadline_ns());
    assert_eq!(lost, vec![3, 4, 5]);

    // Joining mid-stream: the first frame seen is the start, nothing before it is reported,
    // but an earlier frame reordered behind it is still accepted.
    let (mut tx, mut rx, mut batch) = pair(cfg());
    rx.set_expected_first_index(None);
    let mut b5 = PacketBatch::new();
    tx.packetize(5, false, &data, &mut b5).expect("packetize");
    tx.packetize(6, false, &data, &mut batch)
        .expect("packetize");
    for p in batch.iter() {
        let _ = rx.push(0, p);
    }
    for p in b5.iter() {
        let _ = rx.push(0, p);
    }
    let (done, lost) = drain(&mut rx, 10 * cfg().loss_deadline_ns());
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![6, 5]);
    assert!(lost.is_empty());
}

#[test]
fn undrained_events_are_bounded() {
    // A caller that never polls: memory stays bounded, and every frame is accounted for as
    // completed or lost once it finally polls.
    let c = cfg();
    let (mut tx, mut rx, mut batch) = pair(c);
    let data = au(0, 4000);
    for i in 0..100u64 {
        tx.packetize(i, false, &data, &mut batch)
            .expect("packetize");
        for p in batch.iter() {
            let _ = rx.push(i, p);
        }
    }
    let mut events = 0;
    let (done, lost) = {
        let mut done = 0u64;
        let mut lost = 0u64;
        while let Some(ev) = rx.poll_event(100) {
            events += 1;
            match ev {
                Event::FrameComplete(f) => {
                    assert_eq!(f.data, &data[..]);
                    done += 1
                }
                _ => lost += 1,
            }
        }
        (done, lost)
    };
    let k = rx.counters();
    assert!(events <= 4 * c.frames_in_flight as usize + 16);
    assert_eq!(done, 4); // the last frames_in_flight frames are still in their slots
    assert_eq!(k.frames_completed, done);
    assert_eq!(k.frames_completed + k.frames_lost, 100);
    assert_eq!(k.events_dropped + lost, 96);
    assert!(rx.buffered_bytes() <= c.frames_in_flight as usize * 8 * 1200);
}

#[test]
fn synthetic_stream_through_the_data_plane() {
    // The synthetic source end to end: 2 % random loss, every delivered byte verified.
    use rand::{Rng, SeedableRng};
    let c = cfg();
    let (mut tx, mut rx, mut batch) = pair(c);
    let mut src = SyntheticSource::new(SyntheticConfig {
        bitrate_bps: 5_000_000,
        fps: 60,
        keyframe_every: 10,
        keyframe_factor: 8,
        max_frame_bytes: c.max_frame_bytes as usize,
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut au = Vec::new();
    let mut lost = 0;
    let mut done = 0;
    for _ in 0..30 {
        let f = src.next_frame(&mut au);
        tx.packetize(f.index, f.keyframe, &au, &mut batch)
            .expect("packetize");
        let now = f.pts_ns;
        for p in batch.iter() {
            if !rng.random_bool(0.02) {
                let _ = rx.push(now, p);
            }
        }
        while let Some(ev) = rx.poll_event(now) {
            match ev {
                Event::FrameComplete(fr) => {
                    synthetic::verify(fr.index, fr.data).expect("verifies");
                    assert_eq!(fr.keyframe, fr.index % 10 == 0);
                    done += 1;
                }
                _ => lost += 1,
            }
        }
    }
    let k = rx.counters();
    assert_eq!(done + lost, 30);
    assert_eq!(k.frames_completed, done);
    assert!(done >= 27, "{done} of 30 delivered at 2 % loss");
    assert!(rx.buffered_bytes() as u64 <= c.receive_memory_bound());
}
