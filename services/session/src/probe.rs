//! The Wayland side of readiness: connect to an output's socket, run one `wl_display.sync`
//! round trip and collect the globals the registry advertised in it. Blocking, bounded by a
//! deadline (the socket is polled with a timeout, never read blindly).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use wayland_client::protocol::{wl_callback, wl_registry};
use wayland_client::{Connection, Dispatch, QueueHandle};

/// Why a probe did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// connect(2) failed.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The protocol failed (the compositor closed the connection, a protocol error).
    #[error("Wayland connection failed: {0}")]
    Protocol(String),
    /// No answer within the deadline.
    #[error("no wl_display.sync answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Default)]
struct State {
    globals: Vec<(String, u32)>,
    done: bool,
}

impl Dispatch<wl_registry::WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        _: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            interface, version, ..
        } = event
        {
            state.globals.push((interface, version));
        }
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for State {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.done = true;
        }
    }
}

/// Connects to `socket`, round-trips once and returns the advertised globals (interface,
/// version), within `timeout`.
pub fn globals(socket: &Path, timeout: Duration) -> Result<Vec<(String, u32)>, ProbeError> {
    let deadline = Instant::now() + timeout;
    let stream = UnixStream::connect(socket).map_err(|source| ProbeError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let conn = Connection::from_socket(stream).map_err(|e| ProbeError::Protocol(e.to_string()))?;
    let mut queue = conn.new_event_queue::<State>();
    let qh = queue.handle();
    let display = conn.display();
    let _registry = display.get_registry(&qh, ());
    // The registry's globals arrive before the sync's done: one round trip collects them all.
    let _sync = display.sync(&qh, ());
    let mut state = State::default();
    let proto = |e: &dyn std::fmt::Display| ProbeError::Protocol(e.to_string());
    while !state.done {
        queue.flush().map_err(|e| proto(&e))?;
        queue.dispatch_pending(&mut state).map_err(|e| proto(&e))?;
        if state.done {
            break;
        }
        let Some(guard) = conn.prepare_read() else {
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Timeout(timeout));
        }
        let ready = {
            let fd = guard.connection_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let ts = rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            poll(&mut fds, Some(&ts)).map_err(|e| proto(&e))?
        };
        if ready == 0 {
            return Err(ProbeError::Timeout(timeout));
        }
        guard.read().map_err(|e| proto(&e))?;
    }
    Ok(state.globals)
}

/// The required globals missing from `advertised`.
pub fn missing<'a>(required: &[&'a str], advertised: &[(String, u32)]) -> Vec<&'a str> {
    required
        .iter()
        .copied()
        .filter(|r| !advertised.iter().any(|(name, _)| name == r))
        .collect()
}
