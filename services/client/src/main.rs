//! punktfunk-client: the reference punktfunk/1 client and our measuring instrument.
//!
//! `discover` lists hosts on the LAN, `pair` runs the PIN ceremony once, `stream` receives,
//! verifies and measures a stream, `speed-test` measures the data plane's goodput.

mod conn;
mod known_hosts;
mod report;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "punktfunk-client",
    version,
    about = "Reference punktfunk/1 client"
)]
struct Cli {
    /// Where the client keeps its identity and known hosts (default: $XDG_CONFIG_HOME/punktfunk-client).
    #[arg(long, global = true, env = "PUNKTFUNK_CLIENT_DIR")]
    config_dir: Option<PathBuf>,
    /// The name this client gives itself when pairing (default: the hostname).
    #[arg(long, global = true)]
    name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List punktfunk hosts announced on the LAN (mDNS).
    Discover {
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Pair with HOST using the PIN `punktfunkctl pair` shows there.
    Pair {
        #[arg(long)]
        pin: String,
        host: String,
    },
    /// Stream from HOST, verify every frame and report what arrived and how fast.
    Stream {
        host: String,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// WxH@Hz
        #[arg(long, default_value = "1280x720@60")]
        mode: String,
        #[arg(long, default_value_t = 20_000)]
        bitrate: u32,
        /// Decode the video (needs the media pipeline; not available for the synthetic source).
        #[arg(long)]
        decode: bool,
        #[arg(long)]
        json: bool,
    },
    /// Measure the data plane: the host sends probes at KBPS for MS milliseconds.
    SpeedTest {
        host: String,
        #[arg(long)]
        kbps: u32,
        #[arg(long)]
        ms: u32,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PUNKTFUNK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = match cli.config_dir.clone().map(Ok).unwrap_or_else(default_dir) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let name = cli
        .name
        .clone()
        .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
        .unwrap_or_else(|| "punktfunk-client".into());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Discover { timeout_ms, json } => session::discover(timeout_ms, json).await,
            Command::Pair { pin, host } => session::pair(&dir, &name, &pin, &host).await,
            Command::Stream { host, duration, mode, bitrate, decode, json } => {
                if decode {
                    return Err("--decode needs the media pipeline (test source + H.264), which this host build does not stream yet".into());
                }
                let mode = session::parse_mode(&mode)?;
                session::stream(&dir, &name, &host, duration, mode, bitrate, json).await
            }
            Command::SpeedTest { host, kbps, ms, json } => session::speed_test(&dir, &name, &host, kbps, ms, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("punktfunk-client: {e}");
    ExitCode::from(1)
}

fn default_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("punktfunk-client"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/punktfunk-client"))
        .ok_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set; pass --config-dir".into())
}
