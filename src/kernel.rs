//! The attention kernel, written once over [`pulp::Simd`] and instantiated for every level.
//!
//! For each query head and each block of [`BLOCK_Q`] query rows, one pass over the keys the
//! mask lets any row of the block see, [`BLOCK_K`] keys at a time:
//! 1. **Q·Kᵀ**: the K block is packed (per [`DIM_PANEL`] columns of `head_dim`) so that SIMD
//!    lanes run along keys; a register tile of [`MR`] query rows × [`NR`] vectors of keys
//!    accumulates the dot products.
//! 2. **Online softmax**, per row: scale, bias and mask the scores (keys outside the row's band
//!    become `-inf`), move the running max, rescale the accumulator only if the max moved, and
//!    turn scores into weights `exp(s − max)` with the vectorised [`exp`](crate::exp).
//! 3. **P·V**: rows whose weights cover the whole block go through a register tile of [`MR`]
//!    rows × [`NV`] vectors of `v_dim`, broadcasting weights and streaming V rows; rows with
//!    excluded keys (the mask's edge, `-inf` bias) go one at a time and skip those keys, so a
//!    NaN in an excluded key's V never reaches the output.
//!
//! Working memory is a fixed [`Scratch`] on the stack ([`STACK_BYTES`]); `v_dim` wider than
//! [`V_PANEL`] is done in several passes (the scores are recomputed per pass).

use pulp::{Simd, WithSimd};

use crate::Params;
use crate::exp::{exp, exp1};

/// Query rows per block: each packed K block is reused by this many rows.
pub const BLOCK_Q: usize = 32;
/// Keys per block. A multiple of the widest key tile ([`NR`] × 16 lanes).
pub const BLOCK_K: usize = 64;
/// Columns of `head_dim` packed at a time; larger `head_dim` accumulates over panels.
pub const DIM_PANEL: usize = 64;
/// Columns of `v_dim` accumulated per pass; a multiple of every lane count.
pub const V_PANEL: usize = 128;
/// Query rows of a register tile (Q·Kᵀ and P·V).
pub const MR: usize = 4;
/// Vectors of keys of the Q·Kᵀ register tile: `MR × NR` accumulators.
pub const NR: usize = 2;
/// Vectors of `v_dim` of the P·V register tile: `MR × NV` accumulators.
pub const NV: usize = 2;

/// The kernel's working memory, all of it on the stack, in bytes (about 41 KiB).
pub const STACK_BYTES: usize = core::mem::size_of::<Scratch>();

const _: () = assert!(
    BLOCK_K.is_multiple_of(NR * 16) && V_PANEL.is_multiple_of(16) && BLOCK_K <= u64::BITS as usize
);

/// One call of the kernel: validated inputs, ready to run at any level.
pub(crate) struct Job<'p, 'a> {
    pub params: &'p Params<'a>,
    pub q: &'p [f32],
    pub k: &'p [f32],
    pub v: &'p [f32],
    pub out: &'p mut [f32],
    pub lse: Option<&'p mut [f32]>,
}

impl WithSimd for Job<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let mut scratch = Scratch::new();
        run(simd, self, &mut scratch);
    }
}

/// Fixed-size tiles; rows are padded to whole vectors of any width.
struct Scratch {
    /// The K block, `[tile][dim][NR·lanes keys]`.
    k_pack: [f32; BLOCK_K * DIM_PANEL],
    /// Scores, then weights, `[BLOCK_Q][BLOCK_K]`.
    scores: [f32; BLOCK_Q * BLOCK_K],
    /// Unnormalised outputs, `[BLOCK_Q][V_PANEL]`.
    acc: [f32; BLOCK_Q * V_PANEL],
    /// Per row: running max, running sum, and what this block means for it.
    max: [f32; BLOCK_Q],
    sum: [f32; BLOCK_Q],
    rows: [RowBlock; BLOCK_Q],
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            k_pack: [0.0; BLOCK_K * DIM_PANEL],
            scores: [0.0; BLOCK_Q * BLOCK_K],
            acc: [0.0; BLOCK_Q * V_PANEL],
            max: [0.0; BLOCK_Q],
            sum: [0.0; BLOCK_Q],
            rows: [RowBlock::SKIP; BLOCK_Q],
        }
    }
}

/// What one key block means for one query row.
#[derive(Clone, Copy)]
struct RowBlock {
    /// Every key of the block is included: the fast multi-row P·V path.
    whole: bool,
    /// Included keys, as bits of the block (bit `j` for key `k0 + j`); 0 means skip the row.
    keys: u64,
}

impl RowBlock {
    const SKIP: RowBlock = RowBlock {
        whole: false,
        keys: 0,
    };
}

/// Lane indices, to build masks of visible keys.
const IOTA: [f32; 16] = [
    0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.,
];

#[inline(always)]
fn vectors<S: Simd>(s: &[f32]) -> &[S::f32s] {
    S::as_simd_f32s(s).0
}

#[inline(always)]
fn vectors_mut<S: Simd>(s: &mut [f32]) -> &mut [S::f32s] {
    S::as_mut_simd_f32s(s).0
}

/// Loads `s[..lanes]`, or fewer with zeros after.
#[inline(always)]
fn load<S: Simd>(simd: S, s: &[f32]) -> S::f32s {
    match S::as_simd_f32s(s).0.first() {
        Some(&x) => x,
        None => simd.partial_load_f32s(s),
    }
}

#[inline(always)]
fn run<S: Simd>(simd: S, job: Job<'_, '_>, scratch: &mut Scratch) {
    let Job {
        params: p,
        q,
        k,
        v,
        out,
        mut lse,
    } = job;
    let shape = p.shape;
    let group = shape.q_heads / shape.kv_heads;
    for h in 0..shape.q_heads {
        let g = h / group;
        for q0 in (0..shape.q_len).step_by(BLOCK_Q) {
            let rows = BLOCK_Q.min(shape.q_len - q0);
            // Ends of the row ranges are monotonic: the union is first.lo .. last.hi.
            let keys = (p.key_range(q0).0, p.key_range(q0 + rows - 1).1);
            for v0 in (0..shape.v_dim).step_by(V_PANEL) {
                let vw = V_PANEL.min(shape.v_dim - v0);
                let block = Block {
                    h,
                    g,
                    q0,
                    rows,
                    v0,
                    vw,
                };
                block.attend(simd, p, q, k, v, keys, scratch);
                block.write(
                    p,
                    out,
                    if v0 == 0 { lse.as_deref_mut() } else { None },
                    scratch,
                );
            }
        }
    }
}

/// A block of query rows of one head, and the panel of `v_dim` being accumulated.
#[derive(Clone, Copy)]
struct Block {
    h: usize,
    g: usize,
    q0: usize,
    rows: usize,
    v0: usize,
    vw: usize,
}

impl Block {
    /// Streams the keys `keys.0..keys.1` through the online softmax into `scratch.acc`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn attend<S: Simd>(
        self,
        simd: S,
        p: &Params,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        keys: (usize, usize),
        scratch: &mut Scratch,
    ) {
        scratch.max = [f32::NEG_INFINITY; BLOCK_Q];
        scratch.sum = [0.0; BLOCK_Q];
        scratch.acc = [0.0; BLOCK_Q * V_PANEL];
        for k0 in (keys.0..keys.1).step_by(BLOCK_K) {
            let cols = BLOCK_K.min(keys.1 - k0);
            self.scores(simd, p, q, k, k0, cols, scratch);
            for r in 0..self.rows {
                scratch.rows[r] = self.softmax_row(simd, p, r, k0, cols, scratch);
            }
            self.weighted_values(simd, p, v, k0, cols, scratch);
        }
    }

    /// `scratch.scores[r][j] = q[h][q0 + r] · k[g][k0 + j]` for the block.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores<S: Simd>(
        self,
        simd: S,
        p: &Params,
        q: &[f32],
        k: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        let head_dim = p.shape.head_dim;
        let tile = NR * S::F32_LANES;
        let tiles = cols.div_ceil(tile);
        for d0 in (0..head_dim).step_by(DIM_PANEL) {
            let dw = DIM_PANEL.min(head_dim - d0);
            // Pack: k_pack[t][d][j] = k[g][k0 + t·tile + j][d0 + d].
            for j in 0..cols {
                let row = &k[p.k.at(self.g, k0 + j) + d0..][..dw];
                let (t, jj) = (j / tile, j % tile);
                let panel = &mut scratch.k_pack[t * dw * tile..][..dw * tile];
                for (d, &x) in row.iter().enumerate() {
                    panel[d * tile + jj] = x;
                }
            }
            let mut r0 = 0;
            while r0 < self.rows {
                let m = MR.min(self.rows - r0);
                let args = (p, q, d0, dw, tiles, r0, d0 == 0);
                match m {
                    4 => self.qk_tile::<S, 4>(simd, args, scratch),
                    3 => self.qk_tile::<S, 3>(simd, args, scratch),
                    2 => self.qk_tile::<S, 2>(simd, args, scratch),
                    _ => self.qk_tile::<S, 1>(simd, args, scratch),
                }
                r0 += m;
            }
        }
    }

    /// `M` query rows against every packed key tile, over one panel of `head_dim`.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn qk_tile<S: Simd, const M: usize>(
        self,
        simd: S,
        (p, q, d0, dw, tiles, r0, first): (&Params, &[f32], usize, usize, usize, usize, bool),
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let tile = NR * lanes;
        let q_rows: [&[f32]; M] =
            core::array::from_fn(|m| &q[p.q.at(self.h, self.q0 + r0 + m) + d0..][..dw]);
        for t in 0..tiles {
            let packed = vectors::<S>(&scratch.k_pack[t * dw * tile..][..dw * tile]);
            let mut acc = [[simd.splat_f32s(0.0); NR]; M];
            if !first {
                for (m, acc) in acc.iter_mut().enumerate() {
                    let s = vectors::<S>(&scratch.scores[(r0 + m) * BLOCK_K + t * tile..][..tile]);
                    acc.copy_from_slice(&s[..NR]);
                }
            }
            for d in 0..dw {
                let kv = &packed[d * NR..][..NR];
                for m in 0..M {
                    let qb = simd.splat_f32s(q_rows[m][d]);
                    for c in 0..NR {
                        acc[m][c] = simd.mul_add_f32s(qb, kv[c], acc[m][c]);
                    }
                }
            }
            for (m, acc) in acc.iter().enumerate() {
                let s =
                    vectors_mut::<S>(&mut scratch.scores[(r0 + m) * BLOCK_K + t * tile..][..tile]);
                s[..NR].copy_from_slice(acc);
            }
        }
    }

    /// Scales, biases and masks row `r`'s scores, moves its running max and sum, rescales its
    /// accumulator if the max moved, and leaves the weights in `scratch.scores`.
    #[inline(always)]
    fn softmax_row<S: Simd>(
        self,
        simd: S,
        p: &Params,
        r: usize,
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) -> RowBlock {
        let lanes = S::F32_LANES;
        let i = self.q0 + r;
        let (lo, hi) = p.key_range(i);
        let (jl, jh) = (
            lo.saturating_sub(k0).min(cols),
            hi.saturating_sub(k0).min(cols),
        );
        if jl >= jh {
            return RowBlock::SKIP;
        }
        let scale = simd.splat_f32s(p.scale());
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let iota = load(simd, &IOTA[..lanes]);
        let bias = p
            .bias
            .map(|b| &b.data[self.h * b.head_stride + i * b.row_stride + k0..][..cols]);
        let n_vec = cols.div_ceil(lanes);
        let row = &mut vectors_mut::<S>(&mut scratch.scores[r * BLOCK_K..][..BLOCK_K])[..n_vec];

        let mut max = neg_inf;
        let mut min_visible = simd.splat_f32s(f32::INFINITY);
        for (vi, s) in row.iter_mut().enumerate() {
            let mut x = simd.mul_f32s(*s, scale);
            if let Some(bias) = bias {
                let b = load(simd, &bias[vi * lanes..]);
                x = simd.select_f32s(simd.equal_f32s(b, neg_inf), neg_inf, simd.add_f32s(x, b));
            }
            let j = simd.add_f32s(iota, simd.splat_f32s((vi * lanes) as f32));
            let visible = simd.and_m32s(
                simd.greater_than_or_equal_f32s(j, simd.splat_f32s(jl as f32)),
                simd.less_than_f32s(j, simd.splat_f32s(jh as f32)),
            );
            x = simd.select_f32s(visible, x, neg_inf);
            min_visible = simd.min_f32s(min_visible, simd.select_f32s(visible, x, scale));
            max = simd.max_f32s(max, x);
            *s = x;
        }

        let old_max = scratch.max[r];
        let mut new_max = old_max.max(simd.reduce_max_f32s(max));
        if new_max == f32::NEG_INFINITY {
            // `max` ignores NaN on some levels: a row of NaN and -inf scores lands here.
            let visible = &scratch.scores[r * BLOCK_K..][jl..jh];
            if !visible.iter().any(|s| s.is_nan()) {
                // Every visible score so far is -inf: nothing is included yet.
                return RowBlock::SKIP;
            }
            new_max = f32::NAN; // poisons the row's sum, as a NaN score must
        }
        let whole = jl == 0 && jh == cols && simd.reduce_min_f32s(min_visible) != f32::NEG_INFINITY;
        let mut keys = 0u64;
        if !whole {
            // Bit j: key k0 + j is visible and its score is not -inf.
            let scores = &scratch.scores[r * BLOCK_K..][..cols];
            for (j, &s) in scores.iter().enumerate().take(jh).skip(jl) {
                keys |= ((s != f32::NEG_INFINITY) as u64) << j;
            }
        }

        let m = simd.splat_f32s(new_max);
        let mut sum = simd.splat_f32s(0.0);
        for s in vectors_mut::<S>(&mut scratch.scores[r * BLOCK_K..][..BLOCK_K])[..n_vec].iter_mut()
        {
            let w = exp(simd, simd.sub_f32s(*s, m));
            sum = simd.add_f32s(sum, w);
            *s = w;
        }
        let acc = &mut scratch.acc[r * V_PANEL..][..V_PANEL];
        if new_max != old_max {
            let alpha = exp1(old_max - new_max);
            scratch.sum[r] *= alpha;
            let alpha = simd.splat_f32s(alpha);
            for a in vectors_mut::<S>(acc) {
                *a = simd.mul_f32s(*a, alpha);
            }
        }
        scratch.sum[r] += simd.reduce_sum_f32s(sum);
        scratch.max[r] = new_max;
        RowBlock {
            whole,
            keys: if whole { u64::MAX } else { keys },
        }
    }

    /// `acc[r] += Σ_j weight[r][j] · v[g][k0 + j]` for every row the block includes.
    #[inline(always)]
    fn weighted_values<S: Simd>(
        self,
        simd: S,
        p: &Params,
        v: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        let mut r = 0;
        while r < self.rows {
            let row = scratch.rows[r];
            if row.whole {
                let mut m = 1;
                while m < MR && r + m < self.rows && scratch.rows[r + m].whole {
                    m += 1;
                }
                let args = (p, v, k0, cols, r);
                match m {
                    4 => self.pv_tile::<S, 4>(simd, args, scratch),
                    3 => self.pv_tile::<S, 3>(simd, args, scratch),
                    2 => self.pv_tile::<S, 2>(simd, args, scratch),
                    _ => self.pv_tile::<S, 1>(simd, args, scratch),
                }
                r += m;
            } else {
                if row.keys != 0 {
                    self.pv_row_masked(simd, p, v, k0, r, row.keys, scratch);
                }
                r += 1;
            }
        }
    }

    /// `M` rows whose weights cover keys `0..cols` of the block, `NV` vectors of `v` at a time.
    #[inline(always)]
    fn pv_tile<S: Simd, const M: usize>(
        self,
        simd: S,
        (p, v, k0, cols, r0): (&Params, &[f32], usize, usize, usize),
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let n_vec = self.vw.div_ceil(lanes);
        let mut c0 = 0;
        while c0 < n_vec {
            let nc = NV.min(n_vec - c0);
            let mut acc = [[simd.splat_f32s(0.0); NV]; M];
            for (m, acc) in acc.iter_mut().enumerate() {
                let a = vectors::<S>(&scratch.acc[(r0 + m) * V_PANEL..][..V_PANEL]);
                acc[..nc].copy_from_slice(&a[c0..c0 + nc]);
            }
            for j in 0..cols {
                let v_row = &v[p.v.at(self.g, k0 + j) + self.v0..][..self.vw];
                let mut vv = [simd.splat_f32s(0.0); NV];
                for (c, x) in vv.iter_mut().enumerate().take(nc) {
                    *x = load(simd, &v_row[(c0 + c) * lanes..]);
                }
                for (m, acc) in acc.iter_mut().enumerate() {
                    let w = simd.splat_f32s(scratch.scores[(r0 + m) * BLOCK_K + j]);
                    for c in 0..nc {
                        acc[c] = simd.mul_add_f32s(w, vv[c], acc[c]);
                    }
                }
            }
            for (m, acc) in acc.iter().enumerate() {
                let a = vectors_mut::<S>(&mut scratch.acc[(r0 + m) * V_PANEL..][..V_PANEL]);
                a[c0..c0 + nc].copy_from_slice(&acc[..nc]);
            }
            c0 += nc;
        }
    }

    /// One row, only the keys whose bit is set in `keys`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pv_row_masked<S: Simd>(
        self,
        simd: S,
        p: &Params,
        v: &[f32],
        k0: usize,
        r: usize,
        mut keys: u64,
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let acc = &mut vectors_mut::<S>(&mut scratch.acc[r * V_PANEL..][..V_PANEL])
            [..self.vw.div_ceil(lanes)];
        while keys != 0 {
            let j = keys.trailing_zeros() as usize;
            keys &= keys - 1;
            let w = simd.splat_f32s(scratch.scores[r * BLOCK_K + j]);
            let v_row = &v[p.v.at(self.g, k0 + j) + self.v0..][..self.vw];
            for (c, a) in acc.iter_mut().enumerate() {
                *a = simd.mul_add_f32s(w, load(simd, &v_row[c * lanes..]), *a);
            }
        }
    }

    /// Normalises the accumulated rows into `out` (and `lse`).
    fn write(self, p: &Params, out: &mut [f32], mut lse: Option<&mut [f32]>, scratch: &Scratch) {
        for r in 0..self.rows {
            let i = self.q0 + r;
            let (max, sum) = (scratch.max[r], scratch.sum[r]);
            let dst = &mut out[p.out.at(self.h, i) + self.v0..][..self.vw];
            let row_lse = if max == f32::NEG_INFINITY {
                dst.fill(0.0);
                f32::NEG_INFINITY
            } else {
                for (o, &a) in dst.iter_mut().zip(&scratch.acc[r * V_PANEL..]) {
                    *o = a / sum;
                }
                max + libm::logf(sum)
            };
            if let Some(lse) = lse.as_deref_mut() {
                lse[self.h * p.shape.q_len + i] = row_lse;
            }
        }
    }
}
