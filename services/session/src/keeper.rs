//! `punktfunk-session screencast-keeper BACKEND NODE_FILE W H MHZ`: the process that obtains an
//! output's screencast and holds it for the output's life.
//!
//! It runs inside the output (its process group or unit, its environment), not in the manager:
//! mutter's ScreenCast session lives only as long as the D-Bus connection that created it, so a
//! manager that restarts (or is killed) must not take the screencast with it. Once the node
//! exists the keeper writes `"<node id> <width> <height>\n"` to NODE_FILE (atomically) and
//! waits: for SIGTERM (it stops the session and exits 0) or for the compositor to close the
//! session (exit 3). Errors go to stderr (the output's `screencast.log`) and exit 1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use punktfunk_session::backend::MUTTER_VIRTUAL_CONNECTOR;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

const MUTTER_DEST: &str = "org.gnome.Mutter.ScreenCast";
const MUTTER_PATH: &str = "/org/gnome/Mutter/ScreenCast";
/// How long to wait for mutter's ScreenCast name to appear on the bus.
const NAME_WAIT: Duration = Duration::from_secs(8);

/// Entry point for argv `[exe, "screencast-keeper", ...]`.
pub fn main(args: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("screencast-keeper: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("screencast-keeper: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: &[String]) -> anyhow::Result<u8> {
    let [backend, node_file, _width, _height, mhz, ..] = args else {
        bail!("usage: punktfunk-session screencast-keeper BACKEND NODE_FILE WIDTH HEIGHT MHZ");
    };
    let refresh_mhz: u32 = mhz
        .parse()
        .with_context(|| format!("MHZ {mhz:?} is not a refresh in millihertz"))?;
    let node_file = PathBuf::from(node_file);
    match backend.as_str() {
        "mutter" => mutter(&node_file).await,
        "kwin" => tokio::task::spawn_blocking(move || kwin::run(&node_file)).await?,
        "screencopy" => {
            tokio::task::spawn_blocking(move || {
                crate::screencopy_keeper::run(&node_file, refresh_mhz)
            })
            .await?
        }
        other => bail!("no screencast keeper for backend {other:?} yet"),
    }
}

async fn mutter(node_file: &Path) -> anyhow::Result<u8> {
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
        .context("DBUS_SESSION_BUS_ADDRESS is not set (the output's private bus)")?;
    let conn = zbus::connection::Builder::address(address.as_str())
        .with_context(|| format!("bad bus address {address}"))?
        .build()
        .await
        .with_context(|| format!("cannot connect to the output's bus {address}"))?;
    wait_for_name(&conn, MUTTER_DEST).await?;

    let screencast = zbus::Proxy::new(&conn, MUTTER_DEST, MUTTER_PATH, MUTTER_DEST).await?;
    let no_options: HashMap<&str, Value<'_>> = HashMap::new();
    let session_path: OwnedObjectPath = screencast
        .call("CreateSession", &(no_options,))
        .await
        .context("ScreenCast.CreateSession")?;
    let session = zbus::Proxy::new(
        &conn,
        MUTTER_DEST,
        session_path.clone(),
        "org.gnome.Mutter.ScreenCast.Session",
    )
    .await?;
    // cursor-mode 1: the cursor is drawn into the frames.
    let options: HashMap<&str, Value<'_>> = HashMap::from([("cursor-mode", Value::U32(1))]);
    let stream_path: OwnedObjectPath = session
        .call("RecordMonitor", &(MUTTER_VIRTUAL_CONNECTOR, options))
        .await
        .with_context(|| format!("ScreenCast.Session.RecordMonitor({MUTTER_VIRTUAL_CONNECTOR})"))?;
    let stream = zbus::Proxy::new(
        &conn,
        MUTTER_DEST,
        stream_path,
        "org.gnome.Mutter.ScreenCast.Stream",
    )
    .await?;
    let mut added = stream.receive_signal("PipeWireStreamAdded").await?;
    let mut closed = session.receive_signal("Closed").await?;
    let () = session
        .call("Start", &())
        .await
        .context("ScreenCast.Session.Start")?;
    let node: u32 = tokio::time::timeout(Duration::from_secs(10), added.next())
        .await
        .context("no PipeWireStreamAdded within 10 s")?
        .context("the bus connection closed before PipeWireStreamAdded")?
        .body()
        .deserialize()
        .context("PipeWireStreamAdded without a node id")?;
    let (w, h) = stream_size(&stream).await.unwrap_or((0, 0));
    write_node_file(node_file, node, w, h)?;
    eprintln!("screencast-keeper: mutter node {node} ({w}x{h}), session {session_path}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {
            let _: Result<(), _> = session.call("Stop", &()).await;
            Ok(0)
        }
        _ = closed.next() => {
            eprintln!("screencast-keeper: mutter closed the screencast session");
            Ok(3)
        }
    }
}

/// The stream's `Parameters` property `size` (mutter reports the monitor's size there).
async fn stream_size(stream: &zbus::Proxy<'_>) -> Option<(i32, i32)> {
    let params: HashMap<String, OwnedValue> = stream.get_property("Parameters").await.ok()?;
    let size = params.get("size")?;
    <(i32, i32)>::try_from(size.try_clone().ok()?).ok()
}

async fn wait_for_name(conn: &zbus::Connection, name: &str) -> anyhow::Result<()> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let start = Instant::now();
    let bus_name = zbus::names::BusName::try_from(name)?;
    loop {
        if dbus.name_has_owner(bus_name.clone()).await? {
            return Ok(());
        }
        if start.elapsed() > NAME_WAIT {
            bail!("{name} did not appear on the output's bus within {NAME_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn write_node_file(path: &Path, node: u32, w: i32, h: i32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{node} {w} {h}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

/// Reads a node file (see [`punktfunk_session::journal::parse_node_file`]); `None` until the
/// keeper wrote one.
pub fn read_node_file(path: &Path) -> Option<(u32, u32, u32)> {
    punktfunk_session::journal::parse_node_file(&std::fs::read_to_string(path).ok()?)
}

/// KWin: `zkde_screencast_unstable_v1.stream_output` of the (only) virtual output. KWin offers
/// the global only to executables its `.desktop` grant names (this binary; the output's data
/// dir carries the grant). The stream lives as long as this Wayland connection.
mod kwin {
    use std::path::Path;

    use anyhow::{Context, bail};
    use wayland_client::globals::{GlobalListContents, registry_queue_init};
    use wayland_client::protocol::{wl_output, wl_registry};
    use wayland_client::{Connection, Dispatch, QueueHandle};
    use wayland_protocols_plasma::screencast::v1::client::{
        zkde_screencast_stream_unstable_v1 as stream_v1, zkde_screencast_unstable_v1 as cast_v1,
    };

    /// `pointer` argument: the cursor is drawn into the frames.
    const POINTER_EMBEDDED: u32 = 2;

    #[derive(Default)]
    struct State {
        node: Option<u32>,
        failed: Option<String>,
        closed: bool,
        size: Option<(i32, i32)>,
    }

    impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for State {
        fn event(
            _: &mut Self,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    impl Dispatch<wl_output::WlOutput, ()> for State {
        fn event(
            state: &mut Self,
            _: &wl_output::WlOutput,
            event: wl_output::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            if let wl_output::Event::Mode {
                flags: wayland_client::WEnum::Value(flags),
                width,
                height,
                ..
            } = event
                && flags.contains(wl_output::Mode::Current)
            {
                state.size = Some((width, height));
            }
        }
    }

    impl Dispatch<cast_v1::ZkdeScreencastUnstableV1, ()> for State {
        fn event(
            _: &mut Self,
            _: &cast_v1::ZkdeScreencastUnstableV1,
            _: cast_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    impl Dispatch<stream_v1::ZkdeScreencastStreamUnstableV1, ()> for State {
        fn event(
            state: &mut Self,
            _: &stream_v1::ZkdeScreencastStreamUnstableV1,
            event: stream_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            match event {
                stream_v1::Event::Created { node } => state.node = Some(node),
                stream_v1::Event::Failed { error } => state.failed = Some(error),
                stream_v1::Event::Closed => state.closed = true,
                _ => {}
            }
        }
    }

    pub fn run(node_file: &Path) -> anyhow::Result<u8> {
        let conn = Connection::connect_to_env()
            .context("cannot connect to the output's Wayland socket")?;
        let (globals, mut queue) =
            registry_queue_init::<State>(&conn).context("Wayland registry")?;
        let qh = queue.handle();
        let cast: cast_v1::ZkdeScreencastUnstableV1 = globals.bind(&qh, 1..=3, ()).context(
            "zkde_screencast_unstable_v1 is not offered to this executable: the output's \
             .desktop grant does not name it",
        )?;
        let output: wl_output::WlOutput = globals
            .bind(&qh, 1..=2, ())
            .context("KWin has no wl_output")?;
        let _stream = cast.stream_output(&output, POINTER_EMBEDDED, &qh, ());
        let mut state = State::default();
        while state.node.is_none() {
            queue
                .blocking_dispatch(&mut state)
                .context("Wayland connection")?;
            if let Some(e) = state.failed.take() {
                bail!("KWin refused the screencast: {e}");
            }
            if state.closed {
                bail!("KWin closed the screencast before it started");
            }
        }
        let node = state.node.unwrap_or_default();
        let (w, h) = state.size.unwrap_or((0, 0));
        super::write_node_file(node_file, node, w, h)?;
        eprintln!("screencast-keeper: KWin node {node} ({w}x{h})");
        while !state.closed {
            queue
                .blocking_dispatch(&mut state)
                .context("Wayland connection")?;
        }
        eprintln!("screencast-keeper: KWin closed the screencast");
        Ok(3)
    }
}
