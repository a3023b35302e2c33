//! The attention kernel, written once over [`pulp::Simd`] and instantiated for every level.
//!
//! Query rows are taken in blocks of at most [`BLOCK_Q`]: up to `BLOCK_Q` rows of one head,
//! or, for short queries (decode), the same rows of several heads of one GQA group, so each
//! K/V row is read once per group. Each block makes one pass over the keys that the mask lets
//! any of its rows see (blocks of keys outside the band are skipped), [`BLOCK_K`] keys at a
//! time. The score tile is kept transposed, `[key][query row]`, so SIMD lanes run along the
//! block's query rows:
//! 1. **Q·Kᵀ**: the block's Q is packed once as `[dim][row]` (up to [`Q_DIM`] columns of
//!    `head_dim`; wider heads are packed per panel), and a register tile of [`KR_WIDE`] keys
//!    × [`QR_WIDE`] vectors of rows (32 registers; [`KR_NARROW`] × [`QR_NARROW`] with 16,
//!    [`KR_WIDE_SCALAR`] × [`QR_WIDE_SCALAR`] on the scalar level) broadcasts K elements straight from the caller's K rows: K is never packed. Blocks of
//!    at most [`MR`] rows (decode) dot each K row with the rows instead, [`DOT_KEYS`] rows
//!    at a time, lanes along `head_dim`, streaming K from memory with a prefetch per line
//!    read ([`PREFETCH_KEYS`] ahead).
//! 2. **Online softmax**, vertically: every lane is one row, so the row max and sum are
//!    element-wise over keys, with no horizontal reductions; key blocks that every row sees
//!    whole (most of them) do even the per-row bookkeeping a vector of rows at a time. Scores
//!    are scaled, biased and masked (excluded keys become `-inf`), weights become
//!    `exp(s − max)` with the vectorised [`exp`](crate::exp) (weights below `2^-126`, under
//!    the rounding of the sum, flushed to 0), and a row's accumulator is
//!    rescaled only if its max moved. Blocks of at most `MR` rows would fill only `MR` lanes,
//!    so they keep their scores `[row][key]`, lanes along keys.
//! 3. **P·V**: a register tile of [`PV_ROWS`] rows × [`NV_WIDE`] or [`NV_NARROW`] vectors of
//!    `v_dim` broadcasts weights and streams V rows. A row cut by a mask edge takes its run of
//!    keys through the same tile; scattered exclusions (`-inf` bias) go key by key, so the V
//!    row of an excluded key is never read for that row and NaN there cannot leak. On SIMD
//!    levels, decode blocks whose rows all see the whole key block read their `[row][key]`
//!    weights in place and walk V in memory order instead, [`PV_KEYS_WIDE`] or
//!    [`PV_KEYS_NARROW`] V rows at a time across the whole panel, prefetching a block ahead;
//!    the other decode blocks copy their weights into the `[key][row]` tile first.
//!
//! Working memory is a fixed `Scratch` on the stack ([`STACK_BYTES`]); `v_dim` wider than
//! [`V_PANEL`] is done in several passes (the scores are recomputed per pass).
//!
//! K and V elements are read in four places only: `qk_kernel`, `dot_kernel` and the P·V
//! loads (`pv_kernel`, `pv_keys_kernel` and their edges). Another element type (f16, bf16)
//! is a conversion to `f32` at those loads; the tiles, softmax and accumulators stay `f32`.

use pulp::{Simd, WithSimd};

use crate::Params;
use crate::exp::{exp_weight, exp1};

/// Query rows per block: the lanes of the score tile, and the rows that share each K and V
/// block read. A multiple of every lane count (1, 4, 8, 16), and small enough that the
/// packed Q, score and accumulator tiles stay under 64 KiB of stack.
pub const BLOCK_Q: usize = 48;
/// Keys per block: a multiple of every key tile ([`KR_WIDE`], [`KR_NARROW`],
/// [`KR_WIDE_SCALAR`]), and at most
/// 64 so a row's included keys fit in a `u64` bit set.
pub const BLOCK_K: usize = 48;
/// Columns of `head_dim` in the packed Q block. Up to this, Q is packed once per block of
/// rows and the scores of a key tile are summed in registers over the whole head; beyond it
/// the head is done in panels, and Q is re-packed per key block.
pub const Q_DIM: usize = 128;
/// Columns of `v_dim` accumulated per pass; a multiple of every lane count.
pub const V_PANEL: usize = 128;
/// Blocks of at most this many rows (decode with a GQA group of up to 4) take the unpacked
/// Q·Kᵀ path and the per-row softmax.
pub const MR: usize = 4;
/// Query rows of the P·V register tile: `PV_ROWS × NV_WIDE` = 24 accumulators with 32
/// registers, `PV_ROWS × NV_NARROW` = 12 with 16, plus the V loads and a broadcast.
pub const PV_ROWS: usize = 6;
/// Keys of the Q·Kᵀ register tile on levels with 32 vector registers (AVX-512, NEON):
/// `KR_WIDE × QR_WIDE` = 24 accumulators, 3 row loads and a broadcast.
pub const KR_WIDE: usize = 8;
/// Vectors of query rows of the Q·Kᵀ register tile with 32 registers (48 rows on AVX-512).
pub const QR_WIDE: usize = 3;
/// The wide Q·Kᵀ tile of the scalar level (one lane): 6 keys × 4 rows = 24 accumulators,
/// the rows side by side so LLVM can vectorise them where the target has SIMD.
pub const KR_WIDE_SCALAR: usize = 6;
/// Rows of the scalar level's Q·Kᵀ tile.
pub const QR_WIDE_SCALAR: usize = 4;
/// Keys of the Q·Kᵀ register tile with 16 registers (AVX2): `KR_NARROW × QR_NARROW`
/// = 12 accumulators, more than FMA latency × throughput, plus 2 loads and a broadcast.
pub const KR_NARROW: usize = 6;
/// Vectors of query rows of the Q·Kᵀ register tile with 16 registers.
pub const QR_NARROW: usize = 2;
/// Vectors of `v_dim` of the P·V register tile on wide levels (see `wide`).
pub const NV_WIDE: usize = 4;
/// The same with 16 registers.
pub const NV_NARROW: usize = 2;

/// Keys of the decode dot tile: `M ≤ MR` rows × 2 keys of accumulators (one key alone gets
/// two chains per row). Three and four keys ran faster from cache but no faster from memory:
/// rows read side by side interleave the K stream (benches/NOTES.md, entry 13).
pub const DOT_KEYS: usize = 2;
/// Keys of the decode P·V tile with 32 vector registers: `M ≤ MR` rows × 4 keys of
/// broadcast weights, the accumulators read and written once per 4 keys (2 and 8 keys were
/// 20% and 8% slower from memory on AVX-512).
pub const PV_KEYS_WIDE: usize = 4;
/// The same with 16 registers: `MR` × 2 broadcast weights, 2 V vectors and an accumulator.
pub const PV_KEYS_NARROW: usize = 2;

/// How far ahead, in keys, the decode path asks for K rows (V rows are asked for a block
/// ahead, [`BLOCK_K`]). Without prefetches decode ran at about half the streaming bandwidth on
/// the Zen 5 machines here. With the requests spread one per line read (entry 13 of
/// benches/NOTES.md), 24 measured best at 32k keys: AVX-512 lost 10–20% at 32 and 48 and 7%
/// at 16; AVX2 was within noise from 16 to 48 and lost 10% at 8.
pub const PREFETCH_KEYS: usize = 24;

/// Whether the wide register tiles fit: levels with 32 vector registers, and the scalar
/// level, whose targets have 32 floating-point registers (Cortex-M4F, RV32F; and on x86-64
/// LLVM turns its rows of 4 into SSE2 vectors).
#[inline(always)]
const fn wide<S: Simd>() -> bool {
    S::REGISTER_COUNT >= 32 || S::F32_LANES == 1
}

/// The kernel's working memory, all of it on the stack, in bytes (about 58 KiB).
pub const STACK_BYTES: usize = core::mem::size_of::<Scratch>();

const _: () = assert!(
    BLOCK_K.is_multiple_of(KR_WIDE)
        && BLOCK_K.is_multiple_of(KR_NARROW)
        && BLOCK_K.is_multiple_of(KR_WIDE_SCALAR)
        && BLOCK_Q.is_multiple_of(QR_WIDE_SCALAR)
        && BLOCK_Q.is_multiple_of(16 * 3)
        && BLOCK_Q.is_multiple_of(PV_ROWS)
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
    /// The block's Q, `[dim][row]`, one panel of `Q_DIM` columns.
    q_pack: [f32; Q_DIM * BLOCK_Q],
    /// Scores, then weights, `[key][row]`.
    scores: [f32; BLOCK_K * BLOCK_Q],
    /// The same for blocks of at most `MR` rows, `[row][key]`, before the weights are copied
    /// into `scores`.
    dot_scores: [f32; MR * BLOCK_K],
    /// Unnormalised outputs, `[row][V_PANEL]`.
    acc: [f32; BLOCK_Q * V_PANEL],
    /// Per row: running max and sum.
    max: [f32; BLOCK_Q],
    sum: [f32; BLOCK_Q],
    /// Per row, for the current key block: the visible keys `first..end` (as `f32`, for
    /// lane compares), then the block's max and sum of weights.
    first: [f32; BLOCK_Q],
    end: [f32; BLOCK_Q],
    block_max: [f32; BLOCK_Q],
    block_sum: [f32; BLOCK_Q],
    /// Per row, what the current key block means for it.
    rows: [RowBlock; BLOCK_Q],
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            q_pack: [0.0; Q_DIM * BLOCK_Q],
            scores: [0.0; BLOCK_K * BLOCK_Q],
            dot_scores: [0.0; MR * BLOCK_K],
            acc: [0.0; BLOCK_Q * V_PANEL],
            max: [0.0; BLOCK_Q],
            sum: [0.0; BLOCK_Q],
            first: [0.0; BLOCK_Q],
            end: [0.0; BLOCK_Q],
            block_max: [0.0; BLOCK_Q],
            block_sum: [0.0; BLOCK_Q],
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
    const WHOLE: RowBlock = RowBlock {
        whole: true,
        keys: u64::MAX,
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
    if shape.q_len == 0 {
        return; // nothing to write, however many heads
    }
    let group = shape.q_heads / shape.kv_heads;
    // Short queries (decode) put several heads of a GQA group in one block, so each K/V row
    // is read once per block of heads instead of once per head.
    let heads_per_block = (BLOCK_Q / shape.q_len.clamp(1, BLOCK_Q)).clamp(1, group);
    // Once per call: without std, `sqrtf` is a software loop.
    let scale = p.scale();
    for g in 0..shape.kv_heads {
        let group_end = (g + 1) * group;
        for h0 in (g * group..group_end).step_by(heads_per_block) {
            let nh = heads_per_block.min(group_end - h0);
            for q0 in (0..shape.q_len).step_by(BLOCK_Q) {
                let qn = BLOCK_Q.min(shape.q_len - q0);
                // Ends of the row ranges are monotonic: the union is first.lo .. last.hi.
                let keys = (p.key_range(q0).0, p.key_range(q0 + qn - 1).1);
                // And the keys every row sees: the intersection.
                let inner = (p.key_range(q0 + qn - 1).0, p.key_range(q0).1);
                for v0 in (0..shape.v_dim).step_by(V_PANEL) {
                    let vw = V_PANEL.min(shape.v_dim - v0);
                    let block = Block {
                        h0,
                        g,
                        q0,
                        qn,
                        rows: nh * qn,
                        inner,
                        v0,
                        vw,
                        scale,
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
    /// Keys `inner.0..inner.1` are visible to every row (empty if `inner.0 ≥ inner.1`).
    inner: (usize, usize),
    v0: usize,
    vw: usize,
    /// `p.scale()`.
    scale: f32,
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
        let packed = self.rows > MR;
        if packed && p.shape.head_dim <= Q_DIM {
            self.pack_q::<S>(p, q, 0, p.shape.head_dim, &mut scratch.q_pack);
        }
        for k0 in (keys.0..keys.1).step_by(BLOCK_K) {
            let cols = BLOCK_K.min(keys.1 - k0);
            if packed {
                self.scores_tiled(simd, p, q, k, k0, cols, scratch);
            } else {
                match self.rows {
                    4 => self.scores_dot::<S, 4>(simd, p, q, k, k0, cols, scratch),
                    3 => self.scores_dot::<S, 3>(simd, p, q, k, k0, cols, scratch),
                    2 => self.scores_dot::<S, 2>(simd, p, q, k, k0, cols, scratch),
                    _ => self.scores_dot::<S, 1>(simd, p, q, k, k0, cols, scratch),
                }
            }
            if packed {
                self.softmax(simd, p, k0, cols, scratch);
            } else {
                for r in 0..self.rows {
                    scratch.rows[r] = self.softmax_dot_row(simd, p, r, k0, cols, scratch);
                }
            }
            // While P·V reads a block's V lines it asks for the same lines of the next block
            // (not past the keys): decode streams V from memory, prefill from L2 or L3.
            let ahead = match keys.1 - k0 >= 2 * BLOCK_K {
                true => BLOCK_K * p.v.row_stride,
                false => 0,
            };
            self.weighted_values(simd, p, v, k0, cols, ahead, scratch);
        }
    }

    /// Vectors of query rows in the block (the last one padded).
    #[inline(always)]
    fn row_vectors<S: Simd>(self) -> usize {
        self.rows.div_ceil(S::F32_LANES)
    }

    /// Packs columns `d0..d0 + dw` of the block's Q rows as `q_pack[d][r]`, with zeros in
    /// the padding rows of the last vector.
    #[inline(always)]
    fn pack_q<S: Simd>(self, p: &Params, q: &[f32], d0: usize, dw: usize, q_pack: &mut [f32]) {
        for r in 0..self.rows {
            let (h, i) = self.row(r);
            strided_copy(&mut q_pack[r..], BLOCK_Q, &q[p.q.at(h, i) + d0..][..dw]);
        }
        for r in self.rows..self.row_vectors::<S>() * S::F32_LANES {
            for d in 0..dw {
                q_pack[d * BLOCK_Q + r] = 0.0;
            }
        }
    }

    /// `scratch.scores[j][r] = q[row r] · k[g][k0 + j]` for blocks of more than `MR` rows,
    /// with the register tile of the level.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores_tiled<S: Simd>(
        self,
        simd: S,
        p: &Params,
        q: &[f32],
        k: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        if S::F32_LANES == 1 {
            self.scores_kr::<S, KR_WIDE_SCALAR, QR_WIDE_SCALAR>(simd, p, q, k, k0, cols, scratch)
        } else if wide::<S>() {
            self.scores_kr::<S, KR_WIDE, QR_WIDE>(simd, p, q, k, k0, cols, scratch)
        } else {
            self.scores_kr::<S, KR_NARROW, QR_NARROW>(simd, p, q, k, k0, cols, scratch)
        }
    }

    /// [`Block::scores_tiled`] with tiles of `KR` keys × `QR` vectors of rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores_kr<S: Simd, const KR: usize, const QR: usize>(
        self,
        simd: S,
        p: &Params,
        q: &[f32],
        k: &[f32],
        k0: usize,
        cols: usize,
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let head_dim = p.shape.head_dim;
        let row_vectors = self.row_vectors::<S>();
        for d0 in (0..head_dim).step_by(Q_DIM) {
            let dw = Q_DIM.min(head_dim - d0);
            if head_dim > Q_DIM {
                self.pack_q::<S>(p, q, d0, dw, &mut scratch.q_pack);
            }
            for j0 in (0..cols).step_by(KR) {
                // A tile past the last key repeats it; those scores are never read.
                let k_rows: [*const f32; KR] = core::array::from_fn(|x| {
                    let j = k0 + (j0 + x).min(cols - 1);
                    // Validation guarantees every key row is inside `k`; checked per tile.
                    k[p.k.at(self.g, j) + d0..][..dw].as_ptr()
                });
                let mut c = 0;
                while c < row_vectors {
                    let n = QR.min(row_vectors - c);
                    let packed = &scratch.q_pack[c * lanes..][..(dw - 1) * BLOCK_Q + n * lanes];
                    let s = &mut scratch.scores[j0 * BLOCK_Q + c * lanes..]
                        [..(KR - 1) * BLOCK_Q + n * lanes];
                    let (qp, sp, first) = (packed.as_ptr(), s.as_mut_ptr(), d0 == 0);
                    // SAFETY: every `k_rows` pointer has `dw` floats; `packed` holds `dw` rows
                    // of `n` vectors at d·BLOCK_Q; `s` holds `KR` rows of `n` vectors at
                    // x·BLOCK_Q (`j0 + KR ≤ BLOCK_K` as KR divides BLOCK_K).
                    unsafe {
                        match n {
                            4 => qk_kernel::<S, KR, 4>(simd, k_rows, qp, dw, sp, first),
                            3 => qk_kernel::<S, KR, 3>(simd, k_rows, qp, dw, sp, first),
                            2 => qk_kernel::<S, KR, 2>(simd, k_rows, qp, dw, sp, first),
                            _ => qk_kernel::<S, KR, 1>(simd, k_rows, qp, dw, sp, first),
                        }
                    }
                    c += n;
                }
            }
        }
    }

    /// `scratch.dot_scores[m][j]` for a block of `M ≤ MR` rows: each K row is streamed once,
    /// straight from memory, and dotted with every query row, lanes along `head_dim`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scores_dot<S: Simd, const M: usize>(
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
        let q_rows: [*const f32; M] = core::array::from_fn(|m| {
            let (h, i) = self.row(m);
            q[p.q.at(h, i)..][..head_dim].as_ptr()
        });
        // Validation guarantees these rows are inside `k`; slicing checks it once per block.
        let ks = p.k.row_stride;
        let k_block = &k[p.k.at(self.g, k0)..][..(cols - 1) * ks + head_dim];
        let kp = k_block.as_ptr();
        let out = &mut scratch.dot_scores[..M * BLOCK_K];
        // Decode streams K from memory once: ask for the rows `PREFETCH_KEYS` ahead, for L1
        // only (the lines are read once). A prefetch past the tensor is harmless: it never
        // faults; but past `usize` (a huge stride over few keys) there is nothing to ask for.
        // (V's lines are asked for by P·V, a block ahead.)
        let ahead = PREFETCH_KEYS.checked_mul(ks).unwrap_or(0);
        let mut j = 0;
        while j < cols {
            let n = if cols - j >= DOT_KEYS { DOT_KEYS } else { 1 };
            // SAFETY: keys j..j + n < cols are rows of `k_block`, each `head_dim` floats from
            // `kp + x·ks`; every `q_rows[m]` starts `head_dim` readable floats; and
            // `out[m·BLOCK_K + j + x]` is in `out` for m < M, j + x < cols ≤ BLOCK_K.
            unsafe {
                let tile = (kp.add(j * ks), ks, q_rows, head_dim, ahead);
                let s = out.as_mut_ptr().add(j);
                match n {
                    DOT_KEYS => dot_kernel::<S, M, DOT_KEYS, 1>(simd, tile, s),
                    // One key: two chains per row keep 2·M multiply-adds in flight.
                    _ => dot_kernel::<S, M, 1, 2>(simd, tile, s),
                }
            }
            j += n;
        }
    }

    /// The online softmax step of row `r` of a block of at most `MR` rows, whose scores are
    /// in `scratch.dot_scores[r]` (lanes along keys: a vertical pass would fill only `MR`
    /// lanes of a vector). Scales, biases and masks the row's scores, moves its running max
    /// and sum, rescales its accumulator if the max moved, and leaves the weights in
    /// `scratch.dot_scores[r]`.
    #[inline(always)]
    fn softmax_dot_row<S: Simd>(
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
        let scale = simd.splat_f32s(self.scale);
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let iota = load(simd, &IOTA[..lanes]);
        let bias = p
            .bias
            .map(|b| &b.data[h * b.head_stride + i * b.row_stride + k0..][..cols]);
        let n_vec = cols.div_ceil(lanes);
        let row = &mut vectors_mut::<S>(&mut scratch.dot_scores[r * BLOCK_K..][..BLOCK_K])[..n_vec];

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
            let visible = &scratch.dot_scores[r * BLOCK_K..][jl..jh];
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
            let scores = &scratch.dot_scores[r * BLOCK_K..][..cols];
            for (j, &s) in scores.iter().enumerate().take(jh).skip(jl) {
                keys |= ((s != f32::NEG_INFINITY) as u64) << j;
            }
        }

        let m = simd.splat_f32s(new_max);
        let mut sum = simd.splat_f32s(0.0);
        for s in
            vectors_mut::<S>(&mut scratch.dot_scores[r * BLOCK_K..][..BLOCK_K])[..n_vec].iter_mut()
        {
            let w = exp_weight(simd, simd.sub_f32s(*s, m));
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

    /// The online softmax step for key block `k0..k0 + cols`: scales, biases and masks the
    /// scores, moves each row's running max and sum, rescales a row's accumulator if its max
    /// moved, leaves the weights in `scratch.scores` and what the block means for each row in
    /// `scratch.rows`. The per-key work is vertical (a lane per row); the per-row decisions
    /// (empty rows, NaN, mask edges) are scalar, once per row and block.
    #[inline(always)]
    fn softmax<S: Simd>(self, simd: S, p: &Params, k0: usize, cols: usize, scratch: &mut Scratch) {
        let interior = p.bias.is_none() && self.inner.0 <= k0 && k0 + cols <= self.inner.1;
        if interior && self.softmax_interior(simd, cols, scratch) {
            return;
        }
        // The interior path leaves the scores scaled when it gives up.
        self.softmax_edge(simd, p, k0, cols, !interior, scratch);
    }

    /// [`Block::softmax`] for a key block that every row sees whole, without a bias (most
    /// blocks): no masks, and every per-row step vectorised. Returns `false`, with the scores
    /// scaled and nothing else changed, if some row's scores are not all finite-or-`+inf`
    /// (NaN, or `-inf` from infinite inputs); [`Block::softmax_edge`] then takes the block.
    #[inline(always)]
    fn softmax_interior<S: Simd>(self, simd: S, cols: usize, scratch: &mut Scratch) -> bool {
        let lanes = S::F32_LANES;
        let row_vectors = self.row_vectors::<S>();
        let scale = simd.splat_f32s(self.scale);
        for c in 0..row_vectors {
            let at = c * lanes;
            let mut max = simd.splat_f32s(f32::NEG_INFINITY);
            let mut min = simd.splat_f32s(f32::INFINITY);
            for j in 0..cols {
                let s = &mut vectors_mut::<S>(&mut scratch.scores[j * BLOCK_Q + at..][..lanes])[0];
                let x = simd.mul_f32s(*s, scale);
                min = simd.min_f32s(min, x);
                max = simd.max_f32s(max, x);
                *s = x;
            }
            let old = load(simd, &scratch.max[at..]);
            vectors_mut::<S>(&mut scratch.block_max[at..][..lanes])[0] = simd.max_f32s(old, max);
            vectors_mut::<S>(&mut scratch.block_sum[at..][..lanes])[0] = min;
        }
        // `x > -inf` is false for NaN and -inf (padding lanes are not rows: not looked at).
        let finite = |x: &f32| *x > f32::NEG_INFINITY;
        let rows = self.rows;
        if !(scratch.block_max[..rows].iter().all(finite)
            && scratch.block_sum[..rows].iter().all(finite))
        {
            return false;
        }
        let one = simd.splat_f32s(1.0);
        for c in 0..row_vectors {
            let at = c * lanes;
            let new = load(simd, &scratch.block_max[at..]);
            let mut sum = simd.splat_f32s(0.0);
            for j in 0..cols {
                let s = &mut vectors_mut::<S>(&mut scratch.scores[j * BLOCK_Q + at..][..lanes])[0];
                let w = exp_weight(simd, simd.sub_f32s(*s, new));
                sum = simd.add_f32s(sum, w);
                *s = w;
            }
            let old = load(simd, &scratch.max[at..]);
            let alpha = simd.select_f32s(
                simd.equal_f32s(old, new),
                one,
                exp_weight(simd, simd.sub_f32s(old, new)),
            );
            let running = simd.mul_f32s(load(simd, &scratch.sum[at..]), alpha);
            vectors_mut::<S>(&mut scratch.sum[at..][..lanes])[0] = simd.add_f32s(running, sum);
            vectors_mut::<S>(&mut scratch.max[at..][..lanes])[0] = new;
            // Parked in `first` for the rescale below.
            vectors_mut::<S>(&mut scratch.first[at..][..lanes])[0] = alpha;
        }
        for r in 0..rows {
            scratch.rows[r] = RowBlock::WHOLE;
            let alpha = scratch.first[r];
            if alpha != 1.0 {
                let alpha = simd.splat_f32s(alpha);
                for a in vectors_mut::<S>(&mut scratch.acc[r * V_PANEL..][..V_PANEL]) {
                    *a = simd.mul_f32s(*a, alpha);
                }
            }
        }
        true
    }

    /// [`Block::softmax`] for any block: mask edges, bias, and rows whose scores hold NaN or
    /// `-inf`. Multiplies the scores by the scale only if `scale`.
    #[inline(always)]
    fn softmax_edge<S: Simd>(
        self,
        simd: S,
        p: &Params,
        k0: usize,
        cols: usize,
        scale: bool,
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let row_vectors = self.row_vectors::<S>();
        // Each row's visible keys in this block; a bias is applied here, scaled, per row.
        let mut all_visible = p.bias.is_none();
        for r in 0..row_vectors * lanes {
            let (jl, jh) = if r < self.rows {
                let (h, i) = self.row(r);
                let (lo, hi) = p.key_range(i);
                let (jl, jh) = (
                    lo.saturating_sub(k0).min(cols),
                    hi.saturating_sub(k0).min(cols),
                );
                if let (Some(b), true) = (p.bias, jl < jh) {
                    let bias = &b.data[h * b.head_stride + i * b.row_stride + k0..][jl..jh];
                    let scale = self.scale;
                    for (j, &b) in (jl..jh).zip(bias) {
                        let s = &mut scratch.scores[j * BLOCK_Q + r];
                        *s = if b == f32::NEG_INFINITY {
                            f32::NEG_INFINITY
                        } else {
                            core::hint::black_box(*s * scale + b)
                        };
                    }
                }
                (jl, jh.max(jl))
            } else {
                (0, 0)
            };
            all_visible &= r >= self.rows || (jl == 0 && jh == cols);
            scratch.first[r] = jl as f32;
            scratch.end[r] = jh as f32;
        }
        let scale = simd.splat_f32s(if p.bias.is_some() || !scale {
            1.0
        } else {
            self.scale
        });
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let pos_inf = simd.splat_f32s(f32::INFINITY);

        // Scale and mask; per row, the block's max and the least visible score.
        for c in 0..row_vectors {
            let at = c * lanes;
            let (jl, jh) = (
                load(simd, &scratch.first[at..]),
                load(simd, &scratch.end[at..]),
            );
            let mut max = neg_inf;
            let mut min_visible = pos_inf;
            for j in 0..cols {
                let s = &mut vectors_mut::<S>(&mut scratch.scores[j * BLOCK_Q + at..][..lanes])[0];
                let mut x = simd.mul_f32s(*s, scale);
                if all_visible {
                    min_visible = simd.min_f32s(min_visible, x);
                } else {
                    let jv = simd.splat_f32s(j as f32);
                    let visible = simd.and_m32s(
                        simd.greater_than_or_equal_f32s(jv, jl),
                        simd.less_than_f32s(jv, jh),
                    );
                    x = simd.select_f32s(visible, x, neg_inf);
                    min_visible = simd.min_f32s(min_visible, simd.select_f32s(visible, x, pos_inf));
                }
                max = simd.max_f32s(max, x);
                *s = x;
            }
            vectors_mut::<S>(&mut scratch.block_max[at..][..lanes])[0] = max;
            // Parked in `block_sum` until the rows are decided.
            vectors_mut::<S>(&mut scratch.block_sum[at..][..lanes])[0] = min_visible;
        }

        // Per row: the new max, and which keys the row includes.
        for r in 0..self.rows {
            let (jl, jh) = (scratch.first[r] as usize, scratch.end[r] as usize);
            let (old_max, block_max) = (scratch.max[r], scratch.block_max[r]);
            // A skipped row keeps its max (its weights are never read).
            scratch.block_max[r] = old_max;
            scratch.rows[r] = RowBlock::SKIP;
            if jl >= jh {
                continue;
            }
            let column = |scores: &[f32; BLOCK_K * BLOCK_Q], j: usize| scores[j * BLOCK_Q + r];
            // `max` ignores NaN on some levels: test a row of NaN and -inf scores.
            let mut new_max = old_max.max(block_max);
            if new_max == f32::NEG_INFINITY {
                if !(jl..jh).any(|j| column(&scratch.scores, core::hint::black_box(j)).is_nan()) {
                    // Every visible score so far is -inf: nothing is included yet.
                    continue;
                }
                new_max = f32::NAN; // poisons the row's sum, as a NaN score must
            }
            let whole = jl == 0 && jh == cols && scratch.block_sum[r] != f32::NEG_INFINITY;
            let mut keys = u64::MAX;
            if !whole {
                // Bit j: key k0 + j is visible and its score is not -inf.
                keys = 0;
                for j in jl..jh {
                    let s = column(&scratch.scores, core::hint::black_box(j));
                    keys |= ((s != f32::NEG_INFINITY) as u64) << j;
                }
            }
            scratch.block_max[r] = new_max;
            scratch.rows[r] = RowBlock { whole, keys };
        }

        // Weights and their sums.
        for c in 0..row_vectors {
            let at = c * lanes;
            let m = load(simd, &scratch.block_max[at..]);
            let mut sum = simd.splat_f32s(0.0);
            for j in 0..cols {
                let s = &mut vectors_mut::<S>(&mut scratch.scores[j * BLOCK_Q + at..][..lanes])[0];
                let w = exp_weight(simd, simd.sub_f32s(*s, m));
                sum = simd.add_f32s(sum, w);
                *s = w;
            }
            vectors_mut::<S>(&mut scratch.block_sum[at..][..lanes])[0] = sum;
        }

        // Per row: move the running max and sum, rescaling the accumulator if the max moved.
        for r in 0..self.rows {
            if scratch.rows[r].keys == 0 {
                continue;
            }
            let (old_max, new_max) = (scratch.max[r], scratch.block_max[r]);
            if new_max != old_max {
                let alpha = exp1(old_max - new_max);
                scratch.sum[r] *= alpha;
                let alpha = simd.splat_f32s(alpha);
                for a in vectors_mut::<S>(&mut scratch.acc[r * V_PANEL..][..V_PANEL]) {
                    *a = simd.mul_f32s(*a, alpha);
                }
            }
            scratch.sum[r] += scratch.block_sum[r];
            scratch.max[r] = new_max;
        }
    }

    /// `acc[r] += Σ_j weight[r][j] · v[g][k0 + j]` for every row the block includes; with
    /// `ahead` > 0 the tiles prefetch the V lines `ahead` elements after those they read.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn weighted_values<S: Simd>(
        self,
        simd: S,
        p: &Params,
        v: &[f32],
        k0: usize,
        cols: usize,
        ahead: usize,
        scratch: &mut Scratch,
    ) {
        // With one lane a key-major walk would load and store an accumulator per
        // multiply-add: the scalar level keeps the register tile.
        if S::F32_LANES > 1 && self.rows <= MR && scratch.rows[..self.rows].iter().all(|r| r.whole)
        {
            let rows = (p, v, k0, cols, ahead);
            match self.rows {
                4 => self.pv_keys::<S, 4>(simd, rows, scratch),
                3 => self.pv_keys::<S, 3>(simd, rows, scratch),
                2 => self.pv_keys::<S, 2>(simd, rows, scratch),
                _ => self.pv_keys::<S, 1>(simd, rows, scratch),
            }
            return;
        }
        if self.rows <= MR {
            // A mask edge in a decode block: the general tiles read `[key][row]` weights.
            for r in 0..self.rows {
                let weights = &scratch.dot_scores[r * BLOCK_K..][..cols];
                strided_copy(&mut scratch.scores[r..], BLOCK_Q, weights);
            }
        }
        let mut r = 0;
        while r < self.rows {
            let row = scratch.rows[r];
            if row.whole {
                let mut m = 1;
                while m < PV_ROWS && r + m < self.rows && scratch.rows[r + m].whole {
                    m += 1;
                }
                let rows = (p, v, k0, (0, cols), r, ahead);
                match m {
                    6 => self.pv_rows::<S, 6>(simd, rows, scratch),
                    5 => self.pv_rows::<S, 5>(simd, rows, scratch),
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
                        self.pv_rows::<S, 1>(simd, (p, v, k0, keys, r, ahead), scratch);
                    }
                    keys => self.pv_row_masked(simd, p, v, k0, r, keys, scratch),
                }
                r += 1;
            }
        }
    }

    /// `M` rows from `r0` that include exactly the keys `j0..j1` of the block (and the V
    /// prefetch distance of [`Block::weighted_values`]).
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn pv_rows<S: Simd, const M: usize>(
        self,
        simd: S,
        (p, v, k0, (j0, j1), r0, ahead): (&Params, &[f32], usize, (usize, usize), usize, usize),
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let rs = p.v.row_stride;
        let cols = j1 - j0;
        let start = p.v.at(self.g, k0 + j0) + self.v0;
        // Validation guarantees these rows are inside `v`; slicing checks it once per call.
        let v_rows = &v[start..start + (cols - 1) * rs + self.vw];
        let w = &scratch.scores[j0 * BLOCK_Q + r0..][..(cols - 1) * BLOCK_Q + M];
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
            // j·BLOCK_Q + m for j < cols, m < M; `acc` holds rows m < M of V_PANEL ≥ vw floats.
            unsafe {
                let tile = (wp, ap, cols, c * lanes, ahead);
                match n {
                    NV_WIDE => pv_kernel::<S, M, NV_WIDE>(simd, vp, rs, tile),
                    NV_NARROW => pv_kernel::<S, M, NV_NARROW>(simd, vp, rs, tile),
                    _ => pv_kernel::<S, M, 1>(simd, vp, rs, tile),
                }
            }
            c += n;
        }
        let tail = (v_rows, rs, full * lanes, self.vw);
        pv_last_vector(simd, tail, cols, acc, M, |m, j| w[j * BLOCK_Q + m]);
    }

    /// P·V for a block of `M ≤ MR` rows that all include every key `0..cols` (decode): a
    /// few keys at a time across the whole panel, so V is read row after row in memory
    /// order, each line once, with the lines `ahead` elements further on prefetched.
    #[inline(always)]
    fn pv_keys<S: Simd, const M: usize>(
        self,
        simd: S,
        (p, v, k0, cols, ahead): (&Params, &[f32], usize, usize, usize),
        scratch: &mut Scratch,
    ) {
        let lanes = S::F32_LANES;
        let rs = p.v.row_stride;
        let start = p.v.at(self.g, k0) + self.v0;
        // Validation guarantees these rows are inside `v`; slicing checks it once per call.
        let v_rows = &v[start..start + (cols - 1) * rs + self.vw];
        let w = &scratch.dot_scores[..(M - 1) * BLOCK_K + cols];
        let acc = &mut scratch.acc[..M * V_PANEL];
        let full = self.vw / lanes;
        let x_max = if wide::<S>() {
            PV_KEYS_WIDE
        } else {
            PV_KEYS_NARROW
        };
        let mut j = 0;
        while j < cols {
            let n = if cols - j >= x_max { x_max } else { 1 };
            // SAFETY: keys j..j + n < cols are rows of `v_rows` (at x·rs from its start, each
            // with `full·lanes ≤ vw` floats); `w[m·BLOCK_K + j + x]` is in `w` for m < M;
            // `acc` holds rows m < M of V_PANEL ≥ vw floats.
            unsafe {
                let tile = (w.as_ptr().add(j), acc.as_mut_ptr(), full, ahead);
                let vp = v_rows.as_ptr().add(j * rs);
                match n {
                    PV_KEYS_WIDE => pv_keys_kernel::<S, M, PV_KEYS_WIDE>(simd, vp, rs, tile),
                    PV_KEYS_NARROW => pv_keys_kernel::<S, M, PV_KEYS_NARROW>(simd, vp, rs, tile),
                    _ => pv_keys_kernel::<S, M, 1>(simd, vp, rs, tile),
                }
            }
            j += n;
        }
        let tail = (v_rows, rs, full * lanes, self.vw);
        pv_last_vector(simd, tail, cols, acc, M, |m, j| w[m * BLOCK_K + j]);
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
            let w = simd.splat_f32s(scratch.scores[j * BLOCK_Q + r]);
            let v_row = &v[p.v.at(self.g, k0 + j) + self.v0..][..self.vw];
            for (c, a) in acc.iter_mut().enumerate() {
                *a = simd.mul_add_e_f32s(w, load(simd, &v_row[c * lanes..]), *a);
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

/// The last partial vector of a P·V panel, the columns `col..vw` the vector tiles leave:
/// `acc[m][col..vw] += Σ_{j < cols} w(m, j) · v[j·rs + col..vw]` for `m < rows`.
#[inline(always)]
fn pv_last_vector<S: Simd>(
    simd: S,
    (v_rows, rs, col, vw): (&[f32], usize, usize, usize),
    cols: usize,
    acc: &mut [f32],
    rows: usize,
    w: impl Fn(usize, usize) -> f32,
) {
    if col == vw {
        return;
    }
    for m in 0..rows {
        let acc = &mut acc[m * V_PANEL + col..][..S::F32_LANES];
        let mut a = load(simd, acc);
        for j in 0..cols {
            let v = load(simd, &v_rows[j * rs + col..][..vw - col]);
            a = simd.mul_add_e_f32s(simd.splat_f32s(w(m, j)), v, a);
        }
        vectors_mut::<S>(acc)[0] = a;
    }
}

/// `dst[i · stride] = src[i]`, one element at a time. Left to itself LLVM vectorises this
/// into scatters, which are slow on AMD and which the Bochs AVX-512 emulator used in CI
/// cannot execute (index in zmm16–31); the Q pack is done once per block of rows.
#[inline(always)]
fn strided_copy(dst: &mut [f32], stride: usize, src: &[f32]) {
    for (d, &x) in dst.iter_mut().step_by(stride).zip(src) {
        *d = core::hint::black_box(x);
    }
}

/// The Q·Kᵀ register tile: `KR` keys × `N` vectors of packed query rows, over `dw` columns
/// of `head_dim`: `s[x][..] (+)= Σ_d k[x][d] · q_pack[d][..]`, broadcasting K elements from
/// the caller's rows. Adds to the scores in `s` unless `first`.
///
/// # Safety
/// For `x < KR`, `d < dw`, `n < N`: `k[x] + d` is readable, the `lanes` floats at
/// `q_pack + d·BLOCK_Q + n·lanes` are readable, and those at `s + x·BLOCK_Q + n·lanes` are
/// readable and writable.
#[inline(always)]
unsafe fn qk_kernel<S: Simd, const KR: usize, const N: usize>(
    simd: S,
    k: [*const f32; KR],
    q_pack: *const f32,
    dw: usize,
    s: *mut f32,
    first: bool,
) {
    let lanes = S::F32_LANES;
    let vec = |p: *const f32| -> S::f32s {
        // SAFETY: the caller guarantees `lanes` readable floats at every `p` used below.
        unsafe { (p as *const S::f32s).read_unaligned() }
    };
    let mut acc = [[simd.splat_f32s(0.0); N]; KR];
    if !first {
        for (x, acc) in acc.iter_mut().enumerate() {
            for (n, a) in acc.iter_mut().enumerate() {
                *a = vec(s.wrapping_add(x * BLOCK_Q + n * lanes));
            }
        }
    }
    for d in 0..dw {
        let qv: [S::f32s; N] =
            core::array::from_fn(|n| vec(q_pack.wrapping_add(d * BLOCK_Q + n * lanes)));
        for (x, acc) in acc.iter_mut().enumerate() {
            // SAFETY: x < KR and d < dw.
            let kb = simd.splat_f32s(unsafe { *k[x].add(d) });
            for n in 0..N {
                acc[n] = simd.mul_add_e_f32s(kb, qv[n], acc[n]);
            }
        }
    }
    for (x, acc) in acc.iter().enumerate() {
        for (n, &a) in acc.iter().enumerate() {
            // SAFETY: writable by the caller's guarantee.
            unsafe { (s.add(x * BLOCK_Q + n * lanes) as *mut S::f32s).write_unaligned(a) };
        }
    }
}

/// The decode dot tile: `s[m·BLOCK_K + x] = Σ_d q[m][d] · k[x·k_stride + d]` for `m < M`
/// query rows and `X` consecutive keys, lanes along `head_dim`, `C` accumulator chains per
/// score (`M × X × C` multiply-adds in flight) and one horizontal sum per score.
///
/// # Safety
/// For `x < X`, the `dim` floats at `k + x·k_stride` are readable; so are the `dim` floats at
/// every `q[m]`; and `s + m·BLOCK_K + x` is writable for `m < M`, `x < X`.
#[inline(always)]
unsafe fn dot_kernel<S: Simd, const M: usize, const X: usize, const C: usize>(
    simd: S,
    (k, k_stride, q, dim, ahead): (*const f32, usize, [*const f32; M], usize, usize),
    s: *mut f32,
) {
    let lanes = S::F32_LANES;
    let vec = |p: *const f32| -> S::f32s {
        // SAFETY: the caller guarantees `lanes` readable floats at every `p` used below.
        unsafe { (p as *const S::f32s).read_unaligned() }
    };
    let mut acc = [[[simd.splat_f32s(0.0); C]; X]; M];
    // Multiplies the K and Q vectors of one column block into chain `c`.
    let mut fma = |kv: [S::f32s; X], qv: [S::f32s; M], c: usize| {
        for (acc, qv) in acc.iter_mut().zip(qv) {
            for (acc, kv) in acc.iter_mut().zip(kv) {
                acc[c] = simd.mul_add_e_f32s(qv, kv, acc[c]);
            }
        }
    };
    let full = dim / lanes * lanes;
    let mut d = 0;
    while d < full {
        // Chain c takes vector c of each run of C (a constant trip count keeps the chain
        // index constant and the accumulators in registers).
        for c in 0..C {
            let at = d + c * lanes;
            if at >= full {
                break;
            }
            if at % 16 == 0 {
                // One prefetch per 64 bytes of K read: the same bytes `ahead` further on.
                for x in 0..X {
                    prefetch_once(k.wrapping_add(x * k_stride + at).wrapping_add(ahead));
                }
            }
            fma(
                core::array::from_fn(|x| vec(k.wrapping_add(x * k_stride + at))),
                core::array::from_fn(|m| vec(q[m].wrapping_add(at))),
                c,
            );
        }
        d += C * lanes;
    }
    if full < dim {
        // The loop's prefetch again, written out: shared through a closure it measured 10
        // points slower on AVX-512 decode-32k (82% → 72% of the streaming read).
        if full % 16 == 0 {
            for x in 0..X {
                prefetch_once(k.wrapping_add(x * k_stride + full).wrapping_add(ahead));
            }
        }
        let part = |p: *const f32| {
            // SAFETY: `dim - full` floats from `p = row + full` are inside the row.
            simd.partial_load_f32s(unsafe { core::slice::from_raw_parts(p, dim - full) })
        };
        fma(
            core::array::from_fn(|x| part(k.wrapping_add(x * k_stride + full))),
            core::array::from_fn(|m| part(q[m].wrapping_add(full))),
            0,
        );
    }
    for (m, acc) in acc.iter().enumerate() {
        for (x, chains) in acc.iter().enumerate() {
            let sum = chains[1..]
                .iter()
                .fold(chains[0], |a, &b| simd.add_f32s(a, b));
            // SAFETY: writable by the caller's guarantee.
            unsafe { *s.add(m * BLOCK_K + x) = simd.reduce_sum_f32s(sum) };
        }
    }
}

/// The P·V register tile: `acc[m][col..col + N·lanes] += Σ_{j < cols} w[m][j] · v[j][col..]`
/// for `m < M`, broadcasting weights and streaming value rows; with `ahead` > 0, each row's
/// lines `ahead` elements further on are prefetched (a hint: any address is allowed).
///
/// # Safety
/// For `m < M`, `j < cols`: `w + j·BLOCK_Q + m` is readable, the `N·lanes` floats at
/// `v + j·v_stride + col` are readable, and those at `acc + m·V_PANEL + col` are readable
/// and writable.
#[inline(always)]
unsafe fn pv_kernel<S: Simd, const M: usize, const N: usize>(
    simd: S,
    v: *const f32,
    v_stride: usize,
    (w, acc, cols, col, ahead): (*const f32, *mut f32, usize, usize, usize),
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
        if ahead != 0 {
            for line in (0..N * lanes).step_by(16) {
                prefetch_at(row.wrapping_add(ahead + line));
            }
        }
        for (m, a) in a.iter_mut().enumerate() {
            // SAFETY: m < M and j < cols.
            let wb = simd.splat_f32s(unsafe { *w.add(j * BLOCK_Q + m) });
            for n in 0..N {
                a[n] = simd.mul_add_e_f32s(wb, vv[n], a[n]);
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

/// The key-major P·V tile: `acc[m][c·lanes..] += Σ_{x < X} w[m·BLOCK_K + x] · v[x·v_stride +
/// c·lanes..]` for `m < M` and every whole vector `c < full` of the panel, `X` value rows read
/// side by side in memory order; with `ahead` > 0, the lines `ahead` elements past each row
/// are prefetched.
///
/// # Safety
/// For `x < X`, the `full·lanes` floats at `v + x·v_stride` are readable; for `m < M`,
/// `w + m·BLOCK_K + x` is readable and the `full·lanes` floats at `acc + m·V_PANEL` are
/// readable and writable.
#[inline(always)]
unsafe fn pv_keys_kernel<S: Simd, const M: usize, const X: usize>(
    simd: S,
    v: *const f32,
    v_stride: usize,
    (w, acc, full, ahead): (*const f32, *mut f32, usize, usize),
) {
    let lanes = S::F32_LANES;
    let vec = |p: *const f32| -> S::f32s {
        // SAFETY: the caller guarantees `lanes` readable floats at every `p` used below.
        unsafe { (p as *const S::f32s).read_unaligned() }
    };
    let wb: [[S::f32s; X]; M] = core::array::from_fn(|m| {
        core::array::from_fn(|x| {
            // SAFETY: m < M and x < X: readable by the caller's guarantee.
            simd.splat_f32s(unsafe { *w.add(m * BLOCK_K + x) })
        })
    });
    for c in 0..full {
        if ahead != 0 && (c * lanes) % 16 == 0 {
            // The same line of the rows `ahead` further on: one request per line read.
            for x in 0..X {
                prefetch_once(v.wrapping_add(x * v_stride + c * lanes).wrapping_add(ahead));
            }
        }
        let vv: [S::f32s; X] =
            core::array::from_fn(|x| vec(v.wrapping_add(x * v_stride + c * lanes)));
        for (m, wb) in wb.iter().enumerate() {
            let at = acc.wrapping_add(m * V_PANEL + c * lanes);
            let mut a = vec(at);
            for x in 0..X {
                a = simd.mul_add_e_f32s(wb[x], vv[x], a);
            }
            // SAFETY: writable by the caller's guarantee.
            unsafe { (at as *mut S::f32s).write_unaligned(a) };
        }
    }
}

/// Hints that the 64-byte line holding `p` will be read soon. Any address is allowed: a
/// prefetch never faults; a no-op where Rust has no stable prefetch.
#[inline(always)]
fn prefetch_at(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing visible and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that the 64-byte line holding `p` will be read once, soon: into L1, bypassing what
/// the outer caches keep (`prefetchnta`), for the K/V lines decode streams from memory. Any
/// address is allowed; a no-op where Rust has no stable prefetch.
#[inline(always)]
fn prefetch_once(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing visible and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_NTA }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
