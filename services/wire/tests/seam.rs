//! The packetizer seam (`transmit`): punktfunk/1 through `dyn Packetize` produces the same
//! packets as the `Packetizer` called directly, and `PacketBatch`'s writer API is what a
//! second protocol needs.

use punktfunk_wire::synthetic::fill;
use punktfunk_wire::{
    DataPlaneConfig, FrameRef, PacketBatch, Packetize, PacketizeError, Packetizer, SessionKey,
    StreamKind,
};

fn key() -> SessionKey {
    SessionKey {
        key: [3; 16],
        salt: [9, 8, 7, 6],
    }
}

#[test]
fn punktfunk_packetizer_through_the_seam_matches_the_direct_call() {
    let cfg = DataPlaneConfig::default();
    let mut direct = Packetizer::new(cfg, &key(), StreamKind::Video).expect("config");
    let mut seam: Box<dyn Packetize> =
        Box::new(Packetizer::new(cfg, &key(), StreamKind::Video).expect("config"));
    let mut a = PacketBatch::new();
    let mut b = seam.new_batch();
    assert_eq!(b.stride(), cfg.packet_len(), "pre-sized for the config");
    assert_eq!(seam.next_sequence(), 0);
    let mut au = Vec::new();
    for (i, len) in [1usize, 1200, 50_000, 300_000].into_iter().enumerate() {
        fill(i as u64, len, &mut au);
        let s = direct
            .packetize(i as u64, i == 0, &au, &mut a)
            .expect("direct");
        let frame = FrameRef {
            index: i as u64,
            keyframe: i == 0,
            data: &au,
        };
        seam.packetize(frame, &mut b).expect("seam");
        assert_eq!(b.len(), s.packets as usize);
        assert_eq!(b.stride(), a.stride());
        assert!(a.bytes() == b.bytes(), "frame {i}: packets differ");
        assert_eq!(seam.next_sequence(), s.first_seq + u64::from(s.packets));
    }
    // A refused frame consumes no sequence numbers.
    let before = seam.next_sequence();
    let too_big = vec![0u8; cfg.max_frame_bytes as usize + 1];
    let frame = FrameRef {
        index: 9,
        keyframe: false,
        data: &too_big,
    };
    assert!(matches!(
        seam.packetize(frame, &mut b),
        Err(PacketizeError::FrameTooLarge { .. })
    ));
    assert_eq!(seam.next_sequence(), before);
}

#[test]
fn packet_batch_writer_api() {
    let mut b = PacketBatch::with_capacity(4, 2);
    assert!(b.is_empty());
    b.prepare(4, 3);
    assert_eq!((b.len(), b.stride()), (3, 4));
    for (i, p) in b.packets_mut().enumerate() {
        p.fill(i as u8);
    }
    b.packet_mut(2).expect("packet 2").copy_from_slice(b"last");
    assert!(b.packet_mut(3).is_none());
    assert_eq!(b.range_bytes(1..3), b"\x01\x01\x01\x01last");
    assert_eq!(b.packet(0), Some(&[0u8; 4][..]));
    // Reuse with another stride: only the new frame's packets are visible.
    b.prepare(2, 1);
    assert_eq!(b.bytes().len(), 2);
    assert_eq!(b.iter().count(), 1);
}
