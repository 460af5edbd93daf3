//! Browsing for punktfunk hosts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ResolvedService, ServiceDaemon, ServiceEvent};
use serde::Serialize;

use crate::txt::{Pairing, TxtError, validate_txt};
use crate::{Error, PUNKTFUNK_SERVICE};

/// How long a browse keeps collecting records after its stop condition holds.
pub const SETTLE: Duration = Duration::from_millis(250);

/// A host found on the LAN with a valid `_punktfunk._udp` TXT record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FoundHost {
    /// Instance name (unescaped), e.g. `living-room`.
    pub instance: String,
    /// DNS host name from the SRV record, e.g. `living-room.local.`.
    pub hostname: String,
    /// Addresses from the A/AAAA records, sorted, deduplicated.
    pub addresses: Vec<IpAddr>,
    /// Port from the SRV record.
    pub port: u16,
    /// TXT `proto`, e.g. `punktfunk/1`.
    pub proto: String,
    /// TXT `fp`, 64 lowercase hex digits.
    pub fingerprint_hex: String,
    /// TXT `pair`.
    pub pairing: Pairing,
    /// TXT `id`.
    pub host_id: String,
    /// All TXT keys (lowercased) and values.
    pub txt: BTreeMap<String, String>,
}

/// A service instance that answered but was not reported as a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Instance name (unescaped).
    pub instance: String,
    /// Why it was rejected.
    pub reason: TxtError,
}

/// Everything a browse saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BrowseReport {
    /// Valid hosts, one per instance, sorted by instance name.
    pub hosts: Vec<FoundHost>,
    /// Instances whose TXT record failed validation (latest reason per instance).
    pub rejected: Vec<Rejected>,
}

/// Browses `_punktfunk._udp.local.` for `timeout` and returns the valid hosts
/// (malformed ones are logged with `tracing::warn!` and skipped). Blocking.
pub fn browse(timeout: Duration) -> Result<Vec<FoundHost>, Error> {
    Ok(browse_report(timeout, |_| false)?.hosts)
}

/// Browses until `predicate` accepts a host (returned after a short
/// [`SETTLE`] window that gathers the rest of its addresses) or `timeout`
/// passes (`Ok(None)`). Blocking.
pub fn browse_until(
    mut predicate: impl FnMut(&FoundHost) -> bool,
    timeout: Duration,
) -> Result<Option<FoundHost>, Error> {
    let mut wanted: Option<String> = None;
    let report = browse_report(timeout, |hosts| {
        wanted = hosts
            .iter()
            .find(|h| predicate(h))
            .map(|h| h.instance.clone());
        wanted.is_some()
    })?;
    // Return the settled version of the host (all its addresses).
    Ok(wanted.and_then(|w| report.hosts.into_iter().find(|h| h.instance == w)))
}

/// Browses until `stop` returns true for the hosts found so far (checked
/// after every change; then a [`SETTLE`] window gathers late address
/// records) or `timeout` passes, and returns the valid hosts and
/// the rejected instances. Blocking.
pub fn browse_report(
    timeout: Duration,
    mut stop: impl FnMut(&[FoundHost]) -> bool,
) -> Result<BrowseReport, Error> {
    let deadline = Instant::now() + timeout;
    let daemon = ServiceDaemon::new()?;
    let result = run_browse(&daemon, deadline, &mut stop);
    let _ = daemon.stop_browse(PUNKTFUNK_SERVICE);
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
    result
}

fn run_browse(
    daemon: &ServiceDaemon,
    deadline: Instant,
    stop: &mut dyn FnMut(&[FoundHost]) -> bool,
) -> Result<BrowseReport, Error> {
    let rx = daemon.browse(PUNKTFUNK_SERVICE)?;
    let mut hosts: BTreeMap<String, FoundHost> = BTreeMap::new();
    let mut rejected: BTreeMap<String, TxtError> = BTreeMap::new();
    let mut deadline = deadline;
    let mut settling = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(event) = rx.recv_timeout(left) else {
            break;
        };
        let changed = match event {
            ServiceEvent::ServiceResolved(svc) => {
                let instance = instance_of(&svc.fullname, &svc.ty_domain);
                match found_host(&svc, instance.clone()) {
                    Ok(h) => {
                        rejected.remove(&instance);
                        hosts.insert(instance, h);
                    }
                    Err(reason) => {
                        tracing::warn!(%instance, %reason, "skipping malformed punktfunk advert");
                        hosts.remove(&instance);
                        rejected.insert(instance, reason);
                    }
                }
                true
            }
            ServiceEvent::ServiceRemoved(ty, fullname) => {
                let instance = instance_of(&fullname, &ty);
                hosts.remove(&instance).is_some()
            }
            _ => false,
        };
        if changed && !settling {
            let list: Vec<FoundHost> = hosts.values().cloned().collect();
            if stop(&list) {
                // mdns-sd answers per interface and address family, so the
                // A and AAAA records of one host arrive in separate packets:
                // linger briefly to merge them instead of returning a host
                // with only some of its addresses.
                settling = true;
                deadline = deadline.min(Instant::now() + SETTLE);
            }
        }
    }
    Ok(BrowseReport {
        hosts: hosts.into_values().collect(),
        rejected: rejected
            .into_iter()
            .map(|(instance, reason)| Rejected { instance, reason })
            .collect(),
    })
}

fn found_host(svc: &ResolvedService, instance: String) -> Result<FoundHost, TxtError> {
    let valid = validate_txt(svc.txt_properties.iter().map(|p| (p.key(), p.val())))?;
    let mut addresses: Vec<IpAddr> = svc.addresses.iter().map(|a| a.to_ip_addr()).collect();
    addresses.sort();
    addresses.dedup();
    Ok(FoundHost {
        instance,
        hostname: svc.host.clone(),
        addresses,
        port: svc.port,
        proto: valid.proto,
        fingerprint_hex: valid.fingerprint_hex,
        pairing: valid.pairing,
        host_id: valid.host_id,
        txt: valid.txt,
    })
}

/// The instance part of `fullname` (`<instance>.<ty_domain>`), with DNS-SD
/// escapes (`\.`, `\\`, `\DDD`) undone and control characters dropped.
pub(crate) fn instance_of(fullname: &str, ty_domain: &str) -> String {
    let raw = fullname
        .len()
        .checked_sub(ty_domain.len() + 1)
        .filter(|&n| {
            fullname.is_char_boundary(n)
                && fullname[n..].eq_ignore_ascii_case(&format!(".{ty_domain}"))
        })
        .map_or(fullname, |n| &fullname[..n]);
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Some(v) = (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u8>().ok())
                .flatten()
            {
                for _ in 0..3 {
                    chars.next();
                }
                out.push(char::from(v));
                continue;
            }
            if let Some(n) = chars.next() {
                out.push(n);
            }
            continue;
        }
        out.push(c);
    }
    out.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_unescaping() {
        let ty = "_punktfunk._udp.local.";
        assert_eq!(instance_of("box._punktfunk._udp.local.", ty), "box");
        assert_eq!(instance_of(r"a\.b._punktfunk._udp.local.", ty), "a.b");
        assert_eq!(instance_of(r"a\\b._punktfunk._udp.local.", ty), r"a\b");
        assert_eq!(instance_of(r"a\032b._punktfunk._udp.local.", ty), "a b");
        assert_eq!(instance_of("Box._PUNKTFUNK._udp.local.", ty), "Box");
        assert_eq!(instance_of("odd", ty), "odd");
        assert_eq!(instance_of(r"trail\", ty), "trail");
    }
}
