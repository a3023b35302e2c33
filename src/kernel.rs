//! The attention kernel, written once over [`pulp::Simd`] and instantiated for every level.
//!
//! Query rows are taken in blocks of at most [`BLOCK_Q`]: up to `BLOCK_Q` rows of one head,
//! or, for short queries (decode), the same rows of several heads of one GQA group, so each
//! K/V row is read once per group. Each block makes one pass over the keys that the mask lets
//! any of its rows see (blocks of keys outside the band are skipped), [`BLOCK_K`] keys at a
//! time:
//! 1. **Q·Kᵀ**: the K block is packed per [`DIM_PANEL`] columns of `head_dim` so that SIMD
//!    lanes run along keys (`lanes × lanes` squares transposed in registers), and a register
//!    tile of [`MR`] rows × [`NR_WIDE`] (32 registers) or [`NR_NARROW`] (16) vectors of keys
//!    accumulates the dot products. Blocks of at most `MR` rows skip the pack and dot each K
//!    row straight from memory, with prefetching ([`PREFETCH_KEYS`]).
//! 2. **Online softmax**, per row: scale, bias and mask the scores (excluded keys become
//!    `-inf`), move the running max, rescale the accumulator only if the max moved, and turn
//!    scores into weights `exp(s − max)` with the vectorised [`exp`](crate::exp).
//! 3. **P·V**: a register tile of `MR` rows × [`NV_WIDE`] or [`NV_NARROW`] vectors of `v_dim`
//!    broadcasts weights and streams V rows. A row cut by a mask edge takes its run of keys
//!    through the same tile; scattered exclusions (`-inf` bias) go key by key, so the V row
//!    of an excluded key is never read for that row and NaN there cannot leak.
//!
//! Working memory is a fixed `Scratch` on the stack ([`STACK_BYTES`]); `v_dim` wider than
//! [`V_PANEL`] is done in several passes (the scores are recomputed per pass).
//!
//! K and V elements are read in three places only: `Block::pack_k`, `Block::scores_dot` and
//! the P·V loads (`pv_kernel` and its edges). Another element type (f16, bf16) is a conversion
//! to `f32` vectors at those loads; the tiles, softmax and accumulators stay `f32`.

use pulp::{Simd, WithSimd};

use crate::Params;
use crate::exp::{exp, exp1};

/// Query rows per block: each packed K block is reused by this many rows.
pub const BLOCK_Q: usize = 64;
/// Keys per block: a multiple of the widest key tile ([`NR_WIDE`] × 16 lanes), and at most
/// 64 so a block's included keys fit in a `u64` bit set.
pub const BLOCK_K: usize = 64;
/// Columns of `head_dim` packed at a time; larger `head_dim` accumulates over panels.
pub const DIM_PANEL: usize = 32;
/// Columns of `v_dim` accumulated per pass; a multiple of every lane count.
pub const V_PANEL: usize = 128;
/// Query rows of a register tile (Q·Kᵀ and P·V).
pub const MR: usize = 4;
/// Vectors of keys of the Q·Kᵀ register tile (`MR × NR` accumulators) on levels with 32
/// vector registers (AVX-512, NEON): 16 accumulators, 4 key loads and a broadcast.
pub const NR_WIDE: usize = 4;
/// The same with 16 registers (AVX2, scalar): 8 accumulators, enough to cover FMA latency.
pub const NR_NARROW: usize = 2;
/// Vectors of `v_dim` of the P·V register tile on levels with 32 registers.
pub const NV_WIDE: usize = 4;
/// The same with 16 registers.
pub const NV_NARROW: usize = 2;

/// How far ahead, in keys, the decode path asks for K rows. Without the prefetches decode ran
/// at about half the streaming bandwidth on the Zen 5 machines here; 8, 16, 32 and 64 keys
/// measured within noise of each other, and 16 covers memory latency at streaming speed.
pub const PREFETCH_KEYS: usize = 16;

/// Whether this level has 32 vector registers, so the wide register tiles fit.
#[inline(always)]
const fn wide<S: Simd>() -> bool {
    S::REGISTER_COUNT >= 32
}

/// The kernel's working memory, all of it on the stack, in bytes (57.5 KiB).
pub const STACK_BYTES: usize = core::mem::size_of::<Scratch>();

const _: () = assert!(
    BLOCK_K.is_multiple_of(NR_WIDE * 16)
        && V_PANEL.is_multiple_of(16)
        && BLOCK_K <= u64::BITS as usize
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
    // Short queries (decode) put several heads of a GQA group in one block, so each K/V row
    // is read once per block of heads instead of once per head.
    let heads_per_block = (BLOCK_Q / shape.q_len.clamp(1, BLOCK_Q)).clamp(1, group);
    for g in 0..shape.kv_heads {
        let group_end = (g + 1) * group;
        for h0 in (g * group..group_end).step_by(heads_per_block) {
            let nh = heads_per_block.min(group_end - h0);
            for q0 in (0..shape.q_len).step_by(BLOCK_Q) {
                let qn = BLOCK_Q.min(shape.q_len - q0);
                // Ends of the row ranges are monotonic: the union is first.lo .. last.hi.
                let keys = (p.key_range(q0).0, p.key_range(q0 + qn - 1).1);
                for v0 in (0..shape.v_dim).step_by(V_PANEL) {
                    let vw = V_PANEL.min(shape.v_dim - v0);
                    let block = Block {
                        h0,
                        g,
                        q0,
                        qn,
                        rows: nh * qn,
                        v0,
                        vw,
                    };
                    block.attend(simd, p, q, k, v, keys, scratch);
                    let lse = if v0 == 0 { lse.as_deref_mut() } else { None };
                    block.write(p, out, lse, scratch);
                }
            }
        }
    }
}

/// A block of query rows: `rows / qn` consecutive heads from `h0` (all reading kv head `g`)
/// times the `qn` query rows from `q0`; and the panel of `v_dim` being accumulated.
/// Row `r` of the block is query row `q0 + r % qn` of head `h0 + r / qn`.
#[derive(Clone, Copy)]
struct Block {
    h0: usize,
    g: usize,
    q0: usize,
    qn: usize,
    rows: usize,
    v0: usize,
    vw: usize,
}

impl Block {
    /// The (head, query row) of block row `r`.
    #[inline(always)]
    fn row(self, r: usize) -> (usize, usize) {
        (self.h0 + r / self.qn, self.q0 + r % self.qn)
    }

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
            self.scores(simd, p, q, k, v, k0, cols, scratch);
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
        v: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        if self.rows <= MR {
            // Few rows (decode): packing K would cost more than it saves.
            match self.rows {
                4 => self.scores_dot::<S, 4>(simd, p, q, k, v, k0, cols, scratch),
                3 => self.scores_dot::<S, 3>(simd, p, q, k, v, k0, cols, scratch),
                2 => self.scores_dot::<S, 2>(simd, p, q, k, v, k0, cols, scratch),
                _ => self.scores_dot::<S, 1>(simd, p, q, k, v, k0, cols, scratch),
            }
        } else if wide::<S>() {
            self.scores_nr::<S, { NR_WIDE }>(simd, p, q, k, k0, cols, scratch)
        } else {
            self.scores_nr::<S, { NR_NARROW }>(simd, p, q, k, k0, cols, scratch)
        }
    }

    /// [`Block::scores`] for a block of `M ≤ MR` rows: each K row is streamed once, straight
    /// from memory, and dotted with every query row, lanes along `head_dim`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores_dot<S: Simd, const M: usize>(
        self,
        simd: S,
        p: &Params,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        let head_dim = p.shape.head_dim;
        let q_rows: [(&[S::f32s], &[f32]); M] = core::array::from_fn(|m| {
            let (h, i) = self.row(m);
            S::as_simd_f32s(&q[p.q.at(h, i)..][..head_dim])
        });
        // Two keys at a time: two independent streams of loads keep more misses in flight.
        let mut j = 0;
        while j < cols {
            let nk = (cols - j).min(2);
            // Decode streams K and V from memory once: ask for K rows a few keys ahead, and
            // for the V rows of these keys, which the P·V step reads next.
            let last = p.shape.kv_len - 1;
            for x in 0..2 {
                prefetch(
                    k,
                    p.k.at(self.g, (k0 + j + x + PREFETCH_KEYS).min(last)),
                    head_dim,
                );
                prefetch(v, p.v.at(self.g, (k0 + j + x).min(last)), p.shape.v_dim);
            }
            let k_rows: [(&[S::f32s], &[f32]); 2] = core::array::from_fn(|x| {
                S::as_simd_f32s(&k[p.k.at(self.g, k0 + j + x.min(nk - 1))..][..head_dim])
            });
            let mut acc = [[simd.splat_f32s(0.0); M]; 2];
            for d in 0..k_rows[0].0.len() {
                for (acc, k) in acc.iter_mut().zip(&k_rows) {
                    let kv = k.0[d];
                    for (acc, q) in acc.iter_mut().zip(&q_rows) {
                        *acc = simd.mul_add_f32s(q.0[d], kv, *acc);
                    }
                }
            }
            if !k_rows[0].1.is_empty() {
                for (acc, k) in acc.iter_mut().zip(&k_rows) {
                    let kv = simd.partial_load_f32s(k.1);
                    for (acc, q) in acc.iter_mut().zip(&q_rows) {
                        *acc = simd.mul_add_f32s(simd.partial_load_f32s(q.1), kv, *acc);
                    }
                }
            }
            for (x, acc) in acc.iter().enumerate().take(nk) {
                for (m, acc) in acc.iter().enumerate() {
                    scratch.scores[m * BLOCK_K + j + x] = simd.reduce_sum_f32s(*acc);
                }
            }
            j += nk;
        }
    }

    /// [`Block::scores`] with key tiles of `NR` vectors.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores_nr<S: Simd, const NR: usize>(
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
            self.pack_k::<S, NR>(simd, p, k, k0, cols, d0, dw, &mut scratch.k_pack);
            let mut r0 = 0;
            while r0 < self.rows {
                let m = MR.min(self.rows - r0);
                let rows = (p, q, d0, dw, tiles, r0);
                match m {
                    4 => self.qk_rows::<S, 4, NR>(simd, rows, scratch),
                    3 => self.qk_rows::<S, 3, NR>(simd, rows, scratch),
                    2 => self.qk_rows::<S, 2, NR>(simd, rows, scratch),
                    _ => self.qk_rows::<S, 1, NR>(simd, rows, scratch),
                }
                r0 += m;
            }
        }
    }

    /// Packs keys `k0..k0 + cols`, columns `d0..d0 + dw` of `head_dim`, as
    /// `k_pack[t][d][j] = k[g][k0 + t·tile + j][d0 + d]` with `tile = NR · lanes` keys, so
    /// lanes run along keys. Whole `lanes × lanes` squares are transposed in registers; the
    /// edges are copied one element at a time. Keys past `cols` in the last tile keep stale
    /// values: their scores are masked to -inf.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pack_k<S: Simd, const NR: usize>(
        self,
        simd: S,
        p: &Params,
        k: &[f32],
        k0: usize,
        cols: usize,
        d0: usize,
        dw: usize,
        k_pack: &mut [f32],
    ) {
        let lanes = S::F32_LANES;
        let tile = NR * lanes;
        let (square_keys, square_dims) = (cols / lanes * lanes, dw / lanes * lanes);
        let at = |j: usize| p.k.at(self.g, k0 + j) + d0;
        for j0 in (0..square_keys).step_by(lanes) {
            let panel = &mut k_pack[j0 / tile * dw * tile + j0 % tile..];
            for dc in (0..square_dims).step_by(lanes) {
                let mut x = [simd.splat_f32s(0.0); 16];
                for (i, x) in x.iter_mut().take(lanes).enumerate() {
                    *x = load(simd, &k[at(j0 + i) + dc..][..lanes]);
                }
                transpose(simd, &mut x);
                for (d, x) in x.iter().take(lanes).enumerate() {
                    vectors_mut::<S>(&mut panel[(dc + d) * tile..][..lanes])[0] = *x;
                }
            }
            for i in (0..lanes).filter(|_| square_dims < dw) {
                let row = &k[at(j0 + i) + square_dims..dw + at(j0 + i)];
                strided_copy(&mut panel[square_dims * tile + i..], tile, row);
            }
        }
        for j in square_keys..cols {
            let row = &k[at(j)..][..dw];
            strided_copy(&mut k_pack[j / tile * dw * tile + j % tile..], tile, row);
        }
    }

    /// `M` query rows from `r0` against every packed key tile, over one panel of `head_dim`.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn qk_rows<S: Simd, const M: usize, const NR: usize>(
        self,
        simd: S,
        (p, q, d0, dw, tiles, r0): (&Params, &[f32], usize, usize, usize, usize),
        scratch: &mut Scratch,
    ) {
        let tile = NR * S::F32_LANES;
        // Validation guarantees every row is inside `q`; slicing checks it once per row.
        let q_rows: [*const f32; M] = core::array::from_fn(|m| {
            let (h, i) = self.row(r0 + m);
            q[p.q.at(h, i) + d0..][..dw].as_ptr()
        });
        for t in 0..tiles {
            let packed = &scratch.k_pack[t * dw * tile..][..dw * tile];
            let s = &mut scratch.scores[r0 * BLOCK_K + t * tile..][..(M - 1) * BLOCK_K + tile];
            // SAFETY: each of `q_rows` points at `dw` floats, `packed` holds `dw` groups of NR
            // vectors, `s` holds rows m < M at m·BLOCK_K of NR vectors.
            unsafe {
                qk_kernel::<S, M, NR>(simd, q_rows, packed.as_ptr(), dw, s.as_mut_ptr(), d0 == 0)
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
        let (h, i) = self.row(r);
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
            .map(|b| &b.data[h * b.head_stride + i * b.row_stride + k0..][..cols]);
        let n_vec = cols.div_ceil(lanes);
        let row = &mut vectors_mut::<S>(&mut scratch.scores[r * BLOCK_K..][..BLOCK_K])[..n_vec];

        let mut max = neg_inf;
        let mut min_visible = simd.splat_f32s(f32::INFINITY);
        if bias.is_none() && jl == 0 && jh == cols && cols.is_multiple_of(lanes) {
            // Every lane is a visible key: no masks to build.
            for s in row.iter_mut() {
                let x = simd.mul_f32s(*s, scale);
                min_visible = simd.min_f32s(min_visible, x);
                max = simd.max_f32s(max, x);
                *s = x;
            }
        } else {
            let pos_inf = simd.splat_f32s(f32::INFINITY);
            for (vi, s) in row.iter_mut().enumerate() {
                let mut x = simd.mul_f32s(*s, scale);
                if let Some(bias) = bias {
                    let b = load(simd, &bias[vi * lanes..]);
                    let masked = simd.equal_f32s(b, neg_inf);
                    x = simd.select_f32s(masked, neg_inf, simd.add_f32s(x, b));
                }
                let j = simd.add_f32s(iota, simd.splat_f32s((vi * lanes) as f32));
                let visible = simd.and_m32s(
                    simd.greater_than_or_equal_f32s(j, simd.splat_f32s(jl as f32)),
                    simd.less_than_f32s(j, simd.splat_f32s(jh as f32)),
                );
                x = simd.select_f32s(visible, x, neg_inf);
                min_visible = simd.min_f32s(min_visible, simd.select_f32s(visible, x, pos_inf));
                max = simd.max_f32s(max, x);
                *s = x;
            }
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
                let rows = (p, v, k0, (0, cols), r);
                match m {
                    4 => self.pv_rows::<S, 4>(simd, rows, scratch),
                    3 => self.pv_rows::<S, 3>(simd, rows, scratch),
                    2 => self.pv_rows::<S, 2>(simd, rows, scratch),
                    _ => self.pv_rows::<S, 1>(simd, rows, scratch),
                }
                r += m;
            } else {
                // A mask edge usually leaves one run of keys: the register tile takes it.
                let first = row.keys.trailing_zeros();
                let run = (row.keys >> first.min(63)).trailing_ones();
                match row.keys {
                    0 => {}
                    keys if run == keys.count_ones() => {
                        let keys = (first as usize, (first + run) as usize);
                        self.pv_rows::<S, 1>(simd, (p, v, k0, keys, r), scratch);
                    }
                    keys => self.pv_row_masked(simd, p, v, k0, r, keys, scratch),
                }
                r += 1;
            }
        }
    }

    /// `M` rows from `r0` that include exactly the keys `j0..j1` of the block.
    #[inline(always)]
    fn pv_rows<S: Simd, const M: usize>(
        self,
        simd: S,
        (p, v, k0, (j0, j1), r0): (&Params, &[f32], usize, (usize, usize), usize),
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let rs = p.v.row_stride;
        let cols = j1 - j0;
        let start = p.v.at(self.g, k0 + j0) + self.v0;
        // Validation guarantees these rows are inside `v`; slicing checks it once per call.
        let v_rows = &v[start..start + (cols - 1) * rs + self.vw];
        let w = &scratch.scores[r0 * BLOCK_K + j0..][..(M - 1) * BLOCK_K + cols];
        let acc = &mut scratch.acc[r0 * V_PANEL..][..M * V_PANEL];
        let full = self.vw / lanes;
        let (vp, wp, ap) = (v_rows.as_ptr(), w.as_ptr(), acc.as_mut_ptr());
        let mut c = 0;
        while c < full {
            let n = match full - c {
                left if wide::<S>() && left >= NV_WIDE => NV_WIDE,
                left if left >= NV_NARROW => NV_NARROW,
                _ => 1,
            };
            // SAFETY: `v_rows` holds `cols` rows at j·rs with `vw` floats from column
            // `c·lanes`, and `(c + n)·lanes ≤ full·lanes ≤ vw`; `w` holds rows m < M at
            // m·BLOCK_K of `cols` weights; `acc` holds rows m < M of V_PANEL ≥ vw floats.
            unsafe {
                match n {
                    NV_WIDE => pv_kernel::<S, M, NV_WIDE>(simd, vp, rs, wp, ap, cols, c * lanes),
                    NV_NARROW => {
                        pv_kernel::<S, M, NV_NARROW>(simd, vp, rs, wp, ap, cols, c * lanes)
                    }
                    _ => pv_kernel::<S, M, 1>(simd, vp, rs, wp, ap, cols, c * lanes),
                }
            }
            c += n;
        }
        // The last partial vector of `v_dim`, if any.
        let col = full * lanes;
        if col < self.vw {
            for m in 0..M {
                let acc = &mut acc[m * V_PANEL + col..][..lanes];
                let mut a = load(simd, acc);
                for j in 0..cols {
                    let wb = simd.splat_f32s(w[m * BLOCK_K + j]);
                    a = simd.mul_add_f32s(
                        wb,
                        load(simd, &v_rows[j * rs + col..][..self.vw - col]),
                        a,
                    );
                }
                vectors_mut::<S>(acc)[0] = a;
            }
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
            let (h, i) = self.row(r);
            let (max, sum) = (scratch.max[r], scratch.sum[r]);
            let dst = &mut out[p.out.at(h, i) + self.v0..][..self.vw];
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
                lse[h * p.shape.q_len + i] = row_lse;
            }
        }
    }
}

/// `dst[i · stride] = src[i]`, one element at a time. Left to itself LLVM vectorises this
/// into scatters, which are slow on AMD and which the Bochs AVX-512 emulator used in CI
/// cannot execute (index in zmm16–31); these are only the edges of the pack.
#[inline(always)]
fn strided_copy(dst: &mut [f32], stride: usize, src: &[f32]) {
    for (d, &x) in dst.iter_mut().step_by(stride).zip(src) {
        *d = core::hint::black_box(x);
    }
}

/// Transposes the `lanes × lanes` square in `x[..lanes]` (vector `i` holds row `i`) as a
/// recursive block transpose: for block sizes `b = lanes/2, lanes/4, …, 1`, rows `i` and
/// `i + b` (with bit `b` of `i` clear) swap their off-diagonal `b`-lane blocks, using one
/// lane rotation and one select per row.
#[inline(always)]
fn transpose<S: Simd>(simd: S, x: &mut [S::f32s; 16]) {
    let lanes = S::F32_LANES;
    let iota = S::as_simd_u32s(&IOTA_U32[..lanes]).0[0];
    let mut b = lanes / 2;
    while b > 0 {
        // Lanes whose bit `b` is set: the upper half of every 2b-lane block.
        let upper = simd.not_m32s(simd.equal_u32s(
            simd.and_u32s(iota, simd.splat_u32s(b as u32)),
            simd.splat_u32s(0),
        ));
        for i in (0..lanes).filter(|i| i & b == 0) {
            let (top, bottom) = (x[i], x[i + b]);
            x[i] = simd.select_f32s(upper, simd.rotate_right_f32s(bottom, b), top);
            x[i + b] = simd.select_f32s(upper, bottom, simd.rotate_left_f32s(top, b));
        }
        b /= 2;
    }
}

/// Lane indices as integers, for the transpose's lane masks.
const IOTA_U32: [u32; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The Q·Kᵀ register tile: `M` query rows × `N` vectors of packed keys, over `dw` columns.
/// Adds to the scores in `s` unless `first`.
///
/// # Safety
/// For `m < M`, `d < dw`, `n < N`: `q[m] + d` is readable, the `N·lanes` floats at
/// `packed + d·N·lanes` are readable, and the `N·lanes` floats at `s + m·BLOCK_K` are
/// readable and writable.
#[inline(always)]
unsafe fn qk_kernel<S: Simd, const M: usize, const N: usize>(
    simd: S,
    q: [*const f32; M],
    packed: *const f32,
    dw: usize,
    s: *mut f32,
    first: bool,
) {
    let lanes = S::F32_LANES;
    let vec = |p: *const f32| -> S::f32s {
        // SAFETY: the caller guarantees `lanes` readable floats at every `p` used below.
        unsafe { (p as *const S::f32s).read_unaligned() }
    };
    let mut acc = [[simd.splat_f32s(0.0); N]; M];
    if !first {
        for (m, acc) in acc.iter_mut().enumerate() {
            for (n, a) in acc.iter_mut().enumerate() {
                *a = vec(s.wrapping_add(m * BLOCK_K + n * lanes));
            }
        }
    }
    for d in 0..dw {
        let kv: [S::f32s; N] =
            core::array::from_fn(|n| vec(packed.wrapping_add((d * N + n) * lanes)));
        for (m, acc) in acc.iter_mut().enumerate() {
            // SAFETY: m < M and d < dw.
            let qb = simd.splat_f32s(unsafe { *q[m].add(d) });
            for n in 0..N {
                acc[n] = simd.mul_add_f32s(qb, kv[n], acc[n]);
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        for (n, &a) in acc.iter().enumerate() {
            // SAFETY: writable by the caller's guarantee.
            unsafe { (s.add(m * BLOCK_K + n * lanes) as *mut S::f32s).write_unaligned(a) };
        }
    }
}

/// The P·V register tile: `acc[m][col..col + N·lanes] += Σ_{j < cols} w[m][j] · v[j][col..]`
/// for `m < M`, broadcasting weights and streaming value rows.
///
/// # Safety
/// For `m < M`, `j < cols`: `w + m·BLOCK_K + j` is readable, the `N·lanes` floats at
/// `v + j·v_stride + col` are readable, and those at `acc + m·V_PANEL + col` are readable
/// and writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_kernel<S: Simd, const M: usize, const N: usize>(
    simd: S,
    v: *const f32,
    v_stride: usize,
    w: *const f32,
    acc: *mut f32,
    cols: usize,
    col: usize,
) {
    let lanes = S::F32_LANES;
    let vec = |p: *const f32| -> S::f32s {
        // SAFETY: the caller guarantees `lanes` readable floats at every `p` used below.
        unsafe { (p as *const S::f32s).read_unaligned() }
    };
    let mut a: [[S::f32s; N]; M] = core::array::from_fn(|m| {
        core::array::from_fn(|n| vec(acc.wrapping_add(m * V_PANEL + col + n * lanes)))
    });
    for j in 0..cols {
        let row = v.wrapping_add(j * v_stride + col);
        let vv: [S::f32s; N] = core::array::from_fn(|n| vec(row.wrapping_add(n * lanes)));
        for (m, a) in a.iter_mut().enumerate() {
            // SAFETY: m < M and j < cols.
            let wb = simd.splat_f32s(unsafe { *w.add(m * BLOCK_K + j) });
            for n in 0..N {
                a[n] = simd.mul_add_f32s(wb, vv[n], a[n]);
            }
        }
    }
    for (m, a) in a.iter().enumerate() {
        for (n, &x) in a.iter().enumerate() {
            // SAFETY: writable by the caller's guarantee.
            unsafe { (acc.add(m * V_PANEL + col + n * lanes) as *mut S::f32s).write_unaligned(x) };
        }
    }
}

/// Hints that `s[at..at + len]` will be read soon: one prefetch per 64-byte line. A memory
/// hint, not SIMD, so it sits outside pulp; a no-op where Rust has no stable prefetch.
#[inline(always)]
fn prefetch(s: &[f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = at.saturating_add(len).min(s.len());
        for i in (at..end).step_by(16) {
            // SAFETY: `i < s.len()`; a prefetch never faults and has no visible effect.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    s.as_ptr().add(i) as *const i8,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, at, len);
}
