//! Packaging checks: the Containerfile, the systemd user units, the udev rules and the files laid
//! into the image (`image/`). Std only (plus tempfile); nothing here needs a running systemd.
//!
//! What these do NOT cover: building the image (no registry access, no container engine on our
//! machines) and running the units under a real `systemd --user` (that is the UML guest's job,
//! see docs/testing.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const DAEMONS: [&str; 4] = ["session", "media", "transport", "input"];
const FINAL_BASE: &str = "ghcr.io/ublue-os/bazzite-nvidia:stable";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Names of the regular files directly in a repository directory, sorted.
fn files_in(rel_dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo().join(rel_dir))
        .unwrap_or_else(|e| panic!("cannot list {rel_dir}: {e}"))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------------------------------------
// Containerfile
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Instr {
    /// Upper-cased keyword (FROM, COPY, RUN, ...).
    kw: String,
    /// Everything after the keyword, continuation lines joined.
    args: String,
    /// Index of the stage (FROM) this instruction belongs to; FROM itself starts a new one.
    stage: usize,
}

/// Splits a Containerfile into instructions: comment lines are dropped (also inside a
/// continuation, as the builders do), backslash-continued lines are joined.
fn parse_containerfile(text: &str) -> Vec<Instr> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    assert!(
        cur.trim().is_empty(),
        "Containerfile ends inside a continuation: {cur}"
    );
    let mut out = Vec::new();
    let mut stage = 0;
    for l in logical {
        let (kw, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            stage += 1;
        }
        out.push(Instr {
            kw,
            args: args.trim().to_string(),
            stage,
        });
    }
    out
}

struct Copy {
    from: Option<String>,
    srcs: Vec<String>,
    dest: String,
    stage: usize,
}

fn copies(instrs: &[Instr]) -> Vec<Copy> {
    instrs
        .iter()
        .filter(|i| i.kw == "COPY" || i.kw == "ADD")
        .map(|i| {
            assert!(
                !i.args.starts_with('['),
                "use the shell form of COPY: {}",
                i.args
            );
            let mut from = None;
            let mut words = Vec::new();
            for w in i.args.split_whitespace() {
                if let Some(f) = w.strip_prefix("--from=") {
                    from = Some(f.to_string());
                } else if w.starts_with("--") {
                    // --chown=, --chmod=, --link: irrelevant here
                } else {
                    words.push(w.to_string());
                }
            }
            assert!(
                words.len() >= 2,
                "COPY needs a source and a destination: {}",
                i.args
            );
            let dest = words.pop().unwrap();
            Copy {
                from,
                srcs: words,
                dest,
                stage: i.stage,
            }
        })
        .collect()
}

fn norm(p: &str) -> &str {
    let p = p.strip_prefix("./").unwrap_or(p);
    if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    }
}

#[test]
fn containerfile_copies_exist_and_cover_units_udev_image() {
    let instrs = parse_containerfile(&read("Containerfile"));
    let cs = copies(&instrs);
    let stages: Vec<&Instr> = instrs.iter().filter(|i| i.kw == "FROM").collect();
    assert!(
        stages.len() >= 2,
        "expected a multi-stage build, got {} FROM",
        stages.len()
    );
    let last_stage = stages.len();

    // Every path copied from the build context exists in the repository.
    let mut missing = Vec::new();
    for c in cs.iter().filter(|c| c.from.is_none()) {
        for s in &c.srcs {
            assert!(
                !s.contains(['*', '?', '[']),
                "no globs in COPY sources, name files: {s}"
            );
            assert!(
                !s.starts_with('/') && !s.contains(".."),
                "COPY source outside context: {s}"
            );
            if !repo().join(norm(s)).exists() {
                missing.push(s.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "COPY sources missing from the repository: {missing:?}"
    );

    // The final stage gets packaging/ and the trees the manifest names, and runs install.sh.
    for dir in ["packaging", "units", "udev", "image"] {
        assert!(
            cs.iter().any(|c| c.from.is_none()
                && c.stage == last_stage
                && c.srcs.iter().any(|s| norm(s) == dir)
                && norm(&c.dest) == format!("/tmp/punktfunk/{dir}")),
            "the final stage must COPY {dir}/ /tmp/punktfunk/{dir}/ (for packaging/install.sh)"
        );
    }
    assert!(
        instrs.iter().any(|i| i.kw == "RUN"
            && i.stage == last_stage
            && i.args
                .contains("/tmp/punktfunk/packaging/install.sh --root / ")),
        "the final stage must RUN packaging/install.sh --root /"
    );

    // The final stage is the Bazzite NVIDIA image, gets the binaries from the build stage, and
    // the last instruction lints it.
    let base = stages
        .last()
        .unwrap()
        .args
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(base, FINAL_BASE);
    assert!(
        cs.iter().any(|c| c.stage == last_stage
            && c.from.is_some()
            && norm(&c.dest) == "/tmp/punktfunk/bin"),
        "the final stage must COPY --from=<build stage> the binaries to /tmp/punktfunk/bin/"
    );
    let last = instrs.last().unwrap();
    assert_eq!(
        last.kw, "RUN",
        "last instruction must be RUN bootc container lint"
    );
    assert!(
        last.args.contains("bootc container lint"),
        "last RUN is: {}",
        last.args
    );

    // The build stage builds the locked workspace and installs what the units execute.
    let build_runs: String = instrs
        .iter()
        .filter(|i| i.kw == "RUN" && i.stage < last_stage)
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        build_runs.contains("cargo build --release --locked"),
        "no locked release build"
    );
    assert!(
        build_runs.contains("-name 'punktfunk*'"),
        "the build stage must copy out every punktfunk* executable (the manifest picks)"
    );
    assert!(
        instrs
            .iter()
            .any(|i| i.kw == "ARG" && i.args.starts_with("FEDORA_VERSION=")),
        "the builder's Fedora release must be an ARG FEDORA_VERSION=..."
    );
}

// ------------------------------------------------------------------------------------------------
// packaging/manifest and packaging/install.sh: the one list of what the image contains
// ------------------------------------------------------------------------------------------------

/// One line of packaging/manifest.
#[derive(Debug)]
struct Entry {
    mode: u32,
    src: String,
    dest: String,
}

fn manifest() -> Vec<Entry> {
    read("packaging/manifest")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                w.len(),
                3,
                "manifest line is not `mode source destination`: {l}"
            );
            let mode = u32::from_str_radix(w[0], 8)
                .unwrap_or_else(|e| panic!("manifest mode {} is not octal: {e}", w[0]));
            assert!(w[2].starts_with('/'), "destination must be absolute: {l}");
            Entry {
                mode,
                src: w[1].to_string(),
                dest: w[2].to_string(),
            }
        })
        .collect()
}

/// Every regular file below a repository directory, as repository-relative paths.
fn tree(rel_dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join(rel_dir)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display())) {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(repo())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn manifest_lists_every_file_of_units_udev_image_and_every_binary() {
    let m = manifest();
    let by_src: BTreeMap<&str, &Entry> = m.iter().map(|e| (e.src.as_str(), e)).collect();
    assert_eq!(by_src.len(), m.len(), "a source is listed twice");
    let dests: BTreeSet<&str> = m.iter().map(|e| e.dest.as_str()).collect();
    assert_eq!(dests.len(), m.len(), "a destination is listed twice");

    let expect = |src: String, dest: String, mode: u32| {
        let e = by_src
            .get(src.as_str())
            .unwrap_or_else(|| panic!("packaging/manifest does not list {src}"));
        assert_eq!(e.dest, dest, "{src} goes to the wrong place");
        assert_eq!(e.mode, mode, "{src}: mode {:o}", e.mode);
    };
    for f in files_in("units") {
        assert!(
            [".service", ".socket", ".target"]
                .iter()
                .any(|x| f.ends_with(x)),
            "units/{f} is not a unit file"
        );
        expect(
            format!("units/{f}"),
            format!("/usr/lib/systemd/user/{f}"),
            0o644,
        );
    }
    for f in files_in("udev") {
        assert!(f.ends_with(".rules"), "udev/{f} is not a .rules file");
        expect(
            format!("udev/{f}"),
            format!("/usr/lib/udev/rules.d/{f}"),
            0o644,
        );
    }
    // image/ mirrors the target paths.
    for f in tree("image") {
        let dest = f.strip_prefix("image").unwrap().to_string();
        expect(f, dest, 0o644);
    }
    // The daemons the units execute, the command line and the reference client.
    for bin in DAEMONS
        .iter()
        .map(|d| format!("punktfunk-{d}"))
        .chain(["punktfunkctl".into(), "punktfunk-client".into()])
    {
        expect(format!("bin/{bin}"), format!("/usr/bin/{bin}"), 0o755);
    }
    // Nothing listed that the repository does not have (binaries come from the build).
    for e in &m {
        if !e.src.starts_with("bin/") {
            assert!(
                repo().join(&e.src).is_file(),
                "manifest names missing {}",
                e.src
            );
        }
    }
}

#[test]
fn install_script_lays_in_exactly_the_manifest_and_enables_through_the_presets() {
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bin");
    let root = dir.path().join("root");
    fs::create_dir_all(&bins).unwrap();
    for e in manifest().iter().filter(|e| e.src.starts_with("bin/")) {
        fs::write(bins.join(&e.src[4..]), "#!/bin/sh\n").unwrap();
    }
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .arg("--root")
        .arg(&root)
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = format!("/{}", e.path().strip_prefix(&root).unwrap().display());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_symlink() {
                links.push((rel, fs::read_link(e.path()).unwrap()));
            } else {
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                files.push((rel, mode));
            }
        }
    }
    files.sort();
    links.sort();
    let mut want: Vec<(String, u32)> = manifest().into_iter().map(|e| (e.dest, e.mode)).collect();
    want.sort();
    assert_eq!(
        files, want,
        "install.sh laid in something other than the manifest"
    );
    assert_eq!(
        links,
        [
            (
                "/etc/systemd/system/multi-user.target.wants/punktfunk-healthcheck.service".into(),
                PathBuf::from("/usr/lib/systemd/system/punktfunk-healthcheck.service")
            ),
            (
                "/etc/systemd/user/default.target.wants/punktfunk.target".into(),
                PathBuf::from("/usr/lib/systemd/user/punktfunk.target")
            ),
        ],
        "the presets must enable punktfunk.target (user) and the health check (system)"
    );
}

// ------------------------------------------------------------------------------------------------
// systemd units
// ------------------------------------------------------------------------------------------------

/// A unit file as section -> key -> values (a key may repeat). Good enough for our own files,
/// which use neither line continuations nor quoting tricks.
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut u = Unit::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        assert!(
            !t.ends_with('\\'),
            "line {}: no continuations in our units please",
            n + 1
        );
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {t}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        u.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    u
}

fn unit(name: &str) -> Unit {
    parse_unit(&read(&format!("units/{name}")))
}

/// All values of a key, split on whitespace (for list-valued keys such as Wants=).
fn words(u: &Unit, section: &str, key: &str) -> Vec<String> {
    u.get(section)
        .and_then(|s| s.get(key))
        .map(|vs| {
            vs.iter()
                .flat_map(|v| v.split_whitespace().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn one(u: &Unit, section: &str, key: &str) -> Option<String> {
    let vs = u.get(section)?.get(key)?;
    assert_eq!(vs.len(), 1, "[{section}] {key}= given {} times", vs.len());
    Some(vs[0].clone())
}

/// systemd time span (the forms we use: "500ms", "10s", "10", "1min") in milliseconds.
fn span_ms(s: &str) -> u64 {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("bad time span {s}"));
    match &s[digits.len()..] {
        "ms" => n,
        "" | "s" | "sec" => n * 1000,
        "min" | "m" => n * 60_000,
        other => panic!("unit {other} in time span {s} not understood by this test"),
    }
}

#[test]
fn units_follow_the_daemon_contract() {
    let expected: BTreeSet<String> = DAEMONS
        .iter()
        .flat_map(|d| {
            [
                format!("punktfunk-{d}.socket"),
                format!("punktfunk-{d}.service"),
            ]
        })
        .chain(["punktfunk.target".to_string()])
        .collect();
    let present: BTreeSet<String> = files_in("units").into_iter().collect();
    assert_eq!(
        present, expected,
        "units/ must hold exactly the contract's units"
    );

    for d in DAEMONS {
        let sock = unit(&format!("punktfunk-{d}.socket"));
        assert_eq!(
            words(&sock, "Socket", "ListenStream"),
            [format!("%t/punktfunk/{d}.sock")],
            "{d}: gRPC listener"
        );
        assert_eq!(
            words(&sock, "Socket", "ListenSequentialPacket"),
            [format!("%t/punktfunk/{d}.fds")],
            "{d}: fd channel listener"
        );
        for (k, v) in [
            ("SocketMode", "0600"),
            ("DirectoryMode", "0700"),
            ("RemoveOnStop", "yes"),
            ("FileDescriptorName", d),
        ] {
            assert_eq!(
                one(&sock, "Socket", k).as_deref(),
                Some(v),
                "{d}.socket {k}="
            );
        }
        assert!(words(&sock, "Unit", "PartOf").contains(&"punktfunk.target".into()));

        let svc = unit(&format!("punktfunk-{d}.service"));
        for (k, v) in [
            ("Type", "notify".to_string()),
            ("NotifyAccess", "main".to_string()),
            ("ExecStart", format!("/usr/bin/punktfunk-{d}")),
            ("WatchdogSec", "10s".to_string()),
            ("Restart", "on-failure".to_string()),
            ("RestartPreventExitStatus", "78".to_string()),
        ] {
            assert_eq!(
                one(&svc, "Service", k).as_deref(),
                Some(v.as_str()),
                "{d}.service {k}="
            );
        }
        let stop = span_ms(&one(&svc, "Service", "TimeoutStopSec").expect("TimeoutStopSec="));
        assert!(
            stop >= 5000,
            "{d}: TimeoutStopSec must leave the daemon its 5 s, got {stop} ms"
        );
        let rs = span_ms(&one(&svc, "Service", "RestartSec").expect("RestartSec="));
        assert!(rs <= 5000, "{d}: RestartSec should be short, got {rs} ms");
        assert!(
            one(&svc, "Unit", "StartLimitIntervalSec").is_some(),
            "{d}: StartLimitIntervalSec="
        );
        assert!(
            one(&svc, "Unit", "StartLimitBurst").is_some(),
            "{d}: StartLimitBurst="
        );
        let socket = format!("punktfunk-{d}.socket");
        assert!(
            words(&svc, "Unit", "Requires").contains(&socket),
            "{d}: Requires= its socket"
        );
        assert!(
            words(&svc, "Unit", "After").contains(&socket),
            "{d}: After= its socket"
        );
        assert!(words(&svc, "Unit", "PartOf").contains(&"punktfunk.target".into()));
    }

    // GStreamer's orc JIT needs W+X memory in media.
    let media = unit("punktfunk-media.service");
    assert_ne!(
        one(&media, "Service", "MemoryDenyWriteExecute").as_deref(),
        Some("yes")
    );
    // Everything session spawns (gamescope, Steam, 32-bit games) would inherit seccomp filters
    // and no_new_privs; see the comment in the unit.
    let session = unit("punktfunk-session.service");
    for k in [
        "NoNewPrivileges",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "RestrictAddressFamilies",
    ] {
        assert!(
            one(&session, "Service", k).is_none(),
            "session must not set {k}= (inherited by games)"
        );
    }

    // transport orchestrates the others: it wants their sockets and is ordered after them.
    let transport = unit("punktfunk-transport.service");
    for d in ["session", "media", "input"] {
        let s = format!("punktfunk-{d}.socket");
        assert!(
            words(&transport, "Unit", "Wants").contains(&s),
            "transport Wants= {s}"
        );
        assert!(
            words(&transport, "Unit", "After").contains(&s),
            "transport After= {s}"
        );
        assert!(
            !words(&transport, "Unit", "Requires").contains(&s),
            "a dying {d} must not stop transport"
        );
    }

    let target = unit("punktfunk.target");
    let wants: BTreeSet<String> = words(&target, "Unit", "Wants").into_iter().collect();
    let all: BTreeSet<String> = expected
        .iter()
        .filter(|u| *u != "punktfunk.target")
        .cloned()
        .collect();
    assert_eq!(
        wants, all,
        "punktfunk.target Wants= all sockets and services"
    );
    assert_eq!(words(&target, "Install", "WantedBy"), ["default.target"]);
}

/// `systemd-analyze verify` does not complain about a Wants=/After= naming a unit that does not
/// exist (only Requires= fails), so check our own names by hand.
#[test]
fn unit_references_to_punktfunk_units_resolve() {
    let present: BTreeSet<String> = files_in("units").into_iter().collect();
    let keys = [
        "Wants",
        "Requires",
        "Requisite",
        "BindsTo",
        "PartOf",
        "After",
        "Before",
        "WantedBy",
        "RequiredBy",
        "Also",
        "Service",
        "Sockets",
    ];
    for f in &present {
        let u = unit(f);
        for (section, kv) in &u {
            for k in keys {
                for name in kv
                    .get(k)
                    .into_iter()
                    .flatten()
                    .flat_map(|v| v.split_whitespace())
                {
                    if name.starts_with("punktfunk") {
                        assert!(
                            present.contains(name),
                            "{f}: [{section}] {k}={name} names no unit in units/"
                        );
                    }
                }
            }
        }
    }
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("systemd-analyze"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([
            PathBuf::from("/usr/bin/systemd-analyze"),
            PathBuf::from("/bin/systemd-analyze"),
        ])
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIP: systemd-analyze not installed; unit files not verified");
    }
    found
}

/// Copies units/ into `dir/units`, pointing each `ExecStart=/usr/bin/punktfunk-X` at an
/// executable stand-in `dir/bin/punktfunk-X`, and returns the unit paths.
///
/// Why: `systemd-analyze verify` fails a unit whose ExecStart= binary is missing, and the
/// daemons are not installed in /usr/bin on a development machine. systemd 252's
/// `--root=` cannot be combined with `--user` ("Failed to initialize unit search paths"), so
/// the units are verified from a copy in which only the ExecStart= path differs; every other
/// byte is what ships. `units_follow_the_daemon_contract` separately asserts that the real
/// ExecStart= is exactly /usr/bin/punktfunk-X, and the Containerfile test that the image
/// installs those binaries there.
fn stage_units(dir: &Path) -> Vec<PathBuf> {
    let udir = dir.join("units");
    let bdir = dir.join("bin");
    fs::create_dir_all(&udir).unwrap();
    fs::create_dir_all(&bdir).unwrap();
    let mut out = Vec::new();
    for f in files_in("units") {
        let text = read(&format!("units/{f}"));
        let mut rewritten = 0;
        let staged: String = text
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=/usr/bin/") {
                Some(bin) => {
                    assert!(
                        bin.starts_with("punktfunk-") && !bin.contains(' '),
                        "{f}: unexpected {l}"
                    );
                    let stand_in = bdir.join(bin);
                    fs::write(&stand_in, "#!/bin/sh\nexit 0\n").unwrap();
                    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
                    rewritten += 1;
                    format!("ExecStart={}\n", stand_in.display())
                }
                None => format!("{l}\n"),
            })
            .collect();
        if f.ends_with(".service") {
            assert_eq!(
                rewritten, 1,
                "{f}: expected exactly one ExecStart=/usr/bin/punktfunk-*"
            );
        }
        let p = udir.join(&f);
        fs::write(&p, staged).unwrap();
        out.push(p);
    }
    out
}

/// Runs `systemd-analyze --user verify` on the given files; returns (success, stdout+stderr).
fn verify(analyze: &Path, dir: &Path, files: &[PathBuf]) -> (bool, String) {
    let rt = dir.join("runtime");
    fs::create_dir_all(&rt).unwrap();
    fs::set_permissions(&rt, fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new(analyze)
        .args(["--user", "verify"])
        .args(files)
        .env("XDG_RUNTIME_DIR", &rt)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = stage_units(dir.path());
    let (ok, text) = verify(&analyze, dir.path(), &files);
    // Unknown keys and unparsable values are only warnings (exit status 0), so the output must
    // be empty too.
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze --user verify units/*:\n{text}"
    );
}

/// The boot health check is a system unit: `systemd-analyze verify` (system mode) with its
/// ExecStart= pointed at a stand-in, as for the user units; it must run `healthcheck --gate`.
#[test]
fn healthcheck_system_unit_passes_systemd_analyze_verify() {
    let rel = "image/usr/lib/systemd/system/punktfunk-healthcheck.service";
    let text = read(rel);
    assert!(
        text.lines()
            .any(|l| l == "ExecStart=/usr/bin/punktfunkctl healthcheck --gate"),
        "{rel} must run `punktfunkctl healthcheck --gate`"
    );
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("punktfunkctl");
    fs::write(&stand_in, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
    let unit = dir.path().join("punktfunk-healthcheck.service");
    fs::write(
        &unit,
        text.replace("/usr/bin/punktfunkctl", stand_in.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {rel}:\n{text}"
    );
}

/// The check above is only worth something if it fails on a broken unit: inject a misspelled
/// directive, an unparsable value and a missing Requires= target, one at a time.
#[test]
fn systemd_analyze_verify_catches_a_broken_unit() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    for (needle, broken) in [
        ("NotifyAccess=main", "NotifyAcess=main"),
        ("RestartSec=1s", "RestartSec=one second"),
        (
            "Requires=punktfunk-media.socket",
            "Requires=punktfunk-meda.socket",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let files = stage_units(dir.path());
        let media = files
            .iter()
            .find(|p| p.ends_with("punktfunk-media.service"))
            .unwrap();
        let text = fs::read_to_string(media).unwrap();
        assert!(
            text.contains(needle),
            "punktfunk-media.service no longer has {needle}"
        );
        fs::write(media, text.replacen(needle, broken, 1)).unwrap();
        let (ok, out) = verify(&analyze, dir.path(), &files);
        assert!(
            !ok || !out.trim().is_empty(),
            "verify accepted {broken:?} without a word; the verify test proves nothing"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// udev rules
// ------------------------------------------------------------------------------------------------

/// Match keys (only == and !=) and assignment keys (=, +=, -=, :=) of udev(7).
const UDEV_MATCH: &[&str] = &[
    "ACTION",
    "DEVPATH",
    "KERNEL",
    "KERNELS",
    "NAME",
    "SYMLINK",
    "SUBSYSTEM",
    "SUBSYSTEMS",
    "DRIVER",
    "DRIVERS",
    "ATTR",
    "ATTRS",
    "SYSCTL",
    "ENV",
    "CONST",
    "TAG",
    "TAGS",
    "TEST",
    "PROGRAM",
    "RESULT",
];
const UDEV_ASSIGN: &[&str] = &[
    "NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "SECLABEL", "ATTR", "SYSCTL", "ENV", "TAG", "RUN",
    "LABEL", "GOTO", "IMPORT", "OPTIONS", "WAIT_FOR",
];
/// Keys that take `{attribute}`.
const UDEV_WITH_ATTR: &[&str] = &[
    "ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "TEST", "IMPORT", "RUN", "SECLABEL",
];

#[derive(Debug, PartialEq)]
struct Pair {
    key: String,
    attr: Option<String>,
    op: String,
    value: String,
}

/// Parses one rule line into its KEY[{attr}] OP "value" pairs, separated by commas; errors say
/// what is wrong. Stricter than udevd (which warns and goes on): we want none of its warnings.
fn parse_rule(line: &str) -> Result<Vec<Pair>, String> {
    let mut pairs = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() {
            return Err(format!("expected a KEY at {rest:?}"));
        }
        rest = &rest[key_end..];
        let mut attr = None;
        if let Some(r) = rest.strip_prefix('{') {
            let close = r.find('}').ok_or(format!("{key}: unterminated {{"))?;
            attr = Some(r[..close].to_string());
            rest = &r[close + 1..];
        }
        rest = rest.trim_start();
        let op = ["==", "!=", "+=", "-=", ":=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or(format!("{key}: expected an operator at {rest:?}"))?;
        rest = rest[op.len()..].trim_start();
        let r = rest
            .strip_prefix('"')
            .ok_or(format!("{key}: value must be double-quoted"))?;
        let close = r.find('"').ok_or(format!("{key}: unterminated value"))?;
        let value = r[..close].to_string();
        rest = r[close + 1..].trim_start();

        let is_match = op == "==" || op == "!=";
        let known = if is_match { UDEV_MATCH } else { UDEV_ASSIGN };
        if !known.contains(&key) {
            let kind = if is_match { "match" } else { "assignment" };
            return Err(format!("{key}{op}: not a known udev {kind} key"));
        }
        if attr.is_some() != UDEV_WITH_ATTR.contains(&key)
            && !["IMPORT", "RUN", "TEST"].contains(&key)
        {
            return Err(format!(
                "{key}: {{attribute}} {}",
                if attr.is_some() {
                    "not allowed"
                } else {
                    "required"
                }
            ));
        }
        if key == "MODE" && !(value.len() == 4 && value.chars().all(|c| ('0'..='7').contains(&c))) {
            return Err(format!("MODE=\"{value}\" is not a 4-digit octal mode"));
        }
        pairs.push(Pair {
            key: key.to_string(),
            attr,
            op: op.to_string(),
            value,
        });
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix(',')
            .ok_or(format!("expected ',' before {rest:?}"))?
            .trim_start();
        if rest.is_empty() {
            return Err("trailing comma".into());
        }
    }
    if !pairs.iter().any(|p| p.op != "==" && p.op != "!=") {
        return Err("rule only matches and never assigns anything".into());
    }
    Ok(pairs)
}

/// Logical rule lines of a rules file (comments and blank lines dropped, continuations joined).
fn rule_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if cur.is_empty() {
            start = n + 1;
        }
        match t.strip_suffix('\\') {
            Some(h) => cur.push_str(h),
            None => {
                cur.push_str(t);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    out
}

#[test]
fn udev_rule_checker_rejects_malformed_rules() {
    for bad in [
        r#"KERNEL=="uinput", GROUP=input"#,       // unquoted value
        r#"KERNL=="uinput", MODE="0660""#,        // misspelled key
        r#"KERNEL=="uinput" MODE="0660""#,        // missing comma
        r#"KERNEL=="uinput", MODE="660""#,        // not a 4-digit mode
        r#"KERNEL=="uinput", OWNER=="root""#,     // match op on an assignment-only key
        r#"KERNEL=="uinput", ENV="1""#,           // ENV without {name}
        r#"KERNEL=="uinput", SUBSYSTEM=="misc""#, // assigns nothing
        r#"KERNEL=="uinput", MODE="0660","#,      // trailing comma
    ] {
        assert!(parse_rule(bad).is_err(), "checker accepted {bad}");
    }
    assert_eq!(
        parse_rule(r#"SUBSYSTEMS=="input", ATTRS{name}=="punktfunk *", ENV{X}="1""#).unwrap()[1],
        Pair {
            key: "ATTRS".into(),
            attr: Some("name".into()),
            op: "==".into(),
            value: "punktfunk *".into()
        }
    );
}

#[test]
fn udev_rules_parse_and_grant_access() {
    let files = files_in("udev");
    let mut all: Vec<Vec<Pair>> = Vec::new();
    for f in &files {
        let rel = format!("udev/{f}");
        for (n, line) in rule_lines(&read(&rel)) {
            match parse_rule(&line) {
                Ok(p) => all.push(p),
                Err(e) => panic!("{rel}:{n}: {e}\n  {line}"),
            }
        }
    }

    // The real parser too, where it exists (`udevadm verify` is systemd >= 254; 252 lacks it).
    let has_verify = Command::new("udevadm")
        .args(["verify", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_verify {
        let out = Command::new("udevadm")
            .args(["verify", "--resolve-names=never"])
            .args(files.iter().map(|f| repo().join("udev").join(f)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "udevadm verify:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("note: no `udevadm verify` here (systemd < 254); structural check only");
    }

    let has = |rule: &[Pair], key: &str, op: &str, value: &str| {
        rule.iter()
            .any(|p| p.key == key && p.op == op && p.value == value)
    };
    for node in ["uinput", "uhid"] {
        let rule = all
            .iter()
            .find(|r| has(r, "KERNEL", "==", node))
            .unwrap_or_else(|| panic!("no rule for /dev/{node}"));
        assert!(
            has(rule, "OPTIONS", "+=", &format!("static_node={node}")),
            "{node}: static_node="
        );
        assert!(has(rule, "GROUP", "=", "input"), "{node}: GROUP=\"input\"");
        assert!(has(rule, "MODE", "=", "0660"), "{node}: MODE=\"0660\"");
        assert!(
            has(rule, "TAG", "+=", "uaccess"),
            "{node}: TAG+=\"uaccess\""
        );
    }
    let tags = all
        .iter()
        .filter(|r| {
            r.iter().any(|p| {
                p.key == "ENV" && p.attr.as_deref() == Some("PUNKTFUNK_VIRTUAL") && p.value == "1"
            })
        })
        .count();
    assert!(
        tags >= 2,
        "uinput and UHID virtual devices must be tagged PUNKTFUNK_VIRTUAL=1"
    );
    // uaccess must be tagged before 73-seat-late.rules applies it.
    for f in &files {
        let prio: u32 = f.split('-').next().unwrap().parse().unwrap_or(99);
        assert!(
            prio < 73,
            "{f}: uaccess tags must come before 73-seat-late.rules"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// image/
// ------------------------------------------------------------------------------------------------

#[test]
fn sysctl_raises_socket_buffers_to_32_mib() {
    let mut kv = BTreeMap::new();
    for line in read("image/usr/lib/sysctl.d/60-punktfunk.conf").lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("not key = value: {t}"));
        assert!(
            kv.insert(k.trim().to_string(), v.trim().to_string())
                .is_none(),
            "{k} set twice"
        );
    }
    assert_eq!(
        kv.get("net.core.rmem_max").map(String::as_str),
        Some("33554432")
    );
    assert_eq!(
        kv.get("net.core.wmem_max").map(String::as_str),
        Some("33554432")
    );
}

/// Value of `name="..."` inside one XML start tag.
fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let i = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[i..].split('"').next()
}

#[test]
fn firewalld_service_lists_exactly_our_ports() {
    let raw = read("image/usr/lib/firewalld/services/punktfunk.xml");
    // Drop comments (they must not contain "--", which XML forbids).
    let mut xml = String::new();
    let mut rest = raw.as_str();
    while let Some(i) = rest.find("<!--") {
        xml.push_str(&rest[..i]);
        let body = &rest[i + 4..];
        let end = body.find("-->").expect("unterminated XML comment");
        assert!(
            !body[..end].contains("--"),
            "'--' inside an XML comment is not well-formed"
        );
        rest = &body[end + 3..];
    }
    xml.push_str(rest);
    assert!(
        xml.contains("<service>") && xml.trim_end().ends_with("</service>"),
        "root element"
    );
    assert!(xml.contains("<short>punktfunk</short>"));

    let mut ports = Vec::new();
    for tag in xml.split('<').skip(1).filter(|t| t.starts_with("port ")) {
        let tag = tag.split('>').next().unwrap();
        let proto = xml_attr(tag, "protocol").expect("port without protocol");
        let port = xml_attr(tag, "port").expect("port without port");
        ports.push(format!("{port}/{proto}"));
    }
    ports.sort();
    let mut expected: Vec<String> = [
        "9777/udp",
        "47984/tcp",
        "47989/tcp",
        "48010/tcp",
        "47998/udp",
        "47999/udp",
        "48000/udp",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(ports, expected);
}

#[test]
fn preset_enables_the_target_and_modules_load() {
    let active = |rel: &str| -> Vec<String> {
        read(rel)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        active("image/usr/lib/systemd/user-preset/80-punktfunk.preset"),
        ["enable punktfunk.target"]
    );
    assert_eq!(
        active("image/usr/lib/modules-load.d/punktfunk.conf"),
        ["uinput", "uhid"]
    );
}

#[test]
fn kwin_desktop_file_grants_screencast_to_the_session_manager() {
    let d = parse_unit(&read(
        "image/usr/share/applications/punktfunk-session.desktop",
    ));
    let e = "Desktop Entry";
    assert_eq!(
        one(&d, e, "Exec").as_deref(),
        Some("/usr/bin/punktfunk-session")
    );
    assert_eq!(one(&d, e, "NoDisplay").as_deref(), Some("true"));
    assert_eq!(one(&d, e, "Type").as_deref(), Some("Application"));
    let ifaces = one(&d, e, "X-KDE-Wayland-Interfaces").expect("X-KDE-Wayland-Interfaces=");
    let ifaces: BTreeSet<&str> = ifaces.split(',').map(str::trim).collect();
    assert!(ifaces.contains("zkde_screencast_unstable_v1"), "{ifaces:?}");
    assert!(
        ifaces.contains("org_kde_plasma_window_management"),
        "{ifaces:?}"
    );
}
