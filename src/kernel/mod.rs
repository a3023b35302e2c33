//! The attention kernel, written once over [`pulp::Simd`] and instantiated for every level.
//!
//! Query rows are taken in blocks of at most `BLOCK_Q` (the full-size tiles; a smaller
//! workspace gives smaller blocks, `Tiles`): up to that many rows of one head,
//! or, for short queries (decode), the same rows of several heads of one GQA group, so each
//! K/V row is read once per group. Each block makes one pass over the keys that the mask lets
//! any of its rows see (blocks of keys outside the band are skipped), up to `BLOCK_K` keys
//! at a time. The score tile is kept transposed, `[key][query row]`, so SIMD lanes run along the
//! block's query rows:
//! 1. **Q·Kᵀ**: the block's Q is packed once as `[dim][row]` (up to `Q_DIM` columns of
//!    `head_dim`; wider heads are packed per panel), and a register tile of `KR_WIDE` keys
//!    × `QR_WIDE` vectors of rows (32 registers; `KR_NARROW` × `QR_NARROW` with 16,
//!    `KR_WIDE_SCALAR` × `QR_WIDE_SCALAR` on the scalar level) broadcasts K elements straight from the caller's K rows: K is never packed. Blocks of
//!    at most `MR` rows (decode) dot each K row with the rows instead, `dot_keys` rows
//!    at a time, lanes along `head_dim`, streaming K from memory with a prefetch per line
//!    read (`PREFETCH_KEYS` ahead), the scores reduced four at a time (`Widen::sum4`).
//! 2. **Online softmax**: a pass over the block scales, biases and masks the scores (an
//!    excluded key becomes `-inf`) and another turns them into weights `exp(s − max)` with
//!    the vectorised [`exp`](crate::exp) (weights below `2^-126`, under the rounding of the
//!    sum, flushed to 0). Packed blocks do both vertically, a lane per row, so row maxima and
//!    sums need no horizontal reductions; blocks of at most `MR` rows would fill only `MR`
//!    lanes, so they keep their scores `[row][key]`, lanes along keys. Between the passes,
//!    every path calls the same per-row step (`softmax::decide` and `softmax::advance`):
//!    the row's window of visible keys, whether it includes none, a NaN, the whole block or
//!    a set of keys, and the move of its running max, sum and accumulator (rescaled only if
//!    its max moved).
//! 3. **P·V**: a register tile of `PV_ROWS` rows × `NV_WIDE` or `NV_NARROW` vectors of
//!    `v_dim` broadcasts weights and streams V rows. A row cut by a mask edge takes its run of
//!    keys through the same tile; scattered exclusions (`-inf` bias) go key by key, so the V
//!    row of an excluded key is never read for that row and NaN there cannot leak. On SIMD
//!    levels, decode blocks whose rows all see the whole key block read their `[row][key]`
//!    weights in place and walk V in memory order instead, `PV_KEYS` V rows at a time
//!    across the whole panel, prefetching a block ahead;
//!    the other decode blocks copy their weights into the `[key][row]` tile first.
//!
//! Working memory is the caller's (`scratch`): the tile sizes are chosen per call from the
//! shape and the memory given, from full size down to one row (`config::TILE_TABLE`);
//! `v_dim` wider than a panel is done in several passes (the scores are recomputed per pass).
//!
//! **Decode with the kv heads side by side** (`run_together`). Blocks take the kv heads one
//! after another, each over all its keys: right for planar K and V, where a head's rows are
//! one long run. Where each head's rows start within `config::HEADS_APART_BYTES` of the
//! previous head's (interleaved K and V, pages of `[key][head][dim]` or short pages of
//! `[head][key][dim]`), that order reads a short run per head and row or page, each a
//! restart of the memory's stream; so decode blocks (one query block and one `v_dim` panel)
//! take turns instead, up to `config::BLOCKS_TOGETHER` of them each in tiles of its own, a
//! key block each, and read K and V in the order they lie. Each block does the same
//! arithmetic in the same order either way: the results are the same bits.
//!
//! **K and V types** ([`crate::kv`]). The decode tiles (`dot_kernel`, `pv_keys_kernel`) and
//! the P·V register tile (`pv_kernel`) read K and V as they are stored and widen each vector
//! in registers after the load. For packed (prefill) blocks, whose rows share each value,
//! narrow K and V are first widened a key block at a time into a tile of the working memory
//! (`mem::widen`), which the `f32` tiles then read; decode blocks and the least tiles read
//! them as stored, so the least working memory is the same for every type.
//!
//! **Phases.** Each step of a block (packing Q, the scores, the softmax step, the weighted
//! values, widening a block) is a call (`phase`), entered with the level's target features
//! (`widen::Widen::enter`). The steps that do not depend on the K/V types exist once per
//! level whatever types a program uses, and on the scalar level the stack holds one step's
//! frame at a time.
//!
//! Where each part lives:
//! - `config`: the tuning constants and the checks that keep them consistent;
//! - `scratch`: the working memory, one field per meaning;
//! - `qk`: Q packing and the Q·Kᵀ tile loops (step 1);
//! - `softmax`: the online-softmax step (step 2), written once for every path;
//! - `pv`: the P·V tile loops (step 3);
//! - `tiles`: the unsafe register tiles those loops call, the only raw K/V reads;
//! - `vfp`: three of those tiles (one lane, `f32`: Q·Kᵀ 4 × 4 and one key × 4, P·V 4 × 4)
//!   and the output's normalisation in assembly for 32-bit Arm with a hard-float VFP, the
//!   same arithmetic bit for bit;
//! - `mem`: loads, strided rows, the strided copy, widening a block, and cache hints;
//! - `widen`: the per-level part: widening loads and how a phase is entered.
//!
//! K and V are read in these places only, all through `kv::load` and its kin: as stored by
//! `dot_kernel`, `pv_keys_kernel`, `pv_kernel`, `value_vectors` (for `pv_row_masked` and
//! `values_finite`) and the panel's last vector in `pv`; by `mem::WidenRows`; and, for `f32`
//! K, by `qk_kernel` (and `vfp::qk_4x4` and `vfp::qk_1x4`, and `f32` V by `vfp::pv_4x4`,
//! which those two tiles call on hard-float Arm).

mod config;
pub(crate) mod mem;
mod phases;
mod pv;
mod qk;
mod scratch;
mod softmax;
mod tiles;
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod vfp;
mod widen;

use pulp::Simd;

use crate::Params;
use crate::kv::{KvKind, KvType};
pub use config::BLOCK_Q;
use mem::Rows;
use phases::{Op, Read};
use scratch::Scratch;
pub(crate) use scratch::Tiles;
pub(crate) use widen::Widen;

/// The bytes of the working memory that [`attention`](crate::attention) and the other calls
/// without a workspace keep on the stack for `f32` K and V: about 60 KiB with the
/// `stack-workspace` feature (on by default), 232 without it (the least tiles). 16- and 8-bit
/// K or V take [`STACK_BYTES_NARROW`].
pub const STACK_BYTES: usize = crate::dispatch::STACK_WORKSPACE * core::mem::size_of::<f32>();

/// [`STACK_BYTES`] when K or V is stored in 16 or 8 bits: about 84 KiB with the
/// `stack-workspace` feature (the tile their values are widened into), and without it the
/// same as [`STACK_BYTES`] (the least tiles read K and V as stored).
pub const STACK_BYTES_NARROW: usize =
    crate::dispatch::STACK_WORKSPACE_NARROW * core::mem::size_of::<f32>();

/// One call of the kernel: validated inputs, the tiles chosen for them and the working
/// memory (at least `tiles.len()` floats), ready to run at any level.
pub(crate) struct Job<'p, 'a, K, V> {
    pub params: &'p Params<'a>,
    pub q: &'p [f32],
    pub k: &'p [K],
    pub v: &'p [V],
    pub out: &'p mut [f32],
    pub lse: Option<&'p mut [f32]>,
    /// Elements of `lse` between heads: `q_len`, but for a sequence of a ragged batch.
    pub lse_stride: usize,
    pub tiles: Tiles,
    pub workspace: &'p mut [f32],
}

impl<'p, 'a, K, V> Job<'p, 'a, K, V> {
    /// The same job over `k` and `v`: the job's own K and V as their concrete types.
    pub fn with_kv<K2, V2>(self, k: &'p [K2], v: &'p [V2]) -> Job<'p, 'a, K2, V2> {
        let Job {
            params,
            q,
            out,
            lse,
            lse_stride,
            tiles,
            workspace,
            ..
        } = self;
        Job {
            params,
            q,
            k,
            v,
            out,
            lse,
            lse_stride,
            tiles,
            workspace,
        }
    }
}

/// The read-only inputs of a call that do not depend on the K/V types, and the scale
/// computed once.
#[derive(Clone, Copy)]
struct Inputs<'p, 'a> {
    p: &'p Params<'a>,
    q: &'p [f32],
    /// `p.scale()`, computed once per call: without std, `sqrtf` is a software loop.
    scale: f32,
    /// How decode asks for the K/V lines it streams.
    stream_hint: mem::StreamHint,
    /// Whether the P·V register tile asks for V's lines a key block ahead.
    prefetch_values: bool,
}

/// One block of keys, `k0..k0 + cols`, and which rows of K and of V decode's Q·Kᵀ and P·V
/// tiles ask for while they read the block's (V: none where its offset is 0).
#[derive(Clone, Copy)]
struct Keys {
    k0: usize,
    cols: usize,
    k_ahead: Ahead,
    v_ahead: Ahead,
}

/// The rows a tile asks for while it reads a key block's rows: while reading row `j`, the
/// row `offset + j · step` elements past the block's first (wrapping: the next page may come
/// before this one).
#[derive(Clone, Copy)]
struct Ahead {
    offset: usize,
    step: usize,
}

impl Ahead {
    /// The rows asked for while reading rows `j..` of the key block whose first row is at
    /// `first`: addresses for prefetches only, which never fault, so they may lie anywhere.
    #[inline(always)]
    fn rows<T>(self, first: *const T, j: usize) -> Rows<T> {
        Rows {
            ptr: first
                .wrapping_add(self.offset)
                .wrapping_add(j.wrapping_mul(self.step)),
            stride: self.step,
        }
    }
}

/// How a block's keys are cut into key blocks of at most `most` keys: a block never crosses
/// a page end, where its rows stop being at one stride.
#[derive(Clone, Copy)]
struct KeyBlocks {
    keys: (usize, usize),
    most: usize,
    paged: bool,
    /// Decode's one block length for pages longer than a block, where there is one.
    page_block: Option<usize>,
}

impl KeyBlocks {
    #[inline(always)]
    fn new(x: &Inputs, keys: (usize, usize), most: usize, packed: bool) -> KeyBlocks {
        KeyBlocks {
            keys,
            most,
            paged: x.p.paged().is_some(),
            page_block: match (x.p.paged(), packed) {
                (Some(pages), false) => config::paged_decode_keys(pages.page_len, most),
                _ => None,
            },
        }
    }

    /// The length of the key block from `k0` (0 past the keys).
    #[inline(always)]
    fn len(self, x: &Inputs, k0: usize) -> usize {
        let left = self.keys.1.saturating_sub(k0);
        let run = x.p.run_end(k0) - k0;
        if let Some(d) = self.page_block {
            // Blocks end at multiples of `d` keys into the page (a range may start inside
            // one).
            return match run % d {
                0 => d,
                rest => rest,
            }
            .min(left);
        }
        // The rest of a page between one and two blocks long is cut in halves of a multiple
        // of 4 keys (the tiles' key steps): a page of 64 keys is two blocks of 32, not 48
        // and 16.
        match self.paged && run <= left && run > self.most && run < 2 * self.most {
            true => (run / 2).next_multiple_of(4).min(self.most),
            false => self.most.min(left).min(run),
        }
    }

    /// The key block from `k0` of kv head `g`'s rows, and how far ahead its tiles ask for
    /// lines. The distances do not depend on `g`: a row's place is affine in its head.
    #[inline(always)]
    fn at(self, x: &Inputs, g: usize, k0: usize) -> Keys {
        let cols = self.len(x, k0);
        let next = k0 + cols;
        // While P·V reads a block's V lines it asks for the same lines of the next block
        // (none past the keys): decode streams V from memory, prefill from L2 or L3. Decode
        // asks for K `PREFETCH_KEYS` rows ahead, or with pages, where that may leave the
        // page, the next block's. A next block of another length is asked for all the same,
        // as far as this block's rows reach: the rows past a shorter one are the keys after
        // it, and a prefetch never faults (without it, a page of 256 keys, cut 48 × 4 +
        // 32 × 2, read a third of its blocks unrequested).
        let p = x.p;
        let has_next = self.len(x, next) > 0;
        let ahead = |from: usize, to: usize| if has_next { to.wrapping_sub(from) } else { 0 };
        Keys {
            k0,
            cols,
            k_ahead: Ahead {
                offset: match self.paged {
                    false => config::PREFETCH_KEYS
                        .checked_mul(p.k.row_stride)
                        .unwrap_or(0),
                    true => ahead(p.k_at(g, k0), p.k_at(g, next)),
                },
                step: p.k.row_stride,
            },
            v_ahead: Ahead {
                offset: ahead(p.v_at(g, k0), p.v_at(g, next)),
                step: p.v.row_stride,
            },
        }
    }
}

/// Runs a job on the instance `simd`.
pub(crate) fn run<S: Widen, K: KvType, V: KvType>(simd: S, job: Job<'_, '_, K, V>) {
    let Job {
        params: p,
        q,
        k,
        v,
        out,
        mut lse,
        lse_stride,
        tiles: t,
        workspace,
    } = job;
    let shape = p.shape;
    if shape.q_len == 0 {
        return; // nothing to write, however many heads
    }
    let x = Inputs {
        p,
        q,
        scale: p.scale(),
        stream_hint: config::stream_hint(),
        prefetch_values: config::prefetch_values(),
    };
    // Targets without a SIMD level keep one block at a time (see `BLOCKS_TOGETHER`).
    if config::BLOCKS_TOGETHER > 1 {
        let together =
            blocks_together(p, t, (K::KIND, V::KIND)).min(workspace.len() / t.len().max(1));
        if together > 1 {
            let lse = lse.map(|l| (l, lse_stride));
            return run_together(simd, &x, (k, v), (out, lse), t, workspace, together);
        }
    }
    let (mut scratch, tile) = Scratch::new(t, workspace);
    let scratch = &mut scratch;
    let (group, heads_per_block) = heads_per_block(&shape, t);
    // `while` loops rather than `step_by`: at opt-level z its iterators are calls and
    // structs in this frame, which is under every phase's.
    for g in 0..shape.kv_heads {
        let group_end = (g + 1) * group;
        let mut h0 = g * group;
        while h0 < group_end {
            let nh = heads_per_block.min(group_end - h0);
            let mut q0 = 0;
            while q0 < shape.q_len {
                let qn = t.rows.min(shape.q_len - q0);
                let (keys, inner) = row_keys(p, q0, qn);
                let mut v0 = 0;
                while v0 < shape.v_dim {
                    let mut block = Block {
                        h0,
                        g,
                        q0,
                        qn,
                        rows: nh * qn,
                        inner,
                        v0,
                        vw: t.v_cols.min(shape.v_dim - v0),
                        shift: 0.0,
                    };
                    loop {
                        block.attend(simd, &x, (k, v), keys, scratch, tile);
                        let lse = if v0 == 0 { lse.as_deref_mut() } else { None };
                        if !block.write(p, out, lse.map(|l| (l, lse_stride)), scratch) {
                            break;
                        }
                        block.shift = OVERFLOW_SHIFT;
                    }
                    v0 += t.v_cols;
                }
                q0 += t.rows;
            }
            h0 += heads_per_block;
        }
    }
}

/// The heads of a GQA group, and how many of them one block of tiles `t` takes: short
/// queries (decode) put several heads of a group in one block, so each K/V row is read once
/// per block of heads instead of once per head. (`Tiles` sizes blocks by the same rule.)
#[inline(always)]
fn heads_per_block(s: &crate::Shape, t: Tiles) -> (usize, usize) {
    let group = (s.q_heads / s.kv_heads.max(1)).max(1);
    (group, (t.rows / s.q_len.clamp(1, t.rows)).clamp(1, group))
}

/// The keys any of the query rows `q0..q0 + qn` (`qn ≥ 1`) sees, and those every one of
/// them sees (empty if none): the ends of the rows' ranges are monotonic, so the union is
/// the first row's start to the last row's end, the intersection the reverse.
#[inline(always)]
fn row_keys(p: &Params, q0: usize, qn: usize) -> ((usize, usize), (usize, usize)) {
    let (first, last) = (p.key_range(q0), p.key_range(q0 + qn - 1));
    ((first.0, last.1), (last.0, first.1))
}

/// How many decode blocks [`run_together`] takes at a time, with K and V stored as `kinds`:
/// every block of a call of one query block and one `v_dim` panel, up to
/// [`config::BLOCKS_TOGETHER`], where each kv head's rows of K and of V start less than
/// [`config::HEADS_APART_BYTES`] after the previous head's (K and V interleaved; pages that
/// hold every head's rows, `[page][key][head][dim]`, or `[page][head][key][dim]` with short
/// pages); else 1 (each block reads all its keys before the next starts).
pub(crate) fn blocks_together(p: &Params, t: Tiles, kinds: (KvKind, KvKind)) -> usize {
    let s = p.shape;
    let near = |l: crate::Layout, kind: KvKind| {
        l.head_stride.saturating_mul(kind.bytes()) < config::HEADS_APART_BYTES
    };
    let decode = t.rows <= config::MR && s.q_len.max(1) <= t.rows && s.v_dim <= t.v_cols;
    if !decode || !near(p.k, kinds.0) || !near(p.v, kinds.1) {
        return 1;
    }
    let (group, heads_per_block) = heads_per_block(&s, t);
    let blocks = s.kv_heads.saturating_mul(group.div_ceil(heads_per_block));
    blocks.clamp(1, config::BLOCKS_TOGETHER)
}

/// The `f32`s of working memory with which a call on `p` runs at full speed with K and V
/// stored as `kinds`: the best tiles, once for each block [`run_together`] takes at a time.
pub(crate) fn workspace_len(p: &Params, kinds: (KvKind, KvKind)) -> usize {
    let t = Tiles::best(&p.shape, kinds);
    t.len() * blocks_together(p, t, kinds)
}

/// Decode with the kv heads' rows side by side, `together` blocks at a time (consecutive
/// heads; each one query block and one `v_dim` panel, as [`blocks_together`] allows, with
/// tiles of its own): each key block is read by every block in turn, so K and V are read in
/// the order they lie. Head by head, each head's rows would be a run of their own per page
/// (or per row, interleaved), every run a restart of the memory's stream. Where a key
/// block's rows of the turn's heads are one run, the blocks ask for the next one's in
/// shares, in the order it lies; elsewhere each asks for the rows a few blocks later.
fn run_together<S: Widen, K: KvType, V: KvType>(
    simd: S, x: &Inputs, kv: (&[K], &[V]),
    (out, mut lse): (&mut [f32], Option<(&mut [f32], usize)>), t: Tiles, workspace: &mut [f32],
    together: usize,
) {
    let (p, shape) = (x.p, x.p.shape);
    let (group, heads_per_block) = heads_per_block(&shape, t);
    let per_group = group.div_ceil(heads_per_block);
    let (keys, inner) = row_keys(p, 0, shape.q_len);
    // Block `b` of the call: the `b % per_group`th block of heads of kv head `b / per_group`.
    let block = |b: usize| {
        let g = b / per_group;
        let h0 = g * group + (b % per_group) * heads_per_block;
        Block {
            h0,
            g,
            q0: 0,
            qn: shape.q_len,
            rows: heads_per_block.min((g + 1) * group - h0) * shape.q_len,
            inner,
            v0: 0,
            vw: shape.v_dim,
            shift: 0.0,
        }
    };
    let mut tiles = workspace.chunks_exact_mut(t.len());
    let mut states: [_; config::BLOCKS_TOGETHER] =
        core::array::from_fn(|_| tiles.next().map(|ws| Scratch::new(t, ws)));
    let cut = KeyBlocks::new(x, keys, t.keys, false);
    let blocks = shape.kv_heads * per_group;
    let mut b0 = 0;
    while b0 < blocks {
        let n = together.min(blocks - b0);
        // This turn's blocks, worked out once, not once per key block.
        let mut batch: [Block; config::BLOCKS_TOGETHER] =
            core::array::from_fn(|i| block((b0 + i).min(blocks - 1)));
        for (b, (scratch, _)) in batch.iter().zip(states.iter_mut().flatten()).take(n) {
            b.begin(simd, x, keys, scratch);
        }
        let first = batch[0].g;
        // Whether a key block's rows of the turn's heads are one run, each key's rows of
        // every head after the previous key's (interleaved, or pages `[page][key][head][dim]`
        // of all the heads), asked for in shares (`config::prefetch_in_shares`).
        let one_run = per_group == 1
            && p.k.row_stride == n * p.k.head_stride
            && p.v.row_stride == n * p.v.head_stride
            && config::prefetch_in_shares(p.paged().map(|pages| pages.page_len), t.keys);
        let mut k0 = keys.0;
        while k0 < keys.1 {
            let cols = cut.len(x, k0);
            let next = k0 + cols;
            // From these keys' rows to the next key block's, of any one head: a row's place
            // is affine in its head (so too `head_stride` from a head's rows to the next's).
            let to_next = (
                p.k_at(first, next).wrapping_sub(p.k_at(first, k0)),
                p.v_at(first, next).wrapping_sub(p.v_at(first, k0)),
            );
            for (i, (scratch, tile)) in states.iter_mut().flatten().take(n).enumerate() {
                let b = batch[i];
                let (k_ahead, v_ahead) = match one_run && next < keys.1 {
                    // Share `i` of the next key block's rows of the turn's heads, one run:
                    // the shares, in turn order, ask for the run in the order it lies. Block
                    // `i` reads head `first + i`, whose rows start `i` head strides after the
                    // first head's: its share is `i · cols` head strides into the run.
                    true => {
                        let heads = i.wrapping_mul(cols.wrapping_sub(1));
                        (
                            Ahead {
                                offset: to_next.0.wrapping_add(heads.wrapping_mul(p.k.head_stride)),
                                step: p.k.head_stride,
                            },
                            Ahead {
                                offset: to_next.1.wrapping_add(heads.wrapping_mul(p.v.head_stride)),
                                step: p.v.head_stride,
                            },
                        )
                    }
                    // The rows read `config::TOGETHER_AHEAD` blocks later in this order (none
                    // past the keys, nor its own again).
                    false => {
                        let later = i + config::TOGETHER_AHEAD.min(n);
                        let (to, (k_to, v_to)) = match later < n {
                            true => (batch[later].g, (0, 0)),
                            false if next < keys.1 => (batch[later - n].g, to_next),
                            false => (b.g, (0, 0)),
                        };
                        let heads = to.wrapping_sub(b.g);
                        (
                            Ahead {
                                offset: k_to.wrapping_add(heads.wrapping_mul(p.k.head_stride)),
                                step: p.k.row_stride,
                            },
                            Ahead {
                                offset: v_to.wrapping_add(heads.wrapping_mul(p.v.head_stride)),
                                step: p.v.row_stride,
                            },
                        )
                    }
                };
                let kb = Keys {
                    k0,
                    cols,
                    k_ahead,
                    v_ahead,
                };
                b.attend_keys(simd, x, kv, kb, scratch, tile);
            }
            k0 = next;
        }
        for (b, (scratch, tile)) in batch.iter_mut().zip(states.iter_mut().flatten()).take(n) {
            // A block whose accumulator overflowed is redone alone, as `run` does.
            while b.write(p, out, lse.as_mut().map(|(l, s)| (&mut **l, *s)), scratch) {
                b.shift = OVERFLOW_SHIFT;
                b.attend(simd, x, kv, keys, scratch, tile);
            }
        }
        b0 += n;
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
    /// The weights of the block are `e^(score − max − shift)`: 0 but in the redo of a block
    /// whose accumulator overflowed.
    shift: f32,
}

/// The shift of the weights of a block redone after its accumulator overflowed: `e^-44.4`
/// (2⁻⁶⁴) times every weight keeps `Σ weight · v` finite for any finite `v` and up to 2⁶⁴
/// keys. The output is a ratio of two sums that both carry the factor, so it is unchanged;
/// weights below 2⁻⁶² of the largest, whose share of the output is under the rounding,
/// become the smallest subnormal (`softmax::weight`), so an infinite value keeps its
/// infinity. The plain path pays one compare per output element in `write`. (A max score
/// beyond ±2²⁹, whose rounding is above the shift, leaves such an overflow as it is.)
const OVERFLOW_SHIFT: f32 = 44.361_42;

impl Block {
    /// The (head, query row) of block row `r`.
    #[inline(always)]
    fn row(self, r: usize) -> (usize, usize) {
        (self.h0 + r / self.qn, self.q0 + r % self.qn)
    }

    /// Vectors of query rows in the block (the last one padded).
    #[inline(always)]
    fn row_vectors<S: Simd>(self) -> usize {
        self.rows.div_ceil(S::F32_LANES)
    }

    /// Whether the block takes the packed path (more than `MR` rows) rather than the decode
    /// path.
    #[inline(always)]
    fn packed(self) -> bool {
        self.rows > config::MR
    }

    /// Streams the keys `keys.0..keys.1` of `kv` through the online softmax into
    /// `scratch.acc`; `tile` holds K or V values widened to `f32` when they are stored
    /// narrower.
    #[inline(always)]
    fn attend<S: Widen, K: KvType, V: KvType>(
        self, simd: S, x: &Inputs, kv: (&[K], &[V]), keys: (usize, usize), scratch: &mut Scratch,
        tile: &mut [f32],
    ) {
        self.begin(simd, x, keys, scratch);
        let cut = KeyBlocks::new(x, keys, scratch.t.keys, self.packed());
        let mut k0 = keys.0;
        while k0 < keys.1 {
            let kb = cut.at(x, self.g, k0);
            self.attend_keys(simd, x, kv, kb, scratch, tile);
            k0 += kb.cols;
        }
    }

    /// Starts the block's rows (no keys seen, an empty accumulator) and prepares its Q.
    #[inline(always)]
    fn begin<S: Widen>(self, simd: S, x: &Inputs, keys: (usize, usize), scratch: &mut Scratch) {
        self.start_rows(x, scratch);
        let no_keys = Keys {
            k0: keys.0,
            cols: 0,
            k_ahead: Ahead { offset: 0, step: 0 },
            v_ahead: Ahead { offset: 0, step: 0 },
        };
        self.step(simd, x, no_keys, scratch, Op::PrepareQ);
    }

    /// One key block `kb` of `kv` through the online softmax into `scratch.acc`.
    #[inline(always)]
    fn attend_keys<S: Widen, K: KvType, V: KvType>(
        self, simd: S, x: &Inputs, kv: (&[K], &[V]), kb: Keys, scratch: &mut Scratch,
        tile: &mut [f32],
    ) {
        self.scores(simd, x, kv.0, kb, scratch, tile);
        self.step(simd, x, kb, scratch, Op::Softmax);
        self.weighted_values(simd, x, kv.1, kb, scratch, tile);
    }

    /// Normalises the accumulated rows into `out` (and `lse`).
    ///
    /// Returns whether some row's accumulator overflowed although its max and sum are finite
    /// (values near `f32::MAX`; see [`OVERFLOW_SHIFT`]): the block must then be redone with
    /// its weights shifted. The redo (`shift` ≠ 0) writes only the values that are not NaN
    /// and no `lse` (which the shift does not change): a NaN there comes from an infinite
    /// value whose weight the shift flushed to 0, where the first pass had it right; and a
    /// finite sum whose mean rounds past `f32::MAX` is `±f32::MAX`.
    ///
    /// Out of line: on the scalar level it is a frame of its own, like a [`phase`](phases::phase).
    #[inline(never)]
    fn write(
        self, p: &Params, out: &mut [f32], mut lse: Option<(&mut [f32], usize)>, scratch: &Scratch,
    ) -> bool {
        let redo = self.shift != 0.0;
        let mut overflowed = false;
        for r in 0..self.rows {
            let (h, i) = self.row(r);
            let (max, sum) = (scratch.max[r], scratch.sum[r]);
            let dst = &mut out[p.out.at(h, i) + self.v0..][..self.vw];
            let row_lse = if max == f32::NEG_INFINITY {
                dst.fill(0.0);
                f32::NEG_INFINITY
            } else {
                // 0 while every accumulator is finite, NaN after one that is not (∞·0 and
                // NaN·0 are NaN): a multiply-add per element, where `is_finite` took six
                // instructions on Cortex-M4F.
                let mut probe = 0.0f32;
                let acc = &scratch.acc[r * scratch.t.v_cols..][..dst.len()];
                // Hard-float Arm takes whole groups of 4 in assembly, the same operations.
                #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
                let (dst, acc) = match dst.len() / 4 {
                    quads if quads > 0 && !redo => {
                        // SAFETY: `dst` and `acc` hold `dst.len() ≥ 4·quads` floats.
                        probe =
                            unsafe { vfp::normalize(dst.as_mut_ptr(), acc.as_ptr(), quads, sum) };
                        (&mut dst[quads * 4..], &acc[quads * 4..])
                    }
                    _ => (dst, acc),
                };
                for (o, &a) in dst.iter_mut().zip(acc) {
                    probe += a * 0.0;
                    let mut x = a / sum;
                    if redo {
                        // A mean of values within ±f32::MAX, rounded past it.
                        if a.is_finite() && x.is_infinite() {
                            x = f32::MAX.copysign(x);
                        }
                        if x.is_nan() {
                            continue;
                        }
                    }
                    *o = x;
                }
                overflowed |= probe != 0.0 && max.is_finite() && sum.is_finite();
                max + libm::logf(sum)
            };
            if let (Some((lse, stride)), false) = (lse.as_mut(), redo) {
                lse[h * *stride + i] = row_lse;
            }
        }
        overflowed && !redo
    }
}
