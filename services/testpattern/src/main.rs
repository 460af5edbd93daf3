//! punktfunk-testpattern: a Wayland client that fills its output with busy, moving content
//! stamped with punktfunk's frame counter, one frame per frame callback (the output's refresh).
//!
//! It is the built-in app "Test pattern": users run it to check their setup end to end, and
//! the tests capture it from real compositors. It asks to be fullscreen and draws at the size
//! the compositor configures (`--size` when the compositor leaves it to the client), into
//! `wl_shm` XRGB8888 buffers in one memfd, redrawing only when the compositor asks for a frame.

use anyhow::{Context, Result, bail};
use clap::Parser;
use punktfunk_common::shm::MemfdMap;
use punktfunk_testpattern::{BUFFERS, BYTES_PER_PIXEL, Buffers, draw, parse_size};
use wayland_client::globals::{GlobalListContents, registry_queue_init};
use wayland_client::protocol::{
    wl_buffer, wl_callback, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
};
use wayland_client::{Connection, Dispatch, QueueHandle, delegate_noop};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

/// Busy moving content with punktfunk's frame counter, at the output's refresh.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Exit after drawing this many frames (default: until the compositor closes the window).
    #[arg(long)]
    frames: Option<u64>,
    /// The size to draw at when the compositor leaves the choice to the client.
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    size: (u32, u32),
}

/// What the compositor told us.
struct State {
    configured: bool,
    /// The size the last toplevel configure asked for (`None`: the client chooses).
    asked: Option<(u32, u32)>,
    frame_due: bool,
    closed: bool,
    buffers: Buffers,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let conn = Connection::connect_to_env().context(
        "cannot reach a Wayland compositor: run this inside a punktfunk output (or any Wayland \
         session), where WAYLAND_DISPLAY names the compositor's socket",
    )?;
    let (globals, mut queue) =
        registry_queue_init::<State>(&conn).context("the Wayland registry")?;
    let qh = queue.handle();
    let compositor: wl_compositor::WlCompositor = globals
        .bind(&qh, 4..=6, ())
        .context("the compositor lacks wl_compositor v4")?;
    let shm: wl_shm::WlShm = globals
        .bind(&qh, 1..=1, ())
        .context("the compositor lacks wl_shm")?;
    let wm: xdg_wm_base::XdgWmBase = globals
        .bind(&qh, 1..=6, ())
        .context("the compositor lacks xdg_wm_base (xdg-shell)")?;

    let surface = compositor.create_surface(&qh, ());
    let xdg = wm.get_xdg_surface(&surface, &qh, ());
    let toplevel = xdg.get_toplevel(&qh, ());
    toplevel.set_title("punktfunk test pattern".into());
    toplevel.set_app_id("punktfunk-testpattern".into());
    toplevel.set_fullscreen(None);
    surface.commit();

    let mut state = State {
        configured: false,
        asked: None,
        frame_due: true,
        closed: false,
        buffers: Buffers::new(),
    };
    while !state.configured && !state.closed {
        queue
            .blocking_dispatch(&mut state)
            .context("waiting for the first configure")?;
    }

    let mut shm_buffers: Option<ShmBuffers> = None;
    let mut drawn: u64 = 0;
    while !state.closed {
        if state.frame_due {
            let (w, h) = state.asked.unwrap_or(args.size);
            if shm_buffers
                .as_ref()
                .is_none_or(|b| (b.width, b.height) != (w, h))
            {
                if let Some(old) = shm_buffers.take() {
                    old.destroy();
                }
                state.buffers.handle_reallocated();
                shm_buffers = Some(ShmBuffers::new(
                    &shm,
                    &qh,
                    w,
                    h,
                    state.buffers.generation(),
                )?);
                eprintln!("punktfunk-testpattern: drawing {w}x{h} at the output's refresh");
            }
            let bufs = shm_buffers
                .as_mut()
                .context("buffers were just allocated")?;
            if let Some(i) = state.buffers.poll_free() {
                let stride = bufs.stride();
                draw(
                    bufs.frame_mut(i),
                    stride,
                    w as usize,
                    h as usize,
                    drawn as u32,
                )?;
                surface.attach(Some(&bufs.buffers[i]), 0, 0);
                surface.damage_buffer(0, 0, w as i32, h as i32);
                surface.frame(&qh, ());
                surface.commit();
                state.buffers.handle_attached(i);
                state.frame_due = false;
                drawn += 1;
                if args.frames.is_some_and(|n| drawn >= n) {
                    conn.flush().context("flushing the last frame")?;
                    break;
                }
            }
        }
        queue
            .blocking_dispatch(&mut state)
            .context("the compositor connection broke")?;
    }
    eprintln!("punktfunk-testpattern: drew {drawn} frames");
    Ok(())
}

/// [`BUFFERS`] XRGB8888 buffers of one size, back to back in one shared-memory file.
struct ShmBuffers {
    width: u32,
    height: u32,
    map: MemfdMap,
    pool: wl_shm_pool::WlShmPool,
    buffers: Vec<wl_buffer::WlBuffer>,
}

impl ShmBuffers {
    fn new(
        shm: &wl_shm::WlShm,
        qh: &QueueHandle<State>,
        width: u32,
        height: u32,
        generation: u32,
    ) -> Result<Self> {
        let stride = width as usize * BYTES_PER_PIXEL;
        let frame = stride * height as usize;
        let len = frame * BUFFERS;
        let Ok(pool_len) = i32::try_from(len) else {
            bail!("{width}x{height} needs {len} bytes of buffers, more than wl_shm can share");
        };
        let map = MemfdMap::new("punktfunk-testpattern", len).context("the frame buffers")?;
        let pool = shm.create_pool(map.fd(), pool_len, qh, ());
        let buffers = (0..BUFFERS)
            .map(|i| {
                pool.create_buffer(
                    (i * frame) as i32,
                    width as i32,
                    height as i32,
                    stride as i32,
                    wl_shm::Format::Xrgb8888,
                    qh,
                    (generation, i),
                )
            })
            .collect();
        Ok(Self {
            width,
            height,
            map,
            pool,
            buffers,
        })
    }

    fn stride(&self) -> usize {
        self.width as usize * BYTES_PER_PIXEL
    }

    fn frame_mut(&mut self, index: usize) -> &mut [u8] {
        let frame = self.stride() * self.height as usize;
        &mut self.map.as_mut_slice()[index * frame..(index + 1) * frame]
    }

    fn destroy(self) {
        for b in &self.buffers {
            b.destroy();
        }
        self.pool.destroy();
    }
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

delegate_noop!(State: wl_compositor::WlCompositor);
delegate_noop!(State: wl_shm_pool::WlShmPool);
delegate_noop!(State: ignore wl_shm::WlShm);
delegate_noop!(State: ignore wl_surface::WlSurface);

impl Dispatch<wl_buffer::WlBuffer, (u32, usize)> for State {
    fn event(
        state: &mut Self,
        _: &wl_buffer::WlBuffer,
        event: wl_buffer::Event,
        &(generation, index): &(u32, usize),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            state.buffers.handle_release(generation, index);
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
            state.frame_due = true;
        }
    }
}

impl Dispatch<xdg_wm_base::XdgWmBase, ()> for State {
    fn event(
        _: &mut Self,
        wm: &xdg_wm_base::XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm.pong(serial);
        }
    }
}

impl Dispatch<xdg_surface::XdgSurface, ()> for State {
    fn event(
        state: &mut Self,
        xdg: &xdg_surface::XdgSurface,
        event: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            xdg.ack_configure(serial);
            state.configured = true;
            // A configure wants a new frame at its size even if no callback is pending.
            state.frame_due = true;
        }
    }
}

impl Dispatch<xdg_toplevel::XdgToplevel, ()> for State {
    fn event(
        state: &mut Self,
        _: &xdg_toplevel::XdgToplevel,
        event: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            xdg_toplevel::Event::Configure { width, height, .. } => {
                state.asked = (width > 0 && height > 0).then_some((width as u32, height as u32));
            }
            xdg_toplevel::Event::Close => state.closed = true,
            _ => {}
        }
    }
}
