//! The compositor backends punktfunk-session can drive, and the oldest version of each we
//! support: the one home of these floors (`punktfunkctl doctor` checks against them).
//!
//! Why these floors: gamescope 3.14 is the first with `--backend headless` plus PipeWire
//! screencast of a headless output as Bazzite ships it; KWin 6.0 (Plasma 6) has virtual outputs
//! and the screencast portal's `zkde_screencast` without a physical monitor; mutter 43 and sway
//! 1.7 are what Debian 12 ships and what our tests drive (headless backend, screencast over
//! PipeWire: mutter's RemoteDesktop/ScreenCast D-Bus API, sway through wlroots' screencopy).

/// A version as `major.minor.patch`; missing parts are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One compositor backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The name in `apps.toml` (`compositor = "..."`) and in messages.
    pub name: &'static str,
    /// The executable looked up on `PATH`.
    pub binary: &'static str,
    /// The oldest supported version.
    pub floor: Version,
}

/// Every backend, in the order session prefers them.
pub const BACKENDS: [Backend; 4] = [
    Backend {
        name: "gamescope",
        binary: "gamescope",
        floor: Version(3, 14, 0),
    },
    Backend {
        name: "kwin",
        binary: "kwin_wayland",
        floor: Version(6, 0, 0),
    },
    Backend {
        name: "mutter",
        binary: "mutter",
        floor: Version(43, 0, 0),
    },
    Backend {
        name: "sway",
        binary: "sway",
        floor: Version(1, 7, 0),
    },
];

/// The first dotted version number in a `--version` output (`sway version 1.7`,
/// `kwin 6.1.4`, `gamescope version 3.14.2 (gcc 13)`, `mutter 43.8`); `None` if there is none.
pub fn parse_version(text: &str) -> Option<Version> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.'))
        .find_map(|w| {
            let mut parts = w.split('.').filter(|p| !p.is_empty());
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            Some(Version(major, minor, patch))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_each_backends_output() {
        assert_eq!(parse_version("sway version 1.7"), Some(Version(1, 7, 0)));
        assert_eq!(parse_version("kwin 6.1.4\n"), Some(Version(6, 1, 4)));
        assert_eq!(
            parse_version("gamescope version 3.14.2 (gcc 13.2.1)"),
            Some(Version(3, 14, 2))
        );
        assert_eq!(parse_version("mutter 43.8"), Some(Version(43, 8, 0)));
        assert_eq!(parse_version("no version here"), None);
        assert_eq!(parse_version("build 7"), None);
    }

    #[test]
    fn versions_order_numerically() {
        assert!(Version(1, 10, 0) > Version(1, 9, 9));
        assert!(Version(43, 0, 0) >= BACKENDS[2].floor);
        assert!(Version(5, 27, 5) < BACKENDS[1].floor);
    }
}
