//! Hosts this client has paired with: `known-hosts.toml` (0600) in the client's config dir.
//! A stream pins the stored fingerprint, so a different certificate fails the handshake.

use anyhow::Context;
use std::path::{Path, PathBuf};

use punktfunk_tls::Fingerprint;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownHost {
    /// What the user typed when pairing (address or name).
    pub alias: String,
    /// The address it resolved to.
    pub address: String,
    /// The name the host gave.
    pub host_name: String,
    pub fingerprint: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KnownHosts {
    #[serde(default)]
    pub hosts: Vec<KnownHost>,
    #[serde(skip)]
    path: PathBuf,
}

impl KnownHosts {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("known-hosts.toml");
        let mut k: KnownHosts = match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t).with_context(|| path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KnownHosts::default(),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        k.path = path;
        Ok(k)
    }

    /// The pinned fingerprint for `alias` (as typed) or the resolved `address`.
    pub fn find(&self, alias: &str, address: &str) -> Option<(Fingerprint, &KnownHost)> {
        self.hosts
            .iter()
            .find(|h| h.alias == alias || h.address == address || h.host_name == alias)
            .and_then(|h| Fingerprint::from_hex(&h.fingerprint).map(|fp| (fp, h)))
    }

    pub fn remember(&mut self, host: KnownHost) -> anyhow::Result<()> {
        self.hosts
            .retain(|h| h.alias != host.alias && h.fingerprint != host.fingerprint);
        self.hosts.push(host);
        let text = toml::to_string(self)?;
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
        }
        punktfunk_tls::write_private(&self.path, text.as_bytes())
            .with_context(|| self.path.display().to_string())
    }
}
