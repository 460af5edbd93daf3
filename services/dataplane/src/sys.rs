//! Thin wrappers around the Linux socket calls the shells need: clocks, socket buffer sizing,
//! the UDP GSO probe, `sendmmsg` (optionally one GSO super-buffer per message) and `recvmmsg`.

use std::io;
use std::os::fd::RawFd;

/// CLOCK_MONOTONIC and the thread's CPU time, from their one home (`punktfunk-clock`).
pub use punktfunk_clock::{monotonic_ns, thread_cpu_ns};

pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live c_int and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and writable, `len` holds the size of `value`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL on an fd we borrow; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which socket buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferDir {
    /// SO_SNDBUF.
    Send,
    /// SO_RCVBUF.
    Receive,
}

/// Outcome of growing a socket buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSize {
    /// What we asked for (bytes of payload the kernel should accept).
    pub requested: usize,
    /// What the kernel granted (getsockopt value halved: the kernel doubles the request to
    /// account for its bookkeeping overhead, see socket(7)).
    pub effective: usize,
    /// `SO_SNDBUFFORCE`/`SO_RCVBUFFORCE` worked (root or CAP_NET_ADMIN), so the global
    /// `net.core.{w,r}mem_max` cap did not apply.
    pub forced: bool,
}

impl BufferSize {
    /// The sysctl that lifts the cap that made this buffer smaller than requested.
    pub fn sysctl_hint(dir: BufferDir, bytes: usize) -> String {
        match dir {
            BufferDir::Send => format!("sysctl -w net.core.wmem_max={bytes}"),
            BufferDir::Receive => format!("sysctl -w net.core.rmem_max={bytes}"),
        }
    }
}

/// Grows a socket buffer to `target` bytes: `SO_*BUFFORCE` first (needs CAP_NET_ADMIN), else
/// `SO_*BUF`, which the kernel silently caps at `net.core.{w,r}mem_max`; a warning names the
/// sysctl when the result is below the target.
pub fn grow_buffer(fd: RawFd, dir: BufferDir, target: usize) -> BufferSize {
    let (force, plain, name) = match dir {
        BufferDir::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "SO_SNDBUF"),
        BufferDir::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "SO_RCVBUF"),
    };
    let val = target.min(i32::MAX as usize / 2) as libc::c_int;
    let forced = setsockopt_int(fd, libc::SOL_SOCKET, force, val).is_ok();
    if !forced {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, val);
    }
    let effective = getsockopt_int(fd, libc::SOL_SOCKET, plain)
        .map(|v| v.max(0) as usize / 2)
        .unwrap_or(0);
    if effective < target {
        tracing::warn!(
            "{name} is {effective} bytes, wanted {target} (not permitted to force it): run `{}` \
             (or grant CAP_NET_ADMIN) to avoid drops on keyframe bursts",
            BufferSize::sysctl_hint(dir, target)
        );
    }
    BufferSize {
        requested: target,
        effective,
        forced,
    }
}

/// Does the kernel accept UDP GSO (`UDP_SEGMENT`, Linux ≥ 4.18) on this socket? Sets the
/// socket option to `segment` and back to 0 (we pass the segment size per send in a cmsg).
/// A device without checksum offload can still fail the actual send with `EIO`: the send
/// path falls back then (see [`is_gso_failure`]).
pub fn probe_gso(fd: RawFd, segment: u16) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        libc::c_int::from(segment),
    )?;
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Errors of a GSO send that mean "this path cannot do GSO" (fall back to plain sendmmsg).
pub fn is_gso_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
    )
}

/// Most GSO segments the kernel takes in one send (UDP_MAX_SEGMENTS on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO super-buffer (it must fit one IPv4 datagram).
pub const GSO_MAX_BYTES: usize = 65_507;

/// Segments per GSO super-buffer for packets of `stride` bytes.
pub fn gso_segments(stride: usize) -> usize {
    (GSO_MAX_BYTES / stride.max(1)).clamp(1, GSO_MAX_SEGMENTS)
}

/// Most messages per sendmmsg/recvmmsg call (UIO_MAXIOV).
pub const MAX_MMSG: usize = 1024;

/// One run of packets for [`SendScratch::send_pieces`]: bytes (a multiple of the stride) and
/// an optional departure time.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    /// The packets, back to back.
    pub bytes: &'a [u8],
    /// CLOCK_MONOTONIC ns before which the `fq` qdisc must not send them (`SCM_TXTIME`; the
    /// socket needs [`enable_txtime`]). `None`: at once.
    pub txtime_ns: Option<u64>,
}

/// Turns on `SO_TXTIME` (CLOCK_MONOTONIC, no deadline mode, no error reports) on `fd`: from
/// then on a message may carry an `SCM_TXTIME` departure time, which the `fq` qdisc honours
/// (other qdiscs ignore it and send at once). Unprivileged for CLOCK_MONOTONIC (Linux ≥ 4.19).
pub fn enable_txtime(fd: RawFd) -> io::Result<()> {
    let cfg = libc::sock_txtime {
        clockid: libc::CLOCK_MONOTONIC,
        flags: 0,
    };
    // SAFETY: a live sock_txtime and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TXTIME,
            (&cfg as *const libc::sock_txtime).cast(),
            std::mem::size_of::<libc::sock_txtime>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reusable `mmsghdr`/`iovec`/cmsg arrays for `sendmmsg` on a connected socket.
pub struct SendScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// Packets in each message of the call being built.
    packets: Vec<usize>,
    /// cmsg space per message, in u64 words (u64 for cmsghdr alignment): room for a
    /// `UDP_SEGMENT` (u16) and an `SCM_TXTIME` (u64).
    cmsg_words: usize,
    cmsgs: Vec<u64>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are plain values that are rewritten before
// every call and only dereferenced by the kernel during that call, while the buffers they
// point to are borrowed by it. Between calls they are stale and never read, so moving the
// struct to another thread cannot create a data race.
unsafe impl Send for SendScratch {}

impl Default for SendScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendScratch {
    /// Scratch arrays sized for [`MAX_MMSG`] messages.
    pub fn new() -> Self {
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        let space = unsafe {
            libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32)
                + libc::CMSG_SPACE(std::mem::size_of::<u64>() as u32)
        } as usize;
        let cmsg_words = space.div_ceil(8);
        // SAFETY: mmsghdr and iovec are plain C structs for which all-zero is a valid value.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            hdrs: vec![zero_hdr; MAX_MMSG],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                MAX_MMSG
            ],
            packets: vec![0; MAX_MMSG],
            cmsg_words,
            cmsgs: vec![0; cmsg_words * MAX_MMSG],
        }
    }

    /// Sends the packets in `bytes` (a multiple of `stride`) with one `sendmmsg` call on the
    /// connected socket `fd`: one packet per message, or with `gso` one super-buffer of up to
    /// `gso_segments(stride)` packets per message (UDP_SEGMENT cmsg = `stride`).
    ///
    /// Returns how many packets the kernel took (≥ 1; possibly fewer than given, then call
    /// again with the rest) or the error of the first message.
    pub fn send(&mut self, fd: RawFd, bytes: &[u8], stride: usize, gso: bool) -> io::Result<usize> {
        let piece = Piece {
            bytes,
            txtime_ns: None,
        };
        self.send_pieces(fd, &[piece], stride, gso)
    }

    /// Like [`send`](Self::send) for several runs of packets in one `sendmmsg` call, each
    /// message of a run carrying the run's departure time (`SCM_TXTIME`) if it has one: a
    /// whole paced frame handed to the kernel at once. At most [`MAX_MMSG`] messages go in one
    /// call; returns how many packets, counted from the first piece, the kernel took.
    pub fn send_pieces(
        &mut self,
        fd: RawFd,
        pieces: &[Piece<'_>],
        stride: usize,
        gso: bool,
    ) -> io::Result<usize> {
        if stride == 0 {
            return Ok(0);
        }
        let per_msg = if gso { gso_segments(stride) } else { 1 };
        let mut n = 0usize;
        'pieces: for piece in pieces {
            for chunk in piece.bytes.chunks(per_msg * stride) {
                if n == MAX_MMSG {
                    break 'pieces;
                }
                self.fill(n, chunk, stride, gso, piece.txtime_ns);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `hdrs[..n]` are initialised msghdrs whose iovecs and control buffers point
        // into `pieces`' bytes, `self.iovs` and `self.cmsgs`, all borrowed for the duration of
        // the call; the kernel only reads them (and writes msg_len).
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.packets[..r as usize].iter().sum())
    }

    /// Message `i`: `chunk` (one packet, or a GSO super-buffer of several) with its cmsgs.
    fn fill(&mut self, i: usize, chunk: &[u8], stride: usize, gso: bool, txtime: Option<u64>) {
        self.iovs[i] = libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        self.packets[i] = chunk.len().div_ceil(stride);
        // SAFETY: all-zero is a valid msghdr (null name, no control).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut self.iovs[i];
        hdr.msg_iovlen = 1;
        let segment = gso && chunk.len() > stride;
        if segment || txtime.is_some() {
            let words = &mut self.cmsgs[i * self.cmsg_words..(i + 1) * self.cmsg_words];
            words.fill(0);
            hdr.msg_control = words.as_mut_ptr().cast();
            hdr.msg_controllen = self.cmsg_words * 8;
            let mut used = 0usize;
            // SAFETY: msg_control points to `cmsg_words * 8` zeroed, 8-aligned bytes, at
            // least CMSG_SPACE(2) + CMSG_SPACE(8), so CMSG_FIRSTHDR is non-null, and after a
            // first cmsg of CMSG_SPACE(2) bytes CMSG_NXTHDR still has room for the second;
            // CMSG_DATA has room for the value written (unaligned writes, as CMSG_DATA need
            // not be aligned). msg_controllen is then cut to the bytes used.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&hdr);
                if segment {
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), stride as u16);
                    used += libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                    c = libc::CMSG_NXTHDR(&hdr, c);
                }
                if let Some(t) = txtime {
                    (*c).cmsg_level = libc::SOL_SOCKET;
                    (*c).cmsg_type = libc::SCM_TXTIME;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u64>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u64>(), t);
                    used += libc::CMSG_SPACE(std::mem::size_of::<u64>() as u32) as usize;
                }
            }
            hdr.msg_controllen = used;
        }
        self.hdrs[i] = libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        };
    }
}

/// Reusable receive ring for `recvmmsg`: `batch` slots of `slot` bytes each.
pub struct RecvRing {
    buf: Vec<u8>,
    slot: usize,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: as for SendScratch: the pointers are rewritten before every call and only used by
// the kernel during it; they point into `buf`, which the struct owns.
unsafe impl Send for RecvRing {}

impl RecvRing {
    /// A ring of `batch` (clamped to 1..=[`MAX_MMSG`]) slots of `slot` bytes.
    pub fn new(batch: usize, slot: usize) -> Self {
        let batch = batch.clamp(1, MAX_MMSG);
        // SAFETY: all-zero is a valid mmsghdr.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buf: vec![0; batch * slot],
            slot,
            hdrs: vec![zero_hdr; batch],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                batch
            ],
        }
    }

    /// One non-blocking `recvmmsg`. Returns the number of datagrams received (0 when nothing
    /// is queued). Read them with [`Self::datagram`].
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        for i in 0..self.hdrs.len() {
            // SAFETY: `i * slot + slot <= buf.len()`, so the pointer stays inside `buf`.
            let p = unsafe { base.add(i * self.slot) };
            self.iovs[i] = libc::iovec {
                iov_base: p.cast(),
                iov_len: self.slot,
            };
            // SAFETY: all-zero is a valid msghdr.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        // SAFETY: every header points to one iovec covering its own `slot`-byte region of
        // `buf`, which we own mutably for the duration of the call; no timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }

    /// Datagram `i` of the last [`Self::recv`] and whether it was truncated (longer than a
    /// slot; such a datagram is never a valid packet).
    pub fn datagram(&self, i: usize) -> (&[u8], bool) {
        let Some(h) = self.hdrs.get(i) else {
            return (&[], false);
        };
        let len = (h.msg_len as usize).min(self.slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let start = i * self.slot;
        (&self.buf[start..start + len], truncated)
    }
}

/// Waits until `fd` is writable or `timeout_ns` passed.
pub fn wait_writable(fd: RawFd, timeout_ns: u64) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec; no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// Waits until one of `fds` is readable or `timeout_ns` passed; returns the revents.
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout_ns: u64) -> [bool; N] {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `pfds` is an array of N valid pollfds, `ts` a valid timespec; no signal mask.
    let r = unsafe { libc::ppoll(pfds.as_mut_ptr(), N as libc::nfds_t, &ts, std::ptr::null()) };
    if r <= 0 {
        return [false; N];
    }
    pfds.map(|p| p.revents != 0)
}

/// Sets the calling thread's nice value (`setpriority(PRIO_PROCESS, gettid(), nice)`: on Linux
/// it applies to the one thread). Lowering it below the current value needs `CAP_SYS_NICE` or
/// an `RLIMIT_NICE` that allows it; without them the call fails with `EACCES`/`EPERM` and
/// nothing changes.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority takes integers only; `tid` is this thread's id.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`): how much later than asked
/// the kernel may end its sleeps (default 50 µs). A pacing thread sets it small, so that it
/// can sleep to within a few microseconds of a chunk's time instead of spinning.
pub fn set_timer_slack(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes an integer; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns.max(1) as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's timer slack in ns (`PR_GET_TIMERSLACK`).
pub fn timer_slack_ns() -> u64 {
    // SAFETY: PR_GET_TIMERSLACK takes no arguments and returns the slack.
    let r = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    r.max(0) as u64
}

/// Waits until the CLOCK_MONOTONIC instant `target_ns`: one absolute `clock_nanosleep` to
/// `spin_ns` before it, then a busy spin (no syscalls) for what is left. Returns the time
/// spent waiting.
///
/// The kernel ends a sleep up to the thread's timer slack late, so `spin_ns` should be at
/// least the slack ([`set_timer_slack`]); waits shorter than `spin_ns` never sleep (a sleep
/// below the slack would overshoot). With a small slack and spin (the sender uses 5 µs each)
/// a wait costs one wake-up and a few microseconds of spinning at most; a late wake-up
/// spins not at all.
pub fn wait_until(target_ns: u64, spin_ns: u64) -> u64 {
    let start = monotonic_ns();
    if target_ns <= start {
        return 0;
    }
    if target_ns - start > spin_ns {
        let sleep_to = target_ns - spin_ns;
        let ts = libc::timespec {
            tv_sec: (sleep_to / 1_000_000_000) as libc::time_t,
            tv_nsec: (sleep_to % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: valid timespec, absolute CLOCK_MONOTONIC sleep; `rem` is unused for
        // TIMER_ABSTIME. An EINTR simply ends the sleep early; the spin below covers it.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
    }
    loop {
        let now = monotonic_ns();
        if now >= target_ns {
            return now - start;
        }
        if target_ns - now > spin_ns {
            // Woken early by a signal: sleep again rather than spin the rest.
            return (now - start) + wait_until(target_ns, spin_ns);
        }
        std::hint::spin_loop();
    }
}
