//! The two listening sockets of a daemon: the gRPC stream socket (`<name>.sock`) and the fd
//! channel (`<name>.fds`, SOCK_SEQPACKET).
//!
//! Under systemd they arrive by socket activation (`LISTEN_FDS`/`LISTEN_FDNAMES`); one
//! `.socket` unit carries both, so they are told apart by socket type, not by name. Started
//! by hand, the daemon binds them itself in `$XDG_RUNTIME_DIR/punktfunk` (directory 0700,
//! sockets 0600). A socket file left by a dead process is replaced; one that still answers
//! means another instance is serving, which is an error rather than a silent takeover.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::paths;

/// How the sockets were obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Passed by the service manager.
    Activated,
    /// Bound by this process at these paths (removed again on clean exit).
    Bound {
        /// Path of the gRPC socket.
        grpc: PathBuf,
        /// Path of the fd-channel socket.
        fds: PathBuf,
    },
}

/// The daemon's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API listener.
    pub grpc: UnixListener,
    /// The SOCK_SEQPACKET fd-channel listener (passes ring fds between daemons).
    pub fds: OwnedFd,
    /// Whether the service manager passed them or this process bound them.
    pub origin: Origin,
    /// Filesystem path of the gRPC socket, when it has one (used for the readiness probe).
    pub grpc_path: Option<PathBuf>,
}

/// Why a daemon could not get its listening sockets.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`/`LISTEN_FDNAMES` could not be parsed (the reason is given).
    #[error("invalid socket activation environment: {0}")]
    Environment(String),
    #[error(
        "socket activation passed no {kind} socket (fds: {passed}); the punktfunk-{daemon}.socket unit needs {directive}"
    )]
    /// Socket activation passed fds, but not the one of this kind.
    Missing {
        /// The daemon's short name.
        daemon: String,
        /// Which socket is missing (`grpc` or `fds`).
        kind: &'static str,
        /// The fd names that were passed.
        passed: String,
        /// The `.socket` unit directive that would provide it.
        directive: &'static str,
    },
    #[error(
        "another punktfunk-{daemon} is already serving on {path}; stop it first (systemctl --user stop punktfunk-{daemon}.service)"
    )]
    /// Another instance already answers on the socket path.
    InUse {
        /// The daemon's short name.
        daemon: String,
        /// The socket path in use.
        path: PathBuf,
    },
    /// Binding, probing or removing a socket failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The runtime directory could not be determined.
    #[error(transparent)]
    Path(#[from] paths::PathError),
}

/// Takes the sockets systemd passed, or binds them. Unsets `LISTEN_*`, so call it before any
/// thread is started (the environment is process-global).
pub fn take_listeners(daemon: &str) -> Result<Listeners, ActivationError> {
    // SAFETY: called from `main` before the runtime or any other thread exists (see
    // `daemon::run`), which is the precondition of `std::env::remove_var`.
    let passed = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .map_err(|e| ActivationError::Environment(e.to_string()))?
        .collect::<Vec<_>>();
    if passed.is_empty() {
        return bind_listeners(daemon, &paths::runtime_dir()?);
    }
    from_passed(daemon, passed)
}

fn from_passed(daemon: &str, passed: Vec<(RawFd, String)>) -> Result<Listeners, ActivationError> {
    let description = passed
        .iter()
        .map(|(fd, name)| format!("{fd}={name}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut grpc = None;
    let mut fds = None;
    for (raw, name) in passed {
        // SAFETY: sd_listen_fds semantics: the fds from 3 to 3+LISTEN_FDS were handed to this
        // process for it to own, and `listen_fds` checked LISTEN_PID names us. Each is taken once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        match rustix::net::sockopt::socket_type(fd.as_fd()) {
            Ok(SocketType::STREAM) if grpc.is_none() => grpc = Some(fd),
            Ok(SocketType::SEQPACKET) if fds.is_none() => fds = Some(fd),
            Ok(other) => {
                tracing::warn!(
                    fd = raw,
                    name,
                    ?other,
                    "ignoring an unexpected socket passed by the service manager"
                );
            }
            Err(e) => {
                return Err(ActivationError::Environment(format!(
                    "fd {raw} ({name}) is not a socket: {e}"
                )));
            }
        }
    }
    let missing = |kind, directive| ActivationError::Missing {
        daemon: daemon.to_string(),
        kind,
        passed: description.clone(),
        directive,
    };
    let grpc =
        grpc.ok_or_else(|| missing("stream (gRPC)", "ListenStream=%t/punktfunk/<name>.sock"))?;
    let fds = fds.ok_or_else(|| {
        missing(
            "SOCK_SEQPACKET (fd channel)",
            "ListenSequentialPacket=%t/punktfunk/<name>.fds",
        )
    })?;
    let grpc = UnixListener::from(grpc);
    let grpc_path = grpc
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    Ok(Listeners {
        grpc,
        fds,
        origin: Origin::Activated,
        grpc_path,
    })
}

/// Binds `<dir>/<daemon>.sock` and `<dir>/<daemon>.fds` with mode 0600 in a 0700 directory.
pub fn bind_listeners(daemon: &str, dir: &Path) -> Result<Listeners, ActivationError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ActivationError::Io { what, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create the socket directory", dir))?;
    // The directory may predate us with looser bits; it is ours, so tighten it. Sockets are
    // bound inside it before their own chmod, and 0700 closes that window.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("cannot restrict the socket directory", dir))?;

    let grpc_path = paths::grpc_socket(dir, daemon);
    let fds_path = paths::fd_socket(dir, daemon);
    clear_stale(daemon, &grpc_path, SocketType::STREAM)?;
    clear_stale(daemon, &fds_path, SocketType::SEQPACKET)?;

    let grpc = UnixListener::bind(&grpc_path).map_err(io("cannot bind", &grpc_path))?;
    restrict(&grpc_path)?;
    let fds = bind_seqpacket(&fds_path).map_err(io("cannot bind", &fds_path))?;
    restrict(&fds_path)?;
    Ok(Listeners {
        grpc,
        fds,
        origin: Origin::Bound {
            grpc: grpc_path.clone(),
            fds: fds_path,
        },
        grpc_path: Some(grpc_path),
    })
}

/// Removes the socket files this process bound (a no-op for activated sockets).
pub fn remove_bound(origin: &Origin) {
    if let Origin::Bound { grpc, fds } = origin {
        for p in [grpc, fds] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn restrict(path: &Path) -> Result<(), ActivationError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ActivationError::Io {
            what: "cannot set mode 0600 on",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A close-on-exec Unix socket of `kind` connected to `path`.
pub(crate) fn connect_unix(path: &Path, kind: SocketType) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

fn bind_seqpacket(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&fd, 64)?;
    Ok(fd)
}

/// A leftover socket file: replace it if nobody answers, refuse if someone does.
fn clear_stale(daemon: &str, path: &Path, kind: SocketType) -> Result<(), ActivationError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let probe = || connect_unix(path, kind).map(drop);
    match probe() {
        Ok(()) => Err(ActivationError::InUse {
            daemon: daemon.to_string(),
            path: path.to_path_buf(),
        }),
        Err(e) => {
            tracing::info!(path = %path.display(), reason = %e, "replacing a stale socket left by a dead process");
            std::fs::remove_file(path).map_err(|source| ActivationError::Io {
                what: "cannot remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn binds_0600_in_0700_dir_and_replaces_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("punktfunk");
        let l = bind_listeners("media", &dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for p in ["media.sock", "media.fds"] {
            assert_eq!(
                std::fs::metadata(dir.join(p)).unwrap().mode() & 0o777,
                0o600,
                "{p}"
            );
        }
        // A live listener refuses a second instance.
        let err = bind_listeners("media", &dir).unwrap_err();
        assert!(matches!(err, ActivationError::InUse { .. }), "{err}");
        // Dropped (process gone): the files remain but nobody answers, so they are replaced.
        drop(l);
        assert!(dir.join("media.sock").exists());
        let again = bind_listeners("media", &dir).unwrap();
        remove_bound(&again.origin);
        assert!(!dir.join("media.sock").exists());
    }

    #[test]
    fn passed_sockets_are_sorted_by_type() {
        let tmp = tempfile::tempdir().unwrap();
        let l = bind_listeners("input", tmp.path()).unwrap();
        use std::os::fd::IntoRawFd;
        // Pass them in the "wrong" order with uninformative names.
        let passed = vec![
            (l.fds.into_raw_fd(), "input".to_string()),
            (OwnedFd::from(l.grpc).into_raw_fd(), "input".to_string()),
        ];
        let got = from_passed("input", passed).unwrap();
        assert_eq!(got.origin, Origin::Activated);
        assert_eq!(
            got.grpc_path.as_deref(),
            Some(tmp.path().join("input.sock").as_path())
        );
        assert_eq!(
            rustix::net::sockopt::socket_type(&got.fds).unwrap(),
            SocketType::SEQPACKET
        );
    }

    #[test]
    fn missing_fd_channel_is_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let l = bind_listeners("session", tmp.path()).unwrap();
        use std::os::fd::IntoRawFd;
        let passed = vec![(OwnedFd::from(l.grpc).into_raw_fd(), "session".to_string())];
        let err = from_passed("session", passed).unwrap_err().to_string();
        assert!(err.contains("ListenSequentialPacket"), "{err}");
    }
}
