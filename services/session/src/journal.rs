//! The output journal: one JSON file per output in `$XDG_RUNTIME_DIR/punktfunk/outputs/`,
//! written (0600, atomically: temporary file + rename) when an output starts and whenever its
//! state changes, removed when it is stopped. A restarted manager reads it to re-adopt the
//! outputs whose compositor still runs and to clean up after the others.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::backend::{BackendKind, Mode, Role};

/// Largest journal file read back (records are a few hundred bytes).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// One process of an output, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRecord {
    /// What it is for.
    pub role: Role,
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22), so a reused pid is not mistaken for it.
    pub start_ticks: u64,
}

/// Everything a manager needs to find, list and clean up an output it did not start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputRecord {
    /// The output's id.
    pub id: String,
    /// Its backend.
    pub backend: BackendKind,
    /// Its mode.
    pub mode: Mode,
    /// Who it is for.
    pub client: String,
    /// The app's title ("" for none).
    pub app: String,
    /// The process group every process of the output is in.
    pub pgid: i32,
    /// The transient systemd unit holding it (`None`: a plain process group).
    pub unit: Option<String>,
    /// Its processes.
    pub processes: Vec<ProcessRecord>,
    /// The private runtime dir.
    pub runtime_dir: PathBuf,
    /// The state dir (home, logs).
    pub state_dir: PathBuf,
    /// The Wayland socket name.
    pub wayland_display: String,
    /// The screencast node (0: none yet).
    pub node_id: u32,
    /// Wall-clock start, Unix milliseconds.
    pub started_unix_ms: u64,
}

impl OutputRecord {
    /// The recorded process of `role`.
    pub fn process(&self, role: Role) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.role == role)
    }
}

/// A journal file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O on the journal directory or a file.
    #[error("output journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file that is not a record.
    #[error("output journal {path}: not a valid record: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating, 0700) the journal directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| JournalError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) `record` atomically.
    pub fn save(&self, record: &OutputRecord) -> Result<(), JournalError> {
        let path = self.path(&record.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(record).map_err(|e| JournalError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes the record of `id` (absent is fine).
    pub fn remove(&self, id: &str) -> Result<(), JournalError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(JournalError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Every record, in start order; files that are not records come back as errors (with
    /// their path, so the caller can log and remove them).
    pub fn load_all(&self) -> Vec<Result<OutputRecord, (PathBuf, JournalError)>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Result<OutputRecord, (PathBuf, JournalError)>> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| load(&p).map_err(|e| (p, e)))
            .collect();
        out.sort_by_key(|r| r.as_ref().map(|r| r.started_unix_ms).unwrap_or(0));
        out
    }
}

/// Parses one record's JSON (total: bad input is an error, never a panic).
pub fn parse_record(bytes: &[u8]) -> Result<OutputRecord, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Parses a screencast keeper's node file, `"<node id> <width> <height>"`; `None` for anything
/// else (the keeper writes it atomically, so a partial file is never seen).
pub fn parse_node_file(text: &str) -> Option<(u32, u32, u32)> {
    let mut it = text.split_whitespace().map(|t| t.parse::<u32>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

fn load(path: &Path) -> Result<OutputRecord, JournalError> {
    use std::io::Read;
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut text = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(JournalError::Invalid {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_RECORD_BYTES} bytes"),
        });
    }
    let record: OutputRecord =
        serde_json::from_slice(&text).map_err(|e| JournalError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if path.file_stem().and_then(|s| s.to_str()) != Some(record.id.as_str()) {
        return Err(JournalError::Invalid {
            path: path.to_path_buf(),
            message: format!("its id {:?} does not match the file name", record.id),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(id: &str, started: u64) -> OutputRecord {
        OutputRecord {
            id: id.into(),
            backend: BackendKind::Mutter,
            mode: Mode {
                width: 1280,
                height: 720,
                refresh_mhz: 60_000,
            },
            client: "laptop".into(),
            app: "Test pattern".into(),
            pgid: 4242,
            unit: None,
            processes: vec![ProcessRecord {
                role: Role::Compositor,
                pid: 4242,
                start_ticks: 99,
            }],
            runtime_dir: "/run/user/1000/pf-aa".into(),
            state_dir: "/run/user/1000/punktfunk/outputs/aa".into(),
            wayland_display: "wayland-pf-aa".into(),
            node_id: 51,
            started_unix_ms: started,
        }
    }

    #[test]
    fn node_files() {
        assert_eq!(parse_node_file("51 1280 720\n"), Some((51, 1280, 720)));
        assert_eq!(parse_node_file("51 0 0"), Some((51, 0, 0)));
        assert_eq!(parse_node_file("51 1280"), None);
        assert_eq!(parse_node_file("51 1280 720 9"), None);
        assert_eq!(parse_node_file("-1 1280 720"), None);
        assert_eq!(parse_node_file(""), None);
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("outputs")).unwrap();
        assert_eq!(
            std::fs::metadata(j.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        j.save(&record("bb", 2)).unwrap();
        j.save(&record("aa", 1)).unwrap();
        let mode = std::fs::metadata(j.dir().join("aa.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let all: Vec<OutputRecord> = j.load_all().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(all, vec![record("aa", 1), record("bb", 2)]);
        assert_eq!(all[0].process(Role::Compositor).map(|p| p.pid), Some(4242));
        j.remove("aa").unwrap();
        j.remove("aa").unwrap();
        assert_eq!(j.load_all().len(), 1);
    }

    #[test]
    fn broken_or_mismatched_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("cc.json"), b"{not json").unwrap();
        std::fs::write(
            dir.path().join("dd.json"),
            serde_json::to_vec(&record("ee", 1)).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("big.json"), vec![b' '; 70_000]).unwrap();
        let errs: Vec<String> = j
            .load_all()
            .into_iter()
            .map(|r| r.unwrap_err().1.to_string())
            .collect();
        assert_eq!(errs.len(), 3);
        assert!(errs.iter().any(|e| e.contains("cc.json")));
        assert!(
            errs.iter()
                .any(|e| e.contains("does not match the file name"))
        );
        assert!(errs.iter().any(|e| e.contains("larger than")));
    }
}
