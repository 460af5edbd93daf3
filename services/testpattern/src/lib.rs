//! The test pattern's pictures and its buffer bookkeeping, free of Wayland so they are tested
//! on their own; `main.rs` is the thin Wayland shell around them.
//!
//! Each frame is busy on purpose, so an encoder works as it would on a game: a noise texture in
//! 4-pixel cells panning diagonally (motion a predictor can follow, detail it cannot drop),
//! under a colour wash that drifts the other way, with [`punktfunk_framecount`]'s counter in the
//! top-left corner so every frame can be checked after capture, encode, transport and decode.
#![forbid(unsafe_code)]

/// Bytes per pixel of the only format drawn (`wl_shm` XRGB8888, which every compositor has).
pub const BYTES_PER_PIXEL: usize = 4;
/// Buffers in flight: one on screen, one held by a screencast, one being drawn.
pub const BUFFERS: usize = 3;
/// Pixels the texture pans per frame (each way).
const PAN: usize = 3;

/// Why a frame could not be drawn.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DrawError {
    /// The buffer is smaller than `stride` × `height`, or `stride` is narrower than a row.
    #[error("a {width}x{height} frame with stride {stride} does not fit in {len} bytes")]
    BufferTooSmall {
        /// Frame width in pixels.
        width: usize,
        /// Frame height in pixels.
        height: usize,
        /// Bytes per row.
        stride: usize,
        /// Bytes given.
        len: usize,
    },
    /// The frame is too small to carry the counter (narrower than 144 pixels).
    #[error("a {width}x{height} frame is too small for the frame counter")]
    NoRoomForCounter {
        /// Frame width in pixels.
        width: usize,
        /// Frame height in pixels.
        height: usize,
    },
}

/// Draws frame number `n` into `frame` (XRGB8888, little-endian: B, G, R, X per pixel).
pub fn draw(
    frame: &mut [u8],
    stride: usize,
    width: usize,
    height: usize,
    n: u32,
) -> Result<(), DrawError> {
    if stride < width * BYTES_PER_PIXEL || frame.len() < stride * height {
        return Err(DrawError::BufferTooSmall {
            width,
            height,
            stride,
            len: frame.len(),
        });
    }
    let t = n as usize;
    for (y, row) in frame.chunks_exact_mut(stride).take(height).enumerate() {
        let cy = ((y + t * PAN) / 4) as u32;
        let wash_g = ((y + 2 * t) & 0xff) as u8;
        for (x, px) in row[..width * BYTES_PER_PIXEL]
            .chunks_exact_mut(BYTES_PER_PIXEL)
            .enumerate()
        {
            let cx = ((x + t * PAN) / 4) as u32;
            let noise = cell_noise(cx, cy);
            let wash_r = (x.wrapping_sub(t) & 0xff) as u8;
            px.copy_from_slice(&[noise, noise / 2 + wash_g / 2, noise / 2 + wash_r / 2, 0xff]);
        }
    }
    if punktfunk_framecount::draw_rgbx(frame, stride, width, height, n) {
        Ok(())
    } else {
        Err(DrawError::NoRoomForCounter { width, height })
    }
}

/// A cheap integer hash of a texture cell: uncorrelated neighbours, the same cell always alike.
fn cell_noise(x: u32, y: u32) -> u8 {
    let mut h = x.wrapping_mul(0x9e37_79b1) ^ y.wrapping_mul(0x85eb_ca77);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    (h >> 24) as u8
}

/// Which of the [`BUFFERS`] the compositor still holds. The shell calls, in this order per
/// frame: [`Buffers::poll_free`] for a buffer to draw into, [`Buffers::handle_attached`] when
/// it committed it, and [`Buffers::handle_release`] whenever the compositor releases one.
/// A resize starts a new [`Buffers::generation`]; releases of the old generation's buffers are
/// ignored (they are destroyed with their pool).
#[derive(Debug, Default)]
pub struct Buffers {
    busy: [bool; BUFFERS],
    generation: u32,
}

impl Buffers {
    /// All buffers free, generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation (the shell tags each `wl_buffer` with it).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// New buffers replace the old ones (after a resize): all free, the generation moves on.
    pub fn handle_reallocated(&mut self) {
        self.busy = [false; BUFFERS];
        self.generation = self.generation.wrapping_add(1);
    }

    /// A free buffer to draw into, if any.
    pub fn poll_free(&self) -> Option<usize> {
        self.busy.iter().position(|b| !b)
    }

    /// Buffer `index` was attached and committed: the compositor holds it until it releases it.
    pub fn handle_attached(&mut self, index: usize) {
        if let Some(b) = self.busy.get_mut(index) {
            *b = true;
        }
    }

    /// The compositor released buffer `index` of `generation`.
    pub fn handle_release(&mut self, generation: u32, index: usize) {
        if generation == self.generation
            && let Some(b) = self.busy.get_mut(index)
        {
            *b = false;
        }
    }
}

/// Parses `WxH` (both even, 144..=7680 × 16..=4320, the range the counter and our outputs take).
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT (e.g. 1280x720)"))?;
    let w: u32 = w.parse().map_err(|_| format!("bad width in {s:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height in {s:?}"))?;
    if !(144..=7680).contains(&w) || !(16..=4320).contains(&h) {
        return Err(format!("{s:?} is outside 144x16 ..= 7680x4320"));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(frame: &[u8], stride: usize, w: usize, h: usize) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .map(|(y, x)| {
                let p = &frame[y * stride + x * 4..];
                ((66 * p[2] as u32 + 129 * p[1] as u32 + 25 * p[0] as u32 + 128) / 256 + 16) as u8
            })
            .collect()
    }

    #[test]
    fn every_frame_carries_its_number_and_differs_from_the_last() {
        let (w, h) = (640, 360);
        let stride = w * 4 + 32;
        let mut prev = vec![0u8; stride * h];
        for n in [0u32, 1, 2, 59, 60, 1_000_003] {
            let mut f = vec![0u8; stride * h];
            draw(&mut f, stride, w, h, n).unwrap();
            assert_eq!(
                punktfunk_framecount::read_from_gray8(&luma(&f, stride, w, h), w, w, h),
                Some(n)
            );
            // Busy: most of the picture below the counter changes from one frame to the next.
            let below = 32 * stride;
            let changed = f[below..]
                .chunks_exact(4)
                .zip(prev[below..].chunks_exact(4))
                .filter(|(a, b)| a != b)
                .count();
            assert!(changed > (w * (h - 32)) * 3 / 4, "frame {n}: {changed}");
            prev = f;
        }
    }

    #[test]
    fn the_texture_has_detail() {
        let (w, h) = (256, 64);
        let mut f = vec![0u8; w * 4 * h];
        draw(&mut f, w * 4, w, h, 7).unwrap();
        let mut seen = [false; 256];
        for px in f[32 * w * 4..].chunks_exact(4) {
            seen[px[0] as usize] = true;
        }
        assert!(
            seen.iter().filter(|s| **s).count() > 200,
            "blue spans the range"
        );
    }

    #[test]
    fn bad_buffers_are_errors() {
        let mut f = vec![0u8; 100];
        assert!(matches!(
            draw(&mut f, 640 * 4, 640, 360, 0),
            Err(DrawError::BufferTooSmall { .. })
        ));
        let mut f = vec![0u8; 100 * 4 * 100];
        assert_eq!(
            draw(&mut f, 400, 100, 100, 0),
            Err(DrawError::NoRoomForCounter {
                width: 100,
                height: 100
            })
        );
    }

    #[test]
    fn buffers_cycle_and_stale_releases_are_ignored() {
        let mut b = Buffers::new();
        for i in 0..BUFFERS {
            assert_eq!(b.poll_free(), Some(i));
            b.handle_attached(i);
        }
        assert_eq!(b.poll_free(), None, "all held by the compositor");
        b.handle_release(0, 1);
        assert_eq!(b.poll_free(), Some(1));
        b.handle_reallocated();
        b.handle_attached(0);
        b.handle_release(0, 0);
        assert_eq!(
            b.poll_free(),
            Some(1),
            "a release of the old generation is ignored"
        );
        b.handle_release(1, 0);
        assert_eq!(b.poll_free(), Some(0));
        b.handle_release(1, 99);
    }

    #[test]
    fn sizes_parse_with_clear_errors() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert!(parse_size("1280").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("100x100").unwrap_err().contains("outside"));
        assert!(parse_size("axb").unwrap_err().contains("width"));
    }
}
