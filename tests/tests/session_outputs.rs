//! punktfunk-session with real compositors: outputs at exactly the asked mode (read back from
//! the screencast's negotiated caps with real frames), StopOutput leaving nothing behind,
//! outputs outliving a `kill -9` of the manager and being re-adopted, and readiness failures
//! of real compositors (exits at start, never creates its socket) failing StartOutput within
//! its deadline, naming the step, leaving nothing behind.
//!
//! The daemon runs under the harness's systemd stand-in; an output's screencast is consumed
//! by `gst-launch-1.0 pipewiresrc fd=3 path=<node>` with the PipeWire remote fd redeemed from
//! session.fds, as media does. Frames come only when the screen changes, so each output runs a
//! real animating Wayland client as its app (`waylandsink` fed by `videotestsrc`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use punktfunk_proto::common::Mode;
use punktfunk_proto::session::session_client::SessionClient;
use punktfunk_proto::session::*;
use punktfunk_tests::Supervisor;
use tonic::transport::Channel;

const ANIMATING_APP: &str = "videotestsrc is-live=true pattern=ball ! \
                             video/x-raw,width=320,height=240,framerate=30/1 ! waylandsink";

struct Session {
    sup: Supervisor,
    rt: tokio::runtime::Runtime,
}

impl Session {
    /// Starts punktfunk-session with `path_prefix` (wrapper compositors) before PATH.
    fn start(path_prefix: Option<&Path>) -> Self {
        let mut sup = Supervisor::new(800_000);
        if let Some(dir) = path_prefix {
            let path = format!(
                "{}:{}",
                dir.display(),
                punktfunk_tests::path_with_bin_dir().to_string_lossy()
            );
            sup.env.push(("session", "PATH".into(), path));
        }
        let t = Instant::now();
        sup.start("session");
        sup.wait_ready("session", t);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self { sup, rt }
    }

    fn restart(&mut self) {
        let t = Instant::now();
        self.sup.start("session");
        self.sup.wait_ready("session", t);
    }

    fn client(&self) -> SessionClient<Channel> {
        let path = self.sup.socket_dir().join("session.sock");
        let ch = self
            .rt
            .block_on(punktfunk_common::uds::connect(
                &path,
                Duration::from_secs(2),
            ))
            .expect("connect to session.sock");
        SessionClient::new(ch)
    }

    fn start_output(
        &self,
        backend: Backend,
        w: u32,
        h: u32,
        hz: u32,
        app: Option<&str>,
    ) -> Result<StartOutputReply, tonic::Status> {
        let app = app.map(|pipeline| AppLaunch {
            title: "animation".into(),
            command: std::iter::once("gst-launch-1.0".to_string())
                .chain(pipeline.split_whitespace().map(str::to_string))
                .collect(),
            env: Default::default(),
        });
        self.start_output_with(backend, w, h, hz, app)
    }

    fn start_output_with(
        &self,
        backend: Backend,
        w: u32,
        h: u32,
        hz: u32,
        app: Option<AppLaunch>,
    ) -> Result<StartOutputReply, tonic::Status> {
        let req = StartOutputRequest {
            mode: Some(Mode {
                width: w,
                height: h,
                refresh_mhz: hz * 1000,
            }),
            backend: backend as i32,
            client: "laptop".into(),
            app,
        };
        let mut c = self.client();
        let mut r = tonic::Request::new(req);
        r.set_timeout(Duration::from_secs(60));
        self.rt.block_on(c.start_output(r)).map(|r| r.into_inner())
    }

    fn list(&self) -> Vec<OutputInfo> {
        let mut c = self.client();
        self.rt
            .block_on(c.list_outputs(ListOutputsRequest {}))
            .expect("ListOutputs")
            .into_inner()
            .outputs
    }

    fn resize(
        &self,
        id: &str,
        w: u32,
        h: u32,
        hz: u32,
    ) -> Result<ResizeOutputReply, tonic::Status> {
        let mut c = self.client();
        let mut r = tonic::Request::new(ResizeOutputRequest {
            output_id: id.into(),
            mode: Some(Mode {
                width: w,
                height: h,
                refresh_mhz: hz * 1000,
            }),
        });
        r.set_timeout(Duration::from_secs(60));
        self.rt.block_on(c.resize_output(r)).map(|r| r.into_inner())
    }

    fn open_screencast(&self, id: &str) -> OpenScreencastReply {
        let mut c = self.client();
        self.rt
            .block_on(c.open_screencast(OpenScreencastRequest {
                output_id: id.into(),
            }))
            .expect("OpenScreencast")
            .into_inner()
    }

    fn stop_output(&self, id: &str) {
        let mut c = self.client();
        self.rt
            .block_on(c.stop_output(StopOutputRequest {
                output_id: id.into(),
            }))
            .expect("StopOutput");
    }

    fn redeem(&self, ticket: &punktfunk_proto::common::FdTicket) -> OwnedFd {
        assert_eq!(ticket.fd_names, SCREENCAST_FD_NAMES);
        let path = self.sup.socket_dir().join("session.fds");
        punktfunk_common::fdchannel::redeem(&path, ticket)
            .expect("redeem the screencast ticket")
            .into_iter()
            .next()
            .expect("one fd")
    }

    fn journal_dir(&self) -> PathBuf {
        self.sup.socket_dir().join("outputs")
    }

    /// Asserts that no output left anything: processes, runtime dirs, state dirs, journal.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut procs = self.sup.output_processes();
        while !procs.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            procs = self.sup.output_processes();
        }
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let dirs: Vec<String> = std::fs::read_dir(self.sup.runtime_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pf-"))
            .collect();
        assert!(dirs.is_empty(), "runtime dirs left behind: {dirs:?}");
        let journal: Vec<String> = std::fs::read_dir(self.journal_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(journal.is_empty(), "journal/state left behind: {journal:?}");
    }

    fn log(&self) -> String {
        self.sup.log("session")
    }
}

/// `gst-launch-1.0 -v pipewiresrc fd=3 path=<node>` with the PipeWire remote `fd` as the
/// child's fd 3, stdout piped; the caller appends the rest of the pipeline.
fn pipewiresrc(fd: &OwnedFd, node: u32) -> Command {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-v")
        .arg("pipewiresrc")
        .arg("fd=3")
        .arg(format!("path={node}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe and only touches
    // fd numbers; `raw` is open in the parent for the spawn (the caller's OwnedFd outlives it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Reads `buffers` frames from the screencast as GRAY8 and returns each frame's counter
/// (`None` where none was readable) with its arrival time.
fn counters(
    fd: &OwnedFd,
    node: u32,
    (w, h): (usize, usize),
    buffers: u32,
) -> Vec<(Option<u32>, Instant)> {
    use std::io::Read;
    let mut cmd = pipewiresrc(fd, node);
    cmd.arg(format!("num-buffers={buffers}")).args([
        "!",
        "videoconvert",
        "!",
        &format!("video/x-raw,format=GRAY8,width={w},height={h}"),
        "!",
        "fdsink",
        "fd=1",
        "sync=false",
    ]);
    cmd.arg("-q");
    let mut child = cmd.spawn().expect("gst-launch-1.0");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut frame = vec![0u8; w * h];
        let mut out = Vec::new();
        while stdout.read_exact(&mut frame).is_ok() {
            out.push((
                punktfunk_framecount::read_from_gray8(&frame, w, w, h),
                Instant::now(),
            ));
        }
        out
    });
    if punktfunk_tests::wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    reader.join().expect("reader")
}

/// Reads `buffers` frames from the screencast with gst-launch (pipewiresrc on the redeemed
/// remote fd, as media does) and returns the negotiated (width, height).
fn consume(fd: &OwnedFd, node: u32, buffers: u32) -> (u32, u32) {
    let mut cmd = pipewiresrc(fd, node);
    cmd.arg(format!("num-buffers={buffers}"))
        .args(["!", "video/x-raw", "!", "fakesink", "sync=false"])
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("gst-launch-1.0");
    let status = punktfunk_tests::wait_timeout(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("gst output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.is_some_and(|s| s.success()),
        "pipewiresrc did not deliver {buffers} frames from node {node} in 30 s: {}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let caps = text
        .lines()
        .find(|l| l.contains("capsfilter") && l.contains("width=(int)"))
        .unwrap_or_else(|| panic!("no negotiated caps in: {text}"));
    let num = |key: &str| -> u32 {
        let start = caps.find(key).expect("key") + key.len();
        caps[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number")
    };
    (num("width=(int)"), num("height=(int)"))
}

fn pids_of(journal_dir: &Path, id: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(journal_dir.join(format!("{id}.json"))).expect("journal");
    let v: serde_json::Value = serde_json::from_str(&text).expect("journal json");
    v["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_u64().expect("pid") as u32)
        .collect()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn mutter_outputs_at_two_modes_have_exactly_those_modes_and_stop_leaves_nothing() {
    let s = Session::start(None);
    for (w, h, hz) in [(1280, 720, 60), (800, 600, 30)] {
        let t = Instant::now();
        let reply = match s.start_output(Backend::Mutter, w, h, hz, Some(ANIMATING_APP)) {
            Ok(r) => r,
            Err(e) => panic!("StartOutput {w}x{h}: {e}\n{}", s.log()),
        };
        eprintln!(
            "mutter {w}x{h}@{hz} ready in {:?}: node {}",
            t.elapsed(),
            reply.pipewire_node_id
        );
        assert_ne!(reply.pipewire_node_id, 0);
        assert!(reply.app_pid != 0, "the app was launched");
        let m = reply.mode.expect("mode");
        assert_eq!((m.width, m.height), (w, h), "the screencast's size");
        // Redeemed first: the ticket lives ipc.ticket_ttl_ms (5 s).
        let fd = s.redeem(reply.screencast.as_ref().expect("ticket"));
        let list = s.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].output_id, reply.output_id);
        assert_eq!(list[0].state, "ready");
        assert_eq!(list[0].client, "laptop");
        assert_eq!(list[0].pipewire_node_id, reply.pipewire_node_id);
        let status = s.sup.ctl(&["status", "--json"]);
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.contains(&format!("1 output: mutter {w}x{h}@{hz} for laptop")),
            "{status}"
        );

        assert_eq!(consume(&fd, reply.pipewire_node_id, 10), (w, h));

        let pids = pids_of(&s.journal_dir(), &reply.output_id);
        assert!(
            pids.len() >= 5,
            "bus, pipewire, wireplumber, mutter, keeper, app: {pids:?}"
        );
        drop(fd);
        s.stop_output(&reply.output_id);
        for pid in pids {
            assert!(!running(pid), "pid {pid} survived StopOutput");
        }
        assert!(s.list().is_empty());
        s.assert_nothing_left();
    }
}

fn test_pattern_app() -> AppLaunch {
    AppLaunch {
        title: punktfunk_common::apps::TEST_PATTERN.into(),
        command: vec![punktfunk_common::apps::TEST_PATTERN_BINARY.into()],
        env: Default::default(),
    }
}

/// Starts `backend` at 1280x720@60 with the test pattern app, reads `buffers` frames of its
/// screencast, checks the counters and returns (frames captured, frames drawn) over the
/// checked span.
fn capture_test_pattern(s: &Session, backend: Backend, buffers: u32) -> (usize, u32) {
    let reply = match s.start_output_with(backend, 1280, 720, 60, Some(test_pattern_app())) {
        Ok(r) => r,
        Err(e) => panic!("StartOutput: {e}\n{}", s.log()),
    };
    assert_ne!(reply.app_pid, 0, "punktfunk-testpattern was launched");
    let m = reply.mode.expect("mode");
    assert_eq!((m.width, m.height), (1280, 720), "the screencast's size");
    let fd = s.redeem(reply.screencast.as_ref().expect("ticket"));
    let frames = counters(&fd, reply.pipewire_node_id, (1280, 720), buffers);
    let log = |name: &str| {
        std::fs::read_to_string(s.journal_dir().join(&reply.output_id).join(name))
            .unwrap_or_default()
    };
    // The screencast starts before the app's first frame reaches the screen: leading frames
    // may show the empty output (no counter), and a compositor may repaint the app's first
    // frame when it goes fullscreen. From the first new picture after that on, every captured
    // frame must carry a readable counter, newer than the frame before.
    let first = frames.iter().position(|(c, _)| c.is_some());
    let start = first.and_then(|f| {
        let c0 = frames[f].0;
        (f..frames.len()).find(|&i| frames[i].0 != c0)
    });
    let Some(start) = start.filter(|&s| frames.len() - s >= 100) else {
        panic!(
            "fewer than 100 frames after the test pattern's first: {:?}\napp.log: {}\n\
             screencast.log: {}",
            frames.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            log("app.log"),
            log("screencast.log")
        );
    };
    let read: Vec<Option<u32>> = frames[start..].iter().map(|(c, _)| *c).collect();
    let increasing = read
        .windows(2)
        .all(|p| matches!(p, [Some(a), Some(b)] if b > a));
    assert!(increasing, "counters not strictly increasing: {read:?}");
    let read: Vec<u32> = read.into_iter().flatten().collect();
    let span = frames[frames.len() - 1].1 - frames[start].1;
    let drawn = read[read.len() - 1] - read[0] + 1;
    let captured = frames.len() - start;
    let delivered = (captured - 1) as f64 / span.as_secs_f64();
    eprintln!(
        "{backend:?} 1280x720 test pattern: {start} leading frames skipped, {captured} captured, \
         {drawn} drawn over {span:?}: {delivered:.1} fps delivered, {:.0} % of the drawn frames",
        100.0 * captured as f64 / drawn as f64
    );
    drop(fd);
    s.stop_output(&reply.output_id);
    s.assert_nothing_left();
    (captured, drawn)
}

#[test]
fn mutter_captures_the_test_pattern_app_with_its_counter_strictly_increasing() {
    let s = Session::start(None);
    capture_test_pattern(&s, Backend::Mutter, 180);
}

#[test]
fn sway_captures_the_test_pattern_app_through_screencopy_with_its_counter_strictly_increasing() {
    let sway = punktfunk_tests::sway_dir();
    let s = Session::start(Some(sway.path()));
    let (captured, drawn) = capture_test_pattern(&s, Backend::Sway, 300);
    // The keeper asks for the next frame as soon as one is ready: it keeps up with the app.
    assert!(
        captured as f64 >= 0.8 * drawn as f64,
        "the screencast carried {captured} of the {drawn} frames the app drew"
    );
}

#[test]
fn outputs_survive_kill_9_of_the_manager_and_the_restarted_one_adopts_and_stops_them() {
    let mut s = Session::start(None);
    let reply = s
        .start_output(Backend::Mutter, 1280, 720, 60, Some(ANIMATING_APP))
        .unwrap_or_else(|e| panic!("StartOutput: {e}"));
    let pids = pids_of(&s.journal_dir(), &reply.output_id);
    s.sup.signal("session", rustix::process::Signal::KILL);
    assert!(s.sup.wait_exit("session", Duration::from_secs(5)).is_some());
    for &pid in &pids {
        if !running(pid) {
            let state = PathBuf::from(&s.sup.socket_dir())
                .join("outputs")
                .join(&reply.output_id);
            let logs: Vec<String> = [
                "compositor",
                "screencast",
                "app",
                "pipewire",
                "wireplumber",
                "bus",
            ]
            .iter()
            .map(|r| {
                let text =
                    std::fs::read_to_string(state.join(format!("{r}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                format!("{r}.log: {tail:?}")
            })
            .collect();
            panic!(
                "pid {pid} died with the manager (journal: {})\n{}",
                std::fs::read_to_string(s.journal_dir().join(format!("{}.json", reply.output_id)))
                    .unwrap_or_default(),
                logs.join("\n")
            );
        }
    }
    // The screencast itself survived: the same node still delivers frames, with the manager
    // gone (its keeper lives in the output, not in the manager).
    let pw = UnixStreamFd::connect(&PathBuf::from(&reply.runtime_dir).join("pipewire-0"));
    assert_eq!(consume(&pw.0, reply.pipewire_node_id, 10), (1280, 720));

    s.restart();
    let list = s.list();
    assert_eq!(list.len(), 1, "the restarted manager lists the output");
    assert_eq!(list[0].output_id, reply.output_id);
    assert_eq!(list[0].state, "ready");
    assert_eq!(list[0].pipewire_node_id, reply.pipewire_node_id);
    let out = s.sup.ctl(&["outputs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("outputs --json");
    assert_eq!(v["outputs"][0]["id"], reply.output_id.as_str());
    assert_eq!(v["outputs"][0]["backend"], "mutter");
    assert_eq!(v["outputs"][0]["mode"], "1280x720@60");
    assert_eq!(v["outputs"][0]["client"], "laptop");
    let table = String::from_utf8_lossy(&s.sup.ctl(&["outputs"]).stdout).into_owned();
    assert!(
        table.contains("mutter") && table.contains("1280x720@60"),
        "{table}"
    );
    // A fresh ticket from the new manager reaches the same node.
    let open = s.open_screencast(&reply.output_id);
    assert_eq!(open.pipewire_node_id, reply.pipewire_node_id);
    let fd = s.redeem(open.screencast.as_ref().expect("ticket"));
    assert_eq!(consume(&fd, open.pipewire_node_id, 5), (1280, 720));
    drop((fd, pw));

    s.stop_output(&reply.output_id);
    for pid in pids {
        assert!(
            !running(pid),
            "pid {pid} survived StopOutput after re-adoption"
        );
    }
    s.assert_nothing_left();
}

struct UnixStreamFd(OwnedFd);

impl UnixStreamFd {
    fn connect(path: &Path) -> Self {
        let s = std::os::unix::net::UnixStream::connect(path).expect("connect to PipeWire");
        Self(s.into())
    }
}

/// A directory with a wrapper named `mutter` that runs the real mutter with `extra` appended
/// (`--version` passes through untouched, so the version check sees the real one).
fn mutter_wrapper(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutter");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec /usr/bin/mutter --version;; esac\n\
             exec /usr/bin/mutter \"$@\" {extra}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn a_compositor_that_exits_at_start_fails_the_alive_step_and_leaves_nothing() {
    let wrapper = mutter_wrapper("--no-such-option");
    let s = Session::start(Some(wrapper.path()));
    let t = Instant::now();
    let e = s
        .start_output(Backend::Mutter, 1280, 720, 60, None)
        .expect_err("mutter exits at start");
    let took = t.elapsed();
    eprintln!("failed after {took:?}: {e}");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(e.message().contains("step 1 (process alive) failed"), "{e}");
    assert!(e.message().contains("exited"), "{e}");
    assert!(
        e.message().contains("--no-such-option") || e.message().contains("Unknown option"),
        "the compositor's own words are in the error: {e}"
    );
    assert!(
        took < Duration::from_secs(40),
        "within the readiness deadline: {took:?}"
    );
    assert!(s.list().is_empty());
    s.assert_nothing_left();
}

#[test]
fn a_compositor_that_never_creates_its_socket_fails_the_socket_step_at_its_deadline() {
    // The real mutter, told (last option wins) to listen on another socket name.
    let wrapper = mutter_wrapper("--wayland-display=elsewhere");
    let s = Session::start(Some(wrapper.path()));
    let e = s
        .start_output(Backend::Mutter, 1280, 720, 60, None)
        .expect_err("no socket");
    eprintln!("{e}");
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    assert!(
        e.message().contains("step 2 (Wayland socket) failed"),
        "{e}"
    );
    assert!(e.message().contains("wayland-pf does not exist"), "{e}");
    assert!(s.list().is_empty());
    s.assert_nothing_left();
}

#[test]
fn gamescope_absent_is_a_clear_error_naming_what_is_missing() {
    let s = Session::start(None);
    let e = s
        .start_output(Backend::Gamescope, 1280, 720, 60, None)
        .expect_err("gamescope is not on these machines");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("gamescope is not installed"), "{e}");
    assert!(
        e.message().contains("install gamescope 3.14.0 or newer"),
        "{e}"
    );
    s.assert_nothing_left();
}

/// A directory holding a copy of kwin_wayland without its file capability (the sandbox cannot
/// grant it; the copy keeps the name KWin checks), optionally behind a wrapper that runs it
/// with `env` set.
fn kwin_dir(env: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::copy("/usr/bin/kwin_wayland", real.join("kwin_wayland"))
        .expect("kwin-wayland is installed");
    let exe = dir.path().join("kwin_wayland");
    match env {
        None => std::fs::rename(real.join("kwin_wayland"), &exe).unwrap(),
        Some(env) => {
            std::fs::write(
                &exe,
                format!(
                    "#!/bin/sh\nexport {env}\nexec {}/kwin_wayland \"$@\"\n",
                    real.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    dir
}

/// Runs pipewiresrc on the node until its caps are negotiated (no buffers needed) and returns
/// (width, height).
fn negotiated_caps(fd: &OwnedFd, node: u32) -> (u32, u32) {
    use std::io::BufRead;
    let mut cmd = pipewiresrc(fd, node);
    cmd.args(["!", "video/x-raw", "!", "fakesink"]);
    let mut child = cmd.spawn().expect("gst-launch-1.0");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("capsfilter") && line.contains("width=(int)") && tx.send(line).is_err()
            {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let caps = line.expect("caps negotiated within 20 s");
    let num = |key: &str| -> u32 {
        let start = caps.find(key).expect("key") + key.len();
        caps[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number")
    };
    (num("width=(int)"), num("height=(int)"))
}

#[test]
fn kwin_output_is_ready_with_a_screencast_node_and_caps_frames_not_covered_without_a_gpu() {
    let kwin = kwin_dir(None);
    let s = Session::start(Some(kwin.path()));
    let reply = match s.start_output(Backend::Kwin, 1280, 720, 60, None) {
        Ok(r) => r,
        Err(e) => panic!("StartOutput kwin: {e}\n{}", s.log()),
    };
    assert_ne!(reply.pipewire_node_id, 0);
    let fd = s.redeem(reply.screencast.as_ref().expect("ticket"));
    assert_eq!(negotiated_caps(&fd, reply.pipewire_node_id), (1280, 720));
    let list = s.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].backend, Backend::Kwin as i32);
    drop(fd);
    s.stop_output(&reply.output_id);
    s.assert_nothing_left();
}

#[test]
fn a_compositor_lacking_a_needed_global_fails_the_globals_step_and_leaves_nothing() {
    // The real KWin without the output's .desktop grant on its data dirs: it runs and answers
    // but does not advertise zkde_screencast_unstable_v1 to us.
    let kwin = kwin_dir(Some("XDG_DATA_DIRS=/usr/share"));
    let s = Session::start(Some(kwin.path()));
    let t = Instant::now();
    let e = s
        .start_output(Backend::Kwin, 1280, 720, 60, None)
        .expect_err("no screencast global");
    eprintln!("failed after {:?}: {e}", t.elapsed());
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
    assert!(
        e.message().contains("step 4 (Wayland globals) failed"),
        "{e}"
    );
    assert!(
        e.message()
            .contains("zkde_screencast_unstable_v1 not advertised"),
        "{e}"
    );
    assert!(s.list().is_empty());
    s.assert_nothing_left();
}

#[test]
fn a_dead_screencast_keeper_is_replaced_and_the_new_node_delivers() {
    let s = Session::start(None);
    let reply = s
        .start_output(Backend::Mutter, 1280, 720, 60, Some(ANIMATING_APP))
        .unwrap_or_else(|e| panic!("StartOutput: {e}"));
    let text = std::fs::read_to_string(s.journal_dir().join(format!("{}.json", reply.output_id)))
        .expect("journal");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let keeper = v["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["role"] == "keeper")
        .and_then(|p| p["pid"].as_u64())
        .expect("a keeper process") as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(keeper).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the keeper");
    // PipeWire may give the new stream the old node's id: the keeper's pid tells them apart.
    let keeper_pid = |s: &Session| -> Option<u64> {
        let text =
            std::fs::read_to_string(s.journal_dir().join(format!("{}.json", reply.output_id)))
                .ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["processes"]
            .as_array()?
            .iter()
            .find(|p| p["role"] == "keeper")?["pid"]
            .as_u64()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let node = loop {
        let list = s.list();
        assert_eq!(list.len(), 1, "the output stays");
        if list[0].state == "ready" && keeper_pid(&s).is_some_and(|p| p != keeper as u64) {
            break list[0].pipewire_node_id;
        }
        if Instant::now() >= deadline {
            panic!("no new screencast within 20 s: {list:?}\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let open = s.open_screencast(&reply.output_id);
    assert_eq!(open.pipewire_node_id, node);
    let fd = s.redeem(open.screencast.as_ref().expect("ticket"));
    assert_eq!(consume(&fd, node, 5), (1280, 720));
    drop(fd);
    s.stop_output(&reply.output_id);
    s.assert_nothing_left();
}

/// ResizeOutput of a sway output changes its mode in place: the same output and the same app
/// process (its counter goes on from where it was; a new app would start again at 0), a new
/// screencast node whose frames have the new size. A mutter output says it cannot
/// (UNIMPLEMENTED, `resizable` false) and is left as it was.
#[test]
fn sway_resizes_in_place_with_its_app_running_on_and_mutter_says_it_cannot() {
    let sway = punktfunk_tests::sway_dir();
    let s = Session::start(Some(sway.path()));
    let reply = s
        .start_output_with(Backend::Sway, 1280, 720, 60, Some(test_pattern_app()))
        .unwrap_or_else(|e| panic!("StartOutput: {e}\n{}", s.log()));
    assert!(reply.resizable, "sway outputs change their mode in place");
    let fd = s.redeem(reply.screencast.as_ref().expect("ticket"));
    let before: Vec<u32> = counters(&fd, reply.pipewire_node_id, (1280, 720), 30)
        .into_iter()
        .filter_map(|(c, _)| c)
        .collect();
    let last_before = *before.last().expect("counters at 1280x720");
    drop(fd);

    let resized = s
        .resize(&reply.output_id, 800, 600, 30)
        .unwrap_or_else(|e| panic!("ResizeOutput: {e}\n{}", s.log()));
    let m = resized.mode.expect("mode");
    assert_eq!((m.width, m.height, m.refresh_mhz), (800, 600, 30_000));
    let list = s.list();
    assert_eq!(list.len(), 1, "still one output: {list:?}");
    assert_eq!(list[0].output_id, reply.output_id);
    assert_eq!(list[0].state, "ready");
    let lm = list[0].mode.expect("mode");
    assert_eq!((lm.width, lm.height), (800, 600));
    assert_eq!(list[0].app_pid, reply.app_pid, "the app runs on");
    let open = s.open_screencast(&reply.output_id);
    let fd = s.redeem(open.screencast.as_ref().expect("ticket"));
    let after: Vec<u32> = counters(&fd, open.pipewire_node_id, (800, 600), 30)
        .into_iter()
        .filter_map(|(c, _)| c)
        .collect();
    assert!(
        after.len() >= 10 && after.iter().all(|&c| c > last_before),
        "the app's counter goes on past {last_before} at 800x600: {after:?}"
    );
    eprintln!(
        "sway 1280x720 → 800x600 in place: counters ..{last_before} then {}..{}",
        after[0],
        after[after.len() - 1]
    );
    drop(fd);
    s.stop_output(&reply.output_id);
    s.assert_nothing_left();

    let mutter = s
        .start_output(Backend::Mutter, 1280, 720, 60, None)
        .unwrap_or_else(|e| panic!("StartOutput: {e}\n{}", s.log()));
    assert!(!mutter.resizable);
    let e = s
        .resize(&mutter.output_id, 800, 600, 30)
        .expect_err("mutter cannot resize in place");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    let list = s.list();
    assert_eq!(list[0].state, "ready");
    let lm = list[0].mode.expect("mode");
    assert_eq!((lm.width, lm.height), (1280, 720), "left as it was");
    s.stop_output(&mutter.output_id);
    s.assert_nothing_left();
}

/// The harness: outputs outlive punktfunk-session by design, so a test that fails before its
/// session ended would leave its compositor, PipeWire and app running into the tests after it.
/// Dropping the supervisor kills every process of its outputs.
#[test]
fn outputs_a_test_leaves_behind_die_with_its_supervisor() {
    let prefix;
    {
        let s = Session::start(None);
        s.start_output(Backend::Mutter, 640, 480, 30, Some(ANIMATING_APP))
            .unwrap_or_else(|e| panic!("StartOutput: {e}\n{}", s.log()));
        prefix = s.sup.output_env_prefix();
        let n = s.sup.output_processes().len();
        assert!(
            n >= 5,
            "bus, pipewire, wireplumber, mutter, keeper, app: {n}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = punktfunk_tests::processes_with_env(&prefix);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
