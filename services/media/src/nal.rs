//! Just enough Annex-B parsing to check what an access unit holds (tests, diagnostics, and the
//! transport side if it wants it): NAL unit types of H.264 and H.265 byte streams.

use crate::description::Codec;

/// The NAL units of an Annex-B byte stream (start codes `00 00 01` / `00 00 00 01`), without
/// their start codes. Bytes before the first start code are ignored.
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // Trailing zero bytes belong to the next 4-byte start code (or are trailing_zero_8bits).
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        out.push(&data[s..end]);
    }
    out
}

/// The NAL unit type of one unit (without start code).
pub fn nal_type(codec: Codec, nal: &[u8]) -> Option<u8> {
    let b = *nal.first()?;
    Some(match codec {
        Codec::H264 => b & 0x1f,
        Codec::Hevc => (b >> 1) & 0x3f,
    })
}

/// The NAL unit types of an access unit, in order.
pub fn nal_types(codec: Codec, au: &[u8]) -> Vec<u8> {
    nal_units(au)
        .into_iter()
        .filter_map(|n| nal_type(codec, n))
        .collect()
}

/// H.264 IDR slice (5); H.265 IDR_W_RADL (19) or IDR_N_LP (20).
pub fn is_idr_type(codec: Codec, t: u8) -> bool {
    match codec {
        Codec::H264 => t == 5,
        Codec::Hevc => t == 19 || t == 20,
    }
}

/// How many IDR slices-bearing pictures the AU starts: 1 if any slice is IDR, else 0.
pub fn contains_idr(codec: Codec, au: &[u8]) -> bool {
    nal_types(codec, au)
        .into_iter()
        .any(|t| is_idr_type(codec, t))
}

/// The AU carries the parameter sets a decoder needs to start (H.264 SPS+PPS; H.265 VPS+SPS+PPS).
pub fn has_parameter_sets(codec: Codec, au: &[u8]) -> bool {
    let t = nal_types(codec, au);
    match codec {
        Codec::H264 => t.contains(&7) && t.contains(&8),
        Codec::Hevc => t.contains(&32) && t.contains(&33) && t.contains(&34),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_types() {
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, // AUD
            0, 0, 0, 1, 0x67, 1, 2, // SPS
            0, 0, 1, 0x68, 3, // PPS
            0, 0, 1, 0x65, 0, 0, 3, 1, 9, // IDR with an emulation-prevented payload
        ];
        assert_eq!(nal_types(Codec::H264, &au), [9, 7, 8, 5]);
        assert!(contains_idr(Codec::H264, &au));
        assert!(has_parameter_sets(Codec::H264, &au));
        assert!(!contains_idr(Codec::H264, &[0, 0, 1, 0x41, 5]));
        assert_eq!(
            nal_types(Codec::Hevc, &[0, 0, 1, 0x26, 1, 0, 0, 1, 0x40, 1]),
            [19, 32]
        );
        assert!(nal_types(Codec::H264, &[]).is_empty());
        assert!(nal_types(Codec::H264, &[0, 0, 1]).is_empty());
    }
}
