//! The manager's shell: it starts an output's processes as the backend describes them, drives
//! the readiness state machine with real checks, hands out the screencast, keeps the journal,
//! re-adopts outputs after a restart, watches them, and stops them leaving nothing behind.
//!
//! Every output runs in its own process group (and so outlives the manager: a manager that is
//! killed leaves its outputs running, and the next one adopts them from the journal). Locks
//! are `std::sync::Mutex`, never held across an `.await` or a blocking call.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punktfunk_common::fdchannel::TicketBook;
use punktfunk_common::health::Health;
use punktfunk_proto::common::FdTicket;
use punktfunk_session::backend::{self, Backend, Mode, OutputPlan, ProcessSpec, Role, Screencast};
use punktfunk_session::floors;
use punktfunk_session::journal::{Journal, OutputRecord, ProcessRecord};
use punktfunk_session::proc;
use punktfunk_session::readiness::{Budgets, CheckError, Readiness, ReadinessError, Step};
use tokio::sync::watch;
use tonic::Status;

use crate::{keeper, probe, scope};
pub use punktfunk_session::request::StartSpec;

/// At most this many outputs live at once (each is a compositor + PipeWire on 2–8 cores).
pub const MAX_OUTPUTS: usize = 8;
/// The Wayland socket name of every output (each has its own runtime dir).
pub const WAYLAND_DISPLAY: &str = "wayland-pf";
/// How long `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// SIGTERM, then this long for the group to go, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// After SIGKILL, how long until we report processes left behind.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long an output's support daemon may take to create its socket before the next one
/// starts (dbus-daemon and PipeWire take 5–50 ms here; a loaded machine many times that).
const SOCKET_WAIT: Duration = Duration::from_secs(5);
/// How often live outputs are checked.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What an output is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Readiness is running.
    Starting,
    /// Ready: the screencast node exists.
    Ready,
    /// StopOutput is tearing it down.
    Stopping,
    /// ResizeOutput is changing its mode and replacing its screencast.
    Resizing,
}

impl OutputState {
    /// As `ListOutputs` shows it.
    pub fn name(self) -> &'static str {
        match self {
            OutputState::Starting => "starting",
            OutputState::Ready => "ready",
            OutputState::Stopping => "stopping",
            OutputState::Resizing => "resizing",
        }
    }
}

struct Output {
    record: OutputRecord,
    state: OutputState,
}

/// What a ready output hands back.
pub struct Started {
    /// The journal record (ids, paths, node).
    pub record: OutputRecord,
    /// The PipeWire remote ticket.
    pub ticket: FdTicket,
    /// The mode the screencast really has.
    pub mode: Mode,
    /// The app's pid (0: none).
    pub app_pid: u32,
    /// [`Manager::resize`] can change its mode in place.
    pub resizable: bool,
}

/// The output manager.
pub struct Manager {
    runtime_root: PathBuf,
    journal: Journal,
    outputs: Mutex<BTreeMap<String, Output>>,
    health: Arc<Health>,
    tickets: Arc<TicketBook>,
    budgets: Budgets,
    self_exe: PathBuf,
    path_env: String,
}

/// A spawned process: its record, and its exit status once it exited (only for processes
/// this manager started; adopted ones are watched through /proc).
struct Spawned {
    record: ProcessRecord,
    exited: watch::Receiver<Option<String>>,
}

impl Manager {
    /// A manager keeping its outputs under `runtime_root` (`$XDG_RUNTIME_DIR`) and its journal
    /// in `<punktfunk_dir>/outputs`.
    pub fn new(
        runtime_root: PathBuf,
        punktfunk_dir: &Path,
        health: Arc<Health>,
        tickets: Arc<TicketBook>,
    ) -> anyhow::Result<Arc<Self>> {
        let journal = Journal::open(punktfunk_dir.join("outputs"))?;
        let self_exe = std::env::current_exe()?;
        Ok(Arc::new(Self {
            runtime_root,
            journal,
            outputs: Mutex::new(BTreeMap::new()),
            health,
            tickets,
            budgets: Budgets::default(),
            self_exe,
            path_env: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        }))
    }

    fn outputs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Output>> {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-adopts the journal's live outputs and cleans up after the dead ones.
    pub async fn adopt(self: &Arc<Self>) {
        for entry in self.journal.load_all() {
            match entry {
                Err((path, e)) => {
                    tracing::warn!(error = %e, "removing an unreadable output journal entry");
                    let _ = std::fs::remove_file(path);
                }
                Ok(record) => {
                    let alive = record
                        .process(Role::Compositor)
                        .is_some_and(|p| proc::alive(p.pid, p.start_ticks));
                    if alive && record.node_id != 0 {
                        tracing::info!(output = %record.id, backend = %record.backend, mode = %record.mode,
                            client = %record.client, "re-adopted a live output");
                        self.outputs().insert(
                            record.id.clone(),
                            Output {
                                record,
                                state: OutputState::Ready,
                            },
                        );
                    } else {
                        tracing::warn!(output = %record.id, alive, "cleaning up an output that is dead or never became ready");
                        if let Err(e) = self.teardown(record).await {
                            tracing::error!(error = %e, "cleanup left something behind");
                        }
                    }
                }
            }
        }
        self.update_status();
    }

    /// Checks every ready output: one whose compositor died is cleaned up; one whose screencast
    /// keeper died (mutter closed the session, someone killed it) gets a new keeper and so a
    /// new node (media reconnects through `OpenScreencast`).
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let orphaned: Vec<OutputRecord> = {
                let mut outputs = self.outputs();
                outputs
                    .values_mut()
                    .filter(|o| o.state == OutputState::Ready)
                    .filter(|o| {
                        o.record
                            .process(Role::Keeper)
                            .is_some_and(|p| !proc::alive(p.pid, p.start_ticks))
                    })
                    .map(|o| {
                        o.state = OutputState::Starting;
                        o.record.clone()
                    })
                    .collect()
            };
            for record in orphaned {
                self.replace_keeper(record).await;
            }
            let dead: Vec<OutputRecord> = {
                let mut outputs = self.outputs();
                let ids: Vec<String> = outputs
                    .iter()
                    .filter(|(_, o)| o.state == OutputState::Ready)
                    .filter(|(_, o)| {
                        !o.record
                            .process(Role::Compositor)
                            .is_some_and(|p| proc::alive(p.pid, p.start_ticks))
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter()
                    .filter_map(|id| outputs.remove(id))
                    .map(|o| o.record)
                    .collect()
            };
            for record in dead {
                tracing::warn!(output = %record.id, backend = %record.backend, client = %record.client,
                    "the compositor died: cleaning up its output");
                if let Err(e) = self.teardown(record).await {
                    tracing::error!(error = %e, "cleanup left something behind");
                }
                self.update_status();
            }
        }
    }

    /// Starts a new screencast keeper for a live output and waits for its node.
    async fn replace_keeper(self: &Arc<Self>, mut record: OutputRecord) {
        let id = record.id.clone();
        tracing::warn!(output = %id, old_node = record.node_id, "the screencast keeper died: obtaining a new screencast");
        let b = backend::backend(record.backend);
        let plan = self.plan_of(&record);
        let result = self
            .new_keeper(b, &plan, &mut record)
            .await
            .map(|(node, _, _)| node);
        match result {
            Ok(node) => {
                tracing::info!(output = %id, node, "new screencast obtained");
                record.node_id = node;
                self.save(&record);
                self.set_ready(&record);
            }
            Err(e) => {
                tracing::error!(output = %id, error = %e, "cannot obtain a new screencast: stopping the output");
                self.outputs().remove(&id);
                if let Err(e) = self.teardown(record).await {
                    tracing::error!(error = %e, "cleanup left something behind");
                }
            }
        }
        self.update_status();
    }

    /// Starts a screencast keeper for a live output and waits for its node file: the node and
    /// the size it reports.
    async fn new_keeper(
        &self,
        b: &dyn Backend,
        plan: &OutputPlan,
        record: &mut OutputRecord,
    ) -> anyhow::Result<(u32, u32, u32)> {
        let spec = b
            .keeper(plan)
            .ok_or_else(|| anyhow::anyhow!("the backend has no keeper"))?;
        let _ = std::fs::remove_file(plan.node_file());
        let mut exited = self.spawn(&spec, plan, record)?.exited;
        let deadline = Instant::now() + self.budgets.screencast;
        loop {
            if let Some(node) = keeper::read_node_file(&plan.node_file()) {
                return Ok(node);
            }
            if let Some(status) = exited.borrow().clone() {
                anyhow::bail!(
                    "the new keeper exited ({status}): {}",
                    last_lines(&plan.log_file(Role::Keeper), 3)
                );
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no node within {:?}", self.budgets.screencast);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = exited.changed() => {}
            }
        }
    }

    /// Changes a ready output's mode in place, where its backend can (sway): the app runs on,
    /// the screencast is replaced (a node's buffers have one size) and the reply comes once the
    /// new one is ready, at the size the new node reports. A backend that cannot answers
    /// UNIMPLEMENTED before anything changes (the caller starts a new output instead).
    pub async fn resize(self: &Arc<Self>, id: &str, mode: Mode) -> Result<Mode, Status> {
        let (record, command) = {
            let mut outputs = self.outputs();
            let o = outputs
                .get_mut(id)
                .filter(|o| o.state == OutputState::Ready)
                .ok_or_else(|| Status::not_found(format!("no ready output {id:?}")))?;
            if o.record.mode == mode {
                return Ok(mode);
            }
            let b = backend::backend(o.record.backend);
            let Some(command) = b.resize(&self.plan_of(&o.record), mode) else {
                return Err(Status::unimplemented(format!(
                    "{} outputs cannot change their mode in place: start a new output at {mode}",
                    o.record.backend
                )));
            };
            // The watcher leaves it alone while its keeper is replaced.
            o.state = OutputState::Resizing;
            (o.record.clone(), command)
        };
        self.update_status();
        // Run to completion even if the caller goes away: the output must end up ready again
        // (at one mode or the other) or cleaned up.
        let me = self.clone();
        let result = tokio::spawn(async move { me.resize_in_place(record, command, mode).await })
            .await
            .map_err(|e| Status::internal(format!("the resize task failed: {e}")))?;
        self.update_status();
        result
    }

    async fn resize_in_place(
        &self,
        mut record: OutputRecord,
        command: ProcessSpec,
        mode: Mode,
    ) -> Result<Mode, Status> {
        let b = backend::backend(record.backend);
        let id = record.id.clone();
        let from = record.mode;
        if let Err(e) = self.run_resize(&command, &self.plan_of(&record)).await {
            // Nothing changed: the output goes on at its mode with its screencast.
            self.set_ready(&record);
            return Err(Status::failed_precondition(format!(
                "output {id} cannot change from {from} to {mode}: {e:#}"
            )));
        }
        stop_process(&record, Role::Keeper).await;
        record.mode = mode;
        let plan = self.plan_of(&record);
        match self.new_keeper(b, &plan, &mut record).await {
            Ok((node, w, h)) => {
                record.node_id = node;
                if w > 0 && h > 0 {
                    record.mode = Mode {
                        width: w,
                        height: h,
                        ..mode
                    };
                }
                self.save(&record);
                self.set_ready(&record);
                tracing::info!(output = %id, %from, to = %record.mode, node, "output resized in place");
                Ok(record.mode)
            }
            Err(e) => {
                tracing::error!(output = %id, error = %e, "no screencast after the resize: stopping the output");
                self.outputs().remove(&id);
                if let Err(e) = self.teardown(record).await {
                    tracing::error!(error = %e, "cleanup left something behind");
                }
                Err(Status::unavailable(format!(
                    "output {id} changed to {mode} but gave no screencast ({e:#}); it was stopped"
                )))
            }
        }
    }

    /// Runs the backend's resize command to completion (bounded by the screencast budget).
    async fn run_resize(&self, spec: &ProcessSpec, plan: &OutputPlan) -> anyhow::Result<()> {
        use anyhow::Context as _;
        wait_for_sockets(spec, plan).await?;
        let (prog, args) = spec.argv.split_first().context("a resize without argv")?;
        let run = tokio::process::Command::new(prog)
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(plan.home())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.budgets.screencast, run)
            .await
            .with_context(|| format!("{prog} did not answer within {:?}", self.budgets.screencast))?
            .with_context(|| format!("cannot run {prog}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "{prog} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Puts a record back as a ready output.
    fn set_ready(&self, record: &OutputRecord) {
        if let Some(o) = self.outputs().get_mut(&record.id) {
            o.record = record.clone();
            o.state = OutputState::Ready;
        }
    }

    /// The plan of a recorded output (for processes started after adoption).
    fn plan_of(&self, r: &OutputRecord) -> OutputPlan {
        OutputPlan {
            id: r.id.clone(),
            mode: r.mode,
            runtime_dir: r.runtime_dir.clone(),
            state_dir: r.state_dir.clone(),
            wayland_display: r.wayland_display.clone(),
            compositor_binary: PathBuf::new(),
            path_env: self.path_env.clone(),
            self_exe: self.self_exe.clone(),
        }
    }

    /// The status line: "1 output: mutter 1280x720@60 for laptop".
    pub fn update_status(&self) {
        let outputs = self.outputs();
        let line = status_line(outputs.values().map(|o| &o.record));
        drop(outputs);
        self.health.set_status(line);
    }

    /// Every output with its state, oldest first.
    pub fn list(&self) -> Vec<(OutputRecord, OutputState)> {
        let mut v: Vec<(OutputRecord, OutputState)> = self
            .outputs()
            .values()
            .map(|o| (o.record.clone(), o.state))
            .collect();
        v.sort_by_key(|(r, _)| r.started_unix_ms);
        v
    }

    /// Starts an output and waits until it is ready (or failed and was cleaned up).
    pub async fn start(self: &Arc<Self>, spec: StartSpec) -> Result<Started, Status> {
        let b = backend::backend(spec.backend);
        if let Screencast::None(why) = b.screencast() {
            return Err(Status::failed_precondition(why));
        }
        let binary = self.preflight(b).await?;
        let plan = self.plan(&spec, binary)?;
        let id = plan.id.clone();
        let record = OutputRecord {
            id: id.clone(),
            backend: spec.backend,
            mode: spec.mode,
            client: spec.client.clone(),
            app: spec.app_title.clone(),
            pgid: 0,
            unit: None,
            processes: Vec::new(),
            runtime_dir: plan.runtime_dir.clone(),
            state_dir: plan.state_dir.clone(),
            wayland_display: plan.wayland_display.clone(),
            node_id: 0,
            started_unix_ms: unix_ms(),
        };
        {
            let mut outputs = self.outputs();
            if outputs.len() >= MAX_OUTPUTS {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_OUTPUTS} outputs are live (the most this host runs): stop one first"
                )));
            }
            outputs.insert(
                id.clone(),
                Output {
                    record: record.clone(),
                    state: OutputState::Starting,
                },
            );
        }
        self.update_status();
        // Run to completion even if the caller goes away: a half-started output must either
        // become ready (and be listed) or be cleaned up.
        let me = self.clone();
        let task = tokio::spawn(async move { me.bring_up(b, plan, record, spec).await });
        let result = task
            .await
            .map_err(|e| Status::internal(format!("the start task failed: {e}")))?;
        if result.is_err() {
            self.outputs().remove(&id);
        }
        self.update_status();
        result
    }

    async fn bring_up(
        self: &Arc<Self>,
        b: &'static dyn Backend,
        plan: OutputPlan,
        mut record: OutputRecord,
        spec: StartSpec,
    ) -> Result<Started, Status> {
        let started = Instant::now();
        let outcome = self.launch_and_wait(b, &plan, &mut record).await;
        let (node, mode) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let message = format!(
                    "{} output {} at {} did not become ready: {e} (logs in {})",
                    b.kind(),
                    plan.id,
                    plan.mode,
                    plan.state_dir.display()
                );
                tracing::warn!(output = %plan.id, "{message}");
                let logs = tail_logs(&plan);
                if let Err(cleanup) = self.teardown(record).await {
                    tracing::error!(error = %cleanup, "cleanup after a failed start left something behind");
                }
                let message = if logs.is_empty() {
                    message
                } else {
                    format!("{message}; last log lines: {logs}")
                };
                return Err(match e {
                    StartError::Readiness(ReadinessError::Timeout { .. }) => {
                        Status::deadline_exceeded(message)
                    }
                    StartError::Readiness(_) => Status::unavailable(message),
                    StartError::Setup(_) => Status::internal(message),
                });
            }
        };
        record.node_id = node;
        let app_pid = match self.launch_app(&plan, &spec, &mut record) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.teardown(record).await;
                return Err(Status::failed_precondition(format!(
                    "cannot start the app {:?} ({:?}): {e}",
                    spec.app_title, spec.app_command
                )));
            }
        };
        let ticket = match self.screencast_ticket(&plan.runtime_dir) {
            Ok(t) => t,
            Err(e) => {
                let _ = self.teardown(record).await;
                return Err(e);
            }
        };
        if scope::under_systemd() {
            self.move_to_scope(&mut record).await;
        }
        self.save(&record);
        if let Some(o) = self.outputs().get_mut(&record.id) {
            o.record = record.clone();
            o.state = OutputState::Ready;
        }
        tracing::info!(output = %record.id, backend = %record.backend, mode = %record.mode, node,
            client = %record.client, app = %record.app, ms = started.elapsed().as_millis() as u64,
            "output ready");
        Ok(Started {
            record,
            ticket,
            mode,
            app_pid,
            resizable: b.resize(&plan, mode).is_some(),
        })
    }

    /// Under systemd: the output's processes leave the service's cgroup for their own scope,
    /// so a stop or restart of punktfunk-session does not end them. A failure is logged; the
    /// output still works (it then ends with the service).
    async fn move_to_scope(&self, record: &mut OutputRecord) {
        let unit = scope::unit_name(&record.id);
        let pids: Vec<u32> = record
            .processes
            .iter()
            .filter(|p| proc::alive(p.pid, p.start_ticks))
            .map(|p| p.pid)
            .collect();
        let description = format!(
            "punktfunk output {}: {} {} for {}",
            record.id, record.backend, record.mode, record.client
        );
        match scope::start(&unit, &description, &pids).await {
            Ok(()) => record.unit = Some(unit),
            Err(e) => tracing::warn!(output = %record.id, error = %e,
                "cannot move the output into its own systemd scope: it will end with punktfunk-session.service"),
        }
    }

    fn save(&self, record: &OutputRecord) {
        if let Err(e) = self.journal.save(record) {
            tracing::error!(error = %e, "cannot write the output journal: a restarted manager will not find this output");
        }
    }

    /// Finds the compositor and checks its version against the floor.
    async fn preflight(&self, b: &dyn Backend) -> Result<PathBuf, Status> {
        let floor = floors::floor(b.kind());
        let Some(binary) = backend::find_on_path(floor.binary, &self.path_env) else {
            return Err(Status::failed_precondition(format!(
                "{kind} is not installed: no `{bin}` on PATH ({path}); install {pkg} {min} or \
                 newer, or pick another backend (session.toml `backend`, or the app's \
                 `compositor`)",
                kind = b.kind(),
                bin = floor.binary,
                path = self.path_env,
                pkg = floor.package,
                min = floor.min,
            )));
        };
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.args(floor.version_args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
            .await
            .map_err(|_| {
                Status::failed_precondition(format!(
                    "`{} --version` did not answer within {VERSION_TIMEOUT:?}",
                    binary.display()
                ))
            })?
            .map_err(|e| {
                Status::failed_precondition(format!("cannot run {}: {e}", binary.display()))
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        floors::check(b.kind(), &text).map_err(|e| Status::failed_precondition(e.to_string()))?;
        for prog in ["dbus-daemon", "pipewire", "wireplumber"] {
            if backend::find_on_path(prog, &self.path_env).is_none() {
                return Err(Status::failed_precondition(format!(
                    "no `{prog}` on PATH ({}): every output runs its own; install it",
                    self.path_env
                )));
            }
        }
        Ok(binary)
    }

    fn plan(&self, spec: &StartSpec, compositor_binary: PathBuf) -> Result<OutputPlan, Status> {
        let b = backend::backend(spec.backend);
        let id = format!("{:08x}", rand::random::<u32>());
        let runtime_dir = self.runtime_root.join(format!("pf-{id}"));
        let state_dir = self.journal.dir().join(&id);
        let plan = OutputPlan {
            id,
            mode: spec.mode,
            runtime_dir,
            state_dir,
            wayland_display: b.own_wayland_display().unwrap_or(WAYLAND_DISPLAY).into(),
            compositor_binary,
            path_env: self.path_env.clone(),
            self_exe: self.self_exe.clone(),
        };
        // sun_path holds 108 bytes.
        if plan.wayland_socket().as_os_str().len() > 100 {
            return Err(Status::failed_precondition(format!(
                "XDG_RUNTIME_DIR {} is too long for Wayland socket paths",
                self.runtime_root.display()
            )));
        }
        Ok(plan)
    }

    /// Creates the directories and files, starts the processes, and runs readiness.
    async fn launch_and_wait(
        &self,
        b: &dyn Backend,
        plan: &OutputPlan,
        record: &mut OutputRecord,
    ) -> Result<(u32, Mode), StartError> {
        make_dirs(b, plan).map_err(|e| StartError::Setup(format!("{e:#}")))?;
        let mut specs = backend::support_processes(plan);
        specs.push(b.compositor(plan));
        let mut compositor = None;
        for spec in &specs {
            wait_for_sockets(spec, plan).await?;
            let s = self
                .spawn(spec, plan, record)
                .map_err(|e| StartError::Setup(format!("{e:#}")))?;
            if spec.role == Role::Compositor {
                compositor = Some(s.exited);
            }
        }
        self.save(record);
        let mut compositor = compositor.ok_or_else(|| StartError::Setup("no compositor".into()))?;
        self.drive_readiness(b, plan, record, &mut compositor)
            .await
            .map_err(StartError::Readiness)
    }

    /// Spawns one process into the output's process group (the first one founds it).
    fn spawn(
        &self,
        spec: &ProcessSpec,
        plan: &OutputPlan,
        record: &mut OutputRecord,
    ) -> anyhow::Result<Spawned> {
        use anyhow::Context as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(plan.log_file(spec.role))
            .with_context(|| format!("cannot open {}", plan.log_file(spec.role).display()))?;
        let (prog, args) = spec
            .argv
            .split_first()
            .context("a process spec without argv")?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(plan.home())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(record.pgid)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            // The output's group belongs to another session (a manager restarted by systemd
            // runs in a new one): the process gets a group of its own; teardown also signals
            // every recorded process by pid.
            Err(e) if record.pgid != 0 && e.raw_os_error() == Some(libc_eperm()) => {
                cmd.process_group(0);
                cmd.spawn()
            }
            other => other,
        }
        .with_context(|| format!("cannot start {} ({prog})", spec.role.name()))?;
        let pid = child.id().context("a spawned child without a pid")?;
        if record.pgid == 0 {
            record.pgid = pid as i32;
        }
        let start_ticks = proc::stat(pid).map_or(0, |s| s.start_ticks);
        let rec = ProcessRecord {
            role: spec.role,
            pid,
            start_ticks,
        };
        record.processes.retain(|p| p.role != spec.role);
        record.processes.push(rec.clone());
        let (tx, rx) = watch::channel(None);
        let role = spec.role;
        let id = plan.id.clone();
        // Reaps the child and reports how it ended.
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            tracing::debug!(output = %id, role = role.name(), pid, %status, "process exited");
            let _ = tx.send(Some(status));
        });
        tracing::debug!(output = %plan.id, role = spec.role.name(), pid, argv = ?spec.argv, "started");
        Ok(Spawned {
            record: rec,
            exited: rx,
        })
    }

    /// Runs the readiness state machine with real checks.
    async fn drive_readiness(
        &self,
        b: &dyn Backend,
        plan: &OutputPlan,
        record: &mut OutputRecord,
        compositor: &mut watch::Receiver<Option<String>>,
    ) -> Result<(u32, Mode), ReadinessError> {
        let mut r = Readiness::new(Instant::now(), self.budgets);
        let mut checks = Checks {
            globals: Vec::new(),
            keeper: None,
            node: None,
        };
        loop {
            if let Some(outcome) = r.outcome() {
                return outcome
                    .clone()
                    .map(|()| checks.node.unwrap_or((0, plan.mode)));
            }
            if let Some(status) = compositor.borrow().clone() {
                r.handle_exited(Instant::now(), status);
                continue;
            }
            let now = Instant::now();
            match r.poll_action(now) {
                Some(step) => {
                    let budget = r.check_budget(now);
                    let result = self.check(step, budget, b, plan, record, &mut checks).await;
                    if let Err(e) = &result {
                        tracing::trace!(output = %plan.id, %step, ?e, "not yet");
                    }
                    r.handle_check(Instant::now(), step, result);
                }
                None => {
                    let Some(at) = r.poll_timeout() else { continue };
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = compositor.changed() => {}
                    }
                }
            }
        }
    }

    async fn check(
        &self,
        step: Step,
        budget: Duration,
        b: &dyn Backend,
        plan: &OutputPlan,
        record: &mut OutputRecord,
        checks: &mut Checks,
    ) -> Result<(), CheckError> {
        match step {
            Step::ProcessAlive => {
                let p = record
                    .process(Role::Compositor)
                    .ok_or_else(|| CheckError::Fatal("the compositor was never started".into()))?;
                if proc::stat(p.pid).is_none_or(|s| s.state == 'Z') {
                    return Err(CheckError::NotYet(format!("pid {} is not running", p.pid)));
                }
                // The compositor runs; so must the daemons it and its screencast rely on.
                let support = [Role::Bus, Role::Pipewire, Role::Wireplumber];
                match record
                    .processes
                    .iter()
                    .find(|p| support.contains(&p.role) && !proc::alive(p.pid, p.start_ticks))
                {
                    Some(dead) => Err(CheckError::Fatal(format!(
                        "{} exited: {}",
                        dead.role.name(),
                        last_lines(&plan.log_file(dead.role), 3)
                    ))),
                    None => Ok(()),
                }
            }
            Step::Socket => {
                let path = plan.wayland_socket();
                match std::fs::metadata(&path) {
                    Ok(m) if m.file_type().is_socket() => Ok(()),
                    Ok(_) => Err(CheckError::Fatal(format!(
                        "{} exists but is not a socket",
                        path.display()
                    ))),
                    Err(_) => Err(CheckError::NotYet(format!(
                        "{} does not exist",
                        path.display()
                    ))),
                }
            }
            Step::Roundtrip => {
                checks.globals = probe_globals(plan.wayland_socket(), budget).await?;
                Ok(())
            }
            Step::Globals => {
                let missing = probe::missing(b.required_globals(), &checks.globals);
                if missing.is_empty() {
                    return Ok(());
                }
                let advertised: Vec<&str> =
                    checks.globals.iter().map(|(n, _)| n.as_str()).collect();
                let why = format!(
                    "{} not advertised (advertised: {})",
                    missing.join(", "),
                    advertised.join(", ")
                );
                // Some compositors add globals as their subsystems come up: look again.
                checks.globals = probe_globals(plan.wayland_socket(), budget)
                    .await
                    .unwrap_or_default();
                Err(CheckError::NotYet(why))
            }
            Step::Screencast => self.check_screencast(b, plan, record, checks),
        }
    }

    fn check_screencast(
        &self,
        b: &dyn Backend,
        plan: &OutputPlan,
        record: &mut OutputRecord,
        checks: &mut Checks,
    ) -> Result<(), CheckError> {
        match b.screencast() {
            Screencast::None(why) => Err(CheckError::Fatal(why.into())),
            Screencast::GamescopeNode => Err(CheckError::Fatal(
                "finding gamescope's PipeWire node is not built yet".into(),
            )),
            Screencast::MutterRecordMonitor
            | Screencast::KdeScreencast
            | Screencast::WlrScreencopy => {
                if checks.keeper.is_none() {
                    let spec = b
                        .keeper(plan)
                        .ok_or_else(|| CheckError::Fatal("the backend has no keeper".into()))?;
                    let _ = std::fs::remove_file(plan.node_file());
                    let s = self
                        .spawn(&spec, plan, record)
                        .map_err(|e| CheckError::Fatal(format!("{e:#}")))?;
                    self.save(record);
                    checks.keeper = Some(s.exited);
                }
                if let Some((node, w, h)) = keeper::read_node_file(&plan.node_file()) {
                    let mode = if w > 0 && h > 0 {
                        Mode {
                            width: w,
                            height: h,
                            ..plan.mode
                        }
                    } else {
                        plan.mode
                    };
                    checks.node = Some((node, mode));
                    return Ok(());
                }
                if let Some(status) = checks.keeper.as_ref().and_then(|k| k.borrow().clone()) {
                    let log = last_lines(&plan.log_file(Role::Keeper), 3);
                    return Err(CheckError::Fatal(format!(
                        "the screencast keeper exited ({status}): {log}"
                    )));
                }
                Err(CheckError::NotYet("no screencast node yet".into()))
            }
        }
    }

    fn launch_app(
        &self,
        plan: &OutputPlan,
        spec: &StartSpec,
        record: &mut OutputRecord,
    ) -> anyhow::Result<u32> {
        if spec.app_command.is_empty() {
            return Ok(0);
        }
        let app = backend::app_process(plan, &spec.app_command, &spec.app_env);
        let s = self.spawn(&app, plan, record)?;
        Ok(s.record.pid)
    }

    fn screencast_ticket(&self, runtime_dir: &Path) -> Result<FdTicket, Status> {
        let path = runtime_dir.join("pipewire-0");
        let stream = UnixStream::connect(&path).map_err(|e| {
            Status::unavailable(format!(
                "cannot connect to the output's PipeWire at {}: {e}",
                path.display()
            ))
        })?;
        let fd: OwnedFd = stream.into();
        self.tickets
            .issue(vec![fd], &punktfunk_proto::session::SCREENCAST_FD_NAMES)
            .map_err(|e| Status::resource_exhausted(format!("cannot issue a ticket: {e}")))
    }

    /// A fresh PipeWire remote ticket for a live output.
    pub fn open_screencast(&self, id: &str) -> Result<(u32, FdTicket), Status> {
        let (node, dir) = {
            let outputs = self.outputs();
            let o = outputs
                .get(id)
                .filter(|o| o.state == OutputState::Ready)
                .ok_or_else(|| Status::not_found(format!("no ready output {id:?}")))?;
            (o.record.node_id, o.record.runtime_dir.clone())
        };
        Ok((node, self.screencast_ticket(&dir)?))
    }

    /// Stops an output; the reply comes once nothing of it is left.
    pub async fn stop(&self, id: &str) -> Result<(), Status> {
        let record = {
            let mut outputs = self.outputs();
            let o = outputs
                .get_mut(id)
                .ok_or_else(|| Status::not_found(format!("no output {id:?}")))?;
            if o.state != OutputState::Ready {
                return Err(Status::failed_precondition(format!(
                    "output {id} is {}: wait until StartOutput answers",
                    o.state.name()
                )));
            }
            o.state = OutputState::Stopping;
            o.record.clone()
        };
        self.update_status();
        let result = self.teardown(record).await;
        self.outputs().remove(id);
        self.update_status();
        result.map_err(|e| Status::internal(format!("output {id} stopped, but {e}")))
    }

    /// Ends every process of the output, then removes its directories and journal entry.
    async fn teardown(&self, record: OutputRecord) -> anyhow::Result<()> {
        if let Some(unit) = &record.unit {
            scope::stop(unit).await;
        }
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || teardown_blocking(&journal, &record))
            .await
            .map_err(|e| anyhow::anyhow!("the cleanup task failed: {e}"))?
    }
}

struct Checks {
    globals: Vec<(String, u32)>,
    keeper: Option<watch::Receiver<Option<String>>>,
    node: Option<(u32, Mode)>,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Readiness(ReadinessError),
    #[error("setting up the output failed: {0}")]
    Setup(String),
}

/// Waits until every socket `spec` needs exists (see [`ProcessSpec::wait_for`]).
async fn wait_for_sockets(spec: &ProcessSpec, plan: &OutputPlan) -> Result<(), StartError> {
    for path in &spec.wait_for {
        let start = Instant::now();
        while !path.exists() {
            if start.elapsed() > SOCKET_WAIT {
                return Err(StartError::Setup(format!(
                    "{} did not appear within {SOCKET_WAIT:?}, so {} could not start: see the \
                     logs in {}",
                    path.display(),
                    spec.role.name(),
                    plan.state_dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

async fn probe_globals(
    socket: PathBuf,
    budget: Duration,
) -> Result<Vec<(String, u32)>, CheckError> {
    tokio::task::spawn_blocking(move || probe::globals(&socket, budget))
        .await
        .map_err(|e| CheckError::Fatal(format!("the probe task failed: {e}")))?
        .map_err(|e| CheckError::NotYet(e.to_string()))
}

fn make_dirs(b: &dyn Backend, plan: &OutputPlan) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for (dir, mode) in [
        (&plan.runtime_dir, 0o700),
        (&plan.state_dir, 0o700),
        (&plan.home(), 0o700),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for f in backend::support_files(plan)
        .into_iter()
        .chain(b.files(plan))
    {
        if let Some(parent) = f.path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&f.path, &f.contents)
            .with_context(|| format!("cannot write {}", f.path.display()))?;
    }
    Ok(())
}

/// Ends one process of an output (SIGTERM, SIGKILL after [`STOP_GRACE`]) and waits until it is
/// gone; a process that is not ours any more (its start time changed) is left alone.
async fn stop_process(record: &OutputRecord, role: Role) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(p) = record.process(role).cloned() else {
        return;
    };
    let Some(pid) = Pid::from_raw(p.pid as i32) else {
        return;
    };
    for (signal, wait) in [(Signal::TERM, STOP_GRACE), (Signal::KILL, KILL_WAIT)] {
        if !proc::alive(p.pid, p.start_ticks) {
            return;
        }
        let _ = kill_process(pid, signal);
        let deadline = Instant::now() + wait;
        while proc::alive(p.pid, p.start_ticks) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn teardown_blocking(journal: &Journal, record: &OutputRecord) -> anyhow::Result<()> {
    use rustix::process::{Pid, Signal, kill_process_group};
    let mut left = Vec::new();
    if record.pgid > 0 {
        let pgid = Pid::from_raw(record.pgid).ok_or_else(|| anyhow::anyhow!("bad pgid"))?;
        // Processes of this output only: the group's members, checked against the journal's
        // start times where we have them (a recycled pgid of an unrelated group is left alone).
        let ours = record
            .processes
            .iter()
            .any(|p| proc::alive(p.pid, p.start_ticks))
            || !proc::group_members(record.pgid).is_empty();
        let signal_all = |sig: Signal| {
            let _ = kill_process_group(pgid, sig);
            // Processes started into a group of their own (see `spawn`).
            for p in &record.processes {
                if proc::alive(p.pid, p.start_ticks)
                    && let Some(pid) = Pid::from_raw(p.pid as i32)
                {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        };
        let gone = || {
            proc::group_members(record.pgid).is_empty()
                && !record
                    .processes
                    .iter()
                    .any(|p| proc::alive(p.pid, p.start_ticks))
        };
        if ours {
            signal_all(Signal::TERM);
            if !wait_until(gone, STOP_GRACE) {
                tracing::warn!(output = %record.id, pgid = record.pgid, "the output did not stop on SIGTERM: SIGKILL");
                signal_all(Signal::KILL);
                if !wait_until(gone, KILL_WAIT) {
                    left = proc::group_members(record.pgid);
                    left.extend(
                        record
                            .processes
                            .iter()
                            .filter(|p| proc::alive(p.pid, p.start_ticks))
                            .map(|p| p.pid),
                    );
                }
            }
        }
    }
    let mut problems = Vec::new();
    for dir in [&record.runtime_dir, &record.state_dir] {
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {}: {e}", dir.display()));
        }
    }
    if let Err(e) = journal.remove(&record.id) {
        problems.push(e.to_string());
    }
    if !left.is_empty() {
        problems.push(format!("processes {left:?} survived SIGKILL"));
    }
    if problems.is_empty() {
        tracing::info!(output = %record.id, "output stopped and cleaned up");
        Ok(())
    } else {
        anyhow::bail!("{}", problems.join("; "))
    }
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

fn wait_until(done: impl Fn() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn tail_logs(plan: &OutputPlan) -> String {
    [Role::Compositor, Role::Keeper]
        .iter()
        .map(|&r| (r, last_lines(&plan.log_file(r), 3)))
        .filter(|(_, l)| !l.is_empty())
        .map(|(r, l)| format!("{}.log: {l}", r.name()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "idle: no compositor outputs", "1 output: mutter 1280x720@60 for laptop", "2 outputs: …".
pub fn status_line<'a>(records: impl Iterator<Item = &'a OutputRecord>) -> String {
    let parts: Vec<String> = records
        .map(|r| {
            let who = if r.client.is_empty() {
                "nobody"
            } else {
                &r.client
            };
            format!("{} {} for {who}", r.backend, r.mode)
        })
        .collect();
    match parts.len() {
        0 => "idle: no compositor outputs".into(),
        1 => format!("1 output: {}", parts[0]),
        n => format!("{n} outputs: {}", parts.join(", ")),
    }
}
