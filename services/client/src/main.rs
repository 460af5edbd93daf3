//! punktfunk-client: the reference punktfunk/1 client and our measuring instrument.
//!
//! `discover` lists hosts on the LAN, `pair` runs the PIN ceremony once, `stream` receives,
//! verifies and measures a stream, `speed-test` measures the data plane's goodput.
#![forbid(unsafe_code)]

mod audio;
mod conn;
mod decode;
mod frames_out;
mod input;
mod known_hosts;
mod outcome;
mod report;
mod session;
mod snapshot;
mod stream;
#[cfg(test)]
mod testenc;
#[cfg(test)]
mod testhost;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::outcome::Failure;

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
    Stream(Box<StreamArgs>),
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

/// `stream`'s arguments (boxed in [`Command`]: they are many).
#[derive(clap::Args)]
struct StreamArgs {
    host: String,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// WxH@Hz
    #[arg(long, default_value = "1280x720@60")]
    mode: String,
    #[arg(long, default_value_t = punktfunk_control::host::DEFAULT_BITRATE_KBPS)]
    bitrate: u32,
    /// Ask for this codec only (h264 or hevc); by default HEVC is preferred, then H.264.
    #[arg(long)]
    codec: Option<String>,
    /// Decode the video (H.264/HEVC from the host's media pipeline; the synthetic source
    /// is verified byte for byte instead) and read the frame counter of every picture.
    #[arg(long)]
    decode: bool,
    /// Write one decoded picture (the middle of the run, or the last of a short one) as PNG.
    #[arg(long, value_name = "FILE.png", requires = "decode")]
    save_frame: Option<PathBuf>,
    /// Write one CSV row per received video frame (flags, size, per-stage latency, counter).
    #[arg(long, value_name = "FILE.csv")]
    frames_out: Option<PathBuf>,
    /// Do not ask the host for audio.
    #[arg(long)]
    no_audio: bool,
    /// Ask for another mode and bitrate SECS into the run; the report's `reconfigured`
    /// says what the host put in effect.
    #[arg(long, value_name = "SECS:WxH@Hz:KBPS")]
    reconfigure: Option<String>,
    /// Send the timed input events of FILE (one per line: `MS EVENT ARGS`, see
    /// `punktfunk-client`'s input.rs); the report lists the feedback the host sent back.
    #[arg(long, value_name = "FILE")]
    input_script: Option<PathBuf>,
    /// The pads this client brings, by index: a comma list of `xbox` and `dualsense`.
    #[arg(long, value_delimiter = ',')]
    gamepads: Vec<String>,
    /// Run this app (its title in the host's apps file, e.g. "Test pattern") in the
    /// client's output; by default the host streams the desktop.
    #[arg(long)]
    app: Option<String>,
    /// The compositor to run the output in (mutter, sway, kwin, gamescope); by default
    /// the app's own, else the host's.
    #[arg(long)]
    compositor: Option<String>,
    #[arg(long)]
    json: bool,
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
        Err(e) => return fail(&outcome::chain(&e)),
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
    let result: Result<(), Failure> = rt.block_on(async move {
        match cli.command {
            Command::Discover { timeout_ms, json } => {
                Ok(session::discover(timeout_ms, json).await?)
            }
            Command::Pair { pin, host } => Ok(session::pair(&dir, &name, &pin, &host).await?),
            Command::Stream(args) => {
                let StreamArgs {
                    host,
                    duration,
                    mode,
                    bitrate,
                    codec,
                    decode,
                    save_frame,
                    frames_out,
                    no_audio,
                    reconfigure,
                    input_script,
                    gamepads,
                    app,
                    compositor,
                    json,
                } = *args;
                let opts = stream::StreamOptions {
                    app,
                    compositor,
                    duration,
                    mode: session::parse_mode(&mode)?,
                    bitrate,
                    codecs: match codec {
                        Some(c) => vec![session::parse_codec(&c)?],
                        None => session::DEFAULT_CODECS.to_vec(),
                    },
                    json,
                    decode,
                    save_frame,
                    frames_out,
                    audio: !no_audio,
                    reconfigure: reconfigure
                        .as_deref()
                        .map(stream::ReconfigureAt::parse)
                        .transpose()?,
                    input_script: input_script.as_deref().map(input::load).transpose()?,
                    gamepads: gamepads
                        .iter()
                        .map(|g| session::parse_gamepad(g))
                        .collect::<anyhow::Result<_>>()?,
                };
                stream::stream(&dir, &name, &host, &opts).await
            }
            Command::SpeedTest {
                host,
                kbps,
                ms,
                json,
            } => Ok(session::speed_test(&dir, &name, &host, kbps, ms, json).await?),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("punktfunk-client: {}", f.message);
            ExitCode::from(f.exit)
        }
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("punktfunk-client: {e}");
    ExitCode::from(outcome::EXIT_FAILED)
}

fn default_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("punktfunk-client"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/punktfunk-client"))
        .ok_or_else(|| {
            anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set; pass --config-dir")
        })
}
