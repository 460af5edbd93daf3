//! Advertising the host over mDNS.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, ServiceDaemon, ServiceInfo};

use crate::txt::{self, KEY_FP, KEY_ID, KEY_PAIR, KEY_PROTO};
use crate::{DEFAULT_PORT, Error, GAMESTREAM_SERVICE, PROTO, PUNKTFUNK_SERVICE};

/// How long [`Drop`] waits for the goodbye packets and the daemon shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(1000);

/// What to advertise for the native punktfunk/1 plane (`_punktfunk._udp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAdvert {
    /// Instance name shown to users. Sanitised with [`sanitize_instance`];
    /// on a name conflict on the LAN mdns-sd renames it to `name (2)` etc.
    pub instance: String,
    /// UDP port of the QUIC endpoint ([`DEFAULT_PORT`] by default).
    pub port: u16,
    /// SHA-256 fingerprint of the host certificate, 64 hex digits (any case;
    /// advertised lowercase).
    pub fingerprint_hex: String,
    /// `pair=required` if true, else `pair=optional`.
    pub pairing_required: bool,
    /// Stable host id, 1..=64 chars of `[A-Za-z0-9._-]`.
    pub host_id: String,
    /// Addresses to advertise; `None` = all interfaces, kept up to date as
    /// addresses come and go.
    pub addresses: Option<Vec<IpAddr>>,
    /// DNS host name (the SRV target, `<label>.local.`); `None` = derived
    /// from the system host name with [`sanitize_hostname_label`].
    pub hostname: Option<String>,
}

impl HostAdvert {
    /// An advert with the defaults: instance = system host name, port 9777,
    /// pairing required, all interfaces.
    pub fn new(fingerprint_hex: impl Into<String>, host_id: impl Into<String>) -> HostAdvert {
        HostAdvert {
            instance: default_instance_name(),
            port: DEFAULT_PORT,
            fingerprint_hex: fingerprint_hex.into(),
            pairing_required: true,
            host_id: host_id.into(),
            addresses: None,
            hostname: None,
        }
    }
}

/// What to advertise for GameStream (`_nvstream._tcp`, no TXT keys: Moonlight
/// reads only the name, address and port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameStreamAdvert {
    /// Instance name shown to users (sanitised like [`HostAdvert::instance`]).
    pub instance: String,
    /// TCP port of the HTTP endpoint (47989 for GameStream).
    pub port: u16,
    /// As [`HostAdvert::addresses`].
    pub addresses: Option<Vec<IpAddr>>,
    /// As [`HostAdvert::hostname`].
    pub hostname: Option<String>,
}

/// A registered mDNS service. Dropping it unregisters the service (peers get
/// goodbye packets and see it go) and stops the mDNS daemon.
pub struct Advertiser {
    daemon: ServiceDaemon,
    monitor: mdns_sd::Receiver<DaemonEvent>,
    fullname: String,
    service_type: &'static str,
    instance: String,
    hostname: String,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// The system host name (first label), or `punktfunk` if unknown.
pub fn system_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let first = raw.trim().split('.').next().unwrap_or("").to_string();
    if first.is_empty() {
        "punktfunk".into()
    } else {
        first
    }
}

/// The default instance name: the sanitised system host name.
pub fn default_instance_name() -> String {
    sanitize_instance(&system_hostname())
}

/// Sanitises a DNS-SD instance name: drops control characters, collapses
/// whitespace, trims, truncates to 63 bytes on a character boundary. Returns
/// `punktfunk` if nothing is left.
pub fn sanitize_instance(name: &str) -> String {
    let mut out = String::new();
    for word in name.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
    }
    truncate_utf8(&mut out, 63);
    let out = out.trim_end().to_string();
    if out.is_empty() {
        "punktfunk".into()
    } else {
        out
    }
}

/// Sanitises a DNS host label: ASCII lowercase letters, digits and `-`
/// (anything else becomes `-`), no leading/trailing `-`, at most 63 bytes.
/// Returns `punktfunk` if nothing is left.
pub fn sanitize_hostname_label(name: &str) -> String {
    let mapped: String = name
        .trim()
        .trim_end_matches(".local.")
        .trim_end_matches(".local")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut out = mapped.trim_matches('-').to_string();
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "punktfunk".into()
    } else {
        out
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

struct Common<'a> {
    service_type: &'static str,
    instance: &'a str,
    hostname: Option<&'a str>,
    port: u16,
    addresses: Option<&'a [IpAddr]>,
    txt: Vec<(&'static str, String)>,
}

fn build_info(c: Common<'_>) -> Result<(ServiceInfo, String, String), Error> {
    let instance = sanitize_instance(c.instance);
    let label = sanitize_hostname_label(c.hostname.unwrap_or(&system_hostname()));
    let host = format!("{label}.local.");
    if c.port == 0 {
        return Err(Error::InvalidAdvert("port must not be 0".into()));
    }
    let txt: &[(&str, String)] = &c.txt;
    let info = match c.addresses {
        Some(addrs) => {
            if addrs.is_empty() {
                return Err(Error::InvalidAdvert(
                    "addresses is Some(empty); use None for all interfaces".into(),
                ));
            }
            ServiceInfo::new(c.service_type, &instance, &host, addrs, c.port, txt)?
        }
        None => {
            ServiceInfo::new(c.service_type, &instance, &host, (), c.port, txt)?.enable_addr_auto()
        }
    };
    Ok((info, instance, host))
}

fn punktfunk_info(a: &HostAdvert) -> Result<(ServiceInfo, String, String), Error> {
    let fp = txt::normalize_fingerprint(&a.fingerprint_hex)
        .map_err(|e| Error::InvalidAdvert(e.to_string()))?;
    txt::check_host_id(&a.host_id).map_err(|e| Error::InvalidAdvert(e.to_string()))?;
    let pair = if a.pairing_required {
        "required"
    } else {
        "optional"
    };
    build_info(Common {
        service_type: PUNKTFUNK_SERVICE,
        instance: &a.instance,
        hostname: a.hostname.as_deref(),
        port: a.port,
        addresses: a.addresses.as_deref(),
        txt: vec![
            (KEY_PROTO, PROTO.to_string()),
            (KEY_FP, fp),
            (KEY_PAIR, pair.to_string()),
            (KEY_ID, a.host_id.clone()),
        ],
    })
}

fn gamestream_info(a: &GameStreamAdvert) -> Result<(ServiceInfo, String, String), Error> {
    build_info(Common {
        service_type: GAMESTREAM_SERVICE,
        instance: &a.instance,
        hostname: a.hostname.as_deref(),
        port: a.port,
        addresses: a.addresses.as_deref(),
        txt: Vec::new(),
    })
}

impl Advertiser {
    /// Starts an mDNS daemon and registers `_punktfunk._udp.local.` with the
    /// TXT keys `proto`, `fp`, `pair`, `id`. Returns once the registration is
    /// queued; use [`Advertiser::wait_announced`] to wait until it is on the
    /// wire (after name probing, ~1 s).
    pub fn start(advert: HostAdvert) -> Result<Advertiser, Error> {
        let (info, instance, host) = punktfunk_info(&advert)?;
        Self::start_info(PUNKTFUNK_SERVICE, info, instance, host)
    }

    /// Starts an mDNS daemon and registers `_nvstream._tcp.local.` (GameStream).
    pub fn start_gamestream(advert: GameStreamAdvert) -> Result<Advertiser, Error> {
        let (info, instance, host) = gamestream_info(&advert)?;
        Self::start_info(GAMESTREAM_SERVICE, info, instance, host)
    }

    fn start_info(
        service_type: &'static str,
        info: ServiceInfo,
        instance: String,
        hostname: String,
    ) -> Result<Advertiser, Error> {
        let daemon = ServiceDaemon::new()?;
        let monitor = daemon.monitor()?;
        let fullname = info.get_fullname().to_string();
        let adv = Advertiser {
            daemon,
            monitor,
            fullname,
            service_type,
            instance,
            hostname,
        };
        adv.daemon.register(info)?;
        Ok(adv)
    }

    /// Re-registers with new content (TXT, port, addresses), announcing the
    /// change. A changed instance or host name unregisters the old name first.
    /// Only for adverts started with [`Advertiser::start`].
    pub fn update(&mut self, advert: HostAdvert) -> Result<(), Error> {
        if self.service_type != PUNKTFUNK_SERVICE {
            return Err(Error::InvalidAdvert(
                "update(HostAdvert) on a GameStream advertiser".into(),
            ));
        }
        let (info, instance, host) = punktfunk_info(&advert)?;
        if info.get_fullname() != self.fullname || host != self.hostname {
            self.unregister_blocking();
        }
        self.fullname = info.get_fullname().to_string();
        self.instance = instance;
        self.hostname = host;
        self.daemon.register(info)?;
        Ok(())
    }

    /// Waits until the daemon has announced the service on at least one
    /// interface (name probing takes ~750 ms) or `timeout` passes. Returns the
    /// announced full name, which differs from the requested one if mdns-sd
    /// had to rename it (`name (2)`) after a conflict on the LAN.
    pub fn wait_announced(&mut self, timeout: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        let mut renamed: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout("service announcement"));
            }
            match self.monitor.recv_timeout(left) {
                Ok(DaemonEvent::Announce(name, _)) => {
                    let name = renamed.take().unwrap_or(name);
                    return Ok(name);
                }
                Ok(DaemonEvent::NameChange(c)) => {
                    tracing::warn!(original = %c.original, new = %c.new_name, "mDNS name conflict, renamed");
                    if c.original.eq_ignore_ascii_case(&self.fullname) {
                        renamed = Some(c.new_name);
                    }
                }
                Ok(DaemonEvent::Error(e)) => {
                    tracing::warn!(error = %e, "mDNS daemon error");
                }
                Ok(_) => {}
                Err(_) => return Err(Error::Timeout("service announcement")),
            }
        }
    }

    /// The full service name as registered, e.g. `box._punktfunk._udp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// The sanitised instance name as requested.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The advertised DNS host name, e.g. `box.local.`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The service type, e.g. `_punktfunk._udp.local.`.
    pub fn service_type(&self) -> &str {
        self.service_type
    }

    fn unregister_blocking(&self) {
        match self.daemon.unregister(&self.fullname) {
            Ok(rx) => {
                if rx.recv_timeout(SHUTDOWN_WAIT).is_err() {
                    tracing::warn!(name = %self.fullname, "mDNS unregister did not confirm in time");
                }
            }
            Err(e) => tracing::warn!(error = %e, "mDNS unregister failed"),
        }
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        self.unregister_blocking();
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_sanitising() {
        assert_eq!(sanitize_instance("  my\tbox \n "), "my box");
        assert_eq!(sanitize_instance("a\u{7}b"), "ab");
        assert_eq!(sanitize_instance(""), "punktfunk");
        let long = "é".repeat(40);
        let s = sanitize_instance(&long);
        assert!(s.len() <= 63 && s.chars().all(|c| c == 'é'));
        assert_eq!(sanitize_instance("a.b"), "a.b");
    }

    #[test]
    fn hostname_sanitising() {
        assert_eq!(sanitize_hostname_label("My_Box"), "my-box");
        assert_eq!(sanitize_hostname_label("box.local."), "box");
        assert_eq!(sanitize_hostname_label("--x--"), "x");
        assert_eq!(sanitize_hostname_label("ü"), "punktfunk");
        assert_eq!(sanitize_hostname_label(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn advert_validation() {
        let mut a = HostAdvert::new("ab".repeat(32), "id1");
        assert!(punktfunk_info(&a).is_ok());
        a.fingerprint_hex = "xyz".into();
        assert!(matches!(punktfunk_info(&a), Err(Error::InvalidAdvert(_))));
        let mut a = HostAdvert::new("AB".repeat(32), "bad id");
        assert!(matches!(punktfunk_info(&a), Err(Error::InvalidAdvert(_))));
        a.host_id = "ok".into();
        a.addresses = Some(vec![]);
        assert!(matches!(punktfunk_info(&a), Err(Error::InvalidAdvert(_))));
        a.addresses = Some(vec!["10.0.0.1".parse().expect("ip")]);
        let (info, _, _) = punktfunk_info(&a).expect("valid");
        assert_eq!(
            info.get_property_val_str("fp"),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(info.get_property_val_str("pair"), Some("required"));
        assert_eq!(info.get_property_val_str("proto"), Some(PROTO));
        assert_eq!(info.get_properties().len(), 4);
    }
}
