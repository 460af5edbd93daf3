//! `Drop` only signals: a dropped `Receiver` or `SyntheticFeed` tells its thread to stop, and
//! the thread then ends on its own (its closure, holding the callback's state, is released).

use punktfunk_dataplane::feed::{FeedConfig, SyntheticFeed};
use punktfunk_dataplane::{Receiver, ReceiverConfig, Sender, SenderConfig};
use punktfunk_wire::synthetic::SyntheticConfig;
use punktfunk_wire::{DataPlaneConfig, SessionKey, StreamKind};
use std::net::UdpSocket;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

fn key() -> SessionKey {
    SessionKey {
        key: [5; 16],
        salt: [4, 3, 2, 1],
    }
}

#[test]
fn a_dropped_receiver_thread_ends_on_its_own() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (alive_tx, alive_rx) = mpsc::channel::<()>();
    let cfg = ReceiverConfig::new(StreamKind::Video, DataPlaneConfig::default(), key());
    let receiver = Receiver::spawn(sock, &cfg, move |_ev| {
        // Holds the channel's sender until the thread (and with it this closure) is gone.
        let _ = &alive_tx;
    })
    .expect("receiver");
    drop(receiver);
    // The thread saw the stop signal and released its closure: the channel disconnects.
    assert_eq!(
        alive_rx.recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
}

#[test]
fn a_dropped_feed_stops_feeding() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr().expect("addr"))
        .expect("connect");
    let sender = Arc::new(
        Sender::spawn(
            tx,
            SenderConfig::new(DataPlaneConfig::default(), key(), StreamKind::Video),
        )
        .expect("sender"),
    );
    let source = SyntheticConfig {
        bitrate_bps: 1_000_000,
        fps: 100,
        keyframe_every: 100,
        keyframe_factor: 2,
        max_frame_bytes: 64 << 10,
    };
    let feed =
        SyntheticFeed::spawn(sender.clone(), FeedConfig::realtime(source, None)).expect("feed");
    let started = Instant::now();
    while sender.stats().frames_sent == 0 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sender.stats().frames_sent > 0, "the feed runs");
    drop(feed);
    // The feed thread ends and releases its sender clone: we become the only holder.
    let started = Instant::now();
    while Arc::strong_count(&sender) > 1 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(Arc::strong_count(&sender), 1, "the feed thread still runs");
    let sender = Arc::try_unwrap(sender)
        .map_err(|_| "shared")
        .expect("sole owner");
    let stats = sender.shutdown();
    assert!(stats.frames_sent > 0);
}
