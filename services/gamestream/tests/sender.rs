//! The GameStream video packetizer through the real protocol-agnostic paced sender
//! (`punktfunk_dataplane::Sender::spawn_with`) over loopback UDP: the datagrams that arrive
//! are exactly the packetizer's, in order.

use punktfunk_dataplane::{Frame, SendOptions, Sender};
use punktfunk_gamestream::video::{VideoConfig, VideoPacketizer};
use punktfunk_wire::{FrameRef, Packetize};
use std::net::UdpSocket;
use std::time::Duration;

fn cfg() -> VideoConfig {
    VideoConfig {
        packet_size: 1392,
        fec_percent: 20,
        min_parity: 2,
        fps: 60,
        encryption_key: Some([5; 16]),
        max_frame_bytes: 1 << 20,
    }
}

#[test]
fn video_packetizer_through_the_paced_sender_on_loopback() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let sender = Sender::spawn_with(
        tx,
        SendOptions::paced(16_666_667),
        Box::new(VideoPacketizer::new(cfg()).unwrap()),
    )
    .unwrap();

    let frames: Vec<(bool, Vec<u8>)> = [(true, 40_000usize), (false, 3_000), (false, 120_000)]
        .iter()
        .enumerate()
        .map(|(k, &(kf, len))| (kf, (0..len).map(|i| (i * 7 + k) as u8).collect()))
        .collect();
    // What the same packetizer produces directly.
    let mut reference = VideoPacketizer::new(cfg()).unwrap();
    let mut expected = Vec::new();
    let mut batch = reference.new_batch();
    for (i, (kf, data)) in frames.iter().enumerate() {
        reference
            .packetize(
                FrameRef {
                    index: i as u64,
                    keyframe: *kf,
                    data,
                },
                &mut batch,
            )
            .unwrap();
        expected.extend(batch.iter().map(<[u8]>::to_vec));
    }

    for (i, (kf, data)) in frames.iter().enumerate() {
        sender
            .send_within(
                Frame::new(i as u64, *kf, data.clone()),
                Duration::from_secs(2),
            )
            .unwrap();
    }
    let mut buf = vec![0u8; 2048];
    for (k, want) in expected.iter().enumerate() {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {k} of {}: {e}", expected.len()));
        assert_eq!(&buf[..n], &want[..], "datagram {k}");
    }
    sender.shutdown();
}
