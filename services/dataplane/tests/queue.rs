//! The full-queue policy: a producer faster than the send thread never blocks; the frames
//! that do not fit are dropped, handed back and counted.

use punktfunk_dataplane::{Frame, ModeChoice, Sender, SenderConfig, TrySendError};
use punktfunk_wire::synthetic::fill;
use punktfunk_wire::{DataPlaneConfig, PacingConfig, SessionKey, StreamKind};
use std::net::UdpSocket;

#[test]
fn full_queue_drops_and_counts_without_blocking_the_producer() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr().expect("addr"))
        .expect("connect");
    let dp = DataPlaneConfig::default();
    let key = SessionKey {
        key: [7; 16],
        salt: [1, 2, 3, 4],
    };
    let mut cfg = SenderConfig::new(dp, key, StreamKind::Video);
    cfg.options.mode = ModeChoice::Sendmmsg;
    cfg.options.queue_frames = 1;
    // A deliberately slow send thread: every frame (20 KB = 17 data + 2 parity packets, cut
    // into chunks of 2 packets) is spread over 0.75 s.
    cfg.options.pacing = Some(PacingConfig {
        burst_bytes: 2 * dp.packet_len(),
        spread_permille: 750,
        frame_interval_ns: 1_000_000_000,
    });
    // Slow even with frames waiting: no catching up.
    cfg.options.catch_up = false;
    let sender = Sender::spawn(tx, cfg).expect("sender");

    const FRAMES: u64 = 50;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..FRAMES {
        let mut buf = sender.buffer();
        fill(i, 20_000, &mut buf);
        match sender.try_send(Frame::new(i, i == 0, buf)) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(f)) => {
                // The frame comes back intact, so its buffer can be reused.
                assert_eq!(f.index, i);
                assert_eq!(f.data.len(), 20_000);
                refused += 1;
            }
            Err(e) => panic!("send thread gone: {e}"),
        }
    }
    // All 50 calls returned while the send thread had finished at most one frame (each takes
    // ≥ 0.72 s): had try_send blocked, the producer could not have outrun it like this.
    let mid = sender.stats();
    assert!(
        mid.frames_sent <= 1,
        "sender finished {} frames",
        mid.frames_sent
    );
    assert_eq!(accepted + refused, FRAMES);
    // At most one frame in the thread's hands, one in the queue, and one more if the thread
    // finished the first before we were done (at least the first one always fits).
    assert!((1..=3).contains(&accepted), "accepted {accepted}");
    assert_eq!(mid.frames_dropped_queue, refused);

    let fin = sender.shutdown();
    assert_eq!(fin.frames_sent, accepted, "queued frames are still sent");
    assert_eq!(fin.frames_dropped_queue, refused);
    assert_eq!(fin.send_drop_packets, 0);
    assert!(fin.pacing_wait_ns > 0);
}

#[test]
fn oversized_frame_is_counted_as_failed_and_the_thread_carries_on() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr().expect("addr"))
        .expect("connect");
    let key = SessionKey {
        key: [9; 16],
        salt: [0; 4],
    };
    let cfg = SenderConfig::new(DataPlaneConfig::default(), key, StreamKind::Audio);
    let sender = Sender::spawn(tx, cfg).expect("sender");
    // A frame over max_frame_bytes fails to packetize: counted, the thread carries on.
    let too_big = vec![0u8; (4 << 20) + 1];
    sender
        .try_send(Frame::new(0, true, too_big))
        .expect("queued");
    let mut buf = sender.buffer();
    fill(1, 1000, &mut buf);
    sender.try_send(Frame::new(1, false, buf)).expect("queued");
    let st = sender.shutdown();
    assert_eq!(st.frames_failed, 1);
    assert_eq!(st.frames_sent, 1);
}

#[test]
fn unconnected_socket_is_refused() {
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let key = SessionKey {
        key: [9; 16],
        salt: [0; 4],
    };
    let cfg = SenderConfig::new(DataPlaneConfig::default(), key, StreamKind::Video);
    assert!(matches!(
        Sender::spawn(tx, cfg),
        Err(punktfunk_dataplane::SenderError::NotConnected(_))
    ));
}

/// A burst of small frames (an encoder catching up) larger than the queue: `try_send` alone
/// drops the overflow although the send thread clears each frame in microseconds;
/// `send_within` waits for room and delivers all of them, and a hopelessly slow sender still
/// drops once the budget is spent.
#[test]
fn send_within_absorbs_a_burst_and_still_drops_when_hopeless() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let key = SessionKey {
        key: [7; 16],
        salt: [1, 2, 3, 4],
    };
    let sender_with = |pacing: Option<PacingConfig>| {
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.connect(sink.local_addr().expect("addr"))
            .expect("connect");
        let mut cfg = SenderConfig::new(DataPlaneConfig::default(), key.clone(), StreamKind::Video);
        cfg.options.queue_frames = 2;
        cfg.options.pacing = pacing;
        Sender::spawn(tx, cfg).expect("sender")
    };
    let burst = |sender: &Sender, budget_ms: u64| {
        (0..64u64)
            .filter(|&i| {
                let mut buf = sender.buffer();
                fill(i, 3_000, &mut buf);
                sender
                    .send_within(
                        Frame::new(i, i == 0, buf),
                        std::time::Duration::from_millis(budget_ms),
                    )
                    .is_ok()
            })
            .count() as u64
    };

    // The budget is not a speed claim: a sender that clears a frame in microseconds must get
    // them all, even when the machine stalls it for a while (50 ms once lost one frame in CI).
    let fast = sender_with(None);
    assert_eq!(
        burst(&fast, 5_000),
        64,
        "a fast sender takes the whole burst"
    );
    let stats = fast.shutdown();
    assert_eq!(stats.frames_dropped_queue, 0);
    assert_eq!(stats.frames_sent, 64);

    // One packet every 0.75 s: nothing frees room within 1 ms.
    let slow = sender_with(Some(PacingConfig {
        burst_bytes: 1,
        spread_permille: 750,
        frame_interval_ns: 1_000_000_000,
    }));
    let accepted = burst(&slow, 1);
    assert!(accepted < 64, "a stuck sender cannot take everything");
    assert_eq!(slow.stats().frames_dropped_queue, 64 - accepted);
}

/// A send thread that was held up catches up: while later frames wait in the queue, the rest
/// of the current frame goes out without pacing waits (and says so); the last frame, with
/// nothing behind it, is paced as usual.
#[test]
fn a_backlog_cuts_pacing_short_and_the_last_frame_is_paced() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr().expect("addr"))
        .expect("connect");
    let dp = DataPlaneConfig::default();
    let key = SessionKey {
        key: [7; 16],
        salt: [1, 2, 3, 4],
    };
    let (reports_tx, reports) = std::sync::mpsc::sync_channel(8);
    let mut cfg = SenderConfig::new(dp, key, StreamKind::Video);
    cfg.options.mode = ModeChoice::Sendmmsg;
    cfg.options.queue_frames = 4;
    cfg.options.reports = Some(reports_tx);
    // Each 20 KB frame (chunks of 2 packets) would be spread over 1.5 s.
    cfg.options.pacing = Some(PacingConfig {
        burst_bytes: 2 * dp.packet_len(),
        spread_permille: 750,
        frame_interval_ns: 2_000_000_000,
    });
    let sender = Sender::spawn(tx, cfg).expect("sender");
    for i in 0..3u64 {
        let mut buf = sender.buffer();
        fill(i, 20_000, &mut buf);
        sender
            .try_send(Frame::new(i, i == 0, buf))
            .expect("the queue has room");
    }
    let stats = sender.shutdown();
    let reports: Vec<_> = reports.try_iter().collect();
    assert_eq!(reports.len(), 3);
    assert!(reports[0].caught_up, "frame 0 had two frames behind it");
    assert!(reports[1].caught_up, "frame 1 had one frame behind it");
    assert!(!reports[2].caught_up, "frame 2 had nothing behind it");
    assert!(reports[2].pacing_wait_ns > 0, "the last frame was paced");
    assert_eq!(stats.pacing_catchups, 2);
    assert_eq!(stats.frames_sent, 3);
    assert_eq!(stats.send_drop_packets, 0);
}
