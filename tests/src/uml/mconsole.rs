//! A client of UML's management console (`CONFIG_MCONSOLE`): the datagram socket
//! `<uml_dir>/<umid>/mconsole` a running guest kernel listens on. The harness uses it for one
//! thing: when a guest runs past its timeout, it asks the guest kernel whether it is alive and
//! which tasks are blocked (`sysrq w`) before killing it, so a hang says where it hangs.
//!
//! Written here because no crate speaks it: the protocol is the two fixed-size structs of the
//! kernel's `arch/um/include/shared/mconsole.h` (native byte order, 512 data bytes), a request
//! answered by one or more replies (`more` set on all but the last).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAGIC: u32 = 0xcafe_babe;
const VERSION: u32 = 2;
/// `MCONSOLE_MAX_DATA`: the data field of a request and of a reply.
const MAX_DATA: usize = 512;
/// A reply's header: `err`, `more`, `len`.
const REPLY_HEADER: usize = 12;

/// The mconsole socket of the guest whose state directory is `uml_dir` (UML makes one
/// subdirectory, named by the random umid, holding `mconsole` and `pid`).
pub(crate) fn socket_in(uml_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(uml_dir)
        .ok()?
        .flatten()
        .map(|e| e.path().join("mconsole"))
        .find(|p| p.exists())
}

/// Sends one command and returns the text of its replies, up to the first silence of `wait`;
/// `None` when the guest did not answer at all (a guest kernel that no longer services its
/// console is itself a finding).
pub(crate) fn command(
    socket: &Path,
    reply_dir: &Path,
    cmd: &str,
    wait: Duration,
) -> Option<String> {
    let me = reply_dir.join(format!("mconsole-client-{}", std::process::id()));
    let _ = std::fs::remove_file(&me);
    let sock = UnixDatagram::bind(&me).ok()?;
    let text = exchange(&sock, socket, cmd, wait);
    let _ = std::fs::remove_file(&me);
    text
}

fn exchange(sock: &UnixDatagram, socket: &Path, cmd: &str, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(&request(cmd), socket).ok()?;
    let mut text = String::new();
    let mut buf = [0u8; REPLY_HEADER + MAX_DATA];
    loop {
        let Ok(n) = sock.recv(&mut buf) else {
            // No reply within `wait`: none at all is no answer; a long reply cut short (the
            // guest may panic part-way through a task dump) is what arrived.
            return (!text.is_empty()).then_some(text);
        };
        let word = |i: usize| {
            buf.get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let (more, len) = (word(1)?, word(2)? as usize);
        let data = buf.get(REPLY_HEADER..n.min(REPLY_HEADER + len.min(MAX_DATA)))?;
        text.push_str(&String::from_utf8_lossy(data));
        if more == 0 {
            return Some(text);
        }
    }
}

/// `struct mconsole_request`: magic, version, len, then the command, NUL-padded.
fn request(cmd: &str) -> Vec<u8> {
    let cmd = &cmd.as_bytes()[..cmd.len().min(MAX_DATA - 1)];
    let mut req = Vec::with_capacity(12 + MAX_DATA);
    req.extend_from_slice(&MAGIC.to_ne_bytes());
    req.extend_from_slice(&VERSION.to_ne_bytes());
    req.extend_from_slice(&(cmd.len() as u32).to_ne_bytes());
    req.extend_from_slice(cmd);
    req.resize(12 + MAX_DATA, 0);
    req
}
