//! Where punktfunk keeps its sockets and configuration (XDG base directories).

use std::path::PathBuf;

/// Error for a missing base directory, phrased so the user knows what to set.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "XDG_RUNTIME_DIR is not set: run under a systemd --user session (or export XDG_RUNTIME_DIR=/run/user/$(id -u))"
    )]
    /// `XDG_RUNTIME_DIR` is not set.
    NoRuntimeDir,
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("neither XDG_CONFIG_HOME nor HOME is set, so there is no config directory")]
    NoConfigDir,
}

/// `$XDG_RUNTIME_DIR/punktfunk`: the directory of every daemon's sockets.
pub fn runtime_dir() -> Result<PathBuf, PathError> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("punktfunk"))
        .ok_or(PathError::NoRuntimeDir)
}

/// `$XDG_CONFIG_HOME/punktfunk` (default `~/.config/punktfunk`): configs, keys, paired clients.
pub fn config_dir() -> Result<PathBuf, PathError> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("punktfunk"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config/punktfunk"))
        .ok_or(PathError::NoConfigDir)
}

/// The gRPC socket of a daemon, e.g. `…/punktfunk/media.sock`.
pub fn grpc_socket(runtime_dir: &std::path::Path, daemon: &str) -> PathBuf {
    runtime_dir.join(format!("{daemon}.sock"))
}

/// The fd-channel socket of a daemon, e.g. `…/punktfunk/media.fds`.
pub fn fd_socket(runtime_dir: &std::path::Path, daemon: &str) -> PathBuf {
    runtime_dir.join(format!("{daemon}.fds"))
}
