//! A User-Mode-Linux guest for the tests that need a kernel our machines do not have: uinput,
//! uhid and hid-playstation, the `fq`/`netem`/`etf` qdiscs, systemd as PID 1.
//!
//! The guest kernel is an ordinary Linux process (`linux`, ARCH=um). It mounts a host directory
//! (by default the host's `/`) read-only over hostfs as its root, so every host binary, library
//! and test binary is there at the same path, and boots in well under a second.
//!
//! # API (stable; other tests build on it)
//!
//! ```no_run
//! use punktfunk_tests::uml::Guest;
//!
//! // Boots the cached kernel (building it first if needed, ~10 min once per machine), runs the
//! // script under `bash -eo pipefail` as root inside, powers off and reports.
//! let out = Guest::new().mem("512M").run_script("cat /proc/version; test -e /dev/uinput").unwrap();
//! out.assert_success(); // panics with the guest's output and console when the script failed
//! assert!(out.stdout.contains("Linux version"));
//!
//! // A workspace binary (target/<profile>/NAME, as `punktfunk_tests::bin` finds it), or any
//! // host path, with arguments. In an integration test of this crate, prefer
//! // `run_program(env!("CARGO_BIN_EXE_<name>"), ...)`: cargo then builds the binary first.
//! Guest::new().run_bin("pf-uml-uinput", &["key-roundtrip"]).unwrap().assert_success();
//! Guest::new().run_program("/usr/bin/true", &[]).unwrap().assert_success();
//! ```
//!
//! - [`Kernel::ensure`] builds the kernel with `tests/uml/kernel.sh` or reuses the cached one
//!   (`/var/tmp/punktfunk-cache/uml/<key>/linux`, `$PUNKTFUNK_CACHE` overrides the root; the
//!   key hashes the linux-source package version, `tests/uml/kernel.config-options`,
//!   `tests/uml/host-fp-size.patch` and `kernel.sh`). Concurrent callers, in one process or
//!   several, serialise on a file lock, so one builds and the others wait and reuse.
//! - [`Guest`] is a builder: [`Guest::mem`], [`Guest::timeout`] (default 300 s; the whole
//!   process tree of `linux` is killed when it expires, and on every return), [`Guest::env`],
//!   [`Guest::kernel_arg`], and for a guest of another root file system [`Guest::root`] and
//!   [`Guest::init`].
//! - [`GuestOutput`]: the script's exit `status`, its `stdout` (stdout and stderr interleaved),
//!   the kernel `console`, and the `share` directory the script wrote into.
//!
//! # What the guest looks like
//!
//! The harness's init (PID 1, `/bin/sh`) mounts proc, sysfs, devtmpfs on `/dev` (with
//! `/dev/pts` and `/dev/shm`), tmpfs on `/tmp` and `/run`, cgroup2 on `/sys/fs/cgroup`, brings up
//! loopback, and mounts the run's **share directory** read-write over its own path (hostfs), so
//! it is the same path inside and out: `$PF_SHARE`. The script's working directory is `$PF_SHARE`;
//! anything it writes there is readable from the test afterwards (`GuestOutput::share`). Then it
//! runs the script, records its status, `sync`s and powers off (`poweroff -f`).
//!
//! The root is read-only: write to `/tmp`, `/run`, `/dev/shm` or `$PF_SHARE`. The guest runs as
//! root with all capabilities, has no network devices but `lo` (up), and its own kernel: sysctls,
//! qdiscs, nftables rules and namespaces there touch nothing on the host. A test that needs more
//! network builds it inside, e.g. two namespaces joined by veth:
//!
//! ```text
//! ip netns add a; ip netns add b
//! ip link add va netns a type veth peer vb netns b
//! ip -n a addr add 10.0.0.1/24 dev va; ip -n a link set va up; ip -n a link set lo up
//! ip -n b addr add 10.0.0.2/24 dev vb; ip -n b link set vb up; ip -n b link set lo up
//! ip netns exec a tc qdisc add dev va root netem delay 20ms 5ms loss 1%
//! ```
//!
//! (`ip netns add` needs a writable `/run/netns`: `/run` is tmpfs, so it works.)
//!
//! # Another root and init (the systemd appliance)
//!
//! [`Guest::root`] boots a different host directory as `/` (e.g. a debootstrapped Debian), and
//! [`Guest::init`] runs a given program of that root as PID 1 instead of the harness's script
//! (e.g. `/lib/systemd/systemd`); [`Guest::boot`] then waits until the guest powers off (or
//! the timeout). The share directory is still created, and its host path is on the kernel
//! command line as `pf.share=<path>`: the guest mounts it with
//! `mount -t hostfs -o <path> hostfs <mountpoint>` to hand files back (e.g. a unit that runs the
//! test, writes `status` and `output` there and powers off: [`GuestOutput`] reads those two).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

mod mconsole;

/// Root of the caches outside the clone; `$PUNKTFUNK_CACHE` overrides it.
pub const DEFAULT_CACHE_DIR: &str = "/var/tmp/punktfunk-cache";

/// How long a guest may run before the harness kills it, unless [`Guest::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a running guest's kernel may leave its mconsole unanswered before the harness
/// calls it wedged, unless [`Guest::wedged_after`] says otherwise. A working guest answers
/// within milliseconds even on a loaded machine (its stalls there last under a second); the
/// wedged ones seen in CI (mostly a kernel stack overrun, made rare by larger stacks) spun in
/// the host at 100 % CPU for minutes, answering nothing.
pub const DEFAULT_WEDGED_AFTER: Duration = Duration::from_secs(60);

/// How often the harness asks a running guest's kernel whether it is alive.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Guest memory unless [`Guest::mem`] says otherwise (UML's `mem=` syntax).
pub const DEFAULT_MEM: &str = "512M";

/// What can go wrong building or running the guest.
#[derive(Debug, thiserror::Error)]
pub enum UmlError {
    /// A file or process operation on the host failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `tests/uml/kernel.sh` failed; its progress and error output went to stderr.
    #[error("building the UML kernel failed ({status}); run tests/uml/kernel.sh to see why")]
    KernelBuild {
        /// The script's exit status.
        status: std::process::ExitStatus,
    },
    /// The guest ran past its timeout and was killed.
    #[error(
        "the UML guest did not power off within {timeout:?}; output so far:\n{output}\n\
         console (ends with the guest kernel's task dump when it still answered):\n{console}\n\
         {diagnosis}"
    )]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
        /// What the run had written to `output` in the share (empty: it never started).
        output: String,
        /// The guest's console so far.
        console: String,
        /// What the guest's host processes and its kernel were doing when it was killed.
        diagnosis: String,
    },
    /// The guest kernel stopped answering on its mconsole for [`Guest::wedged_after`] and was
    /// killed. In CI this was the kernel faulting in its own fault handler forever after a
    /// kernel stack overrun (made rare with larger stacks, see `kernel.config-options`; one
    /// wedge of the same look was seen since); the watchdog stays for whatever else wedges UML. A guest of the harness's init is booted
    /// once more; a guest of its own init (the systemd appliance, whose root keeps what a boot
    /// wrote) is not: its test is retried whole instead.
    #[error(
        "the UML guest's kernel stopped answering for {after:?} (wedged in the host) and was \
         killed; output so far:\n{output}\nconsole:\n{console}\n{diagnosis}"
    )]
    Wedged {
        /// How long it had not answered.
        after: Duration,
        /// What the run had written to `output` in the share.
        output: String,
        /// The guest's console so far.
        console: String,
        /// What the guest's host processes were doing.
        diagnosis: String,
    },
    /// The guest stopped without recording the script's exit status (kernel panic, init failed).
    #[error(
        "the UML guest stopped without recording an exit status; output:\n{output}\nconsole:\n{console}"
    )]
    NoStatus {
        /// What the script wrote before the guest stopped.
        output: String,
        /// The guest's console.
        console: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UmlError {
    let what = what.into();
    move |source| UmlError::Io { what, source }
}

/// The cache root: `$PUNKTFUNK_CACHE` or [`DEFAULT_CACHE_DIR`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PUNKTFUNK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

/// The UML guest kernel, built once per machine and input set.
#[derive(Debug, Clone)]
pub struct Kernel {
    path: PathBuf,
}

impl Kernel {
    /// Returns the cached kernel, building it first if the cache has none for the current
    /// inputs (~10 minutes on 2 cores; progress goes to stderr). Safe to call from many tests
    /// and processes at once: a file lock serialises the builds; within a process the answer is
    /// remembered.
    pub fn ensure() -> Result<Kernel, UmlError> {
        static KERNEL: OnceLock<Mutex<Option<Kernel>>> = OnceLock::new();
        let mut slot = KERNEL
            .get_or_init(|| Mutex::new(None))
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Self::build_locked()?;
        *slot = Some(k.clone());
        Ok(k)
    }

    fn build_locked() -> Result<Kernel, UmlError> {
        let dir = cache_dir().join("uml");
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(format!("locking {}", lock_path.display()))(e.into()))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("uml/kernel.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(io_err(format!("running {}", script.display())))?;
        // The lock goes with `lock` when it is dropped here.
        if !out.status.success() {
            return Err(UmlError::KernelBuild { status: out.status });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if !path.is_file() {
            return Err(UmlError::Io {
                what: format!("kernel.sh named {} as the kernel", path.display()),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        Ok(Kernel { path })
    }

    /// The stripped `linux` executable.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestOutput {
    /// The script's exit status (with a custom [`Guest::init`]: the number the guest wrote to
    /// `$share/status`).
    pub status: i32,
    /// The script's stdout and stderr, interleaved (a custom init's `$share/output`).
    pub stdout: String,
    /// The guest's console: kernel messages and anything PID 1 printed.
    pub console: String,
    /// From starting `linux` to its exit.
    pub elapsed: Duration,
    /// The share directory, readable until this value is dropped.
    pub share: PathBuf,
    _workdir: tempfile::TempDir,
}

impl GuestOutput {
    /// Whether the script exited with 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics with the script's output and the console unless the script exited with 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success(),
            "the guest script exited with {}\n--- output ---\n{}\n--- console ---\n{}",
            self.status,
            self.stdout,
            self.console
        );
        self
    }
}

/// A guest to boot: a builder; each `run_*` boots a fresh guest.
#[derive(Debug, Clone)]
pub struct Guest {
    mem: String,
    timeout: Duration,
    wedged_after: Duration,
    root: PathBuf,
    init: Option<PathBuf>,
    env: Vec<(String, String)>,
    kernel_args: Vec<String>,
}

impl Default for Guest {
    fn default() -> Self {
        Self::new()
    }
}

impl Guest {
    /// A guest of the host's `/` with [`DEFAULT_MEM`] and [`DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Guest {
            mem: DEFAULT_MEM.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            wedged_after: DEFAULT_WEDGED_AFTER,
            root: PathBuf::from("/"),
            init: None,
            env: Vec::new(),
            kernel_args: Vec::new(),
        }
    }

    /// Guest memory, in UML's `mem=` syntax (`"512M"`, `"1G"`).
    pub fn mem(mut self, mem: &str) -> Self {
        self.mem = mem.to_owned();
        self
    }

    /// How long the guest may run, boot to power-off, before it is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the guest kernel may leave its mconsole unanswered before it is killed as
    /// wedged ([`UmlError::Wedged`]; default [`DEFAULT_WEDGED_AFTER`]).
    pub fn wedged_after(mut self, after: Duration) -> Self {
        self.wedged_after = after;
        self
    }

    /// The host directory the guest mounts read-only as `/` (default `/`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// A program of the root file system to run as PID 1 instead of the harness's init (e.g.
    /// `/lib/systemd/systemd`). Run such a guest with [`Guest::boot`].
    pub fn init(mut self, init: impl Into<PathBuf>) -> Self {
        self.init = Some(init.into());
        self
    }

    /// An environment variable for the script.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// An extra kernel command-line argument.
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_owned());
        self
    }

    /// Boots the guest, runs `script` with `bash -eo pipefail` as root in the share
    /// directory, and reports its exit status and output. A nonzero status is not an `Err`:
    /// check it (e.g. [`GuestOutput::assert_success`]). Errors mean the guest itself failed
    /// (kernel build, timeout, no status recorded).
    pub fn run_script(&self, script: &str) -> Result<GuestOutput, UmlError> {
        assert!(
            self.init.is_none(),
            "run_script uses the harness's init; a guest with its own init runs with boot()"
        );
        self.launch_retrying(Retry::PanicsAndWedges, || {
            let work = Workdir::new()?;
            work.write_exec("script.sh", script)?;
            work.write_exec("init", &self.init_script(&work.share))?;
            let init = work.dir.path().join("init");
            Ok((work, init))
        })
    }

    /// Launches a fresh guest from `prepare`, and once more (saying so on stderr, with what the
    /// first one showed) when the UML kernel itself failed in a way `retry` allows:
    /// - a panic while booting, before anything of the run was written (UML under a loaded
    ///   host occasionally dies with "Segfault with no mm" before init runs); a panic after the
    ///   run started is returned as it is;
    /// - with [`Retry::PanicsAndWedges`], a wedged kernel ([`UmlError::Wedged`]) at any point:
    ///   the harness's run starts from scratch in a fresh work directory each time.
    ///
    /// The second attempt's result is returned whatever it is.
    fn launch_retrying(
        &self,
        retry: Retry,
        prepare: impl Fn() -> Result<(Workdir, PathBuf), UmlError>,
    ) -> Result<GuestOutput, UmlError> {
        let (work, init) = prepare()?;
        let first = self.launch(work, &init);
        let why = match &first {
            Err(UmlError::NoStatus { output, console })
                if output.is_empty() && console.contains("Kernel panic") =>
            {
                format!(
                    "the guest kernel panicked while booting, before the run started. Console:\n{console}"
                )
            }
            Err(e @ UmlError::Wedged { .. }) if retry == Retry::PanicsAndWedges => e.to_string(),
            _ => return first,
        };
        eprintln!("punktfunk-tests uml: booting once more: {why}");
        let (work, init) = prepare()?;
        self.launch(work, &init)
    }

    /// Runs a host program (any path; the host's `/` is the guest's root) with arguments.
    pub fn run_program(
        &self,
        program: impl AsRef<Path>,
        args: &[&str],
    ) -> Result<GuestOutput, UmlError> {
        let mut line = format!("exec {}", shell_quote(&program.as_ref().to_string_lossy()));
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        self.run_script(&line)
    }

    /// Runs one of the workspace's binaries (found as [`crate::bin`] finds it) with arguments.
    pub fn run_bin(&self, name: &str, args: &[&str]) -> Result<GuestOutput, UmlError> {
        self.run_program(crate::bin(name), args)
    }

    /// Boots the guest with its own [`Guest::init`] and waits until it powers off. The result
    /// holds what the guest wrote to `status` and `output` in the share directory (see the
    /// module docs); a guest that wrote no `status` is an [`UmlError::NoStatus`].
    pub fn boot(&self) -> Result<GuestOutput, UmlError> {
        let init = self.init.clone().expect("boot() needs Guest::init(...)");
        self.launch_retrying(Retry::BootPanics, || Ok((Workdir::new()?, init.clone())))
    }

    /// The harness's init: mounts, loopback, the share, the script, its status, power-off.
    fn init_script(&self, share: &Path) -> String {
        let share = shell_quote(&share.to_string_lossy());
        let mut env = String::new();
        for (k, v) in &self.env {
            env.push_str(&format!("export {}={}\n", k, shell_quote(v)));
        }
        format!(
            r#"#!/bin/sh
# PID 1 of a punktfunk-tests UML guest (written by tests/src/uml.rs).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PF_SHARE={share}
fail() {{ echo "pf-uml-init: $*" >&2; sync; poweroff -f; exit 1; }}
mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail "mount devpts"
mount -t tmpfs tmpfs /dev/shm || fail "mount /dev/shm"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mount -t tmpfs -o mode=755 tmpfs /run || fail "mount /run"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
mount -t hostfs -o "$PF_SHARE" hostfs "$PF_SHARE" || fail "mount the share $PF_SHARE"
ip link set lo up || fail "loopback up"
{env}cd "$PF_SHARE"
/bin/bash -eo pipefail "$PF_SHARE/script.sh" >"$PF_SHARE/output" 2>&1 </dev/null
echo $? >"$PF_SHARE/status"
sync
poweroff -f
"#
        )
    }

    fn command_line(&self, init: &Path, share: &Path) -> Vec<String> {
        let mut args = vec![
            format!("mem={}", self.mem),
            "root=/dev/root".to_owned(),
            "rootfstype=hostfs".to_owned(),
            format!("rootflags={}", self.root.display()),
            "ro".to_owned(),
            format!("init={}", init.display()),
            "con0=null,fd:1".to_owned(),
            "con=null".to_owned(),
            "ssl=null".to_owned(),
            "quiet".to_owned(),
            format!("pf.share={}", share.display()),
        ];
        args.extend(self.kernel_args.iter().cloned());
        args
    }

    fn launch(&self, work: Workdir, init: &Path) -> Result<GuestOutput, UmlError> {
        let kernel = Kernel::ensure()?;
        let umldir = work.dir.path().join("uml");
        std::fs::create_dir(&umldir).map_err(io_err("creating the UML state directory"))?;
        let mut cmd = Command::new(kernel.path());
        cmd.args(self.command_line(init, &work.share))
            .arg(format!("uml_dir={}", umldir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the timeout and the clean-up kill the whole tree by it.
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe syscall (prctl PR_SET_PDEATHSIG): if the test process dies, the
        // guest's kernel process dies with it.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {}", kernel.path().display())))?;
        let mut guard = TreeGuard::new(child);
        let console = guard.collect_console();
        let end = guard.wait(started + self.timeout, &umldir, self.wedged_after);
        let elapsed = started.elapsed();
        let diagnosis = match end {
            End::Exited => String::new(),
            End::TimedOut | End::Wedged => guard.diagnose(&umldir),
        };
        guard.kill_tree();
        let console = console.join().unwrap_or_default();
        let read = |name: &str| std::fs::read_to_string(work.share.join(name)).ok();
        let output = || read("output").unwrap_or_default();
        match end {
            End::Exited => {}
            End::TimedOut => {
                return Err(UmlError::Timeout {
                    timeout: self.timeout,
                    output: output(),
                    console,
                    diagnosis,
                });
            }
            End::Wedged => {
                return Err(UmlError::Wedged {
                    after: self.wedged_after,
                    output: output(),
                    console,
                    diagnosis,
                });
            }
        }
        let stdout = read("output").unwrap_or_default();
        let Some(status) = read("status").and_then(|s| s.trim().parse::<i32>().ok()) else {
            return Err(UmlError::NoStatus {
                output: stdout,
                console,
            });
        };
        Ok(GuestOutput {
            status,
            stdout,
            console,
            elapsed,
            share: work.share,
            _workdir: work.dir,
        })
    }
}

/// Which failures of the UML kernel [`Guest::launch_retrying`] boots a guest once more for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Panics while booting only: the guest's root may keep what a boot wrote.
    BootPanics,
    /// Panics while booting and wedged kernels: the harness's run, which starts from scratch.
    PanicsAndWedges,
}

/// A run's host directory: `init`, `script.sh`, `uml/` (UML's state) and `share/`. It lives in
/// the cache directory, not in `/tmp`, because the guest mounts its own tmpfs on `/tmp`.
struct Workdir {
    dir: tempfile::TempDir,
    share: PathBuf,
}

impl Workdir {
    fn new() -> Result<Self, UmlError> {
        let base = cache_dir().join("uml-runs");
        std::fs::create_dir_all(&base).map_err(io_err(format!("creating {}", base.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("guest-")
            .tempdir_in(&base)
            .map_err(io_err("creating the guest's work directory"))?;
        let share = dir.path().join("share");
        std::fs::create_dir(&share).map_err(io_err("creating the share directory"))?;
        Ok(Workdir { dir, share })
    }

    fn write_exec(&self, name: &str, text: &str) -> Result<(), UmlError> {
        let p = if name == "script.sh" {
            self.share.join(name)
        } else {
            self.dir.path().join(name)
        };
        std::fs::write(&p, text).map_err(io_err(format!("writing {}", p.display())))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", p.display())))
    }
}

/// How a guest's run ended, as the harness saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `linux` exited (powered off, or died).
    Exited,
    /// The guest's timeout passed first.
    TimedOut,
    /// The guest kernel stopped answering on its mconsole.
    Wedged,
}

/// The `linux` process and everything it spawned (UML runs each guest address space and its
/// helpers as host processes). Killed on drop, so a panicking test leaves nothing behind.
struct TreeGuard {
    child: Child,
    pgid: Pid,
}

impl TreeGuard {
    fn new(child: Child) -> Self {
        let pgid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
        TreeGuard { child, pgid }
    }

    /// Reads stdout and stderr (the console is stdout; UML's own messages are stderr) until
    /// every process holding them is gone.
    fn collect_console(&mut self) -> std::thread::JoinHandle<String> {
        let mut out = self.child.stdout.take().expect("stdout is piped");
        let mut err = self.child.stderr.take().expect("stderr is piped");
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf.extend(err_reader.join().unwrap_or_default());
            String::from_utf8_lossy(&buf).replace('\r', "")
        })
    }

    /// Waits for `linux` to exit, until `deadline`, asking its kernel every [`PROBE_EVERY`]
    /// whether it is alive (mconsole `version`, answered in the guest's interrupt context): no
    /// answer for `wedged_after` (counted from the start while the socket does not exist yet)
    /// ends the wait as [`End::Wedged`].
    fn wait(&mut self, deadline: Instant, uml_dir: &Path, wedged_after: Duration) -> End {
        let mut answered = Instant::now();
        let mut probe = Instant::now() + PROBE_EVERY;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return End::Exited;
            }
            let now = Instant::now();
            if now >= deadline {
                return End::TimedOut;
            }
            if now >= probe {
                let alive = mconsole::socket_in(uml_dir).is_some_and(|socket| {
                    mconsole::command(&socket, uml_dir, "version", Duration::from_secs(2)).is_some()
                });
                let now = Instant::now();
                if alive {
                    answered = now;
                } else if now.duration_since(answered) >= wedged_after {
                    // It may have powered off while we asked.
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return End::Exited;
                    }
                    return End::Wedged;
                }
                probe = now + PROBE_EVERY.min(wedged_after);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a guest that ran past its timeout was doing: each host process of the tree (UML
    /// runs the guest kernel and each guest address space as one) with its state and the kernel
    /// function it waits in; then whether the guest kernel still answers on its mconsole, and if
    /// it does, its blocked tasks with their stacks (`sysrq 9` lets every message through to the
    /// console, `sysrq w` dumps the tasks stuck in uninterruptible sleep there).
    fn diagnose(&mut self, uml_dir: &Path) -> String {
        let mut text = String::from("host processes of the guest (pid state wchan command):\n");
        for p in tree_members(self.pgid) {
            let proc = PathBuf::from(format!("/proc/{}", p.as_raw_nonzero()));
            let stat = proc_stat(p.as_raw_nonzero().get()).unwrap_or_default();
            let state = stat.first().map_or("?", String::as_str);
            let wchan = std::fs::read_to_string(proc.join("wchan")).unwrap_or_default();
            let cmd = std::fs::read_to_string(proc.join("cmdline")).unwrap_or_default();
            let cmd: String = cmd.replace('\0', " ").chars().take(60).collect();
            text.push_str(&format!("  {} {state} {wchan} {cmd}\n", p.as_raw_nonzero()));
        }
        let Some(socket) = mconsole::socket_in(uml_dir) else {
            text.push_str("the guest kernel has no mconsole socket\n");
            return text;
        };
        let wait = Duration::from_secs(2);
        let answered = mconsole::command(&socket, uml_dir, "sysrq 9", wait).is_some();
        if answered {
            // The dump goes to the console, where the console reader collects it. Blocked
            // (D-state) tasks only: `sysrq t` walks every kernel thread's stack, and 6.1's UML
            // stack walker faults on some of them and panics the guest part-way.
            let _ = mconsole::command(&socket, uml_dir, "sysrq w", wait);
        } else {
            text.push_str("the guest kernel did not answer on its mconsole (wedged in the host)\n");
        }
        text
    }

    /// SIGKILLs the process group and every descendant of `linux`, until none is left.
    fn kill_tree(&mut self) {
        for _ in 0..50 {
            let procs = tree_members(self.pgid);
            let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
            for p in &procs {
                let _ = rustix::process::kill_process(*p, Signal::KILL);
            }
            let _ = self.child.try_wait();
            if procs.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// Live processes in process group `pgid` or descended from its leader (found in `/proc`).
fn tree_members(pgid: Pid) -> Vec<Pid> {
    let mut table = Vec::new(); // (pid, ppid, pgrp)
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(f) = proc_stat(pid) else {
            continue;
        };
        if f.len() < 3 || f[0] == "Z" {
            continue;
        }
        let (Ok(ppid), Ok(pgrp)) = (f[1].parse::<i32>(), f[2].parse::<i32>()) else {
            continue;
        };
        table.push((pid, ppid, pgrp));
    }
    let leader = pgid.as_raw_nonzero().get();
    let mut members: Vec<i32> = table
        .iter()
        .filter(|t| t.2 == leader)
        .map(|t| t.0)
        .collect();
    if !members.contains(&leader) && table.iter().any(|t| t.0 == leader) {
        members.push(leader);
    }
    // Descendants that left the group (a helper that called setsid or setpgid).
    let mut grown = true;
    while grown {
        grown = false;
        for t in &table {
            if members.contains(&t.1) && !members.contains(&t.0) {
                members.push(t.0);
                grown = true;
            }
        }
    }
    members.into_iter().filter_map(Pid::from_raw).collect()
}

/// The fields of `/proc/<pid>/stat` after the command name in parentheses: state, ppid, pgrp,
/// and so on (`None`: no such process).
pub fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One scenario of a guest program: its steps, or what failed.
pub type Scenario = fn() -> anyhow::Result<()>;

/// The `main` of a program the guest runs (`pf-uml-*`): runs the scenario named by the first
/// argument; a failed scenario prints its error chain and exits 1, an unknown name prints the
/// usage and exits 2 (the test then sees the guest's exit status and output).
pub fn scenario_main(program: &str, scenarios: &[(&str, Scenario)]) -> ! {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some((_, run)) = scenarios.iter().find(|(name, _)| *name == arg) else {
        let names: Vec<&str> = scenarios.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: {program} {}", names.join("|"));
        std::process::exit(2);
    };
    match run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{program} {arg}: {e:#}");
            std::process::exit(1);
        }
    }
}
