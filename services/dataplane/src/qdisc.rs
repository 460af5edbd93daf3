//! Does the route to a peer leave through the `fq` qdisc? (The precondition of kernel pacing:
//! only `fq` holds each packet until its `SO_TXTIME` departure time; every other root qdisc,
//! and `noqueue`, sends it at once.)
//!
//! Asked of the kernel over rtnetlink, twice: `RTM_GETROUTE` for the peer's address gives the
//! egress interface (`RTA_OIF`), then an `RTM_GETQDISC` dump gives that interface's root qdisc
//! (`TCA_KIND`). A multi-queue root (`mq`, what `net.core.default_qdisc=fq` gives a multi-queue
//! NIC) counts as fq when every one of its children is fq.
//!
//! Hand-written on purpose: it is two requests and three attributes read back. The netlink
//! crates (`netlink-packet-route` + `netlink-sys`, or `rtnetlink` with its tokio runtime) would
//! add a dozen crates to the data plane's build for that. The parser below takes the kernel's
//! bytes through bounds-checked reads only: a short or odd message ends the walk with an
//! error, never a panic (tested with arbitrary bytes).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The root qdisc of the interface a peer is reached through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressQdisc {
    /// Interface index of the route's egress device.
    pub ifindex: u32,
    /// The interface's name (`lo`, `eth0`), for messages.
    pub ifname: String,
    /// Kind of the root qdisc (`fq`, `mq`, `noqueue`, `fq_codel`, `pfifo_fast`, ...).
    pub root: String,
    /// The root is `fq`, or a multi-queue root whose every child is `fq`: departure times
    /// (`SO_TXTIME`) are honoured.
    pub fq: bool,
}

impl std::fmt::Display for EgressQdisc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fq {
            write!(f, "{} has fq", self.ifname)
        } else {
            write!(f, "{} has {}, not fq", self.ifname, self.root)
        }
    }
}

/// The qdisc of the route to `peer` (see the module documentation).
pub fn egress_qdisc(peer: IpAddr) -> io::Result<EgressQdisc> {
    let nl = Netlink::open()?;
    let ifindex = nl.route_oif(peer)?;
    let qdiscs = nl.qdiscs(ifindex)?;
    let (root, fq) = classify(&qdiscs).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no root qdisc on interface {ifindex}"),
        )
    })?;
    Ok(EgressQdisc {
        ifindex,
        ifname: ifname(ifindex),
        root,
        fq,
    })
}

fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; it writes a
    // NUL-terminated name there or returns NULL.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One qdisc of a dump: handle, parent, kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Qdisc {
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

/// `TC_H_ROOT`: the parent of a root qdisc.
const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// The root's kind and whether it paces by departure time.
pub(crate) fn classify(qdiscs: &[Qdisc]) -> Option<(String, bool)> {
    let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT)?;
    let fq = match root.kind.as_str() {
        "fq" => true,
        "mq" | "mqprio" => {
            let major = root.handle & 0xFFFF_0000;
            let children: Vec<_> = qdiscs
                .iter()
                .filter(|q| q.parent != TC_H_ROOT && q.parent & 0xFFFF_0000 == major)
                .collect();
            !children.is_empty() && children.iter().all(|q| q.kind == "fq")
        }
        _ => false,
    };
    Some((root.kind.clone(), fq))
}

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const TCMSG_LEN: usize = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTA_OIF: u16 = 4;
const TCA_KIND: u16 = 1;
/// Most bytes a dump may span before we give up (a device has a handful of qdiscs).
const MAX_DUMP_BYTES: usize = 1 << 20;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    fn open() -> io::Result<Self> {
        // SAFETY: socket() takes integers only.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang the caller.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a live timeval and its exact size; the kernel only reads it.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Self { fd })
    }

    fn request(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is a live buffer of `msg.len()` bytes; the kernel only reads it
        // (the socket is unconnected: netlink sends to the kernel by default).
        let r = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads answers until `NLMSG_DONE` (dumps) or the first non-multipart message.
    fn answers(&self, dump: bool) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = &buf[..r as usize];
            all.extend_from_slice(got);
            let done = messages(got)?
                .iter()
                .any(|(ty, _)| *ty == NLMSG_DONE || *ty == NLMSG_ERROR);
            if done || !dump || r == 0 {
                return Ok(all);
            }
            if all.len() > MAX_DUMP_BYTES {
                return Err(invalid("qdisc dump too long"));
            }
        }
    }

    fn route_oif(&self, peer: IpAddr) -> io::Result<u32> {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let (family, addr): (u8, Vec<u8>) = match peer {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
        };
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = family;
        body[1] = (addr.len() * 8) as u8;
        push_attr(&mut body, libc::RTA_DST, &addr);
        self.request(&nlmsg(
            libc::RTM_GETROUTE,
            libc::NLM_F_REQUEST as u16,
            &body,
        ))?;
        let answer = self.answers(false)?;
        parse_route_oif(&answer)
    }

    fn qdiscs(&self, ifindex: u32) -> io::Result<Vec<Qdisc>> {
        let mut body = vec![0u8; TCMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        self.request(&nlmsg(libc::RTM_GETQDISC, flags, &body))?;
        let answer = self.answers(true)?;
        parse_qdisc_dump(&answer, ifindex)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn nlmsg(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.extend_from_slice(body);
    m
}

fn push_attr(body: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    body.extend_from_slice(&(len as u16).to_ne_bytes());
    body.extend_from_slice(&ty.to_ne_bytes());
    body.extend_from_slice(data);
    body.resize(align4(body.len()), 0);
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink messages in `b`: (type, payload after the header).
pub(crate) fn messages(b: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= b.len() {
        let len = u32_at(b, at).ok_or_else(|| invalid("netlink header"))? as usize;
        let ty = u16_at(b, at + 4).ok_or_else(|| invalid("netlink header"))?;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            return Err(invalid("netlink message length"));
        }
        out.push((ty, &b[at + NLMSG_HDRLEN..at + len]));
        at += align4(len);
    }
    Ok(out)
}

/// The attributes (type, data) after a fixed header of `skip` bytes.
fn attrs(payload: &[u8], skip: usize) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut at = skip;
    while at + 4 <= payload.len() {
        let len = usize::from(u16_at(payload, at).ok_or_else(|| invalid("attribute"))?);
        let ty = u16_at(payload, at + 2).ok_or_else(|| invalid("attribute"))? & 0x3FFF;
        if len < 4 || at + len > payload.len() {
            return Err(invalid("attribute length"));
        }
        out.push((ty, &payload[at + 4..at + len]));
        at += align4(len);
    }
    Ok(out)
}

fn check_error(ty: u16, payload: &[u8]) -> io::Result<()> {
    if ty == NLMSG_ERROR {
        let code = u32_at(payload, 0).ok_or_else(|| invalid("netlink error"))? as i32;
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

/// `RTA_OIF` of the first `RTM_NEWROUTE` answer.
pub(crate) fn parse_route_oif(b: &[u8]) -> io::Result<u32> {
    for (ty, payload) in messages(b)? {
        check_error(ty, payload)?;
        if ty != libc::RTM_NEWROUTE {
            continue;
        }
        for (aty, data) in attrs(payload, RTMSG_LEN)? {
            if aty == RTA_OIF {
                return u32_at(data, 0).ok_or_else(|| invalid("RTA_OIF"));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "the route has no egress interface",
    ))
}

/// The qdiscs of `ifindex` in a `RTM_GETQDISC` dump.
pub(crate) fn parse_qdisc_dump(b: &[u8], ifindex: u32) -> io::Result<Vec<Qdisc>> {
    let mut out = Vec::new();
    for (ty, payload) in messages(b)? {
        check_error(ty, payload)?;
        if ty != libc::RTM_NEWQDISC || payload.len() < TCMSG_LEN {
            continue;
        }
        let (Some(index), Some(handle), Some(parent)) =
            (u32_at(payload, 4), u32_at(payload, 8), u32_at(payload, 12))
        else {
            continue;
        };
        if index != ifindex {
            continue;
        }
        let kind = attrs(payload, TCMSG_LEN)?
            .into_iter()
            .find(|(t, _)| *t == TCA_KIND)
            .map(|(_, d)| {
                let name = d.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(name).into_owned()
            })
            .unwrap_or_default();
        out.push(Qdisc {
            handle,
            parent,
            kind,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(handle: u32, parent: u32, kind: &str) -> Qdisc {
        Qdisc {
            handle,
            parent,
            kind: kind.into(),
        }
    }

    #[test]
    fn fq_root_mq_of_fq_and_others() {
        assert_eq!(
            classify(&[q(0x8001_0000, TC_H_ROOT, "fq")]),
            Some(("fq".into(), true))
        );
        assert_eq!(
            classify(&[q(0, TC_H_ROOT, "noqueue")]),
            Some(("noqueue".into(), false))
        );
        let mq = [
            q(0x1_0000, TC_H_ROOT, "mq"),
            q(0x8002_0000, 0x1_0001, "fq"),
            q(0x8003_0000, 0x1_0002, "fq"),
        ];
        assert_eq!(classify(&mq), Some(("mq".into(), true)));
        let mixed = [
            q(0x1_0000, TC_H_ROOT, "mq"),
            q(0x8002_0000, 0x1_0001, "fq"),
            q(0x8003_0000, 0x1_0002, "fq_codel"),
        ];
        assert_eq!(classify(&mixed), Some(("mq".into(), false)));
        assert_eq!(classify(&[]), None);
    }

    fn qdisc_msg(ifindex: u32, handle: u32, parent: u32, kind: &str) -> Vec<u8> {
        let mut body = vec![0u8; TCMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..12].copy_from_slice(&handle.to_ne_bytes());
        body[12..16].copy_from_slice(&parent.to_ne_bytes());
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        push_attr(&mut body, TCA_KIND, &k);
        nlmsg(libc::RTM_NEWQDISC, 2, &body)
    }

    #[test]
    fn a_dump_is_parsed_and_filtered_by_interface() {
        let mut dump = qdisc_msg(1, 0, TC_H_ROOT, "fq");
        dump.extend(qdisc_msg(2, 0, TC_H_ROOT, "fq_codel"));
        dump.extend(nlmsg(NLMSG_DONE, 2, &[0; 4]));
        let lo = parse_qdisc_dump(&dump, 1).expect("parsed");
        assert_eq!(lo, vec![q(0, TC_H_ROOT, "fq")]);
        let eth = parse_qdisc_dump(&dump, 2).expect("parsed");
        assert_eq!(eth[0].kind, "fq_codel");
    }

    #[test]
    fn a_route_answer_gives_its_interface_and_an_error_its_errno() {
        let mut body = vec![0u8; RTMSG_LEN];
        push_attr(&mut body, RTA_OIF, &7u32.to_ne_bytes());
        let answer = nlmsg(libc::RTM_NEWROUTE, 0, &body);
        assert_eq!(parse_route_oif(&answer).expect("oif"), 7);
        let err = nlmsg(NLMSG_ERROR, 0, &(-libc::ENETUNREACH).to_ne_bytes());
        let e = parse_route_oif(&err).expect_err("an error");
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
    }

    #[test]
    fn truncated_or_garbage_answers_are_errors_not_panics() {
        let full = qdisc_msg(1, 0, TC_H_ROOT, "fq");
        for cut in 0..full.len() {
            let _ = parse_qdisc_dump(&full[..cut], 1);
            let _ = parse_route_oif(&full[..cut]);
        }
        // A length field that points past the end.
        let mut bad = full.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_qdisc_dump(&bad, 1).is_err());
        // Arbitrary bytes (a fixed-seed walk over many lengths).
        let mut x = 0x1234_5678u32;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_qdisc_dump(&bytes, 1);
            let _ = parse_route_oif(&bytes);
        }
    }

    #[test]
    fn the_host_loopback_route_is_found() {
        // The route to 127.0.0.1 always leaves through lo, whatever its qdisc.
        let q = egress_qdisc("127.0.0.1".parse().expect("addr")).expect("asked the kernel");
        assert_eq!(q.ifname, "lo");
        assert!(!q.root.is_empty());
    }
}
