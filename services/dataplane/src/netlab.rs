//! Test and benchmark support: two network namespaces joined by a veth pair, with random
//! loss by nftables in the receiving one (see TESTING.md "Networks"). Needs root, `ip`
//! (iproute2) and `nft` (nftables). Everything is removed on drop (deleting a namespace
//! removes its veth end and its nft tables).
//!
//! Sockets are created *inside* a namespace by a short-lived thread that `setns`es into it;
//! the socket stays in that namespace wherever it is used afterwards, so the sender and the
//! receiver run as ordinary threads of the test process.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;

/// Why the lab could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetlabError {
    #[error(
        "network-namespace tests need root (CAP_SYS_ADMIN + CAP_NET_ADMIN); running as uid {0}"
    )]
    NotRoot(u32),
    #[error("`{0}` not found: install iproute2 and nftables (`just setup`)")]
    Missing(&'static str),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The sending namespace (`pf-a-<tag>`, 10.201.0.1).
    A,
    /// The receiving namespace (`pf-b-<tag>`, 10.201.0.2); loss rules live here.
    B,
}

/// Two namespaces `pf-a-<tag>` / `pf-b-<tag>` joined by a veth pair, 10.201.0.1/24 and
/// 10.201.0.2/24 (private addresses that exist only inside the namespaces).
pub struct NetnsPair {
    a: String,
    b: String,
}

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

fn run(args: &[&str]) -> Result<String, NetlabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NetlabError::Missing(if args[0] == "nft" { "nft" } else { "ip" })
            } else {
                NetlabError::Io(e)
            }
        })?;
    if !out.status.success() {
        return Err(NetlabError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetnsPair {
    /// Creates the namespaces, the veth pair and the addresses. `tag` makes the names unique
    /// (e.g. the pid plus a counter); names are `pf-a-<tag>` and `pf-b-<tag>`.
    pub fn create(tag: &str) -> Result<Self, NetlabError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(NetlabError::NotRoot(uid));
        }
        run(&["ip", "-V"])?;
        run(&["nft", "--version"])?;
        let pair = Self {
            a: format!("pf-a-{tag}"),
            b: format!("pf-b-{tag}"),
        };
        // Leftovers of a crashed earlier run with the same tag.
        let _ = run(&["ip", "netns", "del", &pair.a]);
        let _ = run(&["ip", "netns", "del", &pair.b]);
        run(&["ip", "netns", "add", &pair.a])?;
        // From here on, drop cleans up whatever exists.
        run(&["ip", "netns", "add", &pair.b])?;
        run(&[
            "ip", "-n", &pair.a, "link", "add", "pfva", "type", "veth", "peer", "name", "pfvb",
            "netns", &pair.b,
        ])?;
        for (ns, dev, addr) in [(&pair.a, "pfva", ADDR_A), (&pair.b, "pfvb", ADDR_B)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => ADDR_A,
            Side::B => ADDR_B,
        }
    }

    /// Drops `permille`/1000 of the UDP packets to `port` arriving in namespace B, at random
    /// (`numgen random mod 1000 < permille`), with a counter. Replaces an earlier rule.
    pub fn set_loss(&self, port: u16, permille: u32) -> Result<(), NetlabError> {
        let _ = run(&[
            "ip", "netns", "exec", &self.b, "nft", "delete", "table", "inet", "pflab",
        ]);
        let script = format!(
            "add table inet pflab\n\
             add chain inet pflab input {{ type filter hook input priority 0 ; policy accept ; }}\n\
             add rule inet pflab input udp dport {port} numgen random mod 1000 < {permille} counter drop\n"
        );
        let path = std::env::temp_dir().join(format!("{}-loss.nft", self.b));
        std::fs::write(&path, script)?;
        let r = run(&[
            "ip",
            "netns",
            "exec",
            &self.b,
            "nft",
            "-f",
            &path.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Packets the loss rule dropped so far (from its nft counter).
    pub fn dropped_packets(&self) -> Result<u64, NetlabError> {
        let out = run(&[
            "ip", "netns", "exec", &self.b, "nft", "list", "chain", "inet", "pflab", "input",
        ])?;
        let n = out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        Ok(n)
    }

    /// A UDP socket created inside namespace `side`, bound to its address and `port`.
    pub fn udp_socket(&self, side: Side, port: u16) -> Result<UdpSocket, NetlabError> {
        let ns = format!("/run/netns/{}", self.name(side));
        let addr = SocketAddr::V4(SocketAddrV4::new(self.addr(side), port));
        let r = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<UdpSocket> {
                let f = std::fs::File::open(&ns)?;
                // SAFETY: `f` is an open namespace file; setns only changes this (short-lived)
                // thread's network namespace, which no other code observes.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                UdpSocket::bind(addr)
            })
            .join()
        });
        match r {
            Ok(r) => Ok(r?),
            Err(_) => Err(NetlabError::Io(io::Error::other("setns thread panicked"))),
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end (and with it the peer) and its nft tables.
        for ns in [&self.a, &self.b] {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("netlab: cleanup of {ns} failed: {e}");
            }
        }
    }
}
