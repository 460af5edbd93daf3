//! A sender that replaces an earlier one of the same key and kind (a second speed test in one
//! session) must resume the AES-GCM sequence: restarting at 0 would reuse nonces, and the
//! receiver's replay window rejects such packets anyway.

use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::Duration;

use punktfunk_dataplane::{Frame, Receiver, ReceiverConfig, RxEvent, Sender, SenderConfig};
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};

const FRAMES: u64 = 5;

/// Default parameters, but a 1 s frame interval: this test is about sequence numbers, and a
/// loaded machine must not turn a late receive thread into a loss deadline.
fn config() -> DataPlaneConfig {
    DataPlaneConfig {
        frame_interval_ns: 1_000_000_000,
        frames_in_flight: 16,
        ..DataPlaneConfig::default()
    }
}

fn key() -> SessionKey {
    SessionKey {
        key: [7; 16],
        salt: [1, 2, 3, 4],
    }
}

/// Sends frames `first..first + FRAMES` with a new sender starting at `first_sequence`; returns
/// the sender's final `next_sequence`.
fn send_batch(rx_addr: std::net::SocketAddr, first: u64, first_sequence: u64) -> u64 {
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx_addr).expect("connect");
    let mut cfg = SenderConfig::new(config(), key(), StreamKind::Probe);
    cfg.options.pacing = None;
    cfg.first_sequence = first_sequence;
    let sender = Sender::spawn(tx, cfg).expect("sender");
    for i in first..first + FRAMES {
        sender
            .try_send(Frame::new(i, false, vec![i as u8; 3000]))
            .expect("queue has room");
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = sender.shutdown();
    assert_eq!(stats.frames_sent, FRAMES);
    stats.next_sequence
}

fn delivered(rx: &mpsc::Receiver<u64>, n: u64) -> Vec<u64> {
    (0..n)
        .map_while(|_| rx.recv_timeout(Duration::from_secs(2)).ok())
        .collect()
}

#[test]
fn replacement_sender_resumes_the_sequence() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let receiver = Receiver::spawn(
        sock,
        &ReceiverConfig::new(StreamKind::Probe, config(), key()),
        move |ev| {
            if let RxEvent::Frame(f) = ev {
                let _ = tx.send(f.index);
            }
        },
    )
    .expect("receiver");

    let next = send_batch(addr, 0, 0);
    assert!(next >= FRAMES * 3, "3000-byte frames seal several packets");
    assert_eq!(delivered(&rx, FRAMES), (0..FRAMES).collect::<Vec<_>>());

    // Resumed: accepted, and sequence numbers keep growing.
    let next2 = send_batch(addr, FRAMES, next);
    assert!(next2 > next);
    assert_eq!(
        delivered(&rx, FRAMES),
        (FRAMES..2 * FRAMES).collect::<Vec<_>>()
    );

    // Restarted at 0 (the bug this field prevents): every packet is a replay and dropped.
    send_batch(addr, 2 * FRAMES, 0);
    assert!(delivered(&rx, 1).is_empty(), "replayed sequence accepted");
    let (stats, _) = receiver.stop();
    assert_eq!(stats.wire.frames_completed, 2 * FRAMES);
}
