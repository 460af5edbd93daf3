//! punktfunkctl: the command line over the daemons' gRPC APIs. Human tables by default,
//! `--json` for scripts; exit codes that mean something.
#![forbid(unsafe_code)]

mod doctor;
mod healthcheck;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use punktfunk_common::client::{self, DAEMONS, ProbeError};
use punktfunk_common::paths;
use punktfunk_proto::input::ListSeatsRequest;
use punktfunk_proto::input::input_client::InputClient;
use punktfunk_proto::transport::transport_client::TransportClient;
use punktfunk_proto::transport::{
    ArmPairingRequest, ListClientsRequest, ListSessionsRequest, UnpairRequest,
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "punktfunkctl",
    version,
    about = "Manage the punktfunk streaming host"
)]
struct Cli {
    /// Directory of the daemons' sockets (default: $XDG_RUNTIME_DIR/punktfunk).
    #[arg(long, global = true, env = "PUNKTFUNK_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
    /// Seconds to wait for each daemon.
    #[arg(long, global = true, default_value_t = 2.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show whether each daemon is serving (exit 0 only when all four are).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Arm pairing: print a one-time PIN for a client (`punktfunk-client pair --pin PIN HOST`);
    /// with `--pin`, complete the pairing a Moonlight client waits in with the PIN it shows.
    Pair {
        /// How long the PIN stays valid, in seconds (default 120, at most 600).
        #[arg(long, default_value_t = 120)]
        window: u32,
        /// The 4-digit PIN a Moonlight client shows while it waits to pair.
        #[arg(long)]
        pin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List paired clients.
    Clients {
        #[arg(long)]
        json: bool,
    },
    /// List live client sessions.
    Sessions {
        #[arg(long)]
        json: bool,
    },
    /// List compositor outputs (punktfunk-session): backend, mode, client, app, pids, state,
    /// screencast node.
    Outputs {
        #[arg(long)]
        json: bool,
    },
    /// List input seats: each session's virtual devices, their nodes and event counts.
    Seats {
        #[arg(long)]
        json: bool,
    },
    /// Remove a paired client (by name or fingerprint); its sessions end at once.
    Unpair {
        /// Client name, fingerprint, or a fingerprint prefix of at least 8 hex digits.
        client: String,
    },
    /// Check this host: daemons, units, encoders, devices, sysctls, firewall, compositors,
    /// PipeWire, mDNS, pairing, clock. Each line says what to do; exit 1 on any failure.
    Doctor {
        /// Print JSON (schema: docs/doctor.md) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Stream a few seconds of media's test source through the whole stack on loopback, decoded
    /// by the reference client; exit 0 when the boot is good.
    Healthcheck {
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the daemons (with --gate: for a user's daemons).
        #[arg(long, default_value_t = healthcheck::DEFAULT_WAIT_S)]
        wait: u64,
        /// Transport's UDP port.
        #[arg(long, env = "PUNKTFUNK_PORT", default_value_t = punktfunk_discovery::DEFAULT_PORT)]
        port: u16,
        /// As root at boot (punktfunk-healthcheck.service): run the check as the user whose
        /// daemons run, and on a failure `bootc rollback` and reboot.
        #[arg(long)]
        gate: bool,
    },
}

#[derive(Serialize)]
struct DaemonRow {
    name: &'static str,
    serving: bool,
    version: String,
    uptime_s: u64,
    status: String,
    socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct StatusReport {
    daemons: Vec<DaemonRow>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Healthcheck {
        gate: true, wait, ..
    } = cli.command
    {
        return healthcheck::gate(Duration::from_secs(wait));
    }
    if let Command::Doctor { json } = cli.command {
        let runtime_dir = cli
            .runtime_dir
            .clone()
            .map(Ok)
            .unwrap_or_else(paths::runtime_dir);
        let timeout = Duration::from_secs_f64(cli.timeout.clamp(0.05, 60.0));
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(doctor::run(
                runtime_dir.map_err(|e| e.to_string()),
                timeout,
                json,
            )),
            Err(e) => {
                eprintln!("punktfunkctl: cannot start the async runtime: {e}");
                ExitCode::from(70)
            }
        };
    }
    let runtime_dir = match cli
        .runtime_dir
        .clone()
        .map(Ok)
        .unwrap_or_else(paths::runtime_dir)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("punktfunkctl: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_secs_f64(cli.timeout.clamp(0.05, 60.0));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("punktfunkctl: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match cli.command {
        Command::Status { json } => rt.block_on(status(&runtime_dir, timeout, json)),
        Command::Pair { window, pin: Some(pin), json } => rt.block_on(transport_call(&runtime_dir, timeout, |mut c| async move {
            let _ = window;
            c.arm_pairing(ArmPairingRequest { window_s: 0, pin }).await?;
            if json {
                println!("{}", serde_json::json!({ "gamestream_pin": "accepted" }));
            } else {
                println!("PIN handed to the waiting Moonlight client: it finishes pairing now");
            }
            Ok(())
        })),
        Command::Pair { window, pin: None, json } => rt.block_on(transport_call(&runtime_dir, timeout, |mut c| async move {
            let r = c.arm_pairing(ArmPairingRequest { window_s: window, pin: String::new() }).await?.into_inner();
            if json {
                println!("{}", serde_json::json!({ "pin": r.pin, "expires_s": r.expires_s }));
            } else {
                println!("PIN {}  (valid {} s, one attempt)", r.pin, r.expires_s);
                println!("on the client: punktfunk-client pair --pin {} <this host>", r.pin);
            }
            Ok(())
        })),
        Command::Clients { json } => rt.block_on(transport_call(&runtime_dir, timeout, |mut c| async move {
            let reply = c.list_clients(ListClientsRequest {}).await?.into_inner();
            let (clients, pending) = (reply.clients, reply.pending);
            if json {
                let list: Vec<_> = clients
                    .iter()
                    .map(|c| serde_json::json!({ "name": c.name, "fingerprint": c.fingerprint, "paired_at": c.paired_at, "protocol": c.protocol }))
                    .collect();
                let waiting: Vec<_> = pending
                    .iter()
                    .map(|c| serde_json::json!({ "name": c.name, "fingerprint": c.fingerprint, "since": c.paired_at, "protocol": c.protocol }))
                    .collect();
                println!("{}", serde_json::json!({ "clients": list, "pending": waiting }));
                return Ok(());
            }
            for p in &pending {
                println!(
                    "waiting to pair: {} ({}, {}): type the PIN it shows with `punktfunkctl pair --pin NNNN`",
                    p.name, p.protocol, &p.fingerprint[..16.min(p.fingerprint.len())]
                );
            }
            if clients.is_empty() {
                println!("no paired clients (pair one with: punktfunkctl pair)");
            } else {
                println!("{:<24} {:<20} {:<12} PAIRED (unix s)", "NAME", "FINGERPRINT", "PROTOCOL");
                for c in clients {
                    println!("{:<24} {:<20} {:<12} {}", c.name, &c.fingerprint[..16.min(c.fingerprint.len())], c.protocol, c.paired_at);
                }
            }
            Ok(())
        })),
        Command::Sessions { json } => rt.block_on(transport_call(&runtime_dir, timeout, |mut c| async move {
            let sessions = c.list_sessions(ListSessionsRequest {}).await?.into_inner().sessions;
            if json {
                let list: Vec<_> = sessions
                    .iter()
                    .map(|s| {
                        let m = s.mode.unwrap_or_default();
                        serde_json::json!({
                            "client": s.client_name, "fingerprint": s.fingerprint, "protocol": s.protocol,
                            "mode": format!("{}x{}@{}", m.width, m.height, f64::from(m.refresh_mhz) / 1000.0),
                            "bitrate_kbps": s.bitrate_kbps, "frames_sent": s.frames_sent, "uptime_s": s.uptime_s,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "sessions": list }));
            } else if sessions.is_empty() {
                println!("no client is streaming");
            } else {
                println!("{:<20} {:<14} {:>10} {:>12} {:>8}", "CLIENT", "MODE", "KBIT/S", "FRAMES", "UPTIME");
                for s in sessions {
                    let m = s.mode.unwrap_or_default();
                    let mode = format!("{}x{}@{}", m.width, m.height, m.refresh_mhz / 1000);
                    println!("{:<20} {:<14} {:>10} {:>12} {:>7}s", s.client_name, mode, s.bitrate_kbps, s.frames_sent, s.uptime_s);
                }
            }
            Ok(())
        })),
        Command::Outputs { json } => rt.block_on(outputs(&runtime_dir, timeout, json)),
        Command::Seats { json } => rt.block_on(seats(&runtime_dir, timeout, json)),
        Command::Doctor { .. } => unreachable!("handled above: doctor runs without a runtime dir too"),
        Command::Healthcheck {
            json, wait, port, ..
        } => rt.block_on(healthcheck::check(
            &runtime_dir,
            port,
            Duration::from_secs(wait),
            json,
        )),
        Command::Unpair { client } => rt.block_on(transport_call(&runtime_dir, timeout, |mut c| async move {
            let r = c.unpair(UnpairRequest { client }).await?.into_inner();
            if let Some(removed) = r.removed {
                println!("unpaired {} ({})", removed.name, &removed.fingerprint[..16.min(removed.fingerprint.len())]);
            }
            Ok(())
        })),
    }
}

async fn status(dir: &Path, timeout: Duration, json: bool) -> ExitCode {
    let mut rows = Vec::new();
    for name in DAEMONS {
        let socket = paths::grpc_socket(dir, name);
        let row = match client::probe(&socket, name, timeout).await {
            Ok(h) => DaemonRow {
                name,
                serving: h.serving,
                version: h.version,
                uptime_s: h.uptime_s,
                status: h.status,
                socket: socket.display().to_string(),
                error: None,
            },
            Err(e) => DaemonRow {
                name,
                serving: false,
                version: String::new(),
                uptime_s: 0,
                status: "down".into(),
                socket: socket.display().to_string(),
                error: Some(explain(&e)),
            },
        };
        rows.push(row);
    }
    let all_serving = rows.iter().all(|r| r.serving);
    if json {
        let report = StatusReport { daemons: rows };
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("punktfunkctl: cannot encode JSON: {e}");
                return ExitCode::from(70);
            }
        }
    } else {
        print_table(&rows);
        let down: Vec<&DaemonRow> = rows.iter().filter(|r| !r.serving).collect();
        for r in &down {
            if let Some(e) = &r.error {
                eprintln!("{}: {e}", r.name);
            }
        }
        if down.len() == rows.len() {
            eprintln!(
                "no punktfunk daemon answered (tried {}/*.sock). Start them with: systemctl --user start punktfunk.target",
                dir.display()
            );
        } else if !down.is_empty() {
            let units: Vec<String> = down
                .iter()
                .map(|r| format!("punktfunk-{}.service", r.name))
                .collect();
            eprintln!(
                "see why with: journalctl --user -u {} ; restart with: systemctl --user restart {}",
                units.join(" -u "),
                units.join(" ")
            );
        }
    }
    if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `punktfunkctl outputs`: punktfunk-session's ListOutputs as a table or JSON.
async fn outputs(dir: &Path, timeout: Duration, json: bool) -> ExitCode {
    use punktfunk_proto::session::session_client::SessionClient;
    use punktfunk_proto::session::{Backend, ListOutputsRequest};
    let socket = paths::grpc_socket(dir, "session");
    let channel = match punktfunk_common::uds::connect(&socket, timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "punktfunkctl: {}; start it with: systemctl --user start punktfunk-session.service",
                explain(&ProbeError::Connect(e))
            );
            return ExitCode::from(1);
        }
    };
    let mut client = SessionClient::new(channel);
    let call = client.list_outputs(ListOutputsRequest {});
    let outputs = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => r.into_inner().outputs,
        Ok(Err(s)) => {
            eprintln!("punktfunkctl: {}", s.message());
            return ExitCode::from(1);
        }
        Err(_) => {
            eprintln!(
                "punktfunkctl: punktfunk-session did not answer within {:.1} s; see `journalctl --user -u punktfunk-session`, or allow longer with --timeout",
                timeout.as_secs_f64()
            );
            return ExitCode::from(1);
        }
    };
    let backend = |raw: i32| match Backend::try_from(raw) {
        Ok(Backend::Gamescope) => "gamescope",
        Ok(Backend::Mutter) => "mutter",
        Ok(Backend::Kwin) => "kwin",
        Ok(Backend::Sway) => "sway",
        Ok(Backend::Weston) => "weston",
        _ => "?",
    };
    let mode = |m: Option<punktfunk_proto::common::Mode>| {
        let m = m.unwrap_or_default();
        format!(
            "{}x{}@{}",
            m.width,
            m.height,
            f64::from(m.refresh_mhz) / 1000.0
        )
    };
    if json {
        let list: Vec<_> = outputs
            .iter()
            .map(|o| {
                serde_json::json!({
                    "id": o.output_id, "backend": backend(o.backend), "mode": mode(o.mode),
                    "client": o.client, "app": o.app, "pid": o.pid, "app_pid": o.app_pid,
                    "state": o.state, "node": o.pipewire_node_id,
                    "wayland_display": o.wayland_display, "runtime_dir": o.runtime_dir,
                    "started_unix_ms": o.started_unix_ms,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "outputs": list }));
    } else if outputs.is_empty() {
        println!("no compositor outputs");
    } else {
        println!(
            "{:<10} {:<10} {:<16} {:<16} {:<16} {:>8} {:>8} {:<9} {:>6}",
            "ID", "BACKEND", "MODE", "CLIENT", "APP", "PID", "APP PID", "STATE", "NODE"
        );
        for o in &outputs {
            println!(
                "{:<10} {:<10} {:<16} {:<16} {:<16} {:>8} {:>8} {:<9} {:>6}",
                o.output_id,
                backend(o.backend),
                mode(o.mode),
                o.client,
                if o.app.is_empty() { "-" } else { &o.app },
                o.pid,
                o.app_pid,
                o.state,
                o.pipewire_node_id
            );
        }
    }
    ExitCode::SUCCESS
}

/// `punktfunkctl seats`: punktfunk-input's ListSeats as a table or JSON.
async fn seats(dir: &Path, timeout: Duration, json: bool) -> ExitCode {
    let socket = paths::grpc_socket(dir, "input");
    let channel = match punktfunk_common::uds::connect(&socket, timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "punktfunkctl: {}; start it with: systemctl --user start punktfunk-input.service",
                explain(&ProbeError::Connect(e))
            );
            return ExitCode::from(1);
        }
    };
    let mut client = InputClient::new(channel);
    let seats = match tokio::time::timeout(timeout, client.list_seats(ListSeatsRequest {})).await {
        Ok(Ok(r)) => r.into_inner().seats,
        Ok(Err(s)) => {
            eprintln!("punktfunkctl: {}", s.message());
            return ExitCode::from(1);
        }
        Err(_) => {
            eprintln!(
                "punktfunkctl: punktfunk-input did not answer within {:.1} s; see `journalctl --user -u punktfunk-input`",
                timeout.as_secs_f64()
            );
            return ExitCode::from(1);
        }
    };
    if json {
        let list: Vec<_> = seats
            .iter()
            .map(|s| {
                let c = s.counters.unwrap_or_default();
                serde_json::json!({
                    "seat": s.seat_id, "client": s.client_name, "age_ms": s.age_ms,
                    "devices": s.devices.iter().map(|d| serde_json::json!({
                        "kind": d.kind, "name": d.name, "pad": d.pad, "nodes": d.nodes, "syspath": d.syspath,
                    })).collect::<Vec<_>>(),
                    "counters": {
                        "delivered": c.delivered, "dropped_bad_pad": c.dropped_bad_pad,
                        "dropped_out_of_range": c.dropped_out_of_range, "dropped_bad_code": c.dropped_bad_code,
                        "dropped_rate": c.dropped_rate, "dropped_device_error": c.dropped_device_error,
                        "feedback_sent": c.feedback_sent, "feedback_dropped": c.feedback_dropped,
                    },
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "seats": list }));
        return ExitCode::SUCCESS;
    }
    if seats.is_empty() {
        println!("no input seats (no client is streaming)");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<10} {:<20} {:>8} {:>10} {:>8} {:>9}",
        "SEAT", "CLIENT", "AGE", "DELIVERED", "DROPPED", "FEEDBACK"
    );
    for s in &seats {
        let c = s.counters.unwrap_or_default();
        let dropped = c.dropped_bad_pad
            + c.dropped_out_of_range
            + c.dropped_bad_code
            + c.dropped_rate
            + c.dropped_device_error;
        println!(
            "{:<10} {:<20} {:>7}s {:>10} {:>8} {:>9}",
            s.seat_id,
            s.client_name,
            s.age_ms / 1000,
            c.delivered,
            dropped,
            c.feedback_sent
        );
        for d in &s.devices {
            println!("  {:<10} {:<40} {}", d.kind, d.name, d.nodes.join(" "));
        }
        if dropped > 0 {
            println!(
                "  dropped: {} bad pad, {} out of range, {} bad code, {} over rate, {} device errors",
                c.dropped_bad_pad,
                c.dropped_out_of_range,
                c.dropped_bad_code,
                c.dropped_rate,
                c.dropped_device_error
            );
        }
    }
    ExitCode::SUCCESS
}

/// Connects to punktfunk-transport and runs `f`; errors say what to do.
async fn transport_call<F, Fut>(dir: &Path, timeout: Duration, f: F) -> ExitCode
where
    F: FnOnce(TransportClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let socket = paths::grpc_socket(dir, "transport");
    let channel = match punktfunk_common::uds::connect(&socket, timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "punktfunkctl: {}; start it with: systemctl --user start punktfunk-transport.service",
                explain(&ProbeError::Connect(e))
            );
            return ExitCode::from(1);
        }
    };
    match tokio::time::timeout(timeout, f(TransportClient::new(channel))).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(s)) => {
            eprintln!("punktfunkctl: {}", s.message());
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!(
                "punktfunkctl: punktfunk-transport did not answer within {:.1} s; it may be stuck: see `journalctl --user -u punktfunk-transport`, restart it with `systemctl --user restart punktfunk-transport`, or allow longer with --timeout",
                timeout.as_secs_f64()
            );
            ExitCode::from(1)
        }
    }
}

fn explain(e: &ProbeError) -> String {
    match e {
        ProbeError::Connect(c) => {
            // The transport error wraps the io::Error; its root cause is what a person can act on.
            let mut root: &dyn std::error::Error = c;
            while let Some(s) = root.source() {
                root = s;
            }
            format!("no answer on {}: {root}", c.path.display())
        }
        ProbeError::Call(s) => format!("{:?}: {}", s.code(), s.message()),
        e @ ProbeError::TimedOut(_) => e.to_string(),
    }
}

fn print_table(rows: &[DaemonRow]) {
    let color = std::io::stdout().is_terminal();
    let headers = ["DAEMON", "SERVING", "VERSION", "UPTIME", "STATUS"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.to_string(),
                if r.serving { "yes".into() } else { "no".into() },
                if r.version.is_empty() {
                    "-".into()
                } else {
                    r.version.clone()
                },
                if r.serving {
                    human_duration(r.uptime_s)
                } else {
                    "-".into()
                },
                r.status.clone(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: [&str; 5]| {
        let mut out = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out
    };
    println!("{}", line(headers));
    for (row, r) in cells.iter().zip(rows) {
        let text = line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
        if color {
            let code = if r.serving { "32" } else { "31" };
            println!("\x1b[{code}m{text}\x1b[0m");
        } else {
            println!("{text}");
        }
    }
}

fn human_duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}
