//! `pf-mdns`: advertise or browse punktfunk hosts over mDNS.
//!
//! ```text
//! pf-mdns advertise --instance NAME --port 9777 --fp HEX --pair required --id ID
//! pf-mdns browse --timeout-ms 3000 --json [--want NAME]...
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use punktfunk_discovery::{
    Advertiser, DEFAULT_PORT, GAMESTREAM_HTTP_PORT, GameStreamAdvert, HostAdvert, browse_report,
    default_instance_name,
};

#[derive(Parser)]
#[command(
    name = "pf-mdns",
    about = "Advertise or browse punktfunk hosts over mDNS"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Pair {
    Required,
    Optional,
}

#[derive(Subcommand)]
enum Cmd {
    /// Advertise `_punktfunk._udp` until killed.
    Advertise {
        /// Instance name (default: the system host name).
        #[arg(long)]
        instance: Option<String>,
        /// UDP port of the QUIC endpoint.
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
        /// SHA-256 certificate fingerprint, 64 hex digits.
        #[arg(long)]
        fp: String,
        /// Pairing mode.
        #[arg(long, value_enum, default_value = "required")]
        pair: Pair,
        /// Host id.
        #[arg(long)]
        id: String,
        /// DNS host name label (default: from the system host name).
        #[arg(long)]
        hostname: Option<String>,
        /// Advertise only these addresses (repeatable; default: all interfaces).
        #[arg(long = "addr")]
        addrs: Vec<IpAddr>,
        /// How long to wait for the announcement before giving up.
        #[arg(long, default_value_t = 5000)]
        announce_timeout_ms: u64,
    },
    /// Advertise `_nvstream._tcp` (GameStream) until killed.
    AdvertiseGamestream {
        /// Instance name (default: the system host name).
        #[arg(long)]
        instance: Option<String>,
        /// TCP port of the HTTP endpoint.
        #[arg(long, default_value_t = GAMESTREAM_HTTP_PORT)]
        port: u16,
        /// DNS host name label (default: from the system host name).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Browse `_punktfunk._udp` and print what was found.
    Browse {
        /// How long to browse.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Print JSON (`{"hosts": [...], "rejected": [...]}`) instead of text.
        #[arg(long)]
        json: bool,
        /// Stop early once all these instances were found (repeatable).
        #[arg(long)]
        want: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pf-mdns: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // Block SIGINT/SIGTERM before the mDNS daemon thread is spawned (it
    // inherits the mask), so `hold` can sigwait for them and unregister.
    let sigs = block_term_signals()?;
    match cli.cmd {
        Cmd::Advertise {
            instance,
            port,
            fp,
            pair,
            id,
            hostname,
            addrs,
            announce_timeout_ms,
        } => {
            let adv = Advertiser::start(HostAdvert {
                instance: instance.unwrap_or_else(default_instance_name),
                port,
                fingerprint_hex: fp,
                pairing_required: matches!(pair, Pair::Required),
                host_id: id,
                addresses: if addrs.is_empty() { None } else { Some(addrs) },
                hostname,
            })?;
            hold(adv, Duration::from_millis(announce_timeout_ms), &sigs)
        }
        Cmd::AdvertiseGamestream {
            instance,
            port,
            hostname,
        } => {
            let adv = Advertiser::start_gamestream(GameStreamAdvert {
                instance: instance.unwrap_or_else(default_instance_name),
                port,
                addresses: None,
                hostname,
            })?;
            hold(adv, Duration::from_secs(5), &sigs)
        }
        Cmd::Browse {
            timeout_ms,
            json,
            want,
        } => {
            let want: BTreeSet<String> = want.into_iter().collect();
            let report = browse_report(Duration::from_millis(timeout_ms), |hosts| {
                !want.is_empty() && want.iter().all(|w| hosts.iter().any(|h| &h.instance == w))
            })?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                for h in &report.hosts {
                    let addrs: Vec<String> = h.addresses.iter().map(|a| a.to_string()).collect();
                    writeln!(
                        out,
                        "{}\t{}:{}\t[{}]\t{}\tpair={}\tid={}\tfp={}",
                        h.instance,
                        h.hostname,
                        h.port,
                        addrs.join(", "),
                        h.proto,
                        h.pairing,
                        h.host_id,
                        h.fingerprint_hex
                    )?;
                }
                for r in &report.rejected {
                    writeln!(out, "rejected {}: {}", r.instance, r.reason)?;
                }
            }
            Ok(())
        }
    }
}

fn block_term_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only affects the calling thread (and threads it spawns).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Prints "advertising ..." once announced, then waits for SIGINT/SIGTERM and
/// drops the advertiser, which sends goodbye packets so peers see it go.
fn hold(
    mut adv: Advertiser,
    timeout: Duration,
    sigs: &libc::sigset_t,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = adv.wait_announced(timeout)?;
    println!(
        "advertising {} on {} ({})",
        name,
        adv.hostname(),
        adv.service_type()
    );
    std::io::stdout().flush()?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `sigs` is an initialised set; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(sigs, &mut sig) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    eprintln!("pf-mdns: signal {sig}, unregistering {name}");
    drop(adv);
    Ok(())
}
