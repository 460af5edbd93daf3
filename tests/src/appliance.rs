//! The appliance booted for real: a UML guest ([`crate::uml`]) whose root is a debootstrapped
//! Debian with systemd as PID 1, our files laid in by `packaging/install.sh` exactly as the
//! Containerfile lays them into the image, and a test user with lingering, so that its
//! `systemd --user` starts `punktfunk.target` at boot through the preset.
//!
//! - [`rootfs`]: the cached root (`tests/guest/mkrootfs.sh`, keyed by its package list and the
//!   script): the base system plus our binaries' runtime packages, derived from the binaries
//!   themselves (their shared libraries' packages on this host) and from the GStreamer/PipeWire
//!   runtime packages of the Justfile's `apt_packages`.
//! - [`Appliance::prepare`]: a per-boot copy of it (`/usr` hard-linked, everything else copied;
//!   nothing the guest does reaches the cache), `install.sh` run into it, a STAND-IN `bootc`
//!   (the guest has no bootc: it records its calls and, for `rollback`, puts back the previous
//!   media binary as booting the previous deployment would), and the test driver
//!   (`tests/guest/driver.sh`, a system unit ordered after the boot health check), and a dummy
//!   interface with multicast as the guest's LAN (`pf-guest-lan.service`: mDNS needs one).
//! - [`Appliance::boot`]: boots it with `init=/lib/systemd/systemd` until it powers off; the
//!   driver's facts come back through the harness's share directory, the guest's persistent
//!   journal is read with `journalctl --directory` afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::uml::{self, Guest, GuestOutput, UmlError};
use crate::{bin, bin_dir};

/// The guest's base system (systemd as PID 1, logind for lingering, the user bus, udev, the
/// tools the driver uses), one compositor backend (sway: doctor's compositor check) and the
/// appliance's firewall (firewalld with its nftables backend, as in the image; install.sh adds
/// our service to its default zone) with `/etc/protocols` (netbase: firewalld refuses its stock
/// configuration without it, and minbase has none) and polkit (firewalld asks it who may read
/// its zones; the image's rule lets group wheel).
pub const BASE_PACKAGES: [&str; 14] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "libpam-systemd",
    "udev",
    "procps",
    "iproute2",
    "kmod",
    "bsdutils",
    "sway",
    "firewalld",
    "netbase",
    "polkitd",
];

/// The test user's uid (tests/guest/mkrootfs.sh creates it).
pub const GUEST_UID: u32 = 1000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UmlError {
    let what = what.into();
    move |source| UmlError::Io { what, source }
}

/// The packages our binaries need at run time: the owners of their shared libraries on this
/// host (which built them), plus the GStreamer plugin and PipeWire runtime packages of the
/// Justfile's `apt_packages` (plugins are loaded at run time, so `ldd` cannot see them).
pub fn runtime_packages() -> Vec<String> {
    let mut libs = std::collections::BTreeSet::new();
    for b in manifest_binaries() {
        let out = Command::new("ldd")
            .arg(bin(&b))
            .output()
            .expect("run ldd (libc-bin)");
        libs.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split("=>").nth(1))
                .filter_map(|r| r.split_whitespace().next())
                .filter(|p| p.starts_with('/'))
                .map(PathBuf::from),
        );
    }
    let libs: Vec<PathBuf> = libs.into_iter().collect();
    let mut pkgs = library_packages(&libs);
    pkgs.extend(justfile_runtime_packages());
    pkgs.into_iter().collect()
}

/// `dpkg -S` for many paths at once: path → the first package that owns it.
fn owners(paths: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    if paths.is_empty() {
        return BTreeMap::new();
    }
    let out = Command::new("dpkg")
        .arg("-S")
        .args(paths)
        .output()
        .expect("run dpkg -S");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(pkg, path)| {
            let pkg = pkg.split([':', ',']).next().unwrap_or_default().trim();
            (PathBuf::from(path.trim()), pkg.to_string())
        })
        .collect()
}

/// The packages owning these shared libraries; a path dpkg registered on the other side of the
/// /usr merge is asked for again with its link resolved (or /usr added).
fn library_packages(libs: &[PathBuf]) -> std::collections::BTreeSet<String> {
    let found = owners(libs);
    let mut pkgs: std::collections::BTreeSet<String> = found.values().cloned().collect();
    let variants: Vec<(PathBuf, PathBuf)> = libs
        .iter()
        .filter(|l| !found.contains_key(*l))
        .map(|l| {
            let real = std::fs::canonicalize(l).unwrap_or_else(|_| l.clone());
            let alt = if real != *l {
                real
            } else {
                PathBuf::from(format!("/usr{}", l.display()))
            };
            (l.clone(), alt)
        })
        .collect();
    let alts: Vec<PathBuf> = variants.iter().map(|(_, a)| a.clone()).collect();
    let found = owners(&alts);
    for (lib, alt) in &variants {
        let pkg = found.get(alt).unwrap_or_else(|| {
            panic!(
                "no Debian package owns {} (nor {})",
                lib.display(),
                alt.display()
            )
        });
        pkgs.insert(pkg.clone());
    }
    pkgs
}

/// The GStreamer plugin and PipeWire packages of the Justfile's `apt_packages` (loaded at run
/// time, so `ldd` cannot see them).
fn justfile_runtime_packages() -> Vec<String> {
    let justfile = std::fs::read_to_string(repo().join("Justfile")).expect("read the Justfile");
    let apt = justfile
        .lines()
        .find_map(|l| l.strip_prefix("apt_packages := "))
        .expect("the Justfile defines apt_packages")
        .trim_matches('"');
    apt.split_whitespace()
        .filter(|p| {
            (p.starts_with("gstreamer1.0-") && *p != "gstreamer1.0-tools")
                || *p == "pipewire"
                || *p == "wireplumber"
        })
        .map(String::from)
        .collect()
}

/// The binaries packaging/manifest installs (`bin/NAME` sources).
pub fn manifest_binaries() -> Vec<String> {
    std::fs::read_to_string(repo().join("packaging/manifest"))
        .expect("read packaging/manifest")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|s| s.strip_prefix("bin/"))
        .map(String::from)
        .collect()
}

/// The cached guest root, built first if missing (a lock serialises builders).
pub fn rootfs() -> Result<PathBuf, UmlError> {
    let cache = uml::cache_dir().join("rootfs");
    std::fs::create_dir_all(&cache).map_err(io(format!("creating {}", cache.display())))?;
    let lock_path = cache.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(format!("locking {}", lock_path.display()))(e.into()))?;
    let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    packages.extend(runtime_packages());
    let script = repo().join("tests/guest/mkrootfs.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&cache)
        .args(&packages)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(UmlError::Io {
            what: format!(
                "{} failed ({}); is debootstrap installed (just setup) and deb.debian.org reachable?",
                script.display(),
                out.status
            ),
            source: std::io::ErrorKind::Other.into(),
        });
    }
    let path = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    Ok(path)
}

/// What the driver does: everything (`Full`), or only judge each boot's health check and power
/// off after a good one (`Rollback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every point of the appliance's behaviour, then poweroff.
    Full,
    /// The health-check gate only.
    Rollback,
}

/// One boot's copy of the root, with our files and the test driver laid in.
pub struct Appliance {
    dir: tempfile::TempDir,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if std::env::var_os("PUNKTFUNK_KEEP_GUEST").is_some() {
            let path = self.dir.path().to_path_buf();
            // Leak the directory on purpose: the developer asked to keep it.
            let _ = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new().tempdir().expect("tempdir"),
            )
            .keep();
            eprintln!("kept {}", path.display());
        }
    }
}

/// The host path of the stand-in bootc's records inside the guest root.
pub const BOOTC_STAND_IN_DIR: &str = "var/lib/bootc-stand-in";

impl Appliance {
    /// Copies the cached root, lays in the image's files with `packaging/install.sh` and the
    /// test's driver and stand-in bootc.
    pub fn prepare(mode: Mode) -> Result<Self, UmlError> {
        let base = rootfs()?;
        let runs = uml::cache_dir().join("appliance-runs");
        std::fs::create_dir_all(&runs).map_err(io(format!("creating {}", runs.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("root-")
            .tempdir_in(&runs)
            .map_err(io("creating the guest root's directory"))?;
        let root = dir.path().join("root");
        copy_root(&base, &root)?;
        let me = Self { dir };
        me.install()?;
        me.add_test_files(mode)?;
        Ok(me)
    }

    /// The guest's root on the host.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn install(&self) -> Result<(), UmlError> {
        let out = Command::new("sh")
            .arg(repo().join("packaging/install.sh"))
            .arg("--root")
            .arg(self.root())
            .arg("--bin-dir")
            .arg(bin_dir())
            .output()
            .map_err(io("running packaging/install.sh"))?;
        if !out.status.success() {
            return Err(UmlError::Io {
                what: format!(
                    "packaging/install.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                source: std::io::ErrorKind::Other.into(),
            });
        }
        Ok(())
    }

    fn write(&self, rel: &str, text: &str, mode: u32) -> Result<(), UmlError> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.root().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        std::fs::write(&p, text).map_err(io(format!("writing {}", p.display())))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", p.display())))
    }

    fn add_test_files(&self, mode: Mode) -> Result<(), UmlError> {
        let read = |rel: &str| {
            std::fs::read_to_string(repo().join(rel)).map_err(io(format!("reading {rel}")))
        };
        self.write(
            "usr/local/libexec/pf-guest-driver",
            &read("tests/guest/driver.sh")?,
            0o755,
        )?;
        self.write(
            "etc/systemd/system/pf-guest-driver.service",
            &read("tests/guest/pf-guest-driver.service")?,
            0o644,
        )?;
        self.write(
            "etc/systemd/system/pf-guest-lan.service",
            &read("tests/guest/pf-guest-lan.service")?,
            0o644,
        )?;
        let wants = self
            .root()
            .join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(io("creating multi-user.target.wants"))?;
        for unit in ["pf-guest-driver.service", "pf-guest-lan.service"] {
            std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), wants.join(unit))
                .map_err(io(format!("enabling {unit}")))?;
        }
        self.write(
            "etc/pf-guest/mode",
            match mode {
                Mode::Full => "full\n",
                Mode::Rollback => "rollback\n",
            },
            0o644,
        )?;
        self.write("usr/local/sbin/bootc", BOOTC_STAND_IN, 0o755)?;
        std::fs::create_dir_all(self.root().join(BOOTC_STAND_IN_DIR))
            .map_err(io("creating the stand-in bootc's directory"))
    }

    /// Breaks `/usr/bin/punktfunk-media` the way a bad update could: it still starts, becomes
    /// READY and serves, but finds no GStreamer plugin, so it cannot encode. The good binary is
    /// kept as the "previous deployment" the stand-in bootc's rollback puts back.
    pub fn break_media(&self) -> Result<(), UmlError> {
        let root = self.root();
        let good = root.join("usr/bin/punktfunk-media");
        let previous = root.join(BOOTC_STAND_IN_DIR).join("previous/usr/bin");
        std::fs::create_dir_all(&previous).map_err(io("creating the previous deployment"))?;
        std::fs::copy(&good, previous.join("punktfunk-media"))
            .map_err(io("saving the good media binary"))?;
        std::fs::rename(&good, root.join("usr/bin/punktfunk-media.real"))
            .map_err(io("moving the media binary"))?;
        self.write(
            "usr/bin/punktfunk-media",
            "#!/bin/sh\n# A deliberately broken media (tests/src/appliance.rs): no GStreamer plugins.\n\
             GST_PLUGIN_SYSTEM_PATH_1_0=/nonexistent GST_PLUGIN_PATH_1_0=/nonexistent \
             GST_REGISTRY_1_0=/tmp/pf-broken-registry.bin exec /usr/bin/punktfunk-media.real \"$@\"\n",
            0o755,
        )
    }

    /// Boots until the guest powers off; the driver's `facts` are in the output's share. With
    /// `PUNKTFUNK_KEEP_GUEST=1` the root and a copy of the share stay on disk for a post-mortem
    /// (their path goes to stderr).
    pub fn boot(&self, timeout: Duration) -> Result<GuestOutput, UmlError> {
        let out = Guest::new()
            .root(self.root())
            .init("/lib/systemd/systemd")
            .mem("1024M")
            .kernel_arg("rw")
            .timeout(timeout)
            .boot()?;
        if std::env::var_os("PUNKTFUNK_KEEP_GUEST").is_some() {
            let keep = self.dir.path().join("share");
            let _ = Command::new("cp")
                .arg("-a")
                .arg(&out.share)
                .arg(&keep)
                .status();
            let _ = std::fs::write(self.dir.path().join("console.txt"), &out.console);
            eprintln!("kept the guest in {}", self.dir.path().display());
        }
        Ok(out)
    }

    /// The guest's persistent journal, every boot, as JSON objects.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let out = Command::new("journalctl")
            .arg("--directory")
            .arg(self.root().join("var/log/journal"))
            .args(["-o", "json", "--no-pager"])
            .output()
            .expect("run journalctl (systemd)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What the stand-in bootc was called with, one call per line.
    pub fn bootc_calls(&self) -> String {
        std::fs::read_to_string(self.root().join(BOOTC_STAND_IN_DIR).join("calls"))
            .unwrap_or_default()
    }
}

/// The stand-in for `bootc`, which the guest cannot have (the real one manages ostree
/// deployments of a bootc image).
const BOOTC_STAND_IN: &str = r#"#!/bin/sh
# STAND-IN for bootc in the UML test guest (tests/src/appliance.rs): records each call; for
# `rollback`, puts back the previous deployment's files, as booting the rollback image would.
dir=/var/lib/bootc-stand-in
echo "$*" >>"$dir/calls"
if [ "$1" = rollback ] && [ -d "$dir/previous" ]; then
    cp -a "$dir/previous/." /
    rm -f /usr/bin/punktfunk-media.real
fi
"#;

/// `base` → `dest`: `/usr` hard-linked (boots only add files there), the rest copied.
fn copy_root(base: &Path, dest: &Path) -> Result<(), UmlError> {
    std::fs::create_dir(dest).map_err(io(format!("creating {}", dest.display())))?;
    let entries = std::fs::read_dir(base).map_err(io(format!("listing {}", base.display())))?;
    for e in entries {
        let e = e.map_err(io("listing the root"))?;
        let flag = if e.file_name() == "usr" { "-al" } else { "-a" };
        let status = Command::new("cp")
            .arg(flag)
            .arg(e.path())
            .arg(dest)
            .status()
            .map_err(io("running cp"))?;
        if !status.success() {
            return Err(UmlError::Io {
                what: format!("cp {flag} {} {}", e.path().display(), dest.display()),
                source: std::io::ErrorKind::Other.into(),
            });
        }
    }
    Ok(())
}

/// The driver's `key=value` facts (the last value of a repeated key wins).
pub fn facts(out: &GuestOutput) -> BTreeMap<String, String> {
    std::fs::read_to_string(out.share.join("facts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
