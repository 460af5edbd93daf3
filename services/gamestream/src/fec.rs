//! GF(2^8) Reed-Solomon exactly as moonlight-common-c decodes it.
//!
//! * **Video**: systematic Cauchy code over GF(2^8), polynomial 0x11D (what nanors'
//!   `reed_solomon_new(d, p)` builds): parity shard `j`, data shard `i`:
//!   `C[j][i] = 1 / ((p + i) XOR j)`. The matrix depends on `p`, so the parity count the
//!   client derives from the packet's FEC percentage must equal the one used here (see
//!   [`plan_frame`]).
//! * **Audio**: RS(4, 2) with a fixed matrix both Sunshine and the client patch into nanors:
//!   [`AUDIO_MATRIX`].
//!
//! The field arithmetic (`mul_slice_xor`, `div`) comes from `reed-solomon-erasure`'s
//! `galois_8` module, whose field is the same (0x11D); its own encoder builds a
//! Vandermonde-derived matrix that the clients cannot decode, hence the matrix here. Both
//! are checked against the spec's vectors (nanors output).

use reed_solomon_erasure::galois_8;

/// Most shards (data + parity) in one video FEC block.
pub const MAX_BLOCK_SHARDS: u32 = 255;
/// Most FEC blocks per video frame (2-bit field).
pub const MAX_BLOCKS: u32 = 4;
/// Most data shards in one block (10-bit field), reachable only with FEC off.
pub const MAX_BLOCK_DATA_SHARDS: u32 = 1023;
/// Largest FEC percentage the 8-bit field carries.
pub const MAX_FEC_PERCENT: u32 = 255;

/// The audio RS(4,2) parity matrix (rows = parity shards, columns = data shards).
pub const AUDIO_MATRIX: [[u8; 4]; 2] = [[0x77, 0x40, 0x38, 0x0E], [0xC7, 0xA7, 0x0D, 0x6C]];

/// Cauchy coefficient of parity shard `j` over data shard `i` for `p` parity shards.
pub fn cauchy(p: usize, i: usize, j: usize) -> u8 {
    // p + i <= 254 and j < p, so the XOR is never 0.
    galois_8::div(1, ((p + i) ^ j) as u8)
}

/// Computes `parity.len()` video parity shards over `data` (all shards the same length).
pub fn encode_video<D: AsRef<[u8]>, P: AsMut<[u8]>>(data: &[D], parity: &mut [P]) {
    let p = parity.len();
    for (j, out) in parity.iter_mut().enumerate() {
        let out = out.as_mut();
        out.fill(0);
        for (i, d) in data.iter().enumerate() {
            galois_8::mul_slice_xor(cauchy(p, i, j), d.as_ref(), out);
        }
    }
}

/// Computes the two audio parity shards over four equally long data shards.
pub fn encode_audio(data: [&[u8]; 4], parity: [&mut [u8]; 2]) {
    for (row, out) in AUDIO_MATRIX.iter().zip(parity) {
        out.fill(0);
        for (c, d) in row.iter().zip(data) {
            galois_8::mul_slice_xor(*c, d, out);
        }
    }
}

/// One FEC block of a frame: `data` shards, `parity` shards and the percentage written into
/// `fecInfo` (from which the client recomputes `parity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Block {
    /// Data shards.
    pub data: u32,
    /// Parity shards.
    pub parity: u32,
    /// The FEC percentage field.
    pub percent: u32,
}

/// The block layout of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlan {
    /// Blocks in use (1..=4).
    pub count: usize,
    /// The blocks (only the first `count` are meaningful).
    pub blocks: [Block; MAX_BLOCKS as usize],
}

impl FramePlan {
    /// Datagrams of the frame.
    pub fn packets(&self) -> u32 {
        self.blocks[..self.count]
            .iter()
            .map(|b| b.data + b.parity)
            .sum()
    }
}

/// The parity count the client derives from `d` and the percentage field.
pub fn client_parity(d: u32, percent: u32) -> u32 {
    (d * percent).div_ceil(100)
}

/// Parity shards and percentage field for a block of `d` data shards at `fec_percent`, with
/// at least `min_parity` parity shards where the fields allow it. Always satisfies
/// `client_parity(d, percent) == parity`, `d + parity <= 255`, `percent <= 255`.
pub fn block_parity(d: u32, fec_percent: u32, min_parity: u32) -> Block {
    if fec_percent == 0 || d == 0 || d >= MAX_BLOCK_SHARDS {
        return Block {
            data: d,
            parity: 0,
            percent: 0,
        };
    }
    let base = client_parity(d, fec_percent);
    let want = base.max(min_parity).min(MAX_BLOCK_SHARDS - d);
    for p in (0..=want).rev() {
        let percent = if p == base { fec_percent } else { 100 * p / d };
        if percent <= MAX_FEC_PERCENT && client_parity(d, percent) == p {
            return Block {
                data: d,
                parity: p,
                percent,
            };
        }
    }
    Block {
        data: d,
        parity: 0,
        percent: 0,
    }
}

/// Splits `dtot` data shards into FEC blocks (spec §6.4 step 2-3): as few blocks as
/// `fec_percent` allows (at most 4, each at most 255 shards); if that needs more than 4, FEC
/// is off for the frame and 4 blocks carry it. `None` if the frame does not fit at all
/// (more than 4 × 1023 shards).
pub fn plan_frame(dtot: u32, fec_percent: u32, min_parity: u32) -> Option<FramePlan> {
    let dtot = dtot.max(1);
    let mut f = fec_percent.min(MAX_FEC_PERCENT);
    let mut count = if f == 0 {
        dtot.div_ceil(MAX_BLOCK_DATA_SHARDS)
    } else {
        let max_d = MAX_BLOCK_SHARDS * 100 / (100 + f);
        dtot.div_ceil(max_d)
    };
    if count > MAX_BLOCKS {
        f = 0;
        count = MAX_BLOCKS;
    }
    if dtot.div_ceil(count) > MAX_BLOCK_DATA_SHARDS {
        return None;
    }
    let mut blocks = [Block::default(); MAX_BLOCKS as usize];
    let (base, extra) = (dtot / count, dtot % count);
    for (b, slot) in blocks.iter_mut().enumerate().take(count as usize) {
        let d = base + u32::from((b as u32) < extra);
        *slot = block_parity(d, f, min_parity);
    }
    Some(FramePlan {
        count: count as usize,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appendix_c_video_vectors() {
        let data: Vec<Vec<u8>> = (0..3u8)
            .map(|s| (0..8u8).map(|k| s * 0x10 + k).collect())
            .collect();
        let mut parity = vec![vec![0u8; 8]; 2];
        encode_video(&data, &mut parity);
        assert_eq!(parity[0], [0xf3, 0xce, 0x89, 0xb4, 0x07, 0x3a, 0x7d, 0x40]);
        assert_eq!(parity[1], [0x51, 0x8c, 0xf6, 0x2b, 0x02, 0xdf, 0xa5, 0x78]);
        assert_eq!(
            [cauchy(2, 0, 0), cauchy(2, 1, 0), cauchy(2, 2, 0)],
            [0x8e, 0xf4, 0x47]
        );
        assert_eq!(
            [cauchy(2, 0, 1), cauchy(2, 1, 1), cauchy(2, 2, 1)],
            [0xf4, 0x8e, 0xa7]
        );
        let mut parity = vec![vec![0u8; 4]; 2];
        encode_video(&[[0xde, 0xad, 0xbe, 0xef]], &mut parity);
        assert_eq!(parity[0], [0x6f, 0xd8, 0x5f, 0xf9]);
        assert_eq!(parity[1], [0x4a, 0x90, 0x6a, 0xae]);
    }

    #[test]
    fn appendix_c_audio_vector() {
        let d: Vec<Vec<u8>> = (4..8u8)
            .map(|s| (0..8u8).map(|k| s * 0x10 + k).collect())
            .collect();
        let (mut p0, mut p1) = ([0u8; 8], [0u8; 8]);
        encode_audio([&d[0], &d[1], &d[2], &d[3]], [&mut p0, &mut p1]);
        assert_eq!(p0, [0x5a, 0x5b, 0x58, 0x59, 0x5e, 0x5f, 0x5c, 0x5d]);
        assert_eq!(p1, [0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7]);
    }

    #[test]
    fn spec_worked_examples() {
        // 30 000-byte P-frame, L = 1376: 22 data shards, one block, 5 parity at 20 %.
        let plan = plan_frame(22, 20, 2).unwrap();
        assert_eq!(plan.count, 1);
        assert_eq!(
            plan.blocks[0],
            Block {
                data: 22,
                parity: 5,
                percent: 20
            }
        );
        assert_eq!(plan.packets(), 27);
        // A one-shard frame gets the minimum parity 2 at 200 %.
        assert_eq!(
            plan_frame(1, 20, 2).unwrap().blocks[0],
            Block {
                data: 1,
                parity: 2,
                percent: 200
            }
        );
        // d = 199 at 20 %: the floor-based trap of the spec is avoided.
        let b = block_parity(199, 20, 2);
        assert_eq!(client_parity(b.data, b.percent), b.parity);
        // 212 data shards fit one block at 20 %, 213 need two.
        assert_eq!(plan_frame(212, 20, 2).unwrap().count, 1);
        assert_eq!(plan_frame(213, 20, 2).unwrap().count, 2);
        // Beyond 4 blocks FEC is off and 4 blocks carry up to 4 × 1023 shards.
        let big = plan_frame(4 * 212 + 1, 20, 2).unwrap();
        assert_eq!(big.count, 4);
        assert!(big.blocks.iter().all(|b| b.parity == 0 && b.percent == 0));
        assert!(plan_frame(4 * 1023, 20, 2).is_some());
        assert!(plan_frame(4 * 1023 + 1, 20, 2).is_none());
    }

    proptest::proptest! {
        #[test]
        fn plans_keep_the_client_invariants(dtot in 1u32..5000, f in 0u32..=255, minp in 0u32..=32) {
            if let Some(plan) = plan_frame(dtot, f, minp) {
                let sum: u32 = plan.blocks[..plan.count].iter().map(|b| b.data).sum();
                proptest::prop_assert_eq!(sum, dtot);
                for b in &plan.blocks[..plan.count] {
                    proptest::prop_assert!(b.data >= 1 && b.data <= MAX_BLOCK_DATA_SHARDS);
                    proptest::prop_assert!(b.percent <= 255);
                    proptest::prop_assert_eq!(client_parity(b.data, b.percent), b.parity);
                    if b.parity > 0 {
                        proptest::prop_assert!(b.data + b.parity <= 255);
                    }
                }
            } else {
                proptest::prop_assert!(dtot > 4 * MAX_BLOCK_DATA_SHARDS);
            }
        }
    }
}
