//! Step 3, P·V: each row's accumulator gains the block's weights times the V rows of the keys
//! it includes. Rows that include the whole block share the register tile; rows cut by a
//! mask edge take their runs of keys through the same tile, where a row's weight is 0 on the
//! keys past its run that others include, but only over V rows whose values are finite;
//! scattered exclusions go key by key. So a value that is infinite or NaN is never multiplied
//! by the weight of a row that excludes its key.

use pulp::Simd;

use super::config::{MR, NV_NARROW, NV_WIDE, PV_KEYS, pv_rows, wide};
use super::mem::{
    KvRows, Rows, RowsMut, key_steps, load, strided_copy, vectors_mut, widen, with_count,
};
use super::scratch::Scratch;
use super::tiles::{pv_kernel, pv_keys_kernel};
use super::widen::Widen;
use super::{Block, Inputs, Keys, Op, Read};
use crate::kv::{self, KvKind, KvType};

/// The most rows [`Block::values_tiled`] runs through one register tile: the level's tile
/// for `f32` rows (the caller's V or the widened tile). V read as stored comes from decode
/// blocks, at most `MR` rows, all of them at once on one lane; SIMD levels read it so only
/// for blocks a mask cuts (whole rows stream V key-major, `pv_keys`), one row at a time,
/// which spares them an instance per row count (compile time: `benches/NOTES.md` 31).
const fn most<S: Simd, T: KvType>() -> usize {
    match (T::KIND, S::F32_LANES) {
        (KvKind::F32, _) => pv_rows::<S>(),
        (_, 1) => MR,
        _ => 1,
    }
}

impl Block {
    /// `acc[r] += Σ_j weight[r][j] · v[g][k0 + j]` for every row the block includes: on SIMD
    /// levels, decode blocks whose rows all include the whole block stream V as it is stored
    /// ([`Block::pv_keys`]); the others take the register tiles ([`Block::values_tiled`])
    /// over V's rows: the caller's when V is `f32` (whose lines `keys.v_ahead` further on
    /// they prefetch where `config::prefetch_values` says so), and otherwise, for a packed
    /// block, widened into `tile`, which its rows share, or for a decode block read as stored
    /// (each value is read once there as in the widening, and the least tiles, which the
    /// smallest workspaces and firmware's stack take, need no tile).
    #[inline(always)]
    pub(super) fn weighted_values<S: Widen, V: KvType>(
        self, simd: S, x: &Inputs, v: &[V], keys: Keys, scratch: &mut Scratch, tile: &mut [f32],
    ) {
        // With one lane a key-major walk would load and store an accumulator per
        // multiply-add: the scalar level keeps the register tile.
        let all_whole = (0..self.rows).all(|r| scratch.row(r).whole);
        if S::F32_LANES > 1 && !self.packed() && all_whole {
            return self.stored_step(simd, x, (v, keys), scratch, Read::Values);
        }
        let (stride, first) = (x.p.v.row_stride, x.p.v_at(self.g, keys.k0));
        let rows = match kv::as_f32(v) {
            // Validation guarantees these rows are inside `v`; checked once per block.
            Some(v) => KvRows {
                data: &v[first + self.v0..][..(keys.cols - 1) * stride + self.vw],
                stride,
                col0: 0,
                // The tile asks for the row `ahead` past each row read: only rows at V's
                // own stride (not a turn's shares, `Ahead::step` = the head stride).
                ahead: match x.prefetch_values && keys.v_ahead.step == stride {
                    true => keys.v_ahead.offset,
                    false => 0,
                },
            },
            None if !self.packed() => {
                return self.stored_values_step(simd, x, (v, keys), scratch);
            }
            None => {
                let src = (v.get(first..).unwrap_or(&[]), stride);
                widen(simd, src, keys.cols, (self.v0, self.vw), tile)
            }
        };
        self.step(simd, x, keys, scratch, Op::Values(rows));
    }

    /// [`Block::values_tiled`] over the key block's rows of `v` as stored (a decode block's
    /// rows with V narrower than `f32`).
    #[inline(always)]
    pub(super) fn values_stored<S: Widen, V: KvType>(
        self, simd: S, x: &Inputs, v: &[V], keys: Keys, scratch: &mut Scratch,
    ) {
        let stride = x.p.v.row_stride;
        let rows = KvRows {
            data: v,
            stride,
            col0: self.v0,
            ahead: 0,
        };
        let len = (keys.cols - 1) * stride + rows.row_len(self.vw);
        // Validation guarantees these rows are inside `v`; checked once per block.
        let rows = KvRows {
            data: &v[x.p.v_at(self.g, keys.k0)..][..len],
            ..rows
        };
        self.values_tiled(simd, keys, rows, scratch);
    }

    /// The register-tile part of [`Block::weighted_values`]: `v` holds the panel of the key
    /// block's V rows. Rows that include the whole block share the tile; rows cut by a mask
    /// edge take their runs of keys through it; scattered exclusions go key by key.
    #[inline(always)]
    pub(super) fn values_tiled<S: Widen, T: KvType>(
        self, simd: S, keys: Keys, v: KvRows<T>, scratch: &mut Scratch,
    ) {
        let cols = keys.cols;
        if !self.packed() {
            // Decode weights are `[row][key]`; the general tiles read `[key][row]`.
            let (ks, stride) = (scratch.t.key_stride, scratch.t.row_stride);
            for r in 0..self.rows {
                let weights = &scratch.dot_scores[r * ks..][..cols];
                strided_copy(&mut scratch.scores[r..], stride, weights);
            }
        }
        // Keys whose V rows (in this panel) are known to hold finite values.
        let mut finite = (0, 0);
        let mut r = 0;
        while r < self.rows {
            let row = scratch.row(r);
            let Some(first) = row.run(cols) else {
                if row.keys != 0 {
                    self.pv_row_masked(simd, v, r, row.keys, scratch);
                }
                r += 1;
                continue;
            };
            // The rows that follow whose run of keys starts where this one's does share the
            // tile: every key for whole rows; along a causal diagonal, where their runs end
            // a key or a few apart, the keys of the longest run. A row's weight is exactly 0
            // on the keys past its run (their scores are `-inf`), which adds nothing where
            // those keys' values are finite (0 · ∞ is NaN): else the tile takes the keys all
            // the rows include, and each row's keys past those go key by key.
            let (mut end, mut longest, mut m) = (first.1, first.1, 1);
            while m < const { most::<S, T>() } && r + m < self.rows {
                match scratch.row(r + m).run(cols) {
                    Some((lo, hi)) if lo == first.0 => {
                        end = end.min(hi);
                        longest = longest.max(hi);
                        m += 1;
                    }
                    _ => break,
                }
            }
            if longest > end
                && ((finite.0 <= end && longest <= finite.1)
                    || self.values_finite(simd, v, (end, longest)))
            {
                finite = (end, longest);
                end = longest;
            }
            let run = (first.0, end);
            // Counts past `most` never come: their instances are left out.
            with_count!(m, [6, 5, 4, 3, 2], 1, M => if const { M <= most::<S, T>() } {
                self.pv_rows::<S, T, M>(simd, v, run, r, scratch)
            });
            for i in r..r + m {
                // (`cols` < 64: `BLOCK_K` is.)
                let rest = scratch.row(i).keys & (u64::MAX << end) & ((1 << cols) - 1);
                if rest != 0 {
                    self.pv_row_masked(simd, v, i, rest, scratch);
                }
            }
            r += m;
        }
    }

    /// `M` rows from `r0` that include exactly the keys `run.0..run.1` of the block.
    #[inline(always)]
    fn pv_rows<S: Widen, T: KvType, const M: usize>(
        self, simd: S, v: KvRows<T>, run: (usize, usize), r0: usize, scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let cols = run.1 - run.0;
        let (stride, v_cols) = (scratch.t.row_stride, scratch.t.v_cols);
        let v = KvRows {
            data: &v.data[run.0 * v.stride..][..(cols - 1) * v.stride + v.row_len(self.vw)],
            ..v
        };
        let w = &scratch.scores[run.0 * stride + r0..][..(cols - 1) * stride + M];
        let acc = &mut scratch.acc[r0 * v_cols..][..M * v_cols];
        let full = self.vw / lanes;
        let rows = Rows {
            ptr: v.data.as_ptr(),
            stride: v.stride,
        };
        let wp = Rows {
            ptr: w.as_ptr(),
            stride,
        };
        let ap = RowsMut {
            ptr: acc.as_mut_ptr(),
            stride: v_cols,
        };
        let mut c = 0;
        while c < full {
            // One lane takes the columns past the last wide tile one at a time: an instance
            // fewer per row count in firmware.
            let n = match full - c {
                left if wide::<S>() && left >= NV_WIDE => NV_WIDE,
                left if S::F32_LANES > 1 && left >= NV_NARROW => NV_NARROW,
                _ => 1,
            };
            // SAFETY: `v` holds `cols` rows with the panel's `vw` values from column `col0`
            // (a multiple of the lanes: panels start at a multiple of `v_cols`), and
            // `(c + n)·lanes ≤ full·lanes ≤ vw`; `w` holds rows j < cols of M weights; `acc`
            // holds rows m < M of v_cols ≥ vw floats.
            unsafe {
                let (col, ahead, v) = (c * lanes, v.ahead, (rows, v.first_col()));
                match n {
                    NV_WIDE => pv_kernel::<S, T, M, NV_WIDE>(simd, v, wp, ap, col, cols, ahead),
                    NV_NARROW if S::F32_LANES > 1 => {
                        pv_kernel::<S, T, M, NV_NARROW>(simd, v, wp, ap, col, cols, ahead)
                    }
                    _ => pv_kernel::<S, T, M, 1>(simd, v, wp, ap, col, cols, ahead),
                }
            }
            c += n;
        }
        // SAFETY: `rows` holds `cols` rows with the panel's values (checked above).
        unsafe {
            self.pv_last_vector(
                simd,
                (rows, v.first_col()),
                cols,
                (acc, v_cols),
                M,
                |m, j| w[j * stride + m],
            )
        };
    }

    /// P·V for a block of `M ≤ MR` rows that all include every key of the block (decode): a
    /// few keys at a time across the whole panel, so V is read row after row in memory
    /// order as it is stored, each line once, asking for the rows `keys.v_ahead` names.
    #[inline(always)]
    pub(super) fn pv_keys<S: Widen, V: KvType, const M: usize>(
        self, simd: S, x: &Inputs, v: &[V], keys: Keys, scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let cols = keys.cols;
        let (ks, v_cols) = (scratch.t.key_stride, scratch.t.v_cols);
        let stride = x.p.v.row_stride;
        let (values, first) = (V::KIND.values(), x.p.v_at(self.g, keys.k0));
        let v0 = self.v0;
        // Validation guarantees these rows are inside `v`; checked once per block. The rows
        // start at column 0: a q8_0 panel may start inside a block.
        let v = &v[first..][..(cols - 1) * stride + (self.v0 + self.vw).div_ceil(values)];
        let w = &scratch.dot_scores[..(M - 1) * ks + cols];
        let acc = &mut scratch.acc[..M * v_cols];
        let full = self.vw / lanes;
        for (j, n) in key_steps(cols, PV_KEYS) {
            // SAFETY: keys j..j + n < cols are rows of `v` (at x·stride from row j, each with
            // the panel's values v0..v0 + vw, and full·lanes ≤ vw); `w[m·ks + j + x]` is in `w` for m < M; `acc` holds
            // rows m < M of v_cols ≥ vw floats.
            unsafe {
                let rows = Rows {
                    ptr: v.as_ptr().add(j * stride),
                    stride,
                };
                let wp = Rows {
                    ptr: w.as_ptr().add(j),
                    stride: ks,
                };
                let ap = RowsMut {
                    ptr: acc.as_mut_ptr(),
                    stride: v_cols,
                };
                let ahead = (keys.v_ahead.offset != 0).then(|| keys.v_ahead.rows(v.as_ptr(), j));
                let ahead = (ahead, x.stream_hint);
                match n {
                    PV_KEYS => {
                        pv_keys_kernel::<S, V, M, PV_KEYS>(simd, rows, v0, wp, ap, full, ahead)
                    }
                    _ => pv_keys_kernel::<S, V, M, 1>(simd, rows, v0, wp, ap, full, ahead),
                }
            }
        }
        let rows = Rows {
            ptr: v.as_ptr(),
            stride,
        };
        // SAFETY: `v` holds `cols` rows with the panel's values (checked above).
        unsafe {
            self.pv_last_vector(simd, (rows, v0), cols, (acc, v_cols), M, |m, j| {
                w[m * ks + j]
            })
        };
    }

    /// Whether the panel's values of the V rows of keys `keys.0..keys.1` are all finite.
    #[inline(always)]
    fn values_finite<S: Widen, T: KvType>(
        self, simd: S, v: KvRows<T>, keys: (usize, usize),
    ) -> bool {
        let zero = simd.splat_f32s(0.0);
        // Stays 0 while every value is finite: ∞ · 0 and NaN · 0 are NaN.
        let mut probe = zero;
        for j in keys.0..keys.1 {
            self.value_vectors(simd, v, j, |_, x| {
                probe = simd.mul_add_e_f32s(x, zero, probe)
            });
        }
        simd.reduce_sum_f32s(probe) == 0.0
    }

    /// Calls `f(c, x)` for each vector `c` of the panel's values of V row `j`, a partial last
    /// one padded with 0.
    #[inline(always)]
    fn value_vectors<S: Widen, T: KvType>(
        self, simd: S, v: KvRows<T>, j: usize, mut f: impl FnMut(usize, S::f32s),
    ) {
        let lanes = S::F32_LANES;
        let v_row = &v.data[j * v.stride..][..v.row_len(self.vw)];
        if let Some(row) = kv::as_f32(v_row) {
            // Whole vectors, the tail apart: no bounds or length test per vector (on one
            // lane such tests took 15 instructions per multiply-add).
            let (whole, tail) = S::as_simd_f32s(row);
            for (c, &x) in whole.iter().enumerate() {
                f(c, x);
            }
            if !tail.is_empty() {
                f(whole.len(), simd.partial_load_f32s(tail));
            }
            return;
        }
        for c in 0..self.vw.div_ceil(lanes) {
            let (col, left) = (v.first_col() + c * lanes, self.vw - c * lanes);
            let x = match left >= lanes {
                // SAFETY: columns col..col + lanes ≤ col0 + vw are in `v_row`, and `col` is
                // a multiple of the lanes (as `col0` is).
                true => unsafe { kv::load::<S, T>(simd, v_row.as_ptr(), col) },
                false => kv::load_tail(simd, v_row, col, left),
            };
            f(c, x);
        }
    }

    /// One row, only the keys whose bit is set in `bits`.
    #[inline(always)]
    fn pv_row_masked<S: Widen, T: KvType>(
        self, simd: S, v: KvRows<T>, r: usize, mut bits: u64, scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let (stride, v_cols) = (scratch.t.row_stride, scratch.t.v_cols);
        let acc = &mut vectors_mut::<S>(&mut scratch.acc[r * v_cols..][..v_cols])
            [..self.vw.div_ceil(lanes)];
        while bits != 0 {
            let j = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let w = simd.splat_f32s(scratch.scores[j * stride + r]);
            self.value_vectors(simd, v, j, |c, x| {
                if let Some(a) = acc.get_mut(c) {
                    *a = simd.mul_add_e_f32s(w, x, *a);
                }
            });
        }
    }

    /// The last partial vector of the panel, the columns the vector tiles leave:
    /// `acc[m][col..vw] += Σ_{j < cols} w(m, j) · v[j][col..vw]` for `m < rows`, the rows of
    /// `acc` `stride` floats apart; the panel starts at column `col0` of `v`'s rows.
    ///
    /// # Safety
    /// Rows `j < cols` of `v` hold columns `0..col0 + vw`.
    #[inline(always)]
    unsafe fn pv_last_vector<S: Widen, T: KvType>(
        self, simd: S, (v, col0): (Rows<T>, usize), cols: usize,
        (acc, stride): (&mut [f32], usize), rows: usize, w: impl Fn(usize, usize) -> f32,
    ) {
        let col = self.vw / S::F32_LANES * S::F32_LANES;
        if col == self.vw {
            return;
        }
        let units = (col0 + self.vw).div_ceil(T::KIND.values());
        for m in 0..rows {
            let acc = &mut acc[m * stride + col..][..S::F32_LANES];
            let mut a = load(simd, acc);
            for j in 0..cols {
                // SAFETY: row j holds columns 0..col0 + vw, `units` elements.
                let row = unsafe { core::slice::from_raw_parts(v.row(j), units) };
                let v = kv::load_tail(simd, row, col0 + col, self.vw - col);
                a = simd.mul_add_e_f32s(simd.splat_f32s(w(m, j)), v, a);
            }
            vectors_mut::<S>(acc)[0] = a;
        }
    }
}
