//! Logging: structured records to journald when stderr *is* the journal (systemd sets
//! `JOURNAL_STREAM` to its device:inode), human lines on stderr otherwise.
//! The filter comes from `PUNKTFUNK_LOG` (EnvFilter syntax), default `info`.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber for `punktfunk-<daemon>`. Call once, first thing.
pub fn init(daemon: &str) {
    let filter =
        || EnvFilter::try_from_env("PUNKTFUNK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier(format!("punktfunk-{daemon}"));
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => {
                eprintln!("punktfunk-{daemon}: journald unavailable ({e}); logging to stderr")
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// True when `JOURNAL_STREAM` names the device and inode of our stderr, as systemd.exec(5)
/// recommends checking (a child that inherited the variable but not the stream must not use it).
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}
