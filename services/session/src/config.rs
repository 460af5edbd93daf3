//! `session.toml`.

use punktfunk_common::config::{DaemonConfig, IpcConfig};
use punktfunk_session::backend::BackendKind;

/// The session daemon's settings.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// The `[ipc]` table.
    pub ipc: IpcConfig,
    /// The backend of a StartOutput that names none (and of apps without `compositor`):
    /// `mutter`, `sway`, `kwin` or `gamescope`.
    pub backend: String,
}

/// The default backend: mutter gives real frames through PipeWire on machines without a GPU.
pub const DEFAULT_BACKEND: BackendKind = BackendKind::Mutter;

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ipc: IpcConfig::default(),
            backend: DEFAULT_BACKEND.name().into(),
        }
    }
}

impl SessionConfig {
    /// The configured default backend (validated at start-up).
    pub fn backend(&self) -> BackendKind {
        self.backend.parse().unwrap_or(DEFAULT_BACKEND)
    }
}

impl DaemonConfig for SessionConfig {
    fn ipc(&self) -> &IpcConfig {
        &self.ipc
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.ipc.validate()?;
        self.backend
            .parse::<BackendKind>()
            .map(|_| ())
            .map_err(|e| ("backend".into(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_common::config::load_with_env;

    #[test]
    fn backend_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let l = load_with_env::<SessionConfig>(dir.path(), "session", &[]).unwrap();
        assert_eq!(l.config.backend(), BackendKind::Mutter);
        std::fs::write(dir.path().join("session.toml"), "backend = \"sway\"\n").unwrap();
        let l = load_with_env::<SessionConfig>(dir.path(), "session", &[]).unwrap();
        assert_eq!(l.config.backend(), BackendKind::Sway);
        std::fs::write(dir.path().join("session.toml"), "backend = \"xorg\"\n").unwrap();
        let e = load_with_env::<SessionConfig>(dir.path(), "session", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("backend"));
        assert!(e.message.contains("unknown compositor backend"), "{e}");
    }
}
