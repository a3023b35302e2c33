//! Step 1, Q·Kᵀ: the scores of a block of query rows against a block of keys, with the
//! level's register tile. Packed blocks write `scratch.scores` (`[key][row]`); blocks of at
//! most `MR` rows write `scratch.dot_scores` (`[row][key]`).

use pulp::Simd;

use super::config::{
    DOT_KEYS_NARROW, DOT_KEYS_WIDE, KR_NARROW, KR_WIDE, KR_WIDE_SCALAR, QR_NARROW, QR_WIDE,
    QR_WIDE_SCALAR, dot_keys, wide,
};
use super::mem::{KvRows, Rows, RowsMut, key_steps, strided_copy, widen, with_count};
use super::scratch::Scratch;
use super::tiles::{dot_kernel, qk_kernel};
use super::widen::Widen;
use super::{Block, Inputs, Keys, Op, Read};
use crate::kv::{self, KvType};

impl Block {
    /// Packs the whole head's Q once per block, when it fits one panel (packed blocks only;
    /// wider heads are packed per key block, panel by panel).
    #[inline(always)]
    pub(super) fn prepare_q<S: Simd>(self, x: &Inputs, scratch: &mut Scratch) {
        let head_dim = x.p.shape.head_dim;
        if self.packed() && head_dim <= scratch.t.q_cols {
            self.pack_q::<S>(x, 0, head_dim, scratch);
        }
    }

    /// Where row `r` of a panel `dw` columns wide starts in `q_pack`, and the distance
    /// between its columns. SIMD levels pack `q_pack[d][r]` (rows `row_stride` apart, a
    /// vector of rows per load); one lane packs each tile of `QR_WIDE_SCALAR` rows apart,
    /// `[d][r]` within it (the last, partial tile as narrow as its rows), so that a tile's
    /// rows of consecutive columns are consecutive floats (one `vldmia` loads two columns
    /// in `vfp::qk_4x4`).
    #[inline(always)]
    fn q_pack_at<S: Simd>(self, r: usize, dw: usize, row_stride: usize) -> (usize, usize) {
        match S::F32_LANES {
            1 => {
                let first = r - r % QR_WIDE_SCALAR;
                let width = QR_WIDE_SCALAR.min(self.rows - first);
                (first * dw + r % QR_WIDE_SCALAR, width)
            }
            _ => (r, row_stride),
        }
    }

    /// Packs columns `d0..d0 + dw` of the block's Q rows where [`Block::q_pack_at`] says,
    /// with zeros in the padding rows of the last vector.
    #[inline(always)]
    fn pack_q<S: Simd>(self, x: &Inputs, d0: usize, dw: usize, scratch: &mut Scratch) {
        let stride = scratch.t.row_stride;
        let q_pack = &mut scratch.q_pack[..dw * stride];
        for r in 0..self.rows {
            let (h, i) = self.row(r);
            let (at, step) = self.q_pack_at::<S>(r, dw, stride);
            strided_copy(&mut q_pack[at..], step, &x.q[x.p.q.at(h, i) + d0..][..dw]);
        }
        for r in self.rows..self.row_vectors::<S>() * S::F32_LANES {
            for d in 0..dw {
                q_pack[d * stride + r] = 0.0;
            }
        }
    }

    /// The scores of the key block `keys` of `k`: the dot tile streaming K as it is stored
    /// for blocks of at most `MR` rows; for packed blocks, the register tile over K's rows as
    /// `f32`, the caller's when K is `f32` and otherwise widened into `tile` panel by panel.
    #[inline(always)]
    pub(super) fn scores<S: Widen, K: KvType>(
        self, simd: S, x: &Inputs, k: &[K], keys: Keys, scratch: &mut Scratch, tile: &mut [f32],
    ) {
        if !self.packed() {
            return self.stored_step(simd, x, (k, keys), scratch, Read::Scores);
        }
        let head_dim = x.p.shape.head_dim;
        let q_cols = scratch.t.q_cols;
        let (ks, first) = (x.p.k.row_stride, x.p.k_at(self.g, keys.k0));
        for d0 in (0..head_dim).step_by(q_cols) {
            let dw = q_cols.min(head_dim - d0);
            let rows = match kv::as_f32(k) {
                // Validation guarantees these rows are inside `k`; checked once per panel.
                Some(k) => KvRows {
                    data: &k[first + d0..][..(keys.cols - 1) * ks + dw],
                    stride: ks,
                    col0: 0,
                    ahead: 0,
                },
                None => {
                    let src = (k.get(first..).unwrap_or(&[]), ks);
                    widen(simd, src, keys.cols, (d0, dw), tile)
                }
            };
            let op = Op::Scores { d0, dw, k: rows };
            self.step(simd, x, keys, scratch, op);
        }
    }

    /// `scratch.scores[j][r] += q[row r][d0..d0 + dw] · k[k0 + j][d0..d0 + dw]` for a packed
    /// block (`=` for the first panel), with the level's register tile; `k` holds the key
    /// block's rows of those columns.
    #[inline(always)]
    pub(super) fn scores_tiled<S: Simd>(
        self, simd: S, x: &Inputs, keys: Keys, panel: (usize, usize), k: KvRows,
        scratch: &mut Scratch,
    ) {
        if S::F32_LANES == 1 {
            self.scores_tile::<S, KR_WIDE_SCALAR, QR_WIDE_SCALAR>(simd, x, keys, panel, k, scratch)
        } else if wide::<S>() {
            self.scores_tile::<S, KR_WIDE, QR_WIDE>(simd, x, keys, panel, k, scratch)
        } else {
            self.scores_tile::<S, KR_NARROW, QR_NARROW>(simd, x, keys, panel, k, scratch)
        }
    }

    /// [`Block::scores_tiled`] with tiles of `KR` keys × `QR` vectors of rows.
    #[inline(always)]
    fn scores_tile<S: Simd, const KR: usize, const QR: usize>(
        self, simd: S, x: &Inputs, keys: Keys, (d0, dw): (usize, usize), k: KvRows,
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let head_dim = x.p.shape.head_dim;
        let row_vectors = self.row_vectors::<S>();
        let cols = keys.cols;
        let (q_cols, stride) = (scratch.t.q_cols, scratch.t.row_stride);
        if head_dim > q_cols {
            self.pack_q::<S>(x, d0, dw, scratch);
        }
        for j0 in (0..cols).step_by(KR) {
            // A tile past the last key repeats it; those scores are never read.
            let k_rows: [*const f32; KR] = core::array::from_fn(|kx| {
                let j = (j0 + kx).min(cols - 1);
                k.data[j * k.stride..][..dw].as_ptr()
            });
            let mut c = 0;
            while c < row_vectors {
                // One lane takes the rows past the last whole tile one at a time: fewer
                // instances in firmware.
                let n = match QR.min(row_vectors - c) {
                    n if S::F32_LANES == 1 && n < QR => 1,
                    n => n,
                };
                let (at, q_stride) = self.q_pack_at::<S>(c * lanes, dw, stride);
                let packed = &scratch.q_pack[at..][..(dw - 1) * q_stride + n * lanes];
                let s =
                    &mut scratch.scores[j0 * stride + c * lanes..][..(KR - 1) * stride + n * lanes];
                let qp = Rows {
                    ptr: packed.as_ptr(),
                    stride: q_stride,
                };
                let sp = RowsMut {
                    ptr: s.as_mut_ptr(),
                    stride,
                };
                let first = d0 == 0;
                // SAFETY: every `k_rows` pointer has `dw` floats; `packed` holds `dw` rows
                // of `n` vectors at stride `q_stride`; `s` holds `KR` rows of `n` vectors
                // (`j0 + KR ≤ t.keys` as KR divides the keys of a packed block).
                unsafe {
                    // Counts `n` never takes are left out. One lane takes a last lone key
                    // alone, not as a tile of `KR` whose other keys repeat it (the firmware
                    // call's 37 keys are 9 tiles and one key).
                    with_count!(n, [4, 3, 2], 1, N => if N <= QR && (S::F32_LANES > 1 || N == QR || N == 1) {
                        match S::F32_LANES == 1 && N == QR && j0 + 1 == cols {
                            true => qk_kernel::<S, 1, N>(simd, [k_rows[0]], qp, sp, dw, first),
                            false => qk_kernel::<S, KR, N>(simd, k_rows, qp, sp, dw, first),
                        }
                    })
                }
                c += n;
            }
        }
    }
}

impl Block {
    /// `scratch.dot_scores[m][j]` for a block of `M ≤ MR` rows: each K row is streamed once,
    /// straight from memory, and dotted with every query row, lanes along `head_dim`.
    #[inline(always)]
    pub(super) fn scores_dot<S: Widen, K: KvType, const M: usize>(
        self, simd: S, x: &Inputs, k: &[K], keys: Keys, scratch: &mut Scratch,
    ) {
        let head_dim = x.p.shape.head_dim;
        let q_rows: [*const f32; M] = core::array::from_fn(|m| {
            let (h, i) = self.row(m);
            x.q[x.p.q.at(h, i)..][..head_dim].as_ptr()
        });
        // Validation guarantees these rows are inside `k`; slicing checks it once per block.
        let ks = x.p.k.row_stride;
        let cols = keys.cols;
        let units = head_dim / K::KIND.values();
        let k_block = &k[x.p.k_at(self.g, keys.k0)..][..(cols - 1) * ks + units];
        let key_stride = scratch.t.key_stride;
        let out = &mut scratch.dot_scores[..M * key_stride];
        // Decode streams K from memory once: ask for the rows `keys.k_ahead` names with the
        // CPU's hint for lines read once. (V's lines are asked for by P·V, a block ahead.)
        for (j, n) in key_steps(cols, dot_keys::<S, K>()) {
            // SAFETY: keys j..j + n < cols are rows of `k_block`, each `head_dim` values
            // (`units` elements) at stride `ks`; every `q_rows[m]` starts `head_dim` readable floats; and
            // `out[m·key_stride + j + x]` is in `out` for m < M, j + x < cols ≤ key_stride.
            unsafe {
                let k = Rows {
                    ptr: k_block.as_ptr().add(j * ks),
                    stride: ks,
                };
                let s = RowsMut {
                    ptr: out.as_mut_ptr().add(j),
                    stride: key_stride,
                };
                let ahead = (keys.k_ahead.rows(k_block.as_ptr(), j), x.stream_hint);
                // Each level instantiates only its own tile (the guards are constant).
                match n {
                    DOT_KEYS_WIDE if dot_keys::<S, K>() == DOT_KEYS_WIDE => {
                        dot_kernel::<S, K, M, DOT_KEYS_WIDE, 1>(simd, k, q_rows, head_dim, ahead, s)
                    }
                    DOT_KEYS_NARROW if dot_keys::<S, K>() == DOT_KEYS_NARROW => {
                        dot_kernel::<S, K, M, DOT_KEYS_NARROW, 1>(
                            simd, k, q_rows, head_dim, ahead, s,
                        )
                    }
                    // One key: two chains per row keep 2·M multiply-adds in flight.
                    _ => dot_kernel::<S, K, M, 1, 2>(simd, k, q_rows, head_dim, ahead, s),
                }
            }
        }
    }
}
