//! The compositor backends punktfunk-session can drive and the oldest version of each we
//! support, defined once: session checks against these floors before it starts an output, and
//! `punktfunkctl doctor` reports against them.
//!
//! Why these floors (each row's `why` says it too): gamescope 3.14 is the first with
//! `--backend headless`; mutter 43, KWin 5.27 and sway 1.7 are what Debian 12 ships and what
//! our tests drive (tests/tests/session_outputs.rs).

use std::fmt;
use std::str::FromStr;

/// Which compositor an output runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// gamescope (production on Bazzite/SteamOS).
    Gamescope,
    /// GNOME mutter, `--headless`.
    Mutter,
    /// KWin, `kwin_wayland --virtual`.
    Kwin,
    /// sway (wlroots), headless backend.
    Sway,
    /// weston, headless backend (no capture path: refused).
    Weston,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Gamescope,
        BackendKind::Mutter,
        BackendKind::Kwin,
        BackendKind::Sway,
        BackendKind::Weston,
    ];

    /// The backends with a capture path, the ones that can stream (weston has none).
    pub const STREAMING: [BackendKind; 4] = [
        BackendKind::Gamescope,
        BackendKind::Mutter,
        BackendKind::Kwin,
        BackendKind::Sway,
    ];

    /// The lowercase name used in config files, apps.toml and `punktfunkctl outputs`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Gamescope => "gamescope",
            BackendKind::Mutter => "mutter",
            BackendKind::Kwin => "kwin",
            BackendKind::Sway => "sway",
            BackendKind::Weston => "weston",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown compositor backend {0:?}: use gamescope, mutter, kwin or sway")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

/// A `major.minor.patch` version as compositors print it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version (0 when the program prints only two parts).
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One backend's compositor and the oldest version of it we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// The backend.
    pub backend: BackendKind,
    /// The compositor's executable, looked up on `PATH`.
    pub binary: &'static str,
    /// Arguments that make it print its version.
    pub version_args: &'static [&'static str],
    /// The oldest version we support.
    pub min: Version,
    /// The distribution package that ships it (Debian, Fedora and Arch use the same name).
    pub package: &'static str,
    /// Why this version is the floor.
    pub why: &'static str,
}

/// Every backend's floor, one row each.
pub const FLOORS: [Floor; 5] = [
    Floor {
        backend: BackendKind::Gamescope,
        binary: "gamescope",
        version_args: &["--version"],
        min: Version::new(3, 14, 0),
        package: "gamescope",
        why: "the first release with `--backend headless`",
    },
    Floor {
        backend: BackendKind::Mutter,
        binary: "mutter",
        version_args: &["--version"],
        min: Version::new(43, 0, 0),
        package: "mutter",
        why: "headless `--virtual-monitor` and org.gnome.Mutter.ScreenCast RecordMonitor as tested",
    },
    Floor {
        backend: BackendKind::Kwin,
        binary: "kwin_wayland",
        version_args: &["--version"],
        min: Version::new(5, 27, 0),
        package: "kwin-wayland",
        why: "`--virtual` with zkde_screencast_unstable_v1 version 3 as tested",
    },
    Floor {
        backend: BackendKind::Sway,
        binary: "sway",
        version_args: &["--version"],
        min: Version::new(1, 7, 0),
        package: "sway",
        why: "wlroots 0.15 headless outputs with zwlr_screencopy_manager_v1 version 3 as tested",
    },
    Floor {
        backend: BackendKind::Weston,
        binary: "weston",
        version_args: &["--version"],
        min: Version::new(10, 0, 0),
        package: "weston",
        why: "the headless backend as tested",
    },
];

/// The floor of `backend`.
pub fn floor(backend: BackendKind) -> &'static Floor {
    FLOORS
        .iter()
        .find(|f| f.backend == backend)
        .expect("FLOORS has a row for every backend (tested)")
}

/// Finds the first `N.N[.N]` in a program's version output (`mutter 43.8`,
/// `sway version 1.7`, `kwin 5.27.5`, `gamescope version 3.14.2 (gcc 13)`, `v3.15.9`).
pub fn parse_version(text: &str) -> Option<Version> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .map(|w| w.strip_prefix('v').unwrap_or(w))
        .find_map(parse_token)
}

fn parse_token(word: &str) -> Option<Version> {
    // "3.14.2-1" or "43.8+git": the numeric prefix counts.
    let end = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(word.len());
    let mut parts = word[..end].split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some(Version::new(major, minor, patch))
}

/// Why a backend's compositor cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    /// The version output has no version in it.
    #[error(
        "cannot tell the version of {binary}: `{binary} --version` printed {printed:?}; \
         install {package} ≥ {min}"
    )]
    Unreadable {
        /// The executable.
        binary: &'static str,
        /// What it printed (trimmed).
        printed: String,
        /// Its package.
        package: &'static str,
        /// The floor.
        min: Version,
    },
    /// Older than the floor.
    #[error(
        "{binary} {found} is too old: punktfunk needs {min} or newer ({why}); upgrade {package}"
    )]
    TooOld {
        /// The executable.
        binary: &'static str,
        /// The version found.
        found: Version,
        /// The floor.
        min: Version,
        /// Why.
        why: &'static str,
        /// Its package.
        package: &'static str,
    },
}

/// Checks a backend's `--version` output against its floor.
pub fn check(backend: BackendKind, version_output: &str) -> Result<Version, VersionError> {
    let f = floor(backend);
    let found = parse_version(version_output).ok_or_else(|| VersionError::Unreadable {
        binary: f.binary,
        printed: version_output.trim().chars().take(200).collect(),
        package: f.package,
        min: f.min,
    })?;
    if found < f.min {
        return Err(VersionError::TooOld {
            binary: f.binary,
            found,
            min: f.min,
            why: f.why,
            package: f.package,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_has_one_floor() {
        for kind in BackendKind::ALL {
            assert_eq!(FLOORS.iter().filter(|f| f.backend == kind).count(), 1);
            assert_eq!(floor(kind).backend, kind);
        }
    }

    #[test]
    fn versions_as_the_compositors_print_them() {
        for (text, v) in [
            ("mutter 43.8", Version::new(43, 8, 0)),
            ("sway version 1.7", Version::new(1, 7, 0)),
            ("kwin 5.27.5", Version::new(5, 27, 5)),
            (
                "gamescope version 3.14.2 (gcc 13.2.1)",
                Version::new(3, 14, 2),
            ),
            ("gamescope version v3.15.9-3-gabc", Version::new(3, 15, 9)),
            ("weston 10.0.1", Version::new(10, 0, 1)),
            ("sway version 1.9-dev-abc", Version::new(1, 9, 0)),
        ] {
            assert_eq!(parse_version(text), Some(v), "{text}");
        }
        assert_eq!(parse_version("gamescope: unknown option"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("version 7"), None);
    }

    #[test]
    fn gamescope_below_the_floor_is_refused_by_name() {
        let e = check(BackendKind::Gamescope, "gamescope version 3.11.52-beta6").unwrap_err();
        assert!(matches!(e, VersionError::TooOld { .. }));
        let text = e.to_string();
        assert!(text.contains("gamescope 3.11.52 is too old"), "{text}");
        assert!(text.contains("3.14.0"), "{text}");
        assert!(text.contains("--backend headless"), "{text}");
        assert_eq!(
            check(BackendKind::Gamescope, "gamescope version 3.14.2"),
            Ok(Version::new(3, 14, 2))
        );
        assert_eq!(
            check(BackendKind::Gamescope, "gamescope version 3.16.1 (gcc 14)"),
            Ok(Version::new(3, 16, 1))
        );
        let e = check(BackendKind::Gamescope, "Segmentation fault").unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot tell the version of gamescope"),
            "{e}"
        );
    }

    #[test]
    fn the_compositors_on_our_machines_pass() {
        assert!(check(BackendKind::Mutter, "mutter 43.8").is_ok());
        assert!(check(BackendKind::Sway, "sway version 1.7").is_ok());
        assert!(check(BackendKind::Kwin, "kwin 5.27.5").is_ok());
        assert!(check(BackendKind::Mutter, "mutter 42.9").is_err());
    }
}
