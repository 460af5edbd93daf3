//! Cross-process handoff latency of the AU ring, against a bare-eventfd baseline in the same run.
//!
//! Method: this binary re-executes itself as the consumer process (fds inherited at 40/41). The
//! parent (producer) publishes 64 KiB records; the consumer sits blocked in `Consumer::wait`, and
//! for every record computes `monotonic_ns() - written_ns` right after `try_read` returns it
//! (`written_ns` is stamped by the ring just before publishing, after the payload copy). The
//! baseline is the same two-process wakeup with nothing but an eventfd: the parent writes its
//! `monotonic_ns()` as the eventfd value, the child polls, reads it and subtracts — so the
//! difference between the two lines is the ring's own overhead. Scenarios:
//!
//! * `eventfd baseline @1kHz`  — bare eventfd ping, 1 kHz
//! * `ring 64KiB @1kHz`        — one record per ms (a paced encoder), interleaved with the
//!   baseline pings half a period apart so both see the same machine noise
//! * `ring 64KiB back-to-back` — records written as fast as the producer can (includes queueing
//!   when the consumer falls behind; drops are reported)
//!
//! Caveat: a baseline ping that arrives before the previous one was read sums two timestamps;
//! such "coalesced" pings (child late by > 1 ms) are counted and excluded, which flatters the
//! baseline's tail slightly. The ring has no such bias (every record carries its own stamp).
//!
//! Run: `cargo bench -p punktfunk-ring --bench handoff`. Takes ~5 s.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use punktfunk_ring::{Consumer, RecordMeta, Ring, RingFds, WriteOutcome, monotonic_ns};
use rustix::event::{EventfdFlags, PollFd, PollFlags};

const CHILD_ENV: &str = "PUNKTFUNK_HANDOFF_CHILD";
const FD_MEMFD: RawFd = 40;
const FD_DOORBELL: RawFd = 41;
const RECORD: usize = 64 << 10;
const PACED: usize = 4000;
const BACK_TO_BACK: usize = 20_000;
const WARMUP: usize = 50;
/// Eventfd value that tells the baseline child to stop (timestamps are never this small).
const STOP: u64 = 1;

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        match mode.as_str() {
            "eventfd" => child_eventfd(),
            label => child_ring(label),
        }
        return;
    }
    println!(
        "handoff bench: 2 processes, CLOCK_MONOTONIC, {} KiB records, {} paced samples (first {} dropped as warm-up)",
        RECORD >> 10,
        PACED,
        WARMUP
    );
    bench_paced_interleaved();
    bench_back_to_back();
}

/// Spawns this binary as the consumer with `fds` dup2'ed to 40, 41, ...
fn spawn_child(mode: &str, fds: &[&OwnedFd]) -> std::process::Child {
    let sources: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 64).expect("dup"))
        .collect();
    let pairs: Vec<(RawFd, RawFd)> = sources
        .iter()
        .map(|fd| fd.as_raw_fd())
        .zip(FD_MEMFD..)
        .collect();
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(CHILD_ENV, mode);
    // SAFETY: runs in the forked child before exec and only calls the async-signal-safe dup2 on
    // fds prepared before the fork (sources >= 64, targets 40.., so no source is clobbered);
    // dup2 clears FD_CLOEXEC on the targets, so exactly those survive the exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(src, dst) in &pairs {
                if libc::dup2(src, dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn child");
    drop(sources);
    child
}

fn wait_child(child: std::process::Child) {
    let status = child.wait_with_output().expect("wait child").status;
    assert!(status.success(), "child failed: {status}");
}

fn sleep_until(deadline_ns: u64) {
    let now = monotonic_ns();
    if deadline_ns > now {
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

fn report(label: &str, mut lat_ns: Vec<u64>, extra: &str) {
    let lat = if lat_ns.len() > WARMUP {
        lat_ns.split_off(WARMUP)
    } else {
        lat_ns
    };
    let mut lat = lat;
    lat.sort_unstable();
    if lat.is_empty() {
        println!("{label:<28} no samples {extra}");
        return;
    }
    let us = |v: u64| v as f64 / 1000.0;
    let p50 = lat[lat.len() / 2];
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    let max = lat[lat.len() - 1];
    println!(
        "{label:<28} n={:<6} p50={:>8.1} us  p99={:>8.1} us  max={:>9.1} us{extra}",
        lat.len(),
        us(p50),
        us(p99),
        us(max)
    );
}

/// Baseline and ring at 1 kHz each, interleaved half a period apart in the same time window, so
/// both see the same machine noise (the two consumer children are alive and blocked together).
fn bench_paced_interleaved() {
    let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
    let base_child = spawn_child("eventfd", &[&efd, &efd]);
    let (mut producer, fds) = Ring::create(16 << 20, 2 << 20).expect("create ring");
    let ring_child = spawn_child("ring 64KiB @1kHz", &[&fds.memfd, &fds.doorbell]);
    drop(fds);
    std::thread::sleep(Duration::from_millis(200)); // let the children block in poll / wait
    let payload = vec![0xA5u8; RECORD];
    let mut dropped = 0u64;
    let mut tick = monotonic_ns();
    for i in 0..PACED {
        tick += 1_000_000;
        sleep_until(tick);
        let meta = RecordMeta {
            frame_index: i as u64,
            ..RecordMeta::default()
        };
        if let WriteOutcome::Dropped { .. } = producer.write(&meta, &payload).expect("write") {
            dropped += 1;
        }
        sleep_until(tick + 500_000);
        rustix::io::write(&efd, &monotonic_ns().to_ne_bytes()).expect("eventfd write");
    }
    std::thread::sleep(Duration::from_millis(5));
    rustix::io::write(&efd, &STOP.to_ne_bytes()).expect("eventfd write");
    drop(producer);
    wait_child(base_child);
    wait_child(ring_child);
    println!("  (paced ring: producer dropped {dropped} of {PACED})");
}

fn bench_back_to_back() {
    let label = "ring 64KiB back-to-back";
    let (mut producer, fds) = Ring::create(16 << 20, 2 << 20).expect("create ring");
    let child = spawn_child(label, &[&fds.memfd, &fds.doorbell]);
    drop(fds);
    std::thread::sleep(Duration::from_millis(200)); // let the child attach and block in wait()
    let payload = vec![0xA5u8; RECORD];
    let mut dropped = 0u64;
    for i in 0..BACK_TO_BACK {
        let meta = RecordMeta {
            frame_index: i as u64,
            ..RecordMeta::default()
        };
        if let WriteOutcome::Dropped { .. } = producer.write(&meta, &payload).expect("write") {
            dropped += 1;
        }
    }
    drop(producer);
    wait_child(child);
    println!(
        "  (back-to-back: producer dropped {dropped} of {BACK_TO_BACK}; latency includes queueing)"
    );
}

fn child_eventfd() {
    // SAFETY: fd 41 was dup2'ed into this process by the parent's pre_exec; nothing else owns it.
    let efd = unsafe { OwnedFd::from_raw_fd(FD_DOORBELL) };
    // SAFETY: as above for fd 40 (the same eventfd, unused here; closed on drop).
    drop(unsafe { OwnedFd::from_raw_fd(FD_MEMFD) });
    let mut lat = Vec::with_capacity(PACED);
    let mut coalesced = 0;
    loop {
        let mut fds = [PollFd::new(&efd, PollFlags::IN)];
        rustix::event::poll(&mut fds, None).expect("poll");
        let mut buf = [0u8; 8];
        rustix::io::read(&efd, &mut buf).expect("read eventfd");
        let now = monotonic_ns();
        let v = u64::from_ne_bytes(buf);
        if v == STOP {
            break;
        }
        if v > now {
            coalesced += 1; // two pings summed: not a timestamp
            continue;
        }
        lat.push(now - v);
    }
    report(
        "eventfd baseline @1kHz",
        lat,
        &format!("  (coalesced {coalesced})"),
    );
}

fn child_ring(label: &str) {
    // SAFETY: fds 40/41 were dup2'ed into this process by the parent's pre_exec; nothing else in
    // this process owns them.
    let fds = unsafe {
        RingFds {
            memfd: OwnedFd::from_raw_fd(FD_MEMFD),
            doorbell: OwnedFd::from_raw_fd(FD_DOORBELL),
        }
    };
    let mut consumer = Consumer::attach(fds).expect("attach");
    let mut lat = Vec::with_capacity(BACK_TO_BACK);
    let mut checksum = 0u64;
    loop {
        consumer.wait(None).expect("wait");
        while let Some(rec) = consumer.try_read().expect("try_read") {
            let now = monotonic_ns();
            lat.push(now.saturating_sub(rec.written_ns()));
            // Touch the payload like a sender would start to (first and last cache line).
            let p = rec.payload();
            checksum = checksum.wrapping_add(u64::from(p[0]) + u64::from(p[p.len() - 1]));
        }
        if consumer.is_finished().expect("is_finished") {
            break;
        }
    }
    std::hint::black_box(checksum);
    report(label, lat, "");
}
