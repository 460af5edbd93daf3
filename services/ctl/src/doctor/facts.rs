//! Gathering what the machine says, without judging it (that is [`super::checks`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use punktfunk_common::backends::{BackendKind, FLOORS, Floor, Version, parse_version};
use punktfunk_common::client::{self, DAEMONS};
use punktfunk_common::paths;
use punktfunk_proto::common::Codec;
use punktfunk_proto::media::CapabilitiesRequest;
use punktfunk_proto::media::media_client::MediaClient;
use punktfunk_proto::transport::ListClientsRequest;
use punktfunk_proto::transport::transport_client::TransportClient;

/// The socket-buffer sysctls the data plane needs and the value it needs (32 MiB, the size
/// punktfunk-dataplane asks for; image/usr/lib/sysctl.d/60-punktfunk.conf sets exactly this).
pub const SOCKET_BUFFER_SYSCTLS: [&str; 2] = ["net.core.rmem_max", "net.core.wmem_max"];
/// See [`SOCKET_BUFFER_SYSCTLS`].
pub const SOCKET_BUFFER_BYTES: u64 = 32 << 20;
/// The device nodes punktfunk-input writes to.
pub const DEVICES: [&str; 2] = ["/dev/uinput", "/dev/uhid"];
/// The firewalld service the image installs (image/usr/lib/firewalld/services/punktfunk.xml).
pub const FIREWALLD_SERVICE: &str = "punktfunk";
/// How long doctor listens for the host's own mDNS advert.
pub const MDNS_WAIT: Duration = Duration::from_secs(3);

/// One daemon's Health answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonFact {
    /// `session`, `media`, `transport` or `input`.
    pub name: &'static str,
    /// `(serving, status line)` or the error.
    pub health: Result<(bool, String), String>,
}

/// What media would encode one codec with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecFact {
    /// `h264`, `hevc`, `av1`.
    pub codec: String,
    /// Some rung of the ladder works here.
    pub available: bool,
    /// That rung is a hardware encoder.
    pub hardware: bool,
    /// The GStreamer element of that rung.
    pub encoder: String,
}

/// Access to one device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// The node does not exist (module not loaded).
    Missing,
    /// It exists but this user cannot open it read-write; its group and mode.
    Denied {
        /// The node's group id.
        gid: u32,
        /// The node's permission bits.
        mode: u32,
    },
    /// Read-write access.
    Granted,
}

/// What firewalld says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallFact {
    /// No `firewall-cmd` on PATH.
    NotInstalled,
    /// Installed, not running (nothing filters).
    NotRunning,
    /// Running, but polkit does not let this user read its configuration (firewall-cmd's
    /// NOT_AUTHORIZED: e.g. Debian's default "server" policy for a user without an active
    /// session).
    NotAuthorized,
    /// Running; whether our service is enabled in the default zone.
    Running {
        /// `firewall-cmd --query-service=punktfunk` succeeded.
        service_enabled: bool,
    },
    /// `firewall-cmd` could not be asked.
    Error(String),
}

/// A compositor backend as found on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositorFact {
    /// The backend and its floor.
    pub backend: Floor,
    /// Where its binary is, if anywhere.
    pub path: Option<PathBuf>,
    /// Its version, or why it is unknown.
    pub version: Result<Version, String>,
}

/// What an mDNS browse saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsFact {
    /// Our own advert, by instance name.
    Seen(String),
    /// Other hosts only (their instance names), or none.
    NotSeen(Vec<String>),
    /// The browse itself failed.
    Error(String),
}

/// Everything doctor looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Health of each daemon, in [`DAEMONS`] order.
    pub daemons: Vec<DaemonFact>,
    /// `systemctl --user is-enabled punktfunk.target`: its answer, or why there was none.
    pub target: Result<String, String>,
    /// Media's Capabilities, per codec.
    pub codecs: Result<Vec<CodecFact>, String>,
    /// Access to each of [`DEVICES`].
    pub devices: Vec<(String, DeviceAccess)>,
    /// Each of [`SOCKET_BUFFER_SYSCTLS`] and its value.
    pub sysctls: Vec<(String, Result<u64, String>)>,
    /// firewalld.
    pub firewall: FirewallFact,
    /// Each backend that can stream, with its floor ([`FLOORS`]).
    pub compositors: Vec<CompositorFact>,
    /// The PipeWire socket tried, and whether it answered a connect.
    pub pipewire: (String, Result<(), String>),
    /// The instance name this host advertises under, and what a browse saw.
    pub mdns: (String, MdnsFact),
    /// Number of paired clients.
    pub paired: Result<usize, String>,
    /// `current_clocksource`.
    pub clocksource: Result<String, String>,
}

/// Asks the machine everything; each part bounded by `timeout` (mDNS by [`MDNS_WAIT`]).
pub async fn gather(runtime_dir: Result<PathBuf, String>, timeout: Duration) -> Facts {
    let mut daemons = Vec::new();
    for name in DAEMONS {
        let health = match &runtime_dir {
            Ok(dir) => {
                let socket = paths::grpc_socket(dir, name);
                client::probe(&socket, name, timeout)
                    .await
                    .map(|h| (h.serving, h.status))
                    .map_err(|e| format!("no answer on {}: {}", socket.display(), root_cause(&e)))
            }
            Err(e) => Err(e.clone()),
        };
        daemons.push(DaemonFact { name, health });
    }
    let (codecs, paired) = match &runtime_dir {
        Ok(dir) => (capabilities(dir, timeout).await, paired(dir, timeout).await),
        Err(e) => (Err(e.clone()), Err(e.clone())),
    };
    let instance = punktfunk_discovery::default_instance_name();
    let mdns_instance = instance.clone();
    let mdns = tokio::task::spawn_blocking(move || browse_own(&mdns_instance))
        .await
        .unwrap_or_else(|e| MdnsFact::Error(e.to_string()));
    Facts {
        daemons,
        target: unit_enabled("punktfunk.target"),
        codecs,
        devices: DEVICES
            .iter()
            .map(|d| (d.to_string(), device_access(Path::new(d))))
            .collect(),
        sysctls: SOCKET_BUFFER_SYSCTLS
            .iter()
            .map(|s| (s.to_string(), sysctl(s)))
            .collect(),
        firewall: firewall(),
        compositors: FLOORS
            .iter()
            .filter(|f| BackendKind::STREAMING.contains(&f.backend))
            .map(|f| compositor(*f))
            .collect(),
        pipewire: pipewire(),
        mdns: (instance, mdns),
        paired,
        clocksource: std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read the clock source: {e}")),
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut root = e;
    while let Some(s) = root.source() {
        root = s;
    }
    root.to_string()
}

fn unit_enabled(unit: &str) -> Result<String, String> {
    let out = Command::new("systemctl")
        .args(["--user", "is-enabled", unit])
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if said.is_empty() {
        // No user manager (or no such unit): systemctl says why on stderr.
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(if err.is_empty() {
            format!("systemctl exited with {}", out.status)
        } else {
            err
        });
    }
    Ok(said)
}

async fn capabilities(runtime_dir: &Path, timeout: Duration) -> Result<Vec<CodecFact>, String> {
    let socket = paths::grpc_socket(runtime_dir, "media");
    let channel = punktfunk_common::uds::connect(&socket, timeout)
        .await
        .map_err(|e| format!("punktfunk-media: {}", root_cause(&e)))?;
    let reply = tokio::time::timeout(
        timeout,
        MediaClient::new(channel).capabilities(CapabilitiesRequest {}),
    )
    .await
    .map_err(|_| "punktfunk-media did not answer Capabilities in time".to_string())?
    .map_err(|s| format!("punktfunk-media: {}", s.message()))?
    .into_inner();
    Ok(reply
        .codecs
        .iter()
        .map(|c| CodecFact {
            codec: codec_name(c.codec()),
            available: c.available,
            hardware: c.hardware,
            encoder: c.encoder.clone(),
        })
        .collect())
}

fn codec_name(c: Codec) -> String {
    match c {
        Codec::H264 => "h264".into(),
        Codec::Hevc => "hevc".into(),
        Codec::Av1 => "av1".into(),
        Codec::Unspecified => "unspecified".into(),
    }
}

fn device_access(path: &Path) -> DeviceAccess {
    let Ok(meta) = std::fs::metadata(path) else {
        return DeviceAccess::Missing;
    };
    match rustix::fs::access(
        path,
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    ) {
        Ok(()) => DeviceAccess::Granted,
        Err(_) => DeviceAccess::Denied {
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        },
    }
}

fn sysctl(name: &str) -> Result<u64, String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{path} holds {text:?}: {e}"))
}

/// firewall-cmd's exit code for "firewalld is not running" (firewall/errors.py NOT_RUNNING).
const FIREWALL_CMD_NOT_RUNNING: i32 = 252;
/// firewall-cmd's exit code when polkit refused the query (NOT_AUTHORIZED).
const FIREWALL_CMD_NOT_AUTHORIZED: i32 = 253;

/// One `firewall-cmd --query-service=punktfunk`: it answers whether firewalld runs (252 when it
/// does not) and whether our service is in the default zone (0 yes, 1 no). `--state` is not
/// asked first: firewalld guards its properties with the action that also allows changing
/// the configuration, which its "server" polkit policy keeps for administrators, while the
/// zone query needs only `org.fedoraproject.FirewallD1.config.info` (the image's polkit rule
/// grants that to group wheel).
fn firewall() -> FirewallFact {
    if which("firewall-cmd").is_none() {
        return FirewallFact::NotInstalled;
    }
    let arg = format!("--query-service={FIREWALLD_SERVICE}");
    match Command::new("firewall-cmd").arg(&arg).output() {
        Err(e) => FirewallFact::Error(format!("cannot run firewall-cmd: {e}")),
        Ok(o) => firewall_answer(&arg, o.status, &String::from_utf8_lossy(&o.stderr)),
    }
}

/// What `firewall-cmd ARG` exiting with `status` says. Any answer but the four known ones is
/// an error, never "not running": a failed query says nothing about what firewalld filters.
fn firewall_answer(arg: &str, status: std::process::ExitStatus, stderr: &str) -> FirewallFact {
    match status.code() {
        Some(0) => FirewallFact::Running {
            service_enabled: true,
        },
        Some(1) => FirewallFact::Running {
            service_enabled: false,
        },
        Some(FIREWALL_CMD_NOT_RUNNING) => FirewallFact::NotRunning,
        Some(FIREWALL_CMD_NOT_AUTHORIZED) => FirewallFact::NotAuthorized,
        _ => FirewallFact::Error(format!(
            "firewall-cmd {arg} failed ({status}): {}",
            stderr.trim()
        )),
    }
}

/// The first executable named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file())
}

fn compositor(backend: Floor) -> CompositorFact {
    let path = which(backend.binary);
    let version = match &path {
        None => Err("not installed".to_string()),
        Some(p) => match Command::new(p).args(backend.version_args).output() {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                parse_version(&text).ok_or_else(|| {
                    format!(
                        "`{} --version` printed no version: {}",
                        p.display(),
                        text.lines().next().unwrap_or("").trim()
                    )
                })
            }
            Err(e) => Err(format!("cannot run {} --version: {e}", p.display())),
        },
    };
    CompositorFact {
        backend,
        path,
        version,
    }
}

fn pipewire() -> (String, Result<(), String>) {
    let dir = match std::env::var_os("PIPEWIRE_RUNTIME_DIR")
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .filter(|d| !d.is_empty())
    {
        Some(d) => PathBuf::from(d),
        None => return (String::new(), Err("XDG_RUNTIME_DIR is not set".into())),
    };
    let remote = std::env::var("PIPEWIRE_REMOTE").unwrap_or_else(|_| "pipewire-0".into());
    let socket = dir.join(remote);
    let result = std::os::unix::net::UnixStream::connect(&socket)
        .map(drop)
        .map_err(|e| e.to_string());
    (socket.display().to_string(), result)
}

fn browse_own(instance: &str) -> MdnsFact {
    match punktfunk_discovery::browse_report(MDNS_WAIT, |hosts| {
        hosts.iter().any(|h| h.instance == instance)
    }) {
        Ok(report) => {
            if report.hosts.iter().any(|h| h.instance == instance) {
                MdnsFact::Seen(instance.to_string())
            } else {
                MdnsFact::NotSeen(report.hosts.into_iter().map(|h| h.instance).collect())
            }
        }
        Err(e) => MdnsFact::Error(e.to_string()),
    }
}

async fn paired(runtime_dir: &Path, timeout: Duration) -> Result<usize, String> {
    let socket = paths::grpc_socket(runtime_dir, "transport");
    let channel = punktfunk_common::uds::connect(&socket, timeout)
        .await
        .map_err(|e| format!("punktfunk-transport: {}", root_cause(&e)))?;
    let reply = tokio::time::timeout(
        timeout,
        TransportClient::new(channel).list_clients(ListClientsRequest {}),
    )
    .await
    .map_err(|_| "punktfunk-transport did not answer in time".to_string())?
    .map_err(|s| format!("punktfunk-transport: {}", s.message()))?;
    Ok(reply.into_inner().clients.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn answer(code: i32) -> FirewallFact {
        firewall_answer(
            "--query-service=punktfunk",
            std::process::ExitStatus::from_raw(code << 8),
            "  Error: INVALID_ZONE\n",
        )
    }

    #[test]
    fn one_firewall_query_tells_enabled_disabled_refused_and_not_running_apart() {
        let running = |service_enabled| FirewallFact::Running { service_enabled };
        assert_eq!(answer(0), running(true));
        assert_eq!(answer(1), running(false));
        assert_eq!(answer(252), FirewallFact::NotRunning);
        assert_eq!(answer(253), FirewallFact::NotAuthorized);
        assert_eq!(
            answer(254),
            FirewallFact::Error(
                "firewall-cmd --query-service=punktfunk failed (exit status: 254): Error: INVALID_ZONE"
                    .into()
            )
        );
    }
}
