//! The packetizer seam: a second, trivial protocol (fixed-size raw chunks, no header, no FEC,
//! no encryption) plugs into the same send thread as punktfunk/1, and exactly its bytes
//! arrive over a real UDP socket, paced and batched (sendmmsg and UDP GSO) by the one send
//! implementation.

use punktfunk_dataplane::sys::{BufferDir, grow_buffer};
use punktfunk_dataplane::{
    Frame, FrameRef, ModeChoice, PacketBatch, Packetize, PacketizeError, SendMode, SendOptions,
    Sender,
};
use punktfunk_wire::PacingConfig;
use punktfunk_wire::synthetic::fill;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Packet size of the raw protocol.
const CHUNK: usize = 1000;
/// Frames above this are refused (to see the error path through the seam).
const MAX_FRAME: usize = 256 << 10;

/// The whole "protocol": a frame cut into `CHUNK`-byte packets, the last one zero-padded.
/// Its sequence space counts packets.
struct RawChunks {
    packets: u64,
}

/// The packets `RawChunks` makes of `data` (the reference the receiver compares against).
fn raw_chunks(data: &[u8]) -> Vec<Vec<u8>> {
    data.chunks(CHUNK)
        .map(|c| {
            let mut p = c.to_vec();
            p.resize(CHUNK, 0);
            p
        })
        .collect()
}

impl Packetize for RawChunks {
    fn packetize(
        &mut self,
        frame: FrameRef<'_>,
        out: &mut PacketBatch,
    ) -> Result<(), PacketizeError> {
        if frame.data.len() > MAX_FRAME {
            return Err(PacketizeError::FrameTooLarge {
                len: frame.data.len(),
                max: MAX_FRAME as u32,
            });
        }
        let chunks = raw_chunks(frame.data);
        out.prepare(CHUNK, chunks.len());
        for (dst, src) in out.packets_mut().zip(&chunks) {
            dst.copy_from_slice(src);
        }
        self.packets += chunks.len() as u64;
        Ok(())
    }

    fn next_sequence(&self) -> u64 {
        self.packets
    }
}

/// Frame sizes: a single short packet, a multi-chunk frame with a padded tail, an exact
/// multiple of the chunk, a frame over the limit (refused), and a large paced frame.
fn frames() -> Vec<Vec<u8>> {
    [10, 5_500, 20 * CHUNK, MAX_FRAME + 1, 200_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut v = Vec::new();
            fill(i as u64, len, &mut v);
            v
        })
        .collect()
}

/// Receives datagrams until `want` arrived or nothing came for 5 s.
fn receive(sock: UdpSocket, want: usize) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < want {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

fn run(mode: ModeChoice) -> SendMode {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    let frames = frames();
    let expected: Vec<Vec<u8>> = frames
        .iter()
        .filter(|f| f.len() <= MAX_FRAME)
        .flat_map(|f| raw_chunks(f))
        .collect();
    let want = expected.len();
    // ~230 KB in flight at once: more than a default receive buffer may hold.
    let _ = grow_buffer(rx.as_raw_fd(), BufferDir::Receive, 8 << 20);
    let receiver = std::thread::spawn(move || receive(rx, want));

    let mut opts = SendOptions::paced(10_000_000);
    opts.mode = mode;
    opts.queue_frames = frames.len();
    // 200 packets of 1000 B in 64 KiB chunks: the big frame is paced in 4 chunks.
    opts.pacing = Some(PacingConfig {
        frame_interval_ns: 10_000_000,
        ..PacingConfig::default()
    });
    let sender = Sender::spawn_with(tx, opts, Box::new(RawChunks { packets: 0 })).expect("sender");
    let mode_used = sender.mode();
    for (i, data) in frames.into_iter().enumerate() {
        sender
            .try_send(Frame::new(i as u64, i == 0, data))
            .expect("queue has room");
    }
    let stats = sender.shutdown();
    let got = receiver.join().expect("receiver thread");

    assert_eq!(stats.frames_sent, 4, "{stats:?}");
    assert_eq!(stats.frames_failed, 1, "the oversized frame is refused");
    assert_eq!(stats.packets_sent, want as u64);
    assert_eq!(stats.bytes_sent, (want * CHUNK) as u64);
    assert_eq!(stats.send_drop_packets, 0);
    assert_eq!(
        stats.next_sequence, want as u64,
        "the packetizer's sequence"
    );
    assert!(stats.pacing_wait_ns > 0, "the big frame was paced");
    assert_eq!(got.len(), want, "datagrams received");
    // Loopback keeps order: the datagrams are exactly the packetizer's packets, one each
    // (GSO super-buffers were cut at the stride).
    assert!(
        got == expected,
        "received bytes differ from the packetizer's"
    );
    mode_used
}

#[test]
fn raw_chunk_packetizer_plugs_into_the_sender_sendmmsg() {
    assert_eq!(run(ModeChoice::Sendmmsg), SendMode::Sendmmsg);
}

#[test]
fn raw_chunk_packetizer_plugs_into_the_sender_gso() {
    // Auto: GSO where the kernel has it (it does on every kernel we run), else sendmmsg.
    let mode = run(ModeChoice::Auto);
    eprintln!("mode used: {mode:?}");
}

/// Dropping a sender never waits for its thread, even while the thread is busy pacing a
/// slow frame; `shutdown` is the call that waits.
#[test]
fn dropping_a_busy_sender_does_not_block() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(sink.local_addr().expect("addr"))
        .expect("connect");
    let mut opts = SendOptions::paced(40_000_000_000);
    opts.mode = ModeChoice::Sendmmsg;
    // One packet per chunk, the chunks spread over 30 s.
    opts.pacing = Some(PacingConfig {
        burst_bytes: 1,
        spread_permille: 750,
        frame_interval_ns: 40_000_000_000,
    });
    let sender = Sender::spawn_with(tx, opts, Box::new(RawChunks { packets: 0 })).expect("sender");
    let mut data = Vec::new();
    fill(0, 10 * CHUNK, &mut data);
    sender.try_send(Frame::new(0, true, data)).expect("queued");
    // The first packet arrived: the thread is now pacing the rest of the frame for 27 s.
    sink.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 2 * CHUNK];
    assert_eq!(sink.recv(&mut buf).expect("first packet"), CHUNK);
    let t0 = Instant::now();
    drop(sender);
    let took = t0.elapsed();
    // A joining Drop would wait for the rest of the frame (27 s); 5 s is a liveness bound.
    assert!(took < Duration::from_secs(5), "drop blocked for {took:?}");
}
