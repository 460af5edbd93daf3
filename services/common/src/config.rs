//! Daemon configuration: `$XDG_CONFIG_HOME/punktfunk/<daemon>.toml`, overridden by
//! `PUNKTFUNK_<KEY>` / `PUNKTFUNK_<DAEMON>_<KEY>` environment variables (nested keys joined
//! with `__`, e.g. `PUNKTFUNK_IPC__TICKET_TTL_MS`).
//!
//! A missing file means defaults. Anything invalid — TOML syntax, an unknown key, a wrong type,
//! a value out of range — is a [`ConfigError`] that names the file (or variable) and the key,
//! and the daemon exits with `EX_CONFIG` (78) so systemd does not restart it in a loop.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `EX_CONFIG` from sysexits.h: the exit code of a daemon with an invalid configuration.
pub const EX_CONFIG: u8 = 78;

/// What a daemon's configuration type provides beyond serde.
pub trait DaemonConfig: DeserializeOwned + Serialize + Default + Send + Sync + 'static {
    /// The settings of the runtime itself.
    fn ipc(&self) -> &IpcConfig;
    /// Range checks serde cannot express: `Err((key, message))`.
    fn validate(&self) -> Result<(), (String, String)> {
        self.ipc().validate()
    }
}

/// Settings of the shared runtime, the `[ipc]` table of every daemon's file.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// How long an fd ticket stays redeemable, in milliseconds (100..=60000).
    pub ticket_ttl_ms: u64,
}

impl Default for IpcConfig {
    fn default() -> Self {
        Self {
            ticket_ttl_ms: 5_000,
        }
    }
}

impl IpcConfig {
    /// Checks the ranges; on error returns the dotted key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(100..=60_000).contains(&self.ticket_ttl_ms) {
            return Err((
                "ipc.ticket_ttl_ms".into(),
                format!(
                    "{} is out of range: use 100 to 60000 milliseconds",
                    self.ticket_ttl_ms
                ),
            ));
        }
        Ok(())
    }
}

/// The configuration of a daemon that has no settings of its own yet.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaseConfig {
    /// The `[ipc]` table: settings of the inter-daemon channels.
    pub ipc: IpcConfig,
}

impl DaemonConfig for BaseConfig {
    fn ipc(&self) -> &IpcConfig {
        &self.ipc
    }
}

/// An invalid configuration, with where it came from and which key is wrong.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, or `environment variable PUNKTFUNK_…`.
    pub source: String,
    /// The dotted key path, when one is to blame.
    pub key: Option<String>,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(
                f,
                "invalid configuration in {}: key `{k}`: {}",
                self.source, self.message
            ),
            None => write!(
                f,
                "invalid configuration in {}: {}",
                self.source, self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A daemon's own files under its config dir cannot be created or read (an unwritable
    /// directory, a corrupt state file). Restarting will not help either, so it ends the daemon
    /// with [`EX_CONFIG`] too, naming the path and what to do.
    pub fn files(path: &Path, message: impl fmt::Display) -> Self {
        Self {
            source: path.display().to_string(),
            key: None,
            message: message.to_string(),
        }
    }
}

/// A loaded configuration and the file it came from (which may not exist).
#[derive(Debug)]
pub struct Loaded<T> {
    /// The configuration, defaults filled in and environment overrides applied.
    pub config: T,
    /// The config file path that was read (or would have been).
    pub file: PathBuf,
    /// Whether that file existed.
    pub file_existed: bool,
    /// The environment variables that overrode a key.
    pub overrides: Vec<String>,
}

/// Loads `<dir>/<daemon>.toml` with the process environment's overrides.
pub fn load<T: DaemonConfig>(dir: &Path, daemon: &str) -> Result<Loaded<T>, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(dir, daemon, &env)
}

/// As [`load`], with the environment given (for tests).
pub fn load_with_env<T: DaemonConfig>(
    dir: &Path,
    daemon: &str,
    env: &[(String, String)],
) -> Result<Loaded<T>, ConfigError> {
    let file = dir.join(format!("{daemon}.toml"));
    let file_name = file.display().to_string();
    let (mut table, file_existed) = match std::fs::read_to_string(&file) {
        Ok(text) => (
            text.parse::<toml::Table>().map_err(|e| ConfigError {
                source: file_name.clone(),
                key: None,
                message: e.to_string().trim().replace('\n', " "),
            })?,
            true,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (toml::Table::new(), false),
        Err(e) => {
            return Err(ConfigError {
                source: file_name,
                key: None,
                message: format!("cannot read it: {e}"),
            });
        }
    };

    let known = toml::Table::try_from(T::default()).map_err(|e| ConfigError {
        source: "built-in defaults".into(),
        key: None,
        message: e.to_string(),
    })?;
    let mut overridden: Vec<(String, String)> = Vec::new(); // (dotted key, variable)
    for path in leaf_keys(&known) {
        let generic = env_name(None, &path);
        let specific = env_name(Some(daemon), &path);
        // The daemon-specific variable wins over the generic one.
        let hit = env
            .iter()
            .find(|(k, _)| *k == specific)
            .or_else(|| env.iter().find(|(k, _)| *k == generic));
        if let Some((var, value)) = hit {
            set_path(&mut table, &path, parse_env_value(value));
            overridden.push((path.join("."), var.clone()));
        }
    }

    let value = toml::Value::Table(table);
    let config: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let source = overridden
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, var)| format!("environment variable {var}"))
            .unwrap_or_else(|| file_name.clone());
        ConfigError {
            source,
            key: (key != ".").then_some(key),
            // serde's message is enough: the key is reported separately.
            message: first_line(&e.into_inner().to_string()),
        }
    })?;
    config.validate().map_err(|(key, message)| {
        let source = overridden
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, var)| format!("environment variable {var}"))
            .unwrap_or_else(|| file_name.clone());
        ConfigError {
            source,
            key: Some(key),
            message,
        }
    })?;
    Ok(Loaded {
        config,
        file,
        file_existed,
        overrides: overridden.into_iter().map(|(_, v)| v).collect(),
    })
}

/// Every non-table key of the defaults, as a path of segments (`["ipc", "ticket_ttl_ms"]`).
fn leaf_keys(table: &toml::Table) -> Vec<Vec<String>> {
    fn walk(t: &toml::Table, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, v) in t {
            prefix.push(k.clone());
            match v {
                toml::Value::Table(inner) => walk(inner, prefix, out),
                _ => out.push(prefix.clone()),
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(table, &mut Vec::new(), &mut out);
    out
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

fn env_name(daemon: Option<&str>, path: &[String]) -> String {
    let key = path.join("__").to_ascii_uppercase();
    match daemon {
        Some(d) => format!("PUNKTFUNK_{}_{key}", d.to_ascii_uppercase()),
        None => format!("PUNKTFUNK_{key}"),
    }
}

/// A variable's text as TOML (`9777`, `true`, `[1, 2]`), or as a plain string otherwise.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(t) => cur = t,
            _ => return,
        }
    }
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("media.toml"), text).unwrap();
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let l = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap();
        assert!(!l.file_existed);
        assert_eq!(l.config.ipc.ticket_ttl_ms, 5_000);
    }

    #[test]
    fn file_value_is_used() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc]\nticket_ttl_ms = 900\n");
        let l = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap();
        assert_eq!(l.config.ipc.ticket_ttl_ms, 900);
    }

    #[test]
    fn wrong_type_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc]\nticket_ttl_ms = \"soon\"\n");
        let e = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ipc.ticket_ttl_ms"));
        assert!(e.source.ends_with("media.toml"), "{e}");
        assert!(e.to_string().contains("ipc.ticket_ttl_ms"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc]\nticket_ttl = 5\n");
        let e = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap_err();
        assert!(e.to_string().contains("ticket_ttl"), "{e}");
    }

    #[test]
    fn syntax_error_names_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc\n");
        let e = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap_err();
        assert!(e.source.ends_with("media.toml"));
        assert!(e.key.is_none());
    }

    #[test]
    fn env_overrides_file_and_specific_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc]\nticket_ttl_ms = 900\n");
        let env = vec![
            (
                "PUNKTFUNK_IPC__TICKET_TTL_MS".to_string(),
                "1000".to_string(),
            ),
            (
                "PUNKTFUNK_MEDIA_IPC__TICKET_TTL_MS".to_string(),
                "1500".to_string(),
            ),
        ];
        let l = load_with_env::<BaseConfig>(dir.path(), "media", &env).unwrap();
        assert_eq!(l.config.ipc.ticket_ttl_ms, 1500);
        assert_eq!(
            l.overrides,
            vec!["PUNKTFUNK_MEDIA_IPC__TICKET_TTL_MS".to_string()]
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![(
            "PUNKTFUNK_IPC__TICKET_TTL_MS".to_string(),
            "lots".to_string(),
        )];
        let e = load_with_env::<BaseConfig>(dir.path(), "media", &env).unwrap_err();
        assert_eq!(
            e.source,
            "environment variable PUNKTFUNK_IPC__TICKET_TTL_MS"
        );
    }

    #[test]
    fn out_of_range_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[ipc]\nticket_ttl_ms = 5\n");
        let e = load_with_env::<BaseConfig>(dir.path(), "media", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ipc.ticket_ttl_ms"));
        assert!(e.message.contains("out of range"));
    }
}
