//! Delivery under random loss: two network namespaces joined by veth, nftables dropping a
//! share of the packets at random, the synthetic 20 Mbit/s 60 fps stream with 20 % parity.
//!
//! ```text
//! cargo run -p punktfunk-dataplane --example loss_sweep --release [-- --frames 10000 \
//!     --parity 200 --speed 1 --loss 10,20,50,100]
//! ```
//!
//! Loss values are per-mille. Each loss level runs in its own namespace pair, all at the same
//! time (so the sweep takes as long as one run: 10,000 frames at 60 fps ≈ 167 s). `--speed S`
//! produces frames S times faster and shrinks the data-plane frame interval by the same
//! factor, so pacing spread and the loss deadline (3 frame intervals) stay consistent with
//! the frame rate actually sent. Needs root, `ip` and `nft`.

use punktfunk_testsupport::netlab::{NetnsPair, Side, StreamOutcome, StreamRun, run_verified};
use punktfunk_wire::synthetic::SyntheticConfig;

struct Args {
    frames: u64,
    parity: u32,
    speed: u64,
    losses: Vec<u32>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        frames: 10_000,
        parity: 200,
        speed: 1,
        losses: vec![10, 20, 50, 100],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--frames" => a.frames = num(&v)?,
            "--parity" => a.parity = num(&v)? as u32,
            "--speed" => a.speed = num(&v)?.max(1),
            "--loss" => {
                a.losses = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u32>()
                            .map_err(|e| format!("--loss {s}: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

fn one(
    tag: String,
    frames: u64,
    parity: u32,
    speed: u64,
    loss: u32,
) -> Result<(StreamOutcome, u64), String> {
    let lab = NetnsPair::create(&tag).map_err(|e| e.to_string())?;
    let port = 47_998;
    lab.set_loss(port, loss).map_err(|e| e.to_string())?;
    let rx = lab.udp_socket(Side::B, port).map_err(|e| e.to_string())?;
    let tx = lab.udp_socket(Side::A, 0).map_err(|e| e.to_string())?;
    tx.connect((lab.addr(Side::B), port))
        .map_err(|e| e.to_string())?;
    let mut run = StreamRun::realtime(SyntheticConfig::default(), frames);
    run.data_plane.parity_permille = parity;
    run.data_plane.frame_interval_ns /= speed;
    run.feed_interval_ns /= speed;
    let out = run_verified(tx, rx, &run).map_err(|e| e.to_string())?;
    let dropped = lab.dropped_packets().map_err(|e| e.to_string())?;
    Ok((out, dropped))
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loss_sweep: {e}");
            std::process::exit(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("loss_sweep: unoptimized build — not real time; use --release");
    }
    println!(
        "loss sweep: {} frames per level, synthetic 20 Mbit/s at {} fps (keyframe every 120 at 10x), \
         parity {}‰ (floor 2), loss deadline 3 frame intervals, levels run concurrently",
        a.frames,
        60 * a.speed,
        a.parity
    );
    let pid = std::process::id();
    let handles: Vec<_> = a
        .losses
        .iter()
        .map(|&loss| {
            let (frames, parity, speed) = (a.frames, a.parity, a.speed);
            let h = std::thread::spawn(move || {
                one(format!("{pid}-s{loss}"), frames, parity, speed, loss)
            });
            (loss, h)
        })
        .collect();
    println!(
        "| loss asked | packets dropped (nft) | frames verified | delivery | lost | FEC-recovered shards | blocks decoded | mode |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for (loss, h) in handles {
        match h.join() {
            Ok(Ok((o, dropped))) => println!(
                "| {:.1} % | {} / {} ({:.2} %) | {} / {} | {:.3} % | {} | {} | {} | {:?} |",
                f64::from(loss) / 10.0,
                dropped,
                o.sender.packets_sent,
                100.0 * dropped as f64 / o.sender.packets_sent.max(1) as f64,
                o.verified,
                o.frames,
                100.0 * o.verified as f64 / o.frames.max(1) as f64,
                o.lost,
                o.receiver.wire.recovered_shards,
                o.receiver.wire.recovered_blocks,
                o.mode
            ),
            Ok(Err(e)) => {
                failed = true;
                println!("| {:.1} % | failed: {e} |", f64::from(loss) / 10.0)
            }
            Err(_) => {
                failed = true;
                println!("| {:.1} % | panicked |", f64::from(loss) / 10.0)
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
