//! The pure pieces of the wlroots screencopy keeper (the binary's `screencopy_keeper` is the
//! shell): which `wl_shm` formats it can publish and as what, the row copy out of the
//! compositor's buffer, and finding the node it published in `pw-dump`'s output.

use wayland_client::protocol::wl_shm;

/// `node.name` of the PipeWire video source the keeper publishes (one per output: each output
/// has its own PipeWire daemon).
pub const NODE_NAME: &str = "punktfunk-screencopy";

/// What the compositor offers to copy a frame into (`zwlr_screencopy_frame_v1.buffer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The `wl_shm` format.
    pub format: wl_shm::Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row in the compositor's buffer.
    pub stride: u32,
}

/// An offer the keeper cannot publish.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    /// Not a 32-bit RGB format GStreamer has a name for.
    #[error("the compositor offers wl_shm format {0:?}, which the keeper cannot publish")]
    Format(wl_shm::Format),
    /// Sizes that do not fit the buffer they describe.
    #[error("a {width}x{height} frame with stride {stride} does not fit (at most {max_len} bytes)")]
    Size {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Stride.
        stride: u32,
        /// The largest buffer the keeper maps.
        max_len: usize,
    },
}

/// The most a frame buffer may take: 8K RGBx (the protocol's largest mode is smaller).
pub const MAX_FRAME_BYTES: usize = 7680 * 4320 * 4;

impl Offer {
    /// The GStreamer `video/x-raw` format of the offer (`wl_shm` formats name the bytes of a
    /// little-endian 32-bit word from the top: XRGB8888 is B, G, R, X in memory).
    pub fn gst_format(&self) -> Result<&'static str, OfferError> {
        match self.format {
            wl_shm::Format::Xrgb8888 => Ok("BGRx"),
            wl_shm::Format::Argb8888 => Ok("BGRA"),
            wl_shm::Format::Xbgr8888 => Ok("RGBx"),
            wl_shm::Format::Abgr8888 => Ok("RGBA"),
            other => Err(OfferError::Format(other)),
        }
    }

    /// Bytes of one packed row of the published frame.
    pub fn row_bytes(&self) -> usize {
        self.width as usize * 4
    }

    /// Bytes of the compositor's buffer (stride × height), checked against the offer's own
    /// width and [`MAX_FRAME_BYTES`]: the compositor is trusted, but not to the point of
    /// mapping whatever it says.
    pub fn buffer_len(&self) -> Result<usize, OfferError> {
        let len = self.stride as usize * self.height as usize;
        if self.width == 0
            || self.height == 0
            || (self.stride as usize) < self.row_bytes()
            || len > MAX_FRAME_BYTES
        {
            return Err(OfferError::Size {
                width: self.width,
                height: self.height,
                stride: self.stride,
                max_len: MAX_FRAME_BYTES,
            });
        }
        Ok(len)
    }

    /// The `video/x-raw` caps of the published frames at the output's refresh (in mHz).
    /// Frames come on damage, so the rate is a ceiling; but a variable rate (`0/1`) is not
    /// usable: pipewiresink then negotiates buffers it cannot fill and the consumer's
    /// stream is dropped.
    pub fn caps(&self, refresh_mhz: u32) -> Result<String, OfferError> {
        Ok(format!(
            "video/x-raw,format={},width={},height={},framerate={}/1000",
            self.gst_format()?,
            self.width,
            self.height,
            refresh_mhz.max(1)
        ))
    }
}

/// Copies a frame out of the compositor's buffer (`src`, rows `stride` apart) into a packed
/// one (`dst`, `height` rows of [`Offer::row_bytes`]), upside down when the frame carries the
/// `y_invert` flag. `src` and `dst` must hold the offer's frame ([`Offer::buffer_len`] and
/// rows × height bytes); shorter ones copy what fits.
pub fn copy_frame(offer: &Offer, src: &[u8], dst: &mut [u8], y_invert: bool) {
    let row = offer.row_bytes();
    let stride = offer.stride as usize;
    let height = offer.height as usize;
    if stride == row && !y_invert {
        let n = (row * height).min(src.len()).min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    for (y, out) in dst.chunks_exact_mut(row).take(height).enumerate() {
        let from = if y_invert { height - 1 - y } else { y } * stride;
        if let Some(line) = src.get(from..from + row) {
            out.copy_from_slice(line);
        }
    }
}

/// The id of the node named `name` in `pw-dump`'s JSON (`None` when it is not there or the
/// text is not `pw-dump`'s).
pub fn node_id(pw_dump: &str, name: &str) -> Option<u32> {
    let objects: Vec<serde_json::Value> = serde_json::from_str(pw_dump).ok()?;
    objects.iter().find_map(|o| {
        let is_node = o.get("type")?.as_str()? == "PipeWire:Interface:Node";
        let named = o.pointer("/info/props/node.name")?.as_str()? == name;
        (is_node && named)
            .then(|| o.get("id")?.as_u64()?.try_into().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(stride: u32) -> Offer {
        Offer {
            format: wl_shm::Format::Xrgb8888,
            width: 2,
            height: 3,
            stride,
        }
    }

    #[test]
    fn formats_and_caps() {
        assert_eq!(
            offer(8).caps(59_940).unwrap(),
            "video/x-raw,format=BGRx,width=2,height=3,framerate=59940/1000"
        );
        let rgb565 = Offer {
            format: wl_shm::Format::Rgb565,
            ..offer(8)
        };
        assert_eq!(
            rgb565.gst_format(),
            Err(OfferError::Format(wl_shm::Format::Rgb565))
        );
    }

    #[test]
    fn sizes_are_checked_before_anything_is_mapped() {
        assert_eq!(offer(8).buffer_len(), Ok(24));
        assert_eq!(offer(16).buffer_len(), Ok(48));
        assert!(offer(4).buffer_len().is_err(), "stride below a row");
        let huge = Offer {
            width: 65_535,
            height: 65_535,
            stride: 65_535 * 4,
            ..offer(8)
        };
        assert!(huge.buffer_len().is_err());
        assert!(
            Offer {
                height: 0,
                ..offer(8)
            }
            .buffer_len()
            .is_err()
        );
    }

    #[test]
    fn copies_packed_padded_and_inverted_frames() {
        // Rows of 8 bytes, stride 12 (4 bytes of padding per row).
        let src: Vec<u8> = (0..36).collect();
        let mut dst = vec![0u8; 24];
        copy_frame(&offer(12), &src, &mut dst, false);
        assert_eq!(&dst[..8], &src[0..8]);
        assert_eq!(&dst[8..16], &src[12..20]);
        assert_eq!(&dst[16..24], &src[24..32]);
        copy_frame(&offer(12), &src, &mut dst, true);
        assert_eq!(&dst[..8], &src[24..32]);
        assert_eq!(&dst[16..24], &src[0..8]);
        let packed: Vec<u8> = (0..24).collect();
        copy_frame(&offer(8), &packed, &mut dst, false);
        assert_eq!(dst, packed);
        // A short source copies what fits and never panics.
        copy_frame(&offer(12), &src[..20], &mut dst, true);
    }

    #[test]
    fn finds_the_node_by_name_in_pw_dump_output() {
        let dump = r#"[
            {"id": 0, "type": "PipeWire:Interface:Core", "info": {"props": {}}},
            {"id": 31, "type": "PipeWire:Interface:Client", "info": {"props": {"node.name": "punktfunk-screencopy"}}},
            {"id": 30, "type": "PipeWire:Interface:Node", "info": {"props": {"node.name": "punktfunk-screencopy", "media.class": "Video/Source"}}},
            {"id": 28, "type": "PipeWire:Interface:Node", "info": null}
        ]"#;
        assert_eq!(node_id(dump, NODE_NAME), Some(30));
        assert_eq!(node_id(dump, "other"), None);
        assert_eq!(node_id("not json", NODE_NAME), None);
        assert_eq!(node_id("{}", NODE_NAME), None);
    }
}
