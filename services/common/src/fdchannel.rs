//! The fd channel: how file descriptors travel between daemons, since gRPC cannot carry them.
//!
//! A gRPC reply carries an [`FdTicket`]: 16 random bytes, valid once, for a short time
//! (`ipc.ticket_ttl_ms`). The caller connects to the issuing daemon's `<name>.fds`
//! (SOCK_SEQPACKET, so every message keeps its boundaries) and sends one request packet; the
//! daemon answers one packet — a status byte and a human message — with the fds attached as
//! SCM_RIGHTS when the ticket is good.
//!
//! ```text
//! request:  "PFT1" | ticket id (16 B)                               = 20 bytes
//! reply:    status (1 B) | message (UTF-8, ≤ 255 B)  [+ SCM_RIGHTS fds on status 0]
//! status:   0 ok · 1 unknown ticket · 2 expired · 3 already redeemed · 4 permission denied
//!           · 5 malformed request
//! ```
//!
//! Every connection is checked with SO_PEERCRED (same uid or root). The channel is served by
//! one plain thread: it is a handful of requests per client session, each answered from memory,
//! and a 1 s receive timeout keeps a silent peer from holding it.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use punktfunk_proto::common::FdTicket;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Most fds one ticket may carry (a ring pair for video and audio is four).
pub const MAX_FDS: usize = 8;
/// Most tickets outstanding at once; more means a caller is not redeeming what it asks for.
pub const MAX_LIVE_TICKETS: usize = 256;
/// How long a redeemed or expired ticket is remembered, so a second try gets a precise error.
const SPENT_MEMORY: Duration = Duration::from_secs(600);
const MAX_SPENT: usize = 4096;
const MAGIC: &[u8; 4] = b"PFT1";
const REQUEST_LEN: usize = 20;
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a redemption was refused; the wire status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// No such ticket was issued (or the daemon restarted since).
    Unknown = 1,
    /// The ticket's time to live ran out.
    Expired = 2,
    /// The ticket was redeemed before (tickets are single-use).
    AlreadyRedeemed = 3,
    /// The caller runs under another uid than the daemon (and is not root).
    PermissionDenied = 4,
    /// The request did not parse.
    Malformed = 5,
}

impl Refusal {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Unknown,
            2 => Self::Expired,
            3 => Self::AlreadyRedeemed,
            4 => Self::PermissionDenied,
            5 => Self::Malformed,
            _ => return None,
        })
    }

    fn message(self) -> &'static str {
        match self {
            Self::Unknown => {
                "unknown ticket: it was never issued by this daemon (or the daemon restarted since)"
            }
            Self::Expired => "ticket expired before it was redeemed; ask for a new one",
            Self::AlreadyRedeemed => "ticket was already redeemed; tickets are valid once",
            Self::PermissionDenied => {
                "permission denied: this daemon serves its own uid and root only"
            }
            Self::Malformed => "malformed request: expected \"PFT1\" and a 16-byte ticket id",
        }
    }
}

/// Why a ticket could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The fd count (given) is outside 1..=`MAX_FDS`.
    #[error("a ticket carries 1 to {MAX_FDS} fds, not {0}")]
    FdCount(usize),
    /// Too many tickets are outstanding.
    #[error("{MAX_LIVE_TICKETS} tickets are outstanding; a caller is not redeeming its tickets")]
    TooMany,
}

/// Why redeeming a ticket at another daemon's fd channel failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The fd channel socket could not be reached.
    #[error("cannot reach the fd channel {path}: {source}")]
    Connect {
        /// The fd channel's socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    #[error("the fd channel refused the ticket: {message}")]
    /// The issuing daemon refused the ticket.
    Refused {
        /// Its refusal code.
        reason: Refusal,
        /// Its human explanation.
        message: String,
    },
    /// The answer did not follow the fd-channel protocol (what was wrong is given).
    #[error("fd channel protocol error: {0}")]
    Protocol(String),
    /// Reading or writing the channel failed.
    #[error("fd channel I/O: {0}")]
    Io(#[from] std::io::Error),
}

struct Pending {
    fds: Vec<OwnedFd>,
    expires: Instant,
}

#[derive(Default)]
struct Book {
    live: HashMap<[u8; 16], Pending>,
    spent: HashMap<[u8; 16], (Refusal, Instant)>,
}

/// What became of a ticket ([`TicketBook::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    /// Issued, still redeemable.
    Live,
    /// Redeemed (its fds were handed over).
    Redeemed,
    /// Expired unredeemed (its fds were closed).
    Expired,
    /// Never issued here, or spent so long ago that it was forgotten.
    Unknown,
}

/// The tickets a daemon has issued and not yet seen redeemed.
pub struct TicketBook {
    ttl: Duration,
    book: Mutex<Book>,
}

impl TicketBook {
    /// An empty book whose tickets expire after `ttl`.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            book: Mutex::new(Book::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere while holding the lock leaves the map consistent (no multi-step
        // updates), so recover the guard instead of poisoning the daemon.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `fds` behind a fresh ticket. `names` says what they are, in order.
    pub fn issue(&self, fds: Vec<OwnedFd>, names: &[&str]) -> Result<FdTicket, IssueError> {
        if fds.is_empty() || fds.len() > MAX_FDS {
            return Err(IssueError::FdCount(fds.len()));
        }
        let now = Instant::now();
        let mut book = self.lock();
        expire(&mut book, now);
        if book.live.len() >= MAX_LIVE_TICKETS {
            return Err(IssueError::TooMany);
        }
        let id: [u8; 16] = rand::random();
        book.live.insert(
            id,
            Pending {
                fds,
                expires: now + self.ttl,
            },
        );
        Ok(FdTicket {
            id: id.to_vec(),
            expires_ms: u32::try_from(self.ttl.as_millis()).unwrap_or(u32::MAX),
            fd_names: names.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Takes the fds of ticket `id`, once.
    pub fn redeem(&self, id: &[u8; 16]) -> Result<Vec<OwnedFd>, Refusal> {
        let now = Instant::now();
        let mut book = self.lock();
        expire(&mut book, now);
        if let Some(p) = book.live.remove(id) {
            book.spent.insert(*id, (Refusal::AlreadyRedeemed, now));
            return Ok(p.fds);
        }
        Err(book
            .spent
            .get(id)
            .map(|(r, _)| *r)
            .unwrap_or(Refusal::Unknown))
    }

    /// What became of ticket `id` (as issued in [`FdTicket::id`]).
    pub fn state(&self, id: &[u8]) -> TicketState {
        let Ok(id) = <[u8; 16]>::try_from(id) else {
            return TicketState::Unknown;
        };
        let mut book = self.lock();
        expire(&mut book, Instant::now());
        if book.live.contains_key(&id) {
            return TicketState::Live;
        }
        match book.spent.get(&id) {
            Some((Refusal::AlreadyRedeemed, _)) => TicketState::Redeemed,
            Some(_) => TicketState::Expired,
            None => TicketState::Unknown,
        }
    }

    /// Tickets issued and not yet redeemed or expired.
    pub fn outstanding(&self) -> usize {
        self.lock().live.len()
    }
}

/// Moves expired tickets to the spent list (closing their fds) and forgets old spent ones.
fn expire(book: &mut Book, now: Instant) {
    let expired: Vec<[u8; 16]> = book
        .live
        .iter()
        .filter(|(_, p)| p.expires <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        book.live.remove(&id);
        book.spent.insert(id, (Refusal::Expired, now));
    }
    book.spent
        .retain(|_, (_, at)| now.duration_since(*at) < SPENT_MEMORY);
    while book.spent.len() > MAX_SPENT {
        let Some(oldest) = book
            .spent
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(id, _)| *id)
        else {
            break;
        };
        book.spent.remove(&oldest);
    }
}

/// Serves the fd channel on `listener` (a listening SOCK_SEQPACKET socket) on its own thread.
pub fn spawn_server(
    listener: OwnedFd,
    book: Arc<TicketBook>,
    daemon: &str,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{daemon}-fdchan"))
        .spawn(move || serve(listener, &book))
}

fn serve(listener: OwnedFd, book: &TicketBook) {
    let me = rustix::process::getuid().as_raw();
    loop {
        let conn = match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => {
                tracing::error!(error = %e, "fd channel: accept failed; the channel stops");
                return;
            }
        };
        if let Err(e) = handle(&conn, book, me) {
            tracing::debug!(error = %e, "fd channel: a request ended badly");
        }
    }
}

fn handle(conn: &OwnedFd, book: &TicketBook, me: u32) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_timeout(conn, rustix::net::sockopt::Timeout::Recv, Some(IO_TIMEOUT))?;
    sockopt::set_socket_timeout(conn, rustix::net::sockopt::Timeout::Send, Some(IO_TIMEOUT))?;
    let peer = sockopt::socket_peercred(conn)?;
    let uid = peer.uid.as_raw();
    if uid != me && uid != 0 {
        tracing::warn!(
            peer_uid = uid,
            peer_pid = peer.pid.as_raw_nonzero().get(),
            "fd channel: refused a caller with another uid"
        );
        return reply_refusal(conn, Refusal::PermissionDenied);
    }
    let mut buf = [0u8; 64];
    let n = rustix::net::recv(conn, &mut buf, RecvFlags::empty())?.0;
    let Some(id) = parse_request(&buf[..n.min(buf.len())]) else {
        return reply_refusal(conn, Refusal::Malformed);
    };
    match book.redeem(&id) {
        Ok(fds) => {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut cmsg = SendAncillaryBuffer::new(&mut space);
            if !cmsg.push(SendAncillaryMessage::ScmRights(&borrowed)) {
                return Err(std::io::Error::other("ancillary buffer too small"));
            }
            let msg = [0u8];
            rustix::net::sendmsg(conn, &[IoSlice::new(&msg)], &mut cmsg, SendFlags::NOSIGNAL)?;
            tracing::debug!(fds = fds.len(), "fd channel: ticket redeemed");
            Ok(())
        }
        Err(r) => {
            tracing::info!(reason = r.message(), "fd channel: refused a ticket");
            reply_refusal(conn, r)
        }
    }
}

fn parse_request(pkt: &[u8]) -> Option<[u8; 16]> {
    if pkt.len() != REQUEST_LEN || &pkt[..4] != MAGIC {
        return None;
    }
    pkt[4..].try_into().ok()
}

fn reply_refusal(conn: &OwnedFd, r: Refusal) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(1 + r.message().len());
    msg.push(r as u8);
    msg.extend_from_slice(r.message().as_bytes());
    rustix::net::send(conn, &msg, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Redeems `ticket` on the fd channel at `path`; returns the fds in the order of `fd_names`.
/// Blocking (one round trip); async callers wrap it in `spawn_blocking`.
pub fn redeem(path: &Path, ticket: &FdTicket) -> Result<Vec<OwnedFd>, RedeemError> {
    let id: [u8; 16] = ticket.id.as_slice().try_into().map_err(|_| {
        RedeemError::Protocol(format!("a ticket id is 16 bytes, not {}", ticket.id.len()))
    })?;
    let sock = crate::activation::connect_unix(path, SocketType::SEQPACKET).map_err(|source| {
        RedeemError::Connect {
            path: path.to_path_buf(),
            source,
        }
    })?;
    rustix::net::sockopt::set_socket_timeout(
        &sock,
        rustix::net::sockopt::Timeout::Recv,
        Some(IO_TIMEOUT),
    )
    .map_err(std::io::Error::from)?;
    let mut req = [0u8; REQUEST_LEN];
    req[..4].copy_from_slice(MAGIC);
    req[4..].copy_from_slice(&id);
    rustix::net::send(&sock, &req, SendFlags::NOSIGNAL).map_err(std::io::Error::from)?;

    let mut buf = [0u8; 256];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(RedeemError::Protocol(format!(
            "more than {MAX_FDS} fds were sent; they were truncated"
        )));
    }
    let n = got.bytes.min(buf.len());
    match buf[..n].first() {
        None => Err(RedeemError::Protocol(
            "the daemon closed the channel without an answer".into(),
        )),
        Some(0) => {
            if fds.len() != ticket.fd_names.len() && !ticket.fd_names.is_empty() {
                return Err(RedeemError::Protocol(format!(
                    "expected {} fds ({}), received {}",
                    ticket.fd_names.len(),
                    ticket.fd_names.join(", "),
                    fds.len()
                )));
            }
            Ok(fds)
        }
        Some(&b) => {
            let reason = Refusal::from_byte(b)
                .ok_or_else(|| RedeemError::Protocol(format!("unknown status byte {b}")))?;
            Err(RedeemError::Refused {
                reason,
                message: String::from_utf8_lossy(&buf[1..n]).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd_with(text: &[u8]) -> OwnedFd {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&fd, text).unwrap();
        fd
    }

    #[test]
    fn book_is_once_only_and_expires() {
        let book = TicketBook::new(Duration::from_millis(50));
        let t = book.issue(vec![memfd_with(b"x")], &["m"]).unwrap();
        let id: [u8; 16] = t.id.as_slice().try_into().unwrap();
        assert_eq!(book.redeem(&id).unwrap().len(), 1);
        assert_eq!(book.redeem(&id).unwrap_err(), Refusal::AlreadyRedeemed);
        assert_eq!(book.redeem(&[7; 16]).unwrap_err(), Refusal::Unknown);
        let t2 = book.issue(vec![memfd_with(b"y")], &["m"]).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let id2: [u8; 16] = t2.id.as_slice().try_into().unwrap();
        assert_eq!(book.redeem(&id2).unwrap_err(), Refusal::Expired);
        assert_eq!(book.outstanding(), 0);
    }

    #[test]
    fn book_tells_what_became_of_a_ticket() {
        let book = TicketBook::new(Duration::from_millis(50));
        let t = book.issue(vec![memfd_with(b"x")], &["m"]).unwrap();
        let unredeemed = book.issue(vec![memfd_with(b"y")], &["m"]).unwrap();
        assert_eq!(book.state(&t.id), TicketState::Live);
        let id: [u8; 16] = t.id.as_slice().try_into().unwrap();
        book.redeem(&id).unwrap();
        assert_eq!(book.state(&t.id), TicketState::Redeemed);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(book.state(&unredeemed.id), TicketState::Expired);
        assert_eq!(book.state(&t.id), TicketState::Redeemed);
        assert_eq!(book.state(&[7; 16]), TicketState::Unknown);
        assert_eq!(book.state(b"short"), TicketState::Unknown);
    }

    #[test]
    fn issue_bounds() {
        let book = TicketBook::new(Duration::from_secs(5));
        assert!(matches!(
            book.issue(vec![], &[]),
            Err(IssueError::FdCount(0))
        ));
        for _ in 0..MAX_LIVE_TICKETS {
            book.issue(vec![memfd_with(b"")], &["m"]).unwrap();
        }
        assert!(matches!(
            book.issue(vec![memfd_with(b"")], &["m"]),
            Err(IssueError::TooMany)
        ));
    }

    #[test]
    fn malformed_requests_are_rejected() {
        assert!(parse_request(b"PFT1").is_none());
        assert!(parse_request(b"XXXX0123456789abcdef").is_none());
        assert_eq!(
            parse_request(b"PFT10123456789abcdef"),
            Some(*b"0123456789abcdef")
        );
    }

    #[test]
    fn redeem_over_the_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let l = crate::activation::bind_listeners("t", tmp.path()).unwrap();
        let book = TicketBook::new(Duration::from_secs(5));
        spawn_server(l.fds, book.clone(), "t").unwrap();
        let t = book
            .issue(vec![memfd_with(b"hello")], &["greeting"])
            .unwrap();
        let path = tmp.path().join("t.fds");
        let fds = redeem(&path, &t).unwrap();
        let mut buf = [0u8; 5];
        rustix::io::pread(&fds[0], &mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        match redeem(&path, &t) {
            Err(RedeemError::Refused { reason, message }) => {
                assert_eq!(reason, Refusal::AlreadyRedeemed);
                assert!(message.contains("already redeemed"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
