//! The compositors behind one trait. A backend turns an [`OutputPlan`] (mode, directories,
//! socket name) into the processes of an output as data — argv and environment — plus the
//! files they need, the Wayland globals the compositor must advertise and how its screencast
//! is obtained. Nothing here starts a process; the manager's shell does, and these functions
//! are unit-tested as they are.

use std::fmt;
use std::path::{Path, PathBuf};

use punktfunk_proto::limits;

pub use punktfunk_common::backends::{BackendKind, UnknownBackend};

/// An output's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mode {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Refresh rate in millihertz.
    pub refresh_mhz: u32,
}

/// A mode the manager will not start an output at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid mode {width}x{height}@{refresh_mhz}mHz: {why}")]
pub struct InvalidMode {
    /// Requested width.
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested refresh (mHz).
    pub refresh_mhz: u32,
    /// What is wrong.
    pub why: String,
}

impl Mode {
    /// Checks the mode against punktfunk/1's bounds (`punktfunk_proto::limits`); sizes must be
    /// even (every encoder's 4:2:0 needs it).
    pub fn validate(&self) -> Result<(), InvalidMode> {
        let err = |why: String| InvalidMode {
            width: self.width,
            height: self.height,
            refresh_mhz: self.refresh_mhz,
            why,
        };
        if !(limits::MIN_WIDTH..=limits::MAX_WIDTH).contains(&self.width)
            || !(limits::MIN_HEIGHT..=limits::MAX_HEIGHT).contains(&self.height)
        {
            return Err(err(format!(
                "the size must lie within {}x{} ..= {}x{}",
                limits::MIN_WIDTH,
                limits::MIN_HEIGHT,
                limits::MAX_WIDTH,
                limits::MAX_HEIGHT
            )));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(err("width and height must be even".into()));
        }
        if !(limits::MIN_REFRESH_MHZ..=limits::MAX_REFRESH_MHZ).contains(&self.refresh_mhz) {
            return Err(err(format!(
                "the refresh must lie within {} ..= {} Hz",
                limits::MIN_REFRESH_MHZ / 1000,
                limits::MAX_REFRESH_MHZ / 1000
            )));
        }
        Ok(())
    }

    /// The refresh in Hz as compositors take it: `60`, `59.94`, `143.856`.
    pub fn hz_text(&self) -> String {
        let whole = self.refresh_mhz / 1000;
        let frac = self.refresh_mhz % 1000;
        if frac == 0 {
            return whole.to_string();
        }
        let s = format!("{whole}.{frac:03}");
        s.trim_end_matches('0').to_string()
    }

    /// The refresh rounded to whole Hz (for compositors that take integers).
    pub fn hz_rounded(&self) -> u32 {
        (self.refresh_mhz + 500) / 1000
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.hz_text())
    }
}

/// Everything a backend needs to describe one output's processes.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    /// The output's id (short hex).
    pub id: String,
    /// The mode.
    pub mode: Mode,
    /// The private `XDG_RUNTIME_DIR` (0700): Wayland, PipeWire and D-Bus sockets.
    pub runtime_dir: PathBuf,
    /// The per-output state directory: `home/` (HOME, XDG_CONFIG_HOME, ...), logs, files.
    pub state_dir: PathBuf,
    /// The compositor's Wayland socket name inside `runtime_dir`.
    pub wayland_display: String,
    /// The compositor executable (resolved on PATH).
    pub compositor_binary: PathBuf,
    /// `PATH` for every process of the output.
    pub path_env: String,
    /// The manager's own executable (the screencast keeper is a subcommand of it).
    pub self_exe: PathBuf,
}

impl OutputPlan {
    /// HOME of the output's processes.
    pub fn home(&self) -> PathBuf {
        self.state_dir.join("home")
    }

    /// XDG_CONFIG_HOME of the output's processes (the PipeWire drop-in lives here).
    pub fn config_home(&self) -> PathBuf {
        self.home().join(".config")
    }

    /// The private D-Bus session bus's socket. Every output has one: WirePlumber exits at
    /// start without a session bus (status 70), and mutter and KWin need it too.
    pub fn bus_socket(&self) -> PathBuf {
        self.runtime_dir.join("bus")
    }

    /// The private D-Bus session bus address.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }

    /// The private PipeWire daemon's socket.
    pub fn pipewire_socket(&self) -> PathBuf {
        self.runtime_dir.join("pipewire-0")
    }

    /// The sockets the compositor needs before it starts: the bus and PipeWire.
    pub fn support_sockets(&self) -> Vec<PathBuf> {
        vec![self.bus_socket(), self.pipewire_socket()]
    }

    /// The Wayland socket's path.
    pub fn wayland_socket(&self) -> PathBuf {
        self.runtime_dir.join(&self.wayland_display)
    }

    /// Where the screencast keeper writes the node id once it has one.
    pub fn node_file(&self) -> PathBuf {
        self.state_dir.join("screencast.node")
    }

    /// The log file of a process role.
    pub fn log_file(&self, role: Role) -> PathBuf {
        self.state_dir.join(format!("{}.log", role.name()))
    }

    /// The environment every process of the output shares (the manager clears its own).
    pub fn base_env(&self) -> Vec<(String, String)> {
        let home = self.home();
        let rt = self.runtime_dir.display().to_string();
        vec![
            ("PATH".into(), self.path_env.clone()),
            ("XDG_RUNTIME_DIR".into(), rt.clone()),
            ("PIPEWIRE_RUNTIME_DIR".into(), rt),
            ("HOME".into(), home.display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                self.config_home().display().to_string(),
            ),
            (
                "XDG_STATE_HOME".into(),
                home.join(".local/state").display().to_string(),
            ),
            (
                "XDG_DATA_HOME".into(),
                home.join(".local/share").display().to_string(),
            ),
            (
                "XDG_CACHE_HOME".into(),
                home.join(".cache").display().to_string(),
            ),
            ("LANG".into(), "C.UTF-8".into()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address()),
        ]
    }
}

/// What a process of an output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The private D-Bus session bus.
    Bus,
    /// The private PipeWire daemon.
    Pipewire,
    /// Its session manager.
    Wireplumber,
    /// The compositor.
    Compositor,
    /// The process that obtains and holds the screencast (a subcommand of the manager).
    Keeper,
    /// The app launched in the output.
    App,
    /// A one-shot command that changes a running output's mode (not recorded: it exits).
    Resize,
}

impl Role {
    /// Lowercase name (log file names, errors).
    pub fn name(self) -> &'static str {
        match self {
            Role::Bus => "dbus",
            Role::Pipewire => "pipewire",
            Role::Wireplumber => "wireplumber",
            Role::Compositor => "compositor",
            Role::Keeper => "screencast",
            Role::App => "app",
            Role::Resize => "resize",
        }
    }
}

/// One process of an output, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// What it is for.
    pub role: Role,
    /// argv (argv[0] is the program).
    pub argv: Vec<String>,
    /// The complete environment (the manager's own is not inherited).
    pub env: Vec<(String, String)>,
    /// Sockets that must exist before the process starts (the daemons it connects to at
    /// start and would exit without).
    pub wait_for: Vec<PathBuf>,
}

impl ProcessSpec {
    /// The value of `key` in the environment.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A file the backend needs before its compositor starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Where (inside the output's directories).
    pub path: PathBuf,
    /// What.
    pub contents: String,
}

/// How a backend's screencast is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screencast {
    /// mutter: `org.gnome.Mutter.ScreenCast` RecordMonitor of the virtual monitor, held by the
    /// keeper process (the session lives as long as the D-Bus connection that created it).
    MutterRecordMonitor,
    /// KWin: `zkde_screencast_unstable_v1.stream_output`, held by the keeper.
    KdeScreencast,
    /// wlroots: `zwlr_screencopy_manager_v1` frames published as a PipeWire source by the keeper.
    WlrScreencopy,
    /// gamescope publishes its own PipeWire node (`node.name` "gamescope").
    GamescopeNode,
    /// No headless capture path.
    None(&'static str),
}

/// A compositor backend.
pub trait Backend: Send + Sync {
    /// Which one.
    fn kind(&self) -> BackendKind;
    /// The Wayland socket name the compositor picks itself, when it does not take one
    /// (`None`: it takes [`OutputPlan::wayland_display`]).
    fn own_wayland_display(&self) -> Option<&'static str> {
        None
    }
    /// Files to write before the compositor starts.
    fn files(&self, _plan: &OutputPlan) -> Vec<FileSpec> {
        Vec::new()
    }
    /// The compositor's process.
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec;
    /// The Wayland globals the compositor must advertise before the output counts as ready.
    fn required_globals(&self) -> &'static [&'static str];
    /// How the screencast is obtained.
    fn screencast(&self) -> Screencast;
    /// The command that changes the running output's mode to `mode` in place, its app running
    /// on (`None`: the backend cannot; a new mode needs a new output). The screencast keeper
    /// is replaced afterwards: a node's buffers have one size.
    fn resize(&self, _plan: &OutputPlan, _mode: Mode) -> Option<ProcessSpec> {
        None
    }
    /// The screencast keeper's process (`None`: the compositor publishes the node itself).
    fn keeper(&self, plan: &OutputPlan) -> Option<ProcessSpec> {
        let mode = match self.screencast() {
            Screencast::MutterRecordMonitor | Screencast::KdeScreencast => self.kind().name(),
            Screencast::WlrScreencopy => "screencopy",
            Screencast::GamescopeNode | Screencast::None(_) => return None,
        };
        let mut env = plan.base_env();
        env.push(("WAYLAND_DISPLAY".into(), plan.wayland_display.clone()));
        env.push((
            "PUNKTFUNK_LOG".into(),
            std::env::var("PUNKTFUNK_LOG").unwrap_or_else(|_| "info".into()),
        ));
        Some(ProcessSpec {
            role: Role::Keeper,
            argv: vec![
                plan.self_exe.display().to_string(),
                KEEPER_SUBCOMMAND.into(),
                mode.into(),
                plan.node_file().display().to_string(),
                plan.mode.width.to_string(),
                plan.mode.height.to_string(),
                plan.mode.refresh_mhz.to_string(),
            ],
            env,
            wait_for: Vec::new(),
        })
    }
}

/// argv[1] that turns `punktfunk-session` into an output's screencast keeper.
pub const KEEPER_SUBCOMMAND: &str = "screencast-keeper";

/// The processes every output runs before its compositor: a private D-Bus session bus,
/// PipeWire and WirePlumber, all on the output's private runtime dir. Each waits for the
/// sockets of the ones before it: WirePlumber that finds no bus exits at once.
pub fn support_processes(plan: &OutputPlan) -> Vec<ProcessSpec> {
    vec![
        ProcessSpec {
            role: Role::Bus,
            argv: vec![
                "dbus-daemon".into(),
                "--session".into(),
                "--nofork".into(),
                "--nopidfile".into(),
                "--nosyslog".into(),
                format!("--address={}", plan.bus_address()),
            ],
            env: plan.base_env(),
            wait_for: Vec::new(),
        },
        ProcessSpec {
            role: Role::Pipewire,
            argv: vec!["pipewire".into()],
            env: plan.base_env(),
            wait_for: vec![plan.bus_socket()],
        },
        ProcessSpec {
            role: Role::Wireplumber,
            argv: vec!["wireplumber".into()],
            env: plan.base_env(),
            wait_for: plan.support_sockets(),
        },
    ]
}

/// The `node.name` of every output's sink. Each output has its own PipeWire, so one name
/// serves; callers are told it (`StartOutputReply.audio_sink`), they do not assume it.
pub const OUTPUT_SINK: &str = "punktfunk-output";

/// Files every output gets before its support daemons start: a PipeWire drop-in that creates
/// the output's sink (a null sink: a driver with no device, whose monitor media captures; the
/// only sink, so WirePlumber makes it every app's default) and serves PulseAudio clients on
/// `<runtime_dir>/pulse/native` (what pipewire-pulse would run: SDL, Proton and Steam speak
/// PulseAudio).
pub fn support_files(plan: &OutputPlan) -> Vec<FileSpec> {
    vec![FileSpec {
        path: plan
            .config_home()
            .join("pipewire/pipewire.conf.d/punktfunk-output.conf"),
        contents: format!(
            r#"# Written by punktfunk-session for output {id}.
context.objects = [
  {{ factory = adapter
    args = {{
      factory.name = support.null-audio-sink
      node.name = "{OUTPUT_SINK}"
      node.description = "punktfunk output {id}"
      media.class = Audio/Sink
      audio.position = [ FL FR ]
      audio.rate = {rate}
    }}
  }}
]
context.modules = [
  {{ name = libpipewire-module-protocol-pulse
    args = {{ server.address = [ "unix:native" ] }}
  }}
]
"#,
            id = plan.id,
            rate = limits::AUDIO_RATE
        ),
    }]
}

/// The app launched in an output: its argv with the output's environment on top of the extra
/// variables asked for (the output's own cannot be overridden).
pub fn app_process(plan: &OutputPlan, argv: &[String], extra: &[(String, String)]) -> ProcessSpec {
    let own = plan.base_env();
    let mut env: Vec<(String, String)> = extra
        .iter()
        .filter(|(k, _)| k != "WAYLAND_DISPLAY" && !own.iter().any(|(o, _)| o == k))
        .cloned()
        .collect();
    env.extend(own);
    env.push(("WAYLAND_DISPLAY".into(), plan.wayland_display.clone()));
    env.push(("XDG_SESSION_TYPE".into(), "wayland".into()));
    ProcessSpec {
        role: Role::App,
        argv: argv.to_vec(),
        env,
        wait_for: Vec::new(),
    }
}

fn arg(s: impl Into<String>) -> String {
    s.into()
}

/// gamescope: `--backend headless` at W×H@Hz. It exposes its own PipeWire node.
pub struct Gamescope;

impl Backend for Gamescope {
    fn kind(&self) -> BackendKind {
        BackendKind::Gamescope
    }
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec {
        let m = plan.mode;
        let (w, h, r) = (
            m.width.to_string(),
            m.height.to_string(),
            m.hz_rounded().to_string(),
        );
        ProcessSpec {
            role: Role::Compositor,
            argv: vec![
                plan.compositor_binary.display().to_string(),
                arg("--backend"),
                arg("headless"),
                // Output and nested (game) size both at the client's mode.
                arg("-W"),
                w.clone(),
                arg("-H"),
                h.clone(),
                arg("-w"),
                w,
                arg("-h"),
                h,
                arg("-r"),
                r,
                arg("--expose-wayland"),
            ],
            env: plan.base_env(),
            wait_for: plan.support_sockets(),
        }
    }
    fn required_globals(&self) -> &'static [&'static str] {
        &["wl_compositor", "wl_shm"]
    }
    fn screencast(&self) -> Screencast {
        Screencast::GamescopeNode
    }
}

/// GNOME mutter: `--headless` with one `--virtual-monitor` at the mode (the only monitor, so
/// every window opens on it), recorded with `RecordMonitor`.
pub struct Mutter;

/// The connector mutter gives its first `--virtual-monitor`.
pub const MUTTER_VIRTUAL_CONNECTOR: &str = "Meta-0";

impl Backend for Mutter {
    fn kind(&self) -> BackendKind {
        BackendKind::Mutter
    }
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec {
        ProcessSpec {
            role: Role::Compositor,
            argv: vec![
                plan.compositor_binary.display().to_string(),
                arg("--headless"),
                arg("--wayland"),
                arg("--no-x11"),
                format!("--wayland-display={}", plan.wayland_display),
                arg("--virtual-monitor"),
                plan.mode.to_string(),
            ],
            env: plan.base_env(),
            wait_for: plan.support_sockets(),
        }
    }
    fn required_globals(&self) -> &'static [&'static str] {
        &["wl_compositor", "wl_shm", "xdg_wm_base"]
    }
    fn screencast(&self) -> Screencast {
        Screencast::MutterRecordMonitor
    }
}

/// KWin: `kwin_wayland --virtual` at the size; `zkde_screencast_unstable_v1` is offered only
/// to executables named by a `.desktop` file with `X-KDE-Wayland-Interfaces`, which the output
/// gets in its own data dir (naming the manager's executable, which the keeper is).
pub struct Kwin;

impl Backend for Kwin {
    fn kind(&self) -> BackendKind {
        BackendKind::Kwin
    }
    fn files(&self, plan: &OutputPlan) -> Vec<FileSpec> {
        vec![FileSpec {
            path: kwin_data_dir(plan).join("applications/punktfunk-session.desktop"),
            contents: format!(
                "[Desktop Entry]\nType=Application\nName=punktfunk session manager\n\
                 Exec={}\nNoDisplay=true\n\
                 X-KDE-Wayland-Interfaces=zkde_screencast_unstable_v1\n",
                plan.self_exe.display()
            ),
        }]
    }
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec {
        let mut env = plan.base_env();
        let system = std::env::var("XDG_DATA_DIRS")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/usr/local/share:/usr/share".into());
        env.push((
            "XDG_DATA_DIRS".into(),
            format!("{}:{system}", kwin_data_dir(plan).display()),
        ));
        env.push(("KWIN_COMPOSE".into(), "Q".into()));
        ProcessSpec {
            role: Role::Compositor,
            argv: vec![
                plan.compositor_binary.display().to_string(),
                arg("--virtual"),
                arg("--no-lockscreen"),
                arg("--no-global-shortcuts"),
                arg("--no-kactivities"),
                arg("--socket"),
                plan.wayland_display.clone(),
                arg("--width"),
                plan.mode.width.to_string(),
                arg("--height"),
                plan.mode.height.to_string(),
            ],
            env,
            wait_for: plan.support_sockets(),
        }
    }
    fn required_globals(&self) -> &'static [&'static str] {
        &[
            "wl_compositor",
            "wl_shm",
            "wl_output",
            "zkde_screencast_unstable_v1",
        ]
    }
    fn screencast(&self) -> Screencast {
        Screencast::KdeScreencast
    }
}

fn kwin_data_dir(plan: &OutputPlan) -> PathBuf {
    plan.state_dir.join("share")
}

/// sway: the wlroots headless backend with one output at the mode (pixman renderer: no GPU).
pub struct Sway;

/// The name wlroots gives the first headless output.
pub const SWAY_HEADLESS_OUTPUT: &str = "HEADLESS-1";

impl Sway {
    fn config_path(plan: &OutputPlan) -> PathBuf {
        plan.state_dir.join("sway.conf")
    }

    /// sway's IPC socket (`SWAYSOCK`), which `swaymsg` changes the output's mode through.
    pub fn ipc_socket(plan: &OutputPlan) -> PathBuf {
        plan.runtime_dir.join("sway-ipc.sock")
    }
}

/// sway (1.7) takes no socket name: it binds the first free of `wayland-1` ..= `wayland-32`
/// (never `wayland-0`), which in the output's private runtime dir is always the first.
pub const SWAY_WAYLAND_DISPLAY: &str = "wayland-1";

impl Backend for Sway {
    fn kind(&self) -> BackendKind {
        BackendKind::Sway
    }
    fn own_wayland_display(&self) -> Option<&'static str> {
        Some(SWAY_WAYLAND_DISPLAY)
    }
    fn files(&self, plan: &OutputPlan) -> Vec<FileSpec> {
        vec![FileSpec {
            path: Self::config_path(plan),
            contents: format!(
                "output {SWAY_HEADLESS_OUTPUT} resolution {}x{}@{}Hz position 0 0\n\
                 xwayland disable\ndefault_border none\nfocus_follows_mouse no\n",
                plan.mode.width,
                plan.mode.height,
                plan.mode.hz_text()
            ),
        }]
    }
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec {
        let mut env = plan.base_env();
        env.extend([
            // sway takes its IPC socket's path from here when nothing is there yet.
            (
                "SWAYSOCK".into(),
                Self::ipc_socket(plan).display().to_string(),
            ),
            ("WLR_BACKENDS".into(), "headless".into()),
            ("WLR_LIBINPUT_NO_DEVICES".into(), "1".into()),
            ("WLR_RENDERER".into(), "pixman".into()),
            ("WLR_HEADLESS_OUTPUTS".into(), "1".into()),
        ]);
        ProcessSpec {
            role: Role::Compositor,
            argv: vec![
                plan.compositor_binary.display().to_string(),
                arg("-c"),
                Self::config_path(plan).display().to_string(),
            ],
            env,
            wait_for: plan.support_sockets(),
        }
    }
    fn required_globals(&self) -> &'static [&'static str] {
        &[
            "wl_compositor",
            "wl_shm",
            "xdg_wm_base",
            "zwlr_screencopy_manager_v1",
        ]
    }
    fn screencast(&self) -> Screencast {
        Screencast::WlrScreencopy
    }
    fn resize(&self, plan: &OutputPlan, mode: Mode) -> Option<ProcessSpec> {
        Some(ProcessSpec {
            role: Role::Resize,
            argv: vec![
                arg("swaymsg"),
                arg("-s"),
                Self::ipc_socket(plan).display().to_string(),
                arg("output"),
                arg(SWAY_HEADLESS_OUTPUT),
                arg("mode"),
                format!("{}x{}@{}Hz", mode.width, mode.height, mode.hz_text()),
            ],
            env: plan.base_env(),
            wait_for: vec![Self::ipc_socket(plan)],
        })
    }
}

/// weston: no headless capture path, so outputs are refused.
pub struct Weston;

impl Backend for Weston {
    fn kind(&self) -> BackendKind {
        BackendKind::Weston
    }
    fn compositor(&self, plan: &OutputPlan) -> ProcessSpec {
        ProcessSpec {
            role: Role::Compositor,
            argv: vec![
                plan.compositor_binary.display().to_string(),
                arg("--backend=headless-backend.so"),
                format!("--socket={}", plan.wayland_display),
                format!("--width={}", plan.mode.width),
                format!("--height={}", plan.mode.height),
                arg("--idle-time=0"),
            ],
            env: plan.base_env(),
            wait_for: plan.support_sockets(),
        }
    }
    fn required_globals(&self) -> &'static [&'static str] {
        &["wl_compositor", "wl_shm"]
    }
    fn screencast(&self) -> Screencast {
        Screencast::None(
            "weston has no headless capture path (no screencast protocol, no PipeWire stream): \
             use mutter, sway or kwin",
        )
    }
}

/// The backend object of `kind`.
pub fn backend(kind: BackendKind) -> &'static dyn Backend {
    match kind {
        BackendKind::Gamescope => &Gamescope,
        BackendKind::Mutter => &Mutter,
        BackendKind::Kwin => &Kwin,
        BackendKind::Sway => &Sway,
        BackendKind::Weston => &Weston,
    }
}

/// Finds `program` on `path` (a `PATH` value): the first executable regular file.
pub fn find_on_path(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = Path::new(program);
        return p.is_file().then(|| p.to_path_buf());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let p = Path::new(dir).join(program);
        let meta = std::fs::metadata(&p).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode) -> OutputPlan {
        OutputPlan {
            id: "0a1b2c3d".into(),
            mode,
            runtime_dir: "/run/user/1000/pf-0a1b2c3d".into(),
            state_dir: "/run/user/1000/punktfunk/outputs/0a1b2c3d".into(),
            wayland_display: "wayland-pf-0a1b2c3d".into(),
            compositor_binary: "/usr/bin/compositor".into(),
            path_env: "/usr/bin:/bin".into(),
            self_exe: "/usr/bin/punktfunk-session".into(),
        }
    }

    const M720: Mode = Mode {
        width: 1280,
        height: 720,
        refresh_mhz: 60_000,
    };

    #[test]
    fn refresh_as_text() {
        let m = |r| Mode {
            refresh_mhz: r,
            ..M720
        };
        assert_eq!(m(60_000).hz_text(), "60");
        assert_eq!(m(59_940).hz_text(), "59.94");
        assert_eq!(m(143_856).hz_text(), "143.856");
        assert_eq!(m(59_940).hz_rounded(), 60);
        assert_eq!(M720.to_string(), "1280x720@60");
    }

    #[test]
    fn modes_outside_the_protocol_bounds_are_refused() {
        assert!(M720.validate().is_ok());
        for bad in [
            Mode {
                width: 1281,
                ..M720
            },
            Mode { height: 0, ..M720 },
            Mode {
                width: 9000,
                ..M720
            },
            Mode {
                refresh_mhz: 0,
                ..M720
            },
            Mode {
                refresh_mhz: 600_000,
                ..M720
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let e = Mode {
            width: 1281,
            ..M720
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("even"), "{e}");
    }

    #[test]
    fn backend_names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>().unwrap(), k);
            assert_eq!(backend(k).kind(), k);
        }
        assert_eq!(
            "Mutter".parse::<BackendKind>().unwrap(),
            BackendKind::Mutter
        );
        let e = "xorg".parse::<BackendKind>().unwrap_err();
        assert!(
            e.to_string().contains("gamescope, mutter, kwin or sway"),
            "{e}"
        );
    }

    #[test]
    fn gamescope_command_line() {
        let m = Mode {
            width: 2560,
            height: 1440,
            refresh_mhz: 143_856,
        };
        let p = Gamescope.compositor(&plan(m));
        assert_eq!(
            p.argv,
            [
                "/usr/bin/compositor",
                "--backend",
                "headless",
                "-W",
                "2560",
                "-H",
                "1440",
                "-w",
                "2560",
                "-h",
                "1440",
                "-r",
                "144",
                "--expose-wayland"
            ]
        );
        assert_eq!(
            p.env_value("XDG_RUNTIME_DIR"),
            Some("/run/user/1000/pf-0a1b2c3d")
        );
        assert_eq!(Gamescope.screencast(), Screencast::GamescopeNode);
        assert!(Gamescope.keeper(&plan(m)).is_none());
    }

    #[test]
    fn every_output_gets_a_sink_in_its_own_pipewire_config() {
        let pl = plan(M720);
        let files = support_files(&pl);
        assert_eq!(files.len(), 1);
        let f = &files[0];
        // Where the output's PipeWire reads drop-ins: its own XDG_CONFIG_HOME.
        let config_home = support_processes(&pl)[1]
            .env_value("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .expect("XDG_CONFIG_HOME");
        assert_eq!(
            f.path,
            config_home.join("pipewire/pipewire.conf.d/punktfunk-output.conf")
        );
        assert!(
            f.contents
                .contains("factory.name = support.null-audio-sink")
        );
        assert!(
            f.contents
                .contains(&format!("node.name = \"{OUTPUT_SINK}\""))
        );
        assert!(f.contents.contains("media.class = Audio/Sink"));
        assert!(f.contents.contains("libpipewire-module-protocol-pulse"));
        // Balanced braces and brackets: one stray one and PipeWire refuses to start.
        for (open, close) in [('{', '}'), ('[', ']')] {
            assert_eq!(
                f.contents.matches(open).count(),
                f.contents.matches(close).count()
            );
        }
    }

    #[test]
    fn mutter_command_line_and_bus() {
        let pl = plan(Mode {
            refresh_mhz: 59_940,
            ..M720
        });
        let p = Mutter.compositor(&pl);
        assert_eq!(
            p.argv,
            [
                "/usr/bin/compositor",
                "--headless",
                "--wayland",
                "--no-x11",
                "--wayland-display=wayland-pf-0a1b2c3d",
                "--virtual-monitor",
                "1280x720@59.94"
            ]
        );
        assert_eq!(
            p.env_value("DBUS_SESSION_BUS_ADDRESS"),
            Some("unix:path=/run/user/1000/pf-0a1b2c3d/bus")
        );
        assert_eq!(
            p.env_value("PIPEWIRE_RUNTIME_DIR"),
            p.env_value("XDG_RUNTIME_DIR")
        );
        assert_eq!(
            p.env_value("HOME"),
            Some("/run/user/1000/punktfunk/outputs/0a1b2c3d/home")
        );
        let support = support_processes(&pl);
        let roles: Vec<Role> = support.iter().map(|s| s.role).collect();
        assert_eq!(roles, [Role::Bus, Role::Pipewire, Role::Wireplumber]);
        // Each waits for the sockets of the ones before it (WirePlumber exits without a bus).
        assert!(support[0].wait_for.is_empty());
        assert_eq!(support[1].wait_for, [pl.bus_socket()]);
        assert_eq!(
            support[2].wait_for,
            [
                PathBuf::from("/run/user/1000/pf-0a1b2c3d/bus"),
                PathBuf::from("/run/user/1000/pf-0a1b2c3d/pipewire-0")
            ]
        );
        assert!(
            support[0]
                .argv
                .contains(&"--address=unix:path=/run/user/1000/pf-0a1b2c3d/bus".to_string())
        );
        let keeper = Mutter.keeper(&pl).unwrap();
        assert_eq!(keeper.argv[1], KEEPER_SUBCOMMAND);
        assert_eq!(keeper.argv[2], "mutter");
        assert_eq!(
            keeper.argv[3],
            "/run/user/1000/punktfunk/outputs/0a1b2c3d/screencast.node"
        );
    }

    #[test]
    fn sway_config_and_environment() {
        let pl = plan(M720);
        let files = Sway.files(&pl);
        assert_eq!(files.len(), 1);
        assert!(
            files[0]
                .contents
                .starts_with("output HEADLESS-1 resolution 1280x720@60Hz")
        );
        let p = Sway.compositor(&pl);
        assert_eq!(p.env_value("WLR_BACKENDS"), Some("headless"));
        assert_eq!(p.env_value("WLR_RENDERER"), Some("pixman"));
        assert_eq!(p.env_value("WAYLAND_DISPLAY"), None);
        assert_eq!(Sway.own_wayland_display(), Some("wayland-1"));
        assert_eq!(p.wait_for, pl.support_sockets());
        assert!(
            Sway.required_globals()
                .contains(&"zwlr_screencopy_manager_v1")
        );
        let keeper = Sway.keeper(&pl).unwrap();
        assert_eq!(keeper.argv[2], "screencopy");
    }

    #[test]
    fn only_sway_resizes_in_place_through_its_own_ipc_socket() {
        let pl = plan(M720);
        let to = Mode {
            width: 800,
            height: 600,
            refresh_mhz: 59_940,
        };
        let r = Sway.resize(&pl, to).expect("sway resizes in place");
        let sock = "/run/user/1000/pf-0a1b2c3d/sway-ipc.sock";
        assert_eq!(
            r.argv,
            [
                "swaymsg",
                "-s",
                sock,
                "output",
                "HEADLESS-1",
                "mode",
                "800x600@59.94Hz"
            ]
        );
        // The socket swaymsg talks to is the one sway was told to create.
        assert_eq!(Sway.compositor(&pl).env_value("SWAYSOCK"), Some(sock));
        assert_eq!(r.wait_for, [PathBuf::from(sock)]);
        // mutter's `--virtual-monitor` (as we start it), KWin's `--virtual` output and
        // gamescope's headless output are not resized at run time: a new mode is a new output.
        for b in [&Mutter as &dyn Backend, &Kwin, &Gamescope, &Weston] {
            assert!(b.resize(&pl, to).is_none(), "{}", b.kind());
        }
    }

    #[test]
    fn kwin_gets_its_grant_on_its_data_dirs() {
        let pl = plan(M720);
        let files = Kwin.files(&pl);
        assert!(
            files[0]
                .contents
                .contains("Exec=/usr/bin/punktfunk-session\n")
        );
        assert!(
            files[0]
                .contents
                .contains("X-KDE-Wayland-Interfaces=zkde_screencast_unstable_v1")
        );
        let p = Kwin.compositor(&pl);
        let dirs = p.env_value("XDG_DATA_DIRS").unwrap();
        let grant_root = files[0].path.parent().unwrap().parent().unwrap();
        assert!(
            dirs.starts_with(&format!("{}:", grant_root.display())),
            "{dirs}"
        );
        assert!(p.argv.windows(2).any(|w| w == ["--width", "1280"]));
        assert!(
            p.argv
                .windows(2)
                .any(|w| w == ["--socket", "wayland-pf-0a1b2c3d"])
        );
    }

    #[test]
    fn app_environment_cannot_override_the_outputs() {
        let pl = plan(M720);
        let extra = vec![
            ("WAYLAND_DISPLAY".to_string(), "wayland-0".to_string()),
            ("XDG_RUNTIME_DIR".to_string(), "/tmp".to_string()),
            ("SDL_VIDEODRIVER".to_string(), "wayland".to_string()),
        ];
        let app = app_process(&pl, &["punktfunk-testpattern".into()], &extra);
        assert_eq!(
            app.env_value("WAYLAND_DISPLAY"),
            Some("wayland-pf-0a1b2c3d")
        );
        assert_eq!(
            app.env_value("XDG_RUNTIME_DIR"),
            Some("/run/user/1000/pf-0a1b2c3d")
        );
        assert_eq!(app.env_value("SDL_VIDEODRIVER"), Some("wayland"));
        assert_eq!(
            app.env
                .iter()
                .filter(|(k, _)| k == "XDG_RUNTIME_DIR")
                .count(),
            1
        );
        assert!(app.env_value("DBUS_SESSION_BUS_ADDRESS").is_some());
    }

    #[test]
    fn weston_is_refused_with_a_reason() {
        let Screencast::None(why) = Weston.screencast() else {
            panic!("weston has no capture path")
        };
        assert!(why.contains("no headless capture path"));
    }
}
