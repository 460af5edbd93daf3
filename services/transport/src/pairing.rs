//! Who may stream: the paired-clients store (a 0600 TOML file in the config dir) and the
//! pairing window `punktfunkctl pair` arms.
//!
//! The window holds one PIN for a limited time and admits **one** attempt: the first
//! `PairStart` consumes it whether the PIN was right or wrong, so an attacker on the LAN gets a
//! single online guess (1 in 10^6) per PIN the owner chose to show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use punktfunk_tls::Fingerprint;
use serde::{Deserialize, Serialize};

/// One paired client as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedClient {
    pub name: String,
    /// Lowercase hex SHA-256 of the client certificate.
    pub fingerprint: String,
    /// Unix seconds.
    pub paired_at: u64,
    pub protocol: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    #[serde(default)]
    clients: Vec<PairedClient>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid paired-clients file: {detail}; fix or remove it (all clients would need to pair again)"
    )]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no paired client matches `{0}`; see `punktfunkctl clients`")]
    NoMatch(String),
    #[error("`{0}` matches several paired clients; give more of the fingerprint")]
    Ambiguous(String),
}

/// The paired clients, persisted on every change.
#[derive(Debug)]
pub struct PairedStore {
    path: PathBuf,
    by_fp: BTreeMap<Fingerprint, PairedClient>,
}

impl PairedStore {
    /// Opens `<dir>/paired-clients.toml` (missing = nobody paired yet).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("paired-clients.toml");
        let file: StoreFile = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| StoreError::Parse {
                path: path.clone(),
                detail: e.to_string().lines().next().unwrap_or_default().to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile::default(),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let mut by_fp = BTreeMap::new();
        for c in file.clients {
            match Fingerprint::from_hex(&c.fingerprint) {
                Some(fp) => {
                    by_fp.insert(fp, c);
                }
                None => {
                    return Err(StoreError::Parse {
                        path,
                        detail: format!("client `{}` has an invalid fingerprint", c.name),
                    });
                }
            }
        }
        Ok(Self { path, by_fp })
    }

    pub fn is_paired(&self, fp: &Fingerprint) -> bool {
        self.by_fp.contains_key(fp)
    }

    pub fn list(&self) -> Vec<PairedClient> {
        sorted(&self.by_fp)
    }

    /// Adds (or renames) a client. The file is written first: if that fails, nothing changes
    /// in memory either, so what the host answered is what holds.
    pub fn add(
        &mut self,
        fp: Fingerprint,
        name: &str,
        protocol: &str,
    ) -> Result<PairedClient, StoreError> {
        let client = PairedClient {
            name: name.to_string(),
            fingerprint: fp.to_hex(),
            paired_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            protocol: protocol.to_string(),
        };
        let mut next = self.by_fp.clone();
        next.insert(fp, client.clone());
        self.commit(next)?;
        Ok(client)
    }

    /// Removes the client named `who`, or whose fingerprint is or starts with `who` (≥ 8 hex
    /// digits for a prefix), and saves.
    pub fn remove(&mut self, who: &str) -> Result<(Fingerprint, PairedClient), StoreError> {
        let needle = who.trim().to_ascii_lowercase().replace(':', "");
        let matches: Vec<Fingerprint> = self
            .by_fp
            .iter()
            .filter(|(_, c)| {
                c.name == who.trim()
                    || c.fingerprint == needle
                    || (needle.len() >= 8 && c.fingerprint.starts_with(&needle))
            })
            .map(|(fp, _)| *fp)
            .collect();
        let fp = match matches.as_slice() {
            [] => return Err(StoreError::NoMatch(who.to_string())),
            [one] => *one,
            _ => return Err(StoreError::Ambiguous(who.to_string())),
        };
        let mut next = self.by_fp.clone();
        let removed = next
            .remove(&fp)
            .ok_or_else(|| StoreError::NoMatch(who.to_string()))?;
        self.commit(next)?;
        Ok((fp, removed))
    }

    /// Writes `next` to the file, then (only on success) makes it the state in memory.
    fn commit(&mut self, next: BTreeMap<Fingerprint, PairedClient>) -> Result<(), StoreError> {
        save(&self.path, sorted(&next))?;
        self.by_fp = next;
        Ok(())
    }
}

fn sorted(by_fp: &BTreeMap<Fingerprint, PairedClient>) -> Vec<PairedClient> {
    let mut v: Vec<PairedClient> = by_fp.values().cloned().collect();
    v.sort_by(|a, b| a.paired_at.cmp(&b.paired_at).then(a.name.cmp(&b.name)));
    v
}

fn save(path: &Path, clients: Vec<PairedClient>) -> Result<(), StoreError> {
    let write_err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(&StoreFile { clients })
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    punktfunk_tls::write_private(path, text.as_bytes()).map_err(write_err)
}

/// An armed PIN.
#[derive(Debug, Clone)]
pub struct ArmedPin {
    pub pin: String,
    pub expires: Instant,
}

/// Why a pairing attempt cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowClosed {
    #[error(
        "pairing is not armed on the host: run `punktfunkctl pair` there and use the PIN it shows"
    )]
    NotArmed,
    #[error("the pairing PIN expired: run `punktfunkctl pair` on the host again")]
    Expired,
}

/// The pairing window: at most one armed PIN, consumed by the first attempt.
#[derive(Debug, Default)]
pub struct PairingWindow {
    armed: Option<ArmedPin>,
    expired_once: bool,
}

impl PairingWindow {
    /// Arms a fresh PIN for `ttl` (replacing any armed one).
    pub fn arm(&mut self, pin: String, now: Instant, ttl: Duration) -> ArmedPin {
        let armed = ArmedPin {
            pin,
            expires: now + ttl,
        };
        self.armed = Some(armed.clone());
        self.expired_once = false;
        armed
    }

    /// Takes the PIN for one attempt: the window is closed afterwards, right or wrong.
    pub fn take(&mut self, now: Instant) -> Result<String, WindowClosed> {
        match self.armed.take() {
            Some(a) if a.expires > now => Ok(a.pin),
            Some(_) => {
                self.expired_once = true;
                Err(WindowClosed::Expired)
            }
            None if self.expired_once => Err(WindowClosed::Expired),
            None => Err(WindowClosed::NotArmed),
        }
    }

    /// Seconds left, if armed and not expired.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.armed
            .as_ref()
            .and_then(|a| a.expires.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn store_persists_0600_and_removes_by_name_or_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PairedStore::open(dir.path()).unwrap();
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        s.add(a, "deck", punktfunk_control::PROTOCOL_NAME).unwrap();
        s.add(b, "laptop", punktfunk_control::PROTOCOL_NAME)
            .unwrap();
        let meta = std::fs::metadata(dir.path().join("paired-clients.toml")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let s2 = PairedStore::open(dir.path()).unwrap();
        assert!(s2.is_paired(&a) && s2.is_paired(&b));
        let mut s = s2;
        let (fp, c) = s.remove("deck").unwrap();
        assert_eq!((fp, c.name.as_str()), (a, "deck"));
        assert!(
            matches!(s.remove("0202"), Err(StoreError::NoMatch(_))),
            "short prefixes do not match"
        );
        let (fp, _) = s.remove("02020202").unwrap();
        assert_eq!(fp, b);
        assert!(PairedStore::open(dir.path()).unwrap().list().is_empty());
    }

    /// Makes every later write of the store fail, even for root: its temporary file's name is
    /// taken by a directory.
    fn break_writes(dir: &Path) {
        std::fs::create_dir(dir.join("paired-clients.tmp")).unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PairedStore::open(dir.path()).unwrap();
        let (a, b) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        s.add(a, "deck", punktfunk_control::PROTOCOL_NAME).unwrap();
        break_writes(dir.path());
        assert!(matches!(
            s.add(b, "laptop", punktfunk_control::PROTOCOL_NAME),
            Err(StoreError::Write { .. })
        ));
        assert!(
            !s.is_paired(&b),
            "an unstored pairing must not admit the client"
        );
        assert!(matches!(s.remove("deck"), Err(StoreError::Write { .. })));
        assert!(
            s.is_paired(&a),
            "an unstored unpair must leave the client paired"
        );
        assert_eq!(PairedStore::open(dir.path()).unwrap().list().len(), 1);
    }

    #[test]
    fn corrupt_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("paired-clients.toml"),
            "[[clients]]\nname = 1\n",
        )
        .unwrap();
        let e = PairedStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("paired-clients.toml"), "{e}");
    }

    #[test]
    fn window_admits_one_attempt_and_expires() {
        let mut w = PairingWindow::default();
        let t = Instant::now();
        assert_eq!(w.take(t), Err(WindowClosed::NotArmed));
        w.arm("123456".into(), t, Duration::from_secs(120));
        assert!(w.remaining(t).is_some());
        assert_eq!(w.take(t).as_deref(), Ok("123456"));
        assert_eq!(
            w.take(t),
            Err(WindowClosed::NotArmed),
            "one attempt per PIN"
        );
        w.arm("654321".into(), t, Duration::from_secs(1));
        assert_eq!(
            w.take(t + Duration::from_secs(2)),
            Err(WindowClosed::Expired)
        );
    }
}
