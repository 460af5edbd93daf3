//! Cross-process handoff latency of the AU ring, against a bare-eventfd baseline in the same run.
//!
//! Method: this binary re-executes itself as the consumer process (fds inherited at 40/41). The
//! parent (producer) publishes 64 KiB records; the consumer sits blocked in `Consumer::wait`, and
//! for every record computes `monotonic_ns() - written_ns` right after `try_read` returns it
//! (`written_ns` is stamped by the ring just before publishing, after the payload copy). The
//! baseline is the same two-process wakeup with nothing but an eventfd: the parent stamps ping
//! `i` with `monotonic_ns()` into slot `i` of a shared memfd, then adds 1 to the eventfd; the
//! child polls, reads the eventfd (the number of pings since its last read) and takes
//! `now - stamp` for each of those pings. A ping the child was late for counts with its whole
//! delay, as a late ring record does, so the two lines are comparable sample for sample, and
//! the difference between them is the ring's own overhead. Scenarios:
//!
//! * `eventfd baseline @1kHz`  — bare eventfd ping, 1 kHz
//! * `ring 64KiB @1kHz`        — one record per ms (a paced encoder), interleaved with the
//!   baseline pings half a period apart so both see the same machine noise
//! * `ring 64KiB @1kHz spin`   — the same with the consumer spinning 50 µs before it blocks
//!   (`Consumer::set_spin`): records 1 ms apart never land within the spin, so this shows its
//!   cost (the spin's CPU, reported) without a gain
//! * `ring 64KiB back-to-back` — records written as fast as the producer can (includes queueing
//!   when the consumer falls behind; drops are reported), with and without the spin
//!
//! The consumer's thread CPU time per record is printed beside each ring line.
//!
//! Run: `cargo bench -p punktfunk-ring --bench handoff`. Takes ~15 s.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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
/// The consumer's spin before blocking, in the `spin` scenarios.
const SPIN: Duration = Duration::from_micros(50);
/// Baseline stamp slots (one per ping); a stamp of `u64::MAX` tells the child to stop.
const STAMP_SLOTS: usize = PACED + 1;

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        match mode.as_str() {
            "eventfd" => child_eventfd(),
            label => child_ring(label, label.ends_with("spin")),
        }
        return;
    }
    println!(
        "handoff bench: 2 processes, CLOCK_MONOTONIC, {} KiB records, {} paced samples (first {} dropped as warm-up)",
        RECORD >> 10,
        PACED,
        WARMUP
    );
    bench_paced_interleaved(false);
    bench_paced_interleaved(true);
    bench_back_to_back(false);
    bench_back_to_back(true);
}

/// A shared array of `STAMP_SLOTS` u64 stamps in a memfd, mapped read-write.
struct Stamps {
    fd: OwnedFd,
    ptr: *mut u64,
}

impl Stamps {
    fn create() -> Self {
        let fd = rustix::fs::memfd_create("pf-handoff-stamps", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd");
        rustix::fs::ftruncate(&fd, (STAMP_SLOTS * 8) as u64).expect("ftruncate");
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> Self {
        // SAFETY: a fresh shared mapping of the memfd's STAMP_SLOTS * 8 bytes (it was sized to
        // that by the parent); no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STAMP_SLOTS * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap stamps");
        Self {
            fd,
            ptr: ptr.cast(),
        }
    }

    fn slot(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(i < STAMP_SLOTS);
        // SAFETY: `i` is in bounds of the mapping, which lives as long as `self`; the slot is
        // 8-aligned (page-aligned base) and only ever accessed atomically by both processes.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.add(i)) }
    }
}

/// Thread CPU time in ns.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Spawns this binary as the consumer with `fds` dup2'ed to 40, 41, ...
fn spawn_child(mode: &str, fds: &[&BorrowedFd<'_>]) -> std::process::Child {
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
fn bench_paced_interleaved(spin: bool) {
    let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
    let stamps = Stamps::create();
    let base_child = spawn_child("eventfd", &[&stamps.fd.as_fd(), &efd.as_fd()]);
    let (mut producer, fds) = Ring::create(16 << 20, 2 << 20).expect("create ring");
    let label = if spin {
        "ring 64KiB @1kHz spin"
    } else {
        "ring 64KiB @1kHz"
    };
    let ring_child = spawn_child(label, &[&fds.memfd.as_fd(), &fds.doorbell.as_fd()]);
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
        stamps
            .slot(i)
            .store(monotonic_ns(), std::sync::atomic::Ordering::Release);
        rustix::io::write(&efd, &1u64.to_ne_bytes()).expect("eventfd write");
    }
    std::thread::sleep(Duration::from_millis(5));
    stamps
        .slot(PACED)
        .store(u64::MAX, std::sync::atomic::Ordering::Release);
    rustix::io::write(&efd, &1u64.to_ne_bytes()).expect("eventfd write");
    drop(producer);
    wait_child(base_child);
    wait_child(ring_child);
    println!("  (paced ring: producer dropped {dropped} of {PACED})");
}

fn bench_back_to_back(spin: bool) {
    let label = if spin {
        "ring 64KiB back-to-back spin"
    } else {
        "ring 64KiB back-to-back"
    };
    let (mut producer, fds) = Ring::create(16 << 20, 2 << 20).expect("create ring");
    let child = spawn_child(label, &[&fds.memfd.as_fd(), &fds.doorbell.as_fd()]);
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
    // SAFETY: as above for fd 40 (the stamps memfd).
    let stamps = Stamps::map(unsafe { OwnedFd::from_raw_fd(FD_MEMFD) });
    let mut lat = Vec::with_capacity(PACED);
    let (mut next, mut late) = (0usize, 0u64);
    'outer: loop {
        let mut fds = [PollFd::new(&efd, PollFlags::IN)];
        rustix::event::poll(&mut fds, None).expect("poll");
        let mut buf = [0u8; 8];
        rustix::io::read(&efd, &mut buf).expect("read eventfd");
        let now = monotonic_ns();
        let pings = u64::from_ne_bytes(buf);
        if pings > 1 {
            late += pings - 1; // pings that waited for an earlier one to be read
        }
        for _ in 0..pings {
            let v = stamps
                .slot(next.min(STAMP_SLOTS - 1))
                .load(std::sync::atomic::Ordering::Acquire);
            next += 1;
            if v == u64::MAX || next > STAMP_SLOTS {
                break 'outer;
            }
            lat.push(now.saturating_sub(v));
        }
    }
    report(
        "eventfd baseline @1kHz",
        lat,
        &format!("  ({late} pings read late, counted with their delay)"),
    );
}

fn child_ring(label: &str, spin: bool) {
    // SAFETY: fds 40/41 were dup2'ed into this process by the parent's pre_exec; nothing else in
    // this process owns them.
    let fds = unsafe {
        RingFds {
            memfd: OwnedFd::from_raw_fd(FD_MEMFD),
            doorbell: OwnedFd::from_raw_fd(FD_DOORBELL),
        }
    };
    let mut consumer = Consumer::attach(fds).expect("attach");
    if spin {
        consumer.set_spin(SPIN);
    }
    let mut lat = Vec::with_capacity(BACK_TO_BACK);
    let cpu0 = thread_cpu_ns();
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
    let cpu_per_record = (thread_cpu_ns() - cpu0) as f64 / lat.len().max(1) as f64 / 1e3;
    report(
        label,
        lat,
        &format!("  consumer CPU {cpu_per_record:.1} us/record"),
    );
}
