//! A visible, machine-readable frame counter drawn into the luma plane.
//!
//! The test source stamps every frame with its number before the encoder, so a client that
//! decodes the stream can read the number back (frame loss, order, end-to-end latency).
//!
//! Layout: one row of [`BLOCKS`] square blocks at the top-left corner of the frame — a 4-block
//! start marker (white, black, white, black), then the 32 bits of the counter, most significant
//! first (white = 1, black = 0). Blocks are [`BLOCK`] = 16 pixels square when the frame is at least
//! 36 × 16 = 576 pixels wide, otherwise the largest even size that fits (≥ 4; narrower frames
//! carry no counter). Luma is 235 (white) / 16 (black), video range; the chroma under the blocks
//! is set to neutral (128) so colour bleeding cannot shift the luma decision. The reader averages
//! the central half of each block and thresholds at 128, which survives lossy encoding at any sane
//! bitrate.
#![forbid(unsafe_code)]

/// Marker blocks, then data blocks.
pub const MARKER: [bool; 4] = [true, false, true, false];
/// Blocks in the row.
pub const BLOCKS: usize = MARKER.len() + 32;
/// The preferred block size in pixels.
pub const BLOCK: usize = 16;
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const THRESHOLD: u32 = 128;

/// The block size used for a frame `width` × `height`, or `None` if the counter does not fit.
pub fn block_size(width: usize, height: usize) -> Option<usize> {
    let b = (width / BLOCKS).min(BLOCK) & !1;
    (b >= 4 && height >= b).then_some(b)
}

fn bits(value: u32) -> impl Iterator<Item = bool> {
    MARKER
        .into_iter()
        .chain((0..32).rev().map(move |i| (value >> i) & 1 == 1))
}

/// One plane of a frame: data, stride, and size in pixels.
pub struct PlaneMut<'a> {
    /// The plane's bytes, row after row.
    pub data: &'a mut [u8],
    /// Bytes from the start of one row to the next.
    pub stride: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels (rows).
    pub height: usize,
}

fn fill(plane: &mut PlaneMut<'_>, x0: usize, y0: usize, size: usize, value: u8) {
    for y in y0..(y0 + size).min(plane.height) {
        let start = y * plane.stride + x0;
        let end = (start + size).min(y * plane.stride + plane.width);
        if let Some(row) = plane.data.get_mut(start..end) {
            row.fill(value);
        }
    }
}

/// Draws `value` as blocks into the luma plane. Returns false (drawing nothing) if the frame is
/// too small for the counter.
pub fn draw_luma(y: &mut PlaneMut<'_>, value: u32) -> bool {
    let Some(b) = block_size(y.width, y.height) else {
        return false;
    };
    for (i, bit) in bits(value).enumerate() {
        fill(y, i * b, 0, b, if bit { WHITE } else { BLACK });
    }
    true
}

/// Draws `value` as blocks into a frame of 4-byte pixels (XRGB8888, BGRx, RGBx: any layout
/// whose three colour bytes are set alike): white blocks are all 255, black blocks all 0, which
/// a conversion to video-range luma turns into 235 and 16. Returns false (drawing nothing) if the
/// frame is too small for the counter or `data` too short for `stride` × `height`.
pub fn draw_rgbx(data: &mut [u8], stride: usize, width: usize, height: usize, value: u32) -> bool {
    let Some(b) = block_size(width, height) else {
        return false;
    };
    if stride < width * 4 || data.len() < stride * (b - 1) + width * 4 {
        return false;
    }
    for (i, bit) in bits(value).enumerate() {
        let byte = if bit { 255 } else { 0 };
        for y in 0..b {
            let start = y * stride + i * b * 4;
            if let Some(row) = data.get_mut(start..start + b * 4) {
                row.fill(byte);
            }
        }
    }
    true
}

/// Sets the chroma (a half-size U or V plane) under the counter of a `luma_width` ×
/// `luma_height` frame to neutral.
pub fn neutral_chroma(c: &mut PlaneMut<'_>, luma_width: usize, luma_height: usize) -> bool {
    let Some(b) = block_size(luma_width, luma_height) else {
        return false;
    };
    for i in 0..BLOCKS {
        fill(c, i * b / 2, 0, b / 2, 128);
    }
    true
}

/// Draws `value` into the planes of an I420 frame (`y` full size, `u`/`v` half size each way).
/// Returns false (and draws nothing) if the frame is too small for the counter.
pub fn encode_into_planes(
    y: &mut PlaneMut<'_>,
    u: &mut PlaneMut<'_>,
    v: &mut PlaneMut<'_>,
    value: u32,
) -> bool {
    let (w, h) = (y.width, y.height);
    draw_luma(y, value) && neutral_chroma(u, w, h) && neutral_chroma(v, w, h)
}

/// Draws `value` into a tightly packed I420 frame (`width` × `height`, strides = widths).
/// Returns false if the buffer is too small for the frame or the frame too small for the counter.
pub fn encode_into_i420(frame: &mut [u8], width: usize, height: usize, value: u32) -> bool {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let ysize = width * height;
    let csize = cw * ch;
    if frame.len() < ysize + 2 * csize {
        return false;
    }
    let (yd, rest) = frame.split_at_mut(ysize);
    let (ud, rest) = rest.split_at_mut(csize);
    let vd = &mut rest[..csize];
    encode_into_planes(
        &mut PlaneMut {
            data: yd,
            stride: width,
            width,
            height,
        },
        &mut PlaneMut {
            data: ud,
            stride: cw,
            width: cw,
            height: ch,
        },
        &mut PlaneMut {
            data: vd,
            stride: cw,
            width: cw,
            height: ch,
        },
        value,
    )
}

/// Reads the counter from a luma (or gray8) plane; `None` if the marker is not there.
pub fn read_from_gray8(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u32> {
    let b = block_size(width, height)?;
    let q = b / 4;
    let mut value = 0u32;
    for (i, expected) in bits(0).enumerate() {
        let (x0, y0) = (i * b + q, q);
        let mut sum = 0u32;
        let mut n = 0u32;
        for y in y0..y0 + b / 2 {
            let row = luma.get(y * stride + x0..y * stride + x0 + b / 2)?;
            sum += row.iter().map(|&p| p as u32).sum::<u32>();
            n += row.len() as u32;
        }
        let bit = sum / n.max(1) >= THRESHOLD;
        if i < MARKER.len() {
            if bit != expected {
                return None;
            }
        } else {
            value = (value << 1) | bit as u32;
        }
    }
    Some(value)
}

/// Reads the counter from a tightly packed I420 frame.
pub fn read_from_i420(frame: &[u8], width: usize, height: usize) -> Option<u32> {
    read_from_gray8(frame.get(..width * height)?, width, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, fill: u8) -> Vec<u8> {
        vec![fill; w * h + 2 * w.div_ceil(2) * h.div_ceil(2)]
    }

    #[test]
    fn round_trip_raw() {
        for (w, h) in [(1280, 720), (1920, 1080), (640, 480), (320, 240), (144, 16)] {
            for v in [0, 1, 0xdead_beef, u32::MAX, 12345] {
                for bg in [0u8, 128, 255] {
                    let mut f = frame(w, h, bg);
                    assert!(encode_into_i420(&mut f, w, h, v), "{w}x{h}");
                    assert_eq!(read_from_i420(&f, w, h), Some(v), "{w}x{h} {v} on {bg}");
                }
            }
        }
    }

    #[test]
    fn round_trip_rgbx_through_a_luma_conversion() {
        for (w, h) in [(1280, 720), (640, 480), (144, 16)] {
            let stride = w * 4 + 64;
            for v in [0, 1, 0xdead_beef, u32::MAX] {
                let mut f = vec![77u8; stride * h];
                assert!(draw_rgbx(&mut f, stride, w, h, v));
                // BT.601 video range from equal colour bytes: 16 + 219 * c / 255.
                let luma: Vec<u8> = (0..h)
                    .flat_map(|y| (0..w).map(move |x| (y, x)))
                    .map(|(y, x)| (16 + 219 * f[y * stride + x * 4] as u32 / 255) as u8)
                    .collect();
                assert_eq!(read_from_gray8(&luma, w, w, h), Some(v), "{w}x{h} {v:#x}");
            }
        }
        let mut small = vec![0u8; 100 * 4 * 10];
        assert!(!draw_rgbx(&mut small, 400, 100, 10, 1), "too narrow");
        let mut short = vec![0u8; 1280 * 4];
        assert!(
            !draw_rgbx(&mut short, 1280 * 4, 1280, 720, 1),
            "buffer too short"
        );
    }

    #[test]
    fn too_small_or_absent() {
        let mut f = frame(100, 100, 0);
        assert!(!encode_into_i420(&mut f, 100, 100, 5));
        assert_eq!(read_from_i420(&f, 100, 100), None);
        // A frame without a counter has no marker.
        let f = frame(1280, 720, 200);
        assert_eq!(read_from_i420(&f, 1280, 720), None);
        // A short buffer is refused, not indexed out of bounds.
        let mut short = vec![0u8; 10];
        assert!(!encode_into_i420(&mut short, 1280, 720, 1));
        assert_eq!(read_from_i420(&short, 1280, 720), None);
    }

    #[test]
    fn survives_noise() {
        let (w, h) = (1280, 720);
        let mut f = frame(w, h, 90);
        assert!(encode_into_i420(&mut f, w, h, 0x5a5a_1234));
        // ±60 of deterministic pseudo-noise on every luma pixel.
        let mut s = 0x1234_5678u32;
        for p in f[..w * h].iter_mut() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let d = (s % 121) as i32 - 60;
            *p = (*p as i32 + d).clamp(0, 255) as u8;
        }
        assert_eq!(read_from_i420(&f, w, h), Some(0x5a5a_1234));
    }
}
