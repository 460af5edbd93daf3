//! The kernel-pacing send call on the host's loopback: `SO_TXTIME` on, one `sendmmsg` of
//! several pieces, each GSO message with its `UDP_SEGMENT` and `SCM_TXTIME` cmsgs. The host's
//! lo has no fq, so the departure times are not held here (the UML guest tests that,
//! tests/tests/pacing.rs); this checks that the kernel takes both cmsgs and that every packet
//! arrives once, in order, byte for byte.

use punktfunk_dataplane::sys::{
    BufferDir, Piece, SendScratch, enable_txtime, grow_buffer, monotonic_ns, probe_gso,
};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

const STRIDE: usize = 1000;

#[test]
fn one_sendmmsg_of_timed_gso_pieces_delivers_every_packet_in_order() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // 150 datagrams at once: more than a default receive buffer holds.
    grow_buffer(rx.as_raw_fd(), BufferDir::Receive, 4 << 20);
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    probe_gso(tx.as_raw_fd(), STRIDE as u16).expect("UDP GSO");
    enable_txtime(tx.as_raw_fd()).expect("SO_TXTIME with CLOCK_MONOTONIC");
    // 150 packets: pieces of 70 (two GSO messages: 64 + 6), 1 and 79 (64 + 15) packets.
    let packets: Vec<u8> = (0..150u32)
        .flat_map(|i| {
            let mut p = vec![(i % 251) as u8; STRIDE];
            p[..4].copy_from_slice(&i.to_le_bytes());
            p
        })
        .collect();
    let now = monotonic_ns();
    let pieces = [
        Piece {
            bytes: &packets[..70 * STRIDE],
            txtime_ns: Some(now),
        },
        Piece {
            bytes: &packets[70 * STRIDE..71 * STRIDE],
            txtime_ns: Some(now + 1_000_000),
        },
        Piece {
            bytes: &packets[71 * STRIDE..],
            txtime_ns: Some(now + 2_000_000),
        },
    ];
    let mut scratch = SendScratch::new();
    let sent = scratch
        .send_pieces(tx.as_raw_fd(), &pieces, STRIDE, true)
        .expect("sendmmsg with UDP_SEGMENT and SCM_TXTIME");
    assert_eq!(sent, 150);
    let mut buf = [0u8; 2048];
    for i in 0..150u32 {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of 150: {e}"));
        assert_eq!(n, STRIDE);
        assert_eq!(
            &buf[..n],
            &packets[i as usize * STRIDE..(i as usize + 1) * STRIDE]
        );
    }
}
