//! The wlroots screencast keeper: `zwlr_screencopy_manager_v1` frames of the output, published
//! as a PipeWire video source (`appsrc ! pipewiresink mode=provide`) on the output's own
//! PipeWire, so media captures sway exactly as it captures mutter and KWin: a node id plus the
//! PipeWire remote fd.
//!
//! Why a PipeWire node and not screencopy read by media itself: one capture interface for
//! media (docs/architecture.md), and the screencast then outlives a restart of media and of
//! the manager like the others. The price is one copy into PipeWire's buffer (~0.3 ms at 720p
//! here), against screencopy's own ~3 ms in sway's pixman renderer.
//!
//! The loop asks for the next frame as soon as one is ready (`copy_with_damage`: sway answers
//! when the output has changed), so the keeper follows the output's refresh and never sends a
//! frame twice. pipewiresink has no property with its node id, so a thread finds the node by
//! name in `pw-dump` and writes the node file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use punktfunk_common::shm::MemfdMap;
use punktfunk_session::screencopy::{NODE_NAME, Offer, copy_frame, node_id};
use wayland_client::globals::{GlobalListContents, registry_queue_init};
use wayland_client::protocol::{wl_buffer, wl_output, wl_registry, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle, WEnum, delegate_noop};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1 as frame_v1, zwlr_screencopy_manager_v1 as manager_v1,
};

/// How long the published node may take to show up in `pw-dump`.
const NODE_WAIT: Duration = Duration::from_secs(10);
/// Failed copies in a row before the keeper gives up (sway fails a copy while the output is
/// being reconfigured; a few in a row are normal).
const MAX_FAILURES: u32 = 50;
/// Pause after a failed copy.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);
/// `overlay_cursor`: draw the cursor into the frames.
const WITH_CURSOR: i32 = 1;

/// What the compositor said about the frame in flight.
#[derive(Default)]
struct State {
    offer: Option<Offer>,
    /// Why the last offer the keeper could not use was refused.
    refused: Option<String>,
    buffer_done: bool,
    y_invert: bool,
    ready: bool,
    failed: bool,
}

/// The shared buffer the compositor copies into, for one offer.
struct Target {
    offer: Offer,
    map: MemfdMap,
    pool: wl_shm_pool::WlShmPool,
    buffer: wl_buffer::WlBuffer,
}

impl Target {
    fn new(shm: &wl_shm::WlShm, qh: &QueueHandle<State>, offer: Offer) -> anyhow::Result<Self> {
        let len = offer.buffer_len()?;
        let map = MemfdMap::new("punktfunk-screencopy", len).context("the copy buffer")?;
        let pool_len = i32::try_from(len).context("a copy buffer beyond wl_shm's size")?;
        let pool = shm.create_pool(map.fd(), pool_len, qh, ());
        let buffer = pool.create_buffer(
            0,
            offer.width as i32,
            offer.height as i32,
            offer.stride as i32,
            offer.format,
            qh,
            (),
        );
        Ok(Self {
            offer,
            map,
            pool,
            buffer,
        })
    }

    fn destroy(self) {
        self.buffer.destroy();
        self.pool.destroy();
    }
}

/// `appsrc ! pipewiresink mode=provide`: the output's frames as a PipeWire video source.
///
/// pipewiresink (0.3.65 here) sizes the buffers it asks PipeWire for from its own buffer
/// pool's configuration and never from the caps: a pool left at size 0 gives the consumer
/// empty buffers. Two things keep the pool's size right:
/// * the keeper configures the pool with the frame's caps and size before the pipeline runs
///   (its own allocation query hands it the pool);
/// * appsrc's base class never sees the pool: a probe answers its allocation query (asked
///   before appsrc knows its caps, so it would configure the pool with size 0 and activate
///   it). appsrc then pushes buffers of a pool of its own and pipewiresink copies each into
///   one of PipeWire's, activating its pool with the keeper's size on the first frame.
struct Publisher {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    offer: Offer,
    /// Where the frames are staged for appsrc (pipewiresink copies them into PipeWire's).
    staging: gst::BufferPool,
}

impl Publisher {
    fn new(offer: Offer, refresh_mhz: u32) -> anyhow::Result<Self> {
        gst::init().context("GStreamer")?;
        let caps: gst::Caps = offer.caps(refresh_mhz)?.parse().context("frame caps")?;
        let size = u32::try_from(offer.row_bytes() * offer.height as usize)
            .context("a frame beyond 4 GiB")?;
        // Never block the capture loop: with no consumer (between streams) or a slow one,
        // the oldest queued frame is dropped.
        let src = gst_app::AppSrc::builder()
            .name("screencopy")
            .caps(&caps)
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .max_buffers(2)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .block(false)
            .build();
        let props = gst::Structure::builder("props")
            .field("media.class", "Video/Source")
            .field("node.name", NODE_NAME)
            .field("node.description", "punktfunk output (screencopy)")
            .build();
        let sink = gst::ElementFactory::make("pipewiresink")
            .property_from_str("mode", "provide")
            .property("stream-properties", props)
            .property("client-name", NODE_NAME)
            .property("sync", false)
            .build()
            .context(
                "no pipewiresink: install GStreamer's PipeWire plugin (gstreamer1.0-pipewire)",
            )?;
        let pipeline = gst::Pipeline::new();
        pipeline.add_many([src.upcast_ref(), &sink])?;
        src.link(&sink).context("appsrc ! pipewiresink")?;
        pipeline
            .set_state(gst::State::Ready)
            .context("opening the PipeWire source")?;
        size_sink_pool(&sink, &caps, size)?;
        let src_pad = src.static_pad("src").context("appsrc without a src pad")?;
        src_pad.add_probe(gst::PadProbeType::QUERY_DOWNSTREAM, |_, info| {
            match info.query() {
                Some(q) if matches!(q.view(), gst::QueryView::Allocation(_)) => {
                    gst::PadProbeReturn::Handled
                }
                _ => gst::PadProbeReturn::Ok,
            }
        });
        let staging = staging_pool(&caps, size)?;
        pipeline
            .set_state(gst::State::Playing)
            .context("starting the PipeWire source")?;
        Ok(Self {
            pipeline,
            src,
            offer,
            staging,
        })
    }

    /// Publishes one frame.
    fn push(&mut self, target: &Target, y_invert: bool) -> anyhow::Result<()> {
        self.check_bus()?;
        let offer = target.offer;
        // The node's buffers are sized for one frame size: a new size needs a new node, and
        // the manager starts a new keeper when this one exits.
        if offer != self.offer {
            bail!(
                "the output's frames changed from {}x{} to {}x{}: restarting the screencast",
                self.offer.width,
                self.offer.height,
                offer.width,
                offer.height
            );
        }
        let params =
            gst::BufferPoolAcquireParams::with_flags(gst::BufferPoolAcquireFlags::DONTWAIT);
        // Every staging buffer still queued (no consumer, or a slow one): drop the frame.
        let Ok(mut buffer) = self.staging.acquire_buffer(Some(&params)) else {
            return Ok(());
        };
        {
            let b = buffer
                .get_mut()
                .context("a staging buffer is not writable")?;
            let mut map = b.map_writable().context("mapping a frame")?;
            copy_frame(&offer, target.map.as_slice(), &mut map, y_invert);
        }
        // Flushing (no consumer yet) is not an error: the next frame tries again.
        match self.src.push_buffer(buffer) {
            Ok(_) | Err(gst::FlowError::Flushing) => Ok(()),
            Err(e) => bail!("the PipeWire source refused a frame: {e:?}"),
        }
    }

    fn check_bus(&self) -> anyhow::Result<()> {
        let Some(bus) = self.pipeline.bus() else {
            return Ok(());
        };
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!(
                    "the PipeWire source failed: {} ({:?})",
                    e.error(),
                    e.debug()
                );
            }
        }
        Ok(())
    }
}

/// Configures pipewiresink's own pool for `size`-byte frames of `caps` (see [`Publisher`]).
fn size_sink_pool(sink: &gst::Element, caps: &gst::Caps, size: u32) -> anyhow::Result<()> {
    let pad = sink
        .static_pad("sink")
        .context("pipewiresink without a sink pad")?;
    let mut query = gst::query::Allocation::new(Some(caps), true);
    if !pad.query(&mut query) {
        bail!("pipewiresink answered no allocation query");
    }
    let (pool, _, min, max) = query
        .allocation_pools()
        .next()
        .context("pipewiresink offered no buffer pool")?;
    let pool = pool.context("pipewiresink offered no buffer pool")?;
    let mut config = pool.config();
    config.set_params(Some(caps), size, min, max);
    pool.set_config(config)
        .context("pipewiresink's buffer pool refused the frame size")
}

/// Frames in staging: one being filled, two queued in appsrc (`max-buffers`), one being
/// copied by pipewiresink.
fn staging_pool(caps: &gst::Caps, size: u32) -> anyhow::Result<gst::BufferPool> {
    let pool = gst::BufferPool::new();
    let mut config = pool.config();
    config.set_params(Some(caps), size, 4, 4);
    pool.set_config(config).context("the staging pool")?;
    pool.set_active(true).context("the staging pool")?;
    Ok(pool)
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Entry point for the `screencopy` keeper: runs until the compositor goes away.
pub fn run(node_file: &Path, refresh_mhz: u32) -> anyhow::Result<u8> {
    let conn =
        Connection::connect_to_env().context("cannot connect to the output's Wayland socket")?;
    let (globals, mut queue) = registry_queue_init::<State>(&conn).context("Wayland registry")?;
    let qh = queue.handle();
    let manager: manager_v1::ZwlrScreencopyManagerV1 = globals
        .bind(&qh, 1..=3, ())
        .context("the compositor has no zwlr_screencopy_manager_v1")?;
    let output: wl_output::WlOutput = globals
        .bind(&qh, 1..=1, ())
        .context("the compositor has no wl_output")?;
    let shm: wl_shm::WlShm = globals
        .bind(&qh, 1..=1, ())
        .context("the compositor has no wl_shm")?;
    let waits_for_buffer_done = manager.version() >= 3;
    let mut target: Option<Target> = None;
    let mut publisher: Option<Publisher> = None;
    let mut failures = 0;
    loop {
        let mut state = State::default();
        let frame = manager.capture_output(WITH_CURSOR, &output, &qh, ());
        // Version 3 lists every buffer type, then buffer_done; older ones offer one wl_shm.
        while !(state.failed
            || state.buffer_done
            || (!waits_for_buffer_done && (state.offer.is_some() || state.refused.is_some())))
        {
            queue.blocking_dispatch(&mut state).context("Wayland")?;
        }
        if !state.failed && state.offer.is_none() {
            bail!(
                "the compositor offers no wl_shm buffer the keeper can use: {}",
                state.refused.as_deref().unwrap_or("dmabuf only")
            );
        }
        if let Some(offer) = state.offer.filter(|_| !state.failed) {
            if target.as_ref().is_none_or(|t| t.offer != offer) {
                if let Some(old) = target.take() {
                    old.destroy();
                }
                target = Some(Target::new(&shm, &qh, offer)?);
            }
            let t = target.as_ref().context("no copy buffer")?;
            if frame.version() >= 2 {
                frame.copy_with_damage(&t.buffer);
            } else {
                frame.copy(&t.buffer);
            }
            while !(state.ready || state.failed) {
                queue.blocking_dispatch(&mut state).context("Wayland")?;
            }
        }
        frame.destroy();
        if state.failed {
            failures += 1;
            if failures > MAX_FAILURES {
                bail!("the compositor failed {MAX_FAILURES} copies in a row");
            }
            std::thread::sleep(FAILURE_PAUSE);
            continue;
        }
        failures = 0;
        let t = target.as_ref().context("no copy buffer")?;
        match publisher.as_mut() {
            Some(p) => p.push(t, state.y_invert)?,
            None => {
                let mut p = Publisher::new(t.offer, refresh_mhz)?;
                p.push(t, state.y_invert)?;
                publisher = Some(p);
                spawn_node_finder(node_file.to_path_buf(), t.offer);
            }
        }
    }
}

/// Finds the published node in `pw-dump` and writes the node file; exits the keeper when the
/// node does not appear (the manager's readiness then reports the keeper's exit).
fn spawn_node_finder(node_file: PathBuf, offer: Offer) {
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            let dump = std::process::Command::new("pw-dump")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output();
            if let Some(node) = dump
                .ok()
                .and_then(|o| node_id(&String::from_utf8_lossy(&o.stdout), NODE_NAME))
            {
                let (w, h) = (offer.width as i32, offer.height as i32);
                if let Err(e) = crate::keeper::write_node_file(&node_file, node, w, h) {
                    eprintln!("screencast-keeper: {e:#}");
                    std::process::exit(1);
                }
                eprintln!("screencast-keeper: screencopy node {node} ({w}x{h})");
                return;
            }
            if start.elapsed() > NODE_WAIT {
                eprintln!(
                    "screencast-keeper: the PipeWire node {NODE_NAME} did not appear in pw-dump \
                     within {NODE_WAIT:?} (is pw-dump, from pipewire-bin, installed?)"
                );
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
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

delegate_noop!(State: ignore wl_output::WlOutput);
delegate_noop!(State: ignore wl_shm::WlShm);
delegate_noop!(State: wl_shm_pool::WlShmPool);
delegate_noop!(State: ignore wl_buffer::WlBuffer);
delegate_noop!(State: manager_v1::ZwlrScreencopyManagerV1);

impl Dispatch<frame_v1::ZwlrScreencopyFrameV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &frame_v1::ZwlrScreencopyFrameV1,
        event: frame_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            frame_v1::Event::Buffer {
                format,
                width,
                height,
                stride,
            } => match format {
                WEnum::Value(format) => {
                    let offer = Offer {
                        format,
                        width,
                        height,
                        stride,
                    };
                    match offer.gst_format().and(offer.buffer_len()) {
                        Ok(_) if state.offer.is_none() => state.offer = Some(offer),
                        Ok(_) => {}
                        Err(e) => state.refused = Some(e.to_string()),
                    }
                }
                WEnum::Unknown(code) => {
                    state.refused = Some(format!("unknown wl_shm format {code:#x}"));
                }
            },
            frame_v1::Event::BufferDone => state.buffer_done = true,
            frame_v1::Event::Flags {
                flags: WEnum::Value(flags),
            } => state.y_invert = flags.contains(frame_v1::Flags::YInvert),
            frame_v1::Event::Ready { .. } => state.ready = true,
            frame_v1::Event::Failed => state.failed = true,
            _ => {}
        }
    }
}
