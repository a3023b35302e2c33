//! The kernel's working memory, carved from the caller's `&mut [f32]`: the tiles of one
//! block of query rows and the per-row state of the online softmax, one field per meaning.
//! [`Tiles`] chooses their sizes from the shape and the memory given.

use crate::Shape;
use crate::kv::KvKind;

use super::config::{MAX_LANES, MR, TILE_TABLE};

/// Per-row `f32` arrays of [`Scratch`] (max, sum, window_lo, window_hi, block_max,
/// visible_probe, weight_max, block_sum), plus two `u32` words of included keys.
const PER_ROW: usize = 8 + 2;

/// Packed tiles start on a 64-byte boundary of the working memory (a cache line, an
/// AVX-512 vector): AVX2 prefill ran 3–6% slower on Zen 4 with the tiles 4 bytes off it
/// (benches/NOTES.md, entry 20). `ALIGN_SLACK` floats are set aside to reach it from any
/// `f32` slice. Targets without a SIMD level (microcontrollers, mostly cacheless) keep
/// `f32` alignment, and the code and memory it would take.
const ALIGN_BYTES: usize = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
    64
} else {
    core::mem::align_of::<f32>()
};
const ALIGN_SLACK: usize = ALIGN_BYTES / core::mem::size_of::<f32>() - 1;

/// The tile sizes of one call, and the strides they give the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tiles {
    /// Query rows per block.
    pub rows: usize,
    /// Keys per block.
    pub keys: usize,
    /// Columns of `head_dim` per packed Q panel (0 when no block has more than `MR` rows).
    pub q_cols: usize,
    /// Columns of `v_dim` per pass.
    pub v_cols: usize,
    /// Rows padded to whole vectors of any width: the stride of the `[key][row]` score tile
    /// and of the `[dim][row]` packed Q, and the length of the per-row arrays.
    pub row_stride: usize,
    /// Keys padded to whole vectors: the stride of the `[row][key]` decode score tile.
    pub key_stride: usize,
    /// Floats of the tile that K or V values stored narrower than `f32` are widened into:
    /// a key block of K's packed panel or of V's panel (0 when both are `f32`).
    pub widened: usize,
}

impl Tiles {
    /// The full-size tiles with `f32` K and V, for any shape: the most working memory such a
    /// call uses.
    pub const FULL: Tiles = Tiles {
        rows: TILE_TABLE[0].0,
        keys: TILE_TABLE[0].1,
        q_cols: TILE_TABLE[0].2,
        v_cols: TILE_TABLE[0].3,
        row_stride: TILE_TABLE[0].0.div_ceil(MAX_LANES) * MAX_LANES,
        key_stride: TILE_TABLE[0].1.div_ceil(MAX_LANES) * MAX_LANES,
        widened: 0,
    };

    /// The full-size tiles with K or V stored narrower than `f32`: the most working memory
    /// any call uses.
    pub const FULL_NARROW: Tiles = Tiles {
        widened: Tiles::FULL.keys * max(Tiles::FULL.q_cols, Tiles::FULL.v_cols),
        ..Tiles::FULL
    };

    /// The least tiles, which every shape and K/V type can run with and which are the same
    /// for all of them (one row, `TILE_TABLE`'s last keys and columns, nothing widened):
    /// the smallest working memory, and what firmware keeps on the stack.
    pub const LEAST: Tiles = Tiles::least(&Shape::new(1, 1, 1, 1), (KvKind::Q8_0, KvKind::Q8_0));

    /// The entry `(rows, keys, q_cols, v_cols)` of the tile table, cut to what `shape` can
    /// use, for K and V stored as `kinds`.
    const fn fitted(
        shape: &Shape, kinds: (KvKind, KvKind),
        (rows, keys, q_cols, v_cols): (usize, usize, usize, usize),
    ) -> Tiles {
        let q_len = if shape.q_len == 0 { 1 } else { shape.q_len };
        let group = match shape.q_heads.checked_div(shape.kv_heads) {
            Some(g) => g,
            None => 1,
        };
        // Blocks hold `rows` rows of one head, or the same short query of several heads of
        // one GQA group (see the block loop).
        let rows = if q_len >= rows {
            rows
        } else {
            let heads = rows / q_len;
            let heads = if heads > group { group } else { heads };
            (if heads == 0 { 1 } else { heads }) * q_len
        };
        let packed = rows > MR;
        let q_cols = match packed {
            true if shape.head_dim < q_cols => shape.head_dim,
            true => q_cols,
            false => 0,
        };
        let v_need = shape.v_dim.div_ceil(MAX_LANES) * MAX_LANES;
        let v_cols = if v_need < v_cols { v_need } else { v_cols };
        let v_cols = if v_cols == 0 { MAX_LANES } else { v_cols };
        let row_stride = match packed {
            true => rows.div_ceil(MAX_LANES) * MAX_LANES,
            false => rows,
        };
        // Narrow K and V are widened for the packed tiles only, whose rows share what is
        // widened; decode reads them as stored.
        let k_cols = match kinds.0 {
            KvKind::F32 => 0,
            _ => q_cols,
        };
        let v_widened = match (kinds.1, packed) {
            (KvKind::F32, _) | (_, false) => 0,
            _ => v_cols,
        };
        Tiles {
            rows,
            keys,
            q_cols,
            v_cols,
            row_stride,
            key_stride: keys.div_ceil(MAX_LANES) * MAX_LANES,
            widened: keys * max(k_cols, v_widened),
        }
    }

    /// The `f32`s of working memory these tiles take.
    pub const fn len(self) -> usize {
        let rs = self.row_stride;
        let dot_rows = if self.rows < MR { self.rows } else { MR };
        self.q_cols * rs
            + self.keys * rs
            + dot_rows * self.key_stride
            + rs * self.v_cols
            + PER_ROW * rs
            + self.widened
            + self.align_slack()
    }

    /// Floats that may be skipped at the start of the working memory to align the tiles:
    /// `ALIGN_SLACK` for packed tiles, none for row tiles (decode, and firmware's least).
    const fn align_slack(self) -> usize {
        if self.rows > MR { ALIGN_SLACK } else { 0 }
    }

    /// The best tiles for `shape` with K and V stored as `kinds`: what a call needs for
    /// full speed.
    pub const fn best(shape: &Shape, kinds: (KvKind, KvKind)) -> Tiles {
        Tiles::fitted(shape, kinds, TILE_TABLE[0])
    }

    /// The smallest tiles `shape` can run with.
    pub const fn least(shape: &Shape, kinds: (KvKind, KvKind)) -> Tiles {
        Tiles::fitted(shape, kinds, TILE_TABLE[TILE_TABLE.len() - 1])
    }

    /// The best tiles for `shape` that fit in `len` floats, if any.
    pub fn choose(shape: &Shape, kinds: (KvKind, KvKind), len: usize) -> Option<Tiles> {
        TILE_TABLE
            .iter()
            .map(|&entry| Tiles::fitted(shape, kinds, entry))
            .find(|t| t.len() <= len)
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The tiles and per-row state of one call, borrowed from the working memory.
pub(super) struct Scratch<'w> {
    /// The sizes and strides of the tiles below.
    pub t: Tiles,
    /// The block's Q, `[dim][row]`, one panel of `t.q_cols` columns (packed blocks).
    pub q_pack: &'w mut [f32],
    /// Scores, then weights, `[key][row]` (packed blocks, and decode blocks cut by a mask
    /// edge, whose weights are copied here for the general P·V tiles).
    pub scores: &'w mut [f32],
    /// Scores, then weights, `[row][key]`, of blocks of at most `MR` rows.
    pub dot_scores: &'w mut [f32],
    /// Unnormalised outputs, `[row][t.v_cols]`.
    pub acc: &'w mut [f32],
    /// Per row: the running max of the scores included so far (`-inf`: none yet).
    pub max: &'w mut [f32],
    /// Per row: the running sum of `e^(score − max)`.
    pub sum: &'w mut [f32],
    /// Per row: the first and one past the last key of the current block the mask lets it
    /// see, as `f32` for lane compares.
    pub window_lo: &'w mut [f32],
    pub window_hi: &'w mut [f32],
    /// Per row: the largest of its masked scores in the current block.
    pub block_max: &'w mut [f32],
    /// Per row: 0 when all its visible scores in the current block are finite, else NaN
    /// (some visible key may be excluded by a score of `-inf`).
    pub visible_probe: &'w mut [f32],
    /// Per row: the max the block's weights are taken against (the new running max).
    pub weight_max: &'w mut [f32],
    /// Per row: the sum of the block's weights.
    pub block_sum: &'w mut [f32],
    /// Per row: the keys of the current block it includes, as two `u32` halves of a bit set.
    included: &'w mut [[u32; 2]],
}

impl<'w> Scratch<'w> {
    /// Carves the tiles `t` from `ws`, which holds at least `t.len()` floats (as
    /// [`Tiles::choose`] guarantees), and the tile narrow K/V values are widened into.
    /// Nothing is written.
    pub fn new(t: Tiles, ws: &'w mut [f32]) -> (Scratch<'w>, &'w mut [f32]) {
        let rs = t.row_stride;
        let dot_rows = t.rows.min(MR);
        // Every tile below is a multiple of 16 floats long, so all start aligned.
        let skip = ws.as_ptr().align_offset(ALIGN_BYTES).min(t.align_slack());
        let ws = &mut ws[skip..];
        let (q_pack, ws) = ws.split_at_mut(t.q_cols * rs);
        let (scores, ws) = ws.split_at_mut(t.keys * rs);
        let (dot_scores, ws) = ws.split_at_mut(dot_rows * t.key_stride);
        let (acc, ws) = ws.split_at_mut(rs * t.v_cols);
        let (max, ws) = ws.split_at_mut(rs);
        let (sum, ws) = ws.split_at_mut(rs);
        let (window_lo, ws) = ws.split_at_mut(rs);
        let (window_hi, ws) = ws.split_at_mut(rs);
        let (block_max, ws) = ws.split_at_mut(rs);
        let (visible_probe, ws) = ws.split_at_mut(rs);
        let (weight_max, ws) = ws.split_at_mut(rs);
        let (block_sum, ws) = ws.split_at_mut(rs);
        // f32 and u32 have the same size and alignment: the bits are only ever read as u32.
        let (included, ws) = ws.split_at_mut(2 * rs);
        let widened = &mut ws[..t.widened];
        let included = bytemuck::cast_slice_mut::<f32, [u32; 2]>(included);
        let scratch = Scratch {
            t,
            q_pack,
            scores,
            dot_scores,
            acc,
            max,
            sum,
            window_lo,
            window_hi,
            block_max,
            visible_probe,
            weight_max,
            block_sum,
            included,
        };
        (scratch, widened)
    }

    /// What the current key block means for row `r`.
    #[inline(always)]
    pub fn row(&self, r: usize) -> RowBlock {
        let [lo, hi] = self.included[r];
        let keys = lo as u64 | (hi as u64) << 32;
        RowBlock {
            whole: keys == u64::MAX,
            keys,
        }
    }

    /// Records what the current key block means for row `r`.
    #[inline(always)]
    pub fn set_row(&mut self, r: usize, row: RowBlock) {
        self.included[r] = [row.keys as u32, (row.keys >> 32) as u32];
    }
}

/// What one key block means for one query row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct RowBlock {
    /// Every key of the block is included: the fast multi-row P·V path.
    pub whole: bool,
    /// Included keys, as bits of the block (bit `j` for key `k0 + j`); 0 means skip the row.
    /// All ones exactly when `whole` (a block has fewer than 64 keys).
    pub keys: u64,
}

impl RowBlock {
    /// The row includes no key of the block.
    pub const SKIP: RowBlock = RowBlock {
        whole: false,
        keys: 0,
    };

    /// The keys `lo..hi` of a block of `cols` keys, when the row includes exactly one
    /// non-empty run of them (every key, or a mask edge's cut); `None` for none or several.
    #[inline(always)]
    pub fn run(self, cols: usize) -> Option<(usize, usize)> {
        if self.whole {
            return Some((0, cols));
        }
        let first = self.keys.trailing_zeros();
        let run = (self.keys >> first.min(63)).trailing_ones();
        match self.keys != 0 && run == self.keys.count_ones() {
            true => Some((first as usize, (first + run) as usize)),
            false => None,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use super::*;
    use crate::{Level, Mask, Params};

    /// A row's run of keys: every key when whole, one run when the mask cuts it, none for
    /// no keys or several runs.
    #[test]
    fn a_rows_run_is_its_one_run_of_keys() {
        let row = |keys: u64| RowBlock {
            whole: keys == u64::MAX,
            keys,
        };
        assert_eq!(row(u64::MAX).run(37), Some((0, 37)));
        assert_eq!(row(0b1).run(37), Some((0, 1)));
        assert_eq!(row(0b0111_1000).run(37), Some((3, 7)));
        assert_eq!(row((1 << 37) - 1).run(37), Some((0, 37)));
        assert_eq!(row(1 << 47).run(48), Some((47, 48)));
        assert_eq!(row(0).run(37), None);
        assert_eq!(row(0b1011).run(37), None);
        assert_eq!(RowBlock::SKIP.run(37), None);
    }

    /// Every entry of the tile table runs, alone (the workspace holds exactly its tiles), and
    /// gives the full-size result within rounding: smaller tiles only reorder sums.
    #[test]
    fn every_tile_table_entry_runs_and_agrees_with_the_full_tiles() {
        let shape = if cfg!(miri) {
            Shape::new(1, 6, 30, 5)
        } else {
            Shape::new(2, 70, 120, 140).with_v_dim(150)
        };
        let p = Params::new(shape).with_mask(Mask::causal()).with_scale(0.1);
        let n = |len: usize| (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0);
        let q: vec::Vec<f32> = n(2 * 70 * 140).collect();
        let k: vec::Vec<f32> = n(2 * 120 * 140).map(|x| -x).collect();
        let v: vec::Vec<f32> = n(2 * 120 * 150).map(|x| x * 3.0).collect();
        let out_len = shape.q_heads * shape.q_len * shape.v_dim;
        let mut want = vec![0.0; out_len];
        let f32s = (KvKind::F32, KvKind::F32);
        let mut ws = vec![f32::NAN; Tiles::best(&shape, f32s).len()];
        Level::Detect
            .attention_in(&mut ws, &p, &q, &k, &v, &mut want, None)
            .unwrap();
        for entry in TILE_TABLE {
            let t = Tiles::fitted(&shape, f32s, entry);
            assert_eq!(Tiles::choose(&shape, f32s, t.len()), Some(t), "{entry:?}");
            let mut ws = vec![f32::NAN; t.len()];
            let mut got = vec![0.0; out_len];
            Level::Detect
                .attention_in(&mut ws, &p, &q, &k, &v, &mut got, None)
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{entry:?}: {g} vs {w}"
                );
            }
        }
    }
}
