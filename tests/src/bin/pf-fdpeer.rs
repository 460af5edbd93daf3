//! A second process for the fd-channel test: it binds an fd channel in the given directory,
//! puts a memfd holding the given text behind two tickets, prints both ticket ids (hex) on
//! one line, and serves until killed.
//!
//! usage: pf-fdpeer DIR TEXT TTL_MS
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use punktfunk_common::activation;
use punktfunk_common::fdchannel::{self, TicketBook};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, text, ttl] = args.as_slice() else {
        eprintln!("usage: pf-fdpeer DIR TEXT TTL_MS");
        std::process::exit(2);
    };
    let ttl: u64 = ttl.parse().expect("TTL_MS is a number");
    let listeners = activation::bind_listeners("peer", std::path::Path::new(dir)).expect("bind");
    let book = TicketBook::new(Duration::from_millis(ttl));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let memfd =
            rustix::fs::memfd_create("pf-fdpeer", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::io::write(&memfd, text.as_bytes()).expect("write memfd");
        let t = book.issue(vec![memfd], &["text"]).expect("issue");
        ids.push(t.id.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    println!("{}", ids.join(" "));
    std::io::stdout().flush().expect("flush");
    let handle = fdchannel::spawn_server(listeners.fds, book, "peer").expect("serve");
    let _ = handle.join();
}
