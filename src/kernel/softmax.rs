//! Step 2, the online softmax: a key block's scores become weights, and each row's running
//! max, sum and accumulator move to include them.
//!
//! The per-row step is written once, for every path: [`window`] (the keys the mask lets the
//! row see), [`decide`] (whether the row includes none of the block's keys, a NaN, the whole
//! block or a set of keys, and its new max) and [`advance`] (the rescale and the new sum).
//! Around it, two passes over the scores differ only in their layout: packed blocks keep
//! `[key][row]` scores and run a lane per row ([`Block::softmax`] on more than `MR` rows);
//! blocks of at most `MR` rows keep `[row][key]` scores and run lanes along keys.
//!
//! The variants of the softmax live here too: the softcap and the ALiBi term change scores
//! in the score passes (in the documented order: softcap, bias, ALiBi, mask), and a sink is
//! each row's state before its first block ([`Block::start_rows`]).

use pulp::Simd;

use super::config::MAX_LANES;
use super::mem::{IOTA, column_mut, load, vectors_mut};
use super::scratch::{RowBlock, Scratch};
use super::{Block, Inputs, Keys};
use crate::Params;
use crate::exp::{exp_weight, exp1, max_f32s, softcap, softcap1};

/// The keys of the block `keys` that query row `i` may see under the mask, as offsets
/// `lo..hi` into the block (`lo == hi` when it sees none).
#[inline(always)]
fn window(p: &Params, i: usize, keys: Keys) -> (usize, usize) {
    let (lo, hi) = p.key_range_inline(i);
    let lo = lo.saturating_sub(keys.k0).min(keys.cols);
    let hi = hi.saturating_sub(keys.k0).min(keys.cols);
    (lo, hi.max(lo))
}

/// A row's masked scores in one key block, as the score pass leaves them.
struct RowScores<F> {
    /// The visible keys `lo..hi` of the block ([`window`]).
    window: (usize, usize),
    /// Keys in the block.
    cols: usize,
    /// The largest score (a NaN may be missed: `max` ignores NaN on some levels).
    max: f32,
    /// Every visible score is finite. When not, some may be `-inf` (a key excluded by its
    /// score), and the keys are decided score by score.
    finite: bool,
    /// The row's score of key `j` of the block, `-inf` when excluded.
    score: F,
}

/// The online step's decision for one row and key block: the row's new running max and the
/// keys it includes, or `None` when it includes none (then nothing of the row changes).
///
/// A NaN among the visible scores makes the new max NaN, which poisons the row's sum and so
/// its output and lse, as the crate's semantics say.
#[inline(always)]
fn decide(old_max: f32, s: RowScores<impl Fn(usize) -> f32>) -> Option<(f32, RowBlock)> {
    let (lo, hi) = s.window;
    if lo >= hi {
        return None;
    }
    // `black_box` keeps these scalar scans from becoming gathers.
    let score = |j: usize| (s.score)(core::hint::black_box(j));
    let mut new_max = old_max.max(s.max);
    if new_max == f32::NEG_INFINITY {
        if !(lo..hi).any(|j| score(j).is_nan()) {
            return None; // every visible score so far is -inf: nothing is included yet
        }
        new_max = f32::NAN;
    }
    let all_visible_included = s.finite;
    let whole = lo == 0 && hi == s.cols && all_visible_included;
    let keys = match (whole, all_visible_included) {
        (true, _) => u64::MAX,
        // No visible score is -inf (or one is NaN, which makes the whole row NaN whatever it
        // includes): the window's bits, without a look at each score (a causal diagonal's
        // rows; 21 instructions a score on Cortex-M4F).
        (false, true) => (u64::MAX >> (u64::BITS as usize - hi)) & (u64::MAX << lo),
        // Bit j: key k0 + j is visible and its score is not -inf.
        (false, false) => (lo..hi).fold(0, |bits, j| {
            bits | (((score(j) != f32::NEG_INFINITY) as u64) << j)
        }),
    };
    Some((new_max, RowBlock { whole, keys }))
}

/// The weight of a score `d` below the row's max: `e^(d − shift)`, flushed to 0 below
/// `2^-126` ([`exp_weight`]). In the redo of a block whose accumulator overflowed (`shift` >
/// 0), a weight that only the shift flushed is kept as the smallest subnormal instead: an
/// infinite value times it stays infinite, as in the first pass, while its share of a finite
/// sum stays under the rounding. (Without it, `0 · inf` made NaN where the first pass, and
/// the reference, had an infinity.)
#[inline(always)]
fn weight<S: Simd>(simd: S, d: S::f32s, shift: f32) -> S::f32s {
    if shift == 0.0 {
        return exp_weight(simd, d);
    }
    let w = exp_weight(simd, simd.sub_f32s(d, simd.splat_f32s(shift)));
    // The first pass's weight is not 0 above about -87.68 (`exp_weight`); NaN is not kept.
    let nonzero_unshifted = simd.greater_than_f32s(d, simd.splat_f32s(-87.0));
    let tiny = simd.splat_f32s(f32::from_bits(1));
    simd.select_f32s(nonzero_unshifted, max_f32s(simd, w, tiny), w)
}

/// Moves a row's running `max` and `sum`, and its accumulator `acc`, to include a block whose
/// weights were taken against `new_max` and sum to `block_sum`: the old sum and accumulator
/// are rescaled by `e^(max − new_max)` only when the max moved from a value other than
/// `-inf`: a row that has included nothing yet has a sum and an accumulator of 0, which the
/// factor, 0, would leave as they are (a row's first block; every block of a decode row
/// that sees one block).
#[inline(always)]
fn advance<S: Simd>(
    simd: S, max: &mut f32, sum: &mut f32, acc: &mut [f32], new_max: f32, block_sum: f32,
) {
    if new_max != *max && *max != f32::NEG_INFINITY {
        let alpha = exp1(*max - new_max);
        *sum *= alpha;
        let alpha = simd.splat_f32s(alpha);
        for a in vectors_mut::<S>(acc) {
            *a = simd.mul_f32s(*a, alpha);
        }
    }
    *sum += block_sum;
    *max = new_max;
}

/// `v + slope · d`, except that a score already `-inf` (a key a `-inf` bias leaves out)
/// stays `-inf` whatever the slope.
#[inline(always)]
fn add_alibi<S: Simd>(simd: S, v: S::f32s, slope: S::f32s, d: S::f32s) -> S::f32s {
    let out = simd.equal_f32s(v, simd.splat_f32s(f32::NEG_INFINITY));
    simd.select_f32s(out, v, simd.mul_add_e_f32s(slope, d, v))
}

/// `v` with the ALiBi bias of the `vi`-th vector of a row's keys, where `alibi` holds the
/// row's slope and its lanes' distances at `vi` = 0 (nothing without ALiBi). A function, not
/// the closure it was: LLVM left the closure out of line on x86, a call per vector of
/// scores that cost 7% of an in-cache f16 decode (Zen 4).
#[inline(always)]
fn alibi_at<S: Simd>(simd: S, v: S::f32s, alibi: Option<(S::f32s, S::f32s)>, vi: usize) -> S::f32s {
    match alibi {
        Some((slope, base)) => {
            let d = simd.add_f32s(base, simd.splat_f32s((vi * S::F32_LANES) as f32));
            add_alibi(simd, v, slope, d)
        }
        None => v,
    }
}

impl Block {
    /// For the packed rows `at..at + lanes`, with ALiBi: each lane's slope, and its distance
    /// `j − pos(i)` to the block's first key (padding lanes: 0 and 0).
    #[inline(always)]
    fn alibi_lanes<S: Simd>(
        self, simd: S, p: &Params, keys: Keys, at: usize,
    ) -> Option<(S::f32s, S::f32s)> {
        p.slopes()?;
        let (mut slope, mut base) = ([0.0f32; MAX_LANES], [0.0f32; MAX_LANES]);
        for lane in 0..S::F32_LANES {
            let r = at + lane;
            if r < self.rows {
                let (h, i) = self.row(r);
                slope[lane] = p.slope(h);
                base[lane] = p.distance(i, keys.k0) as f32;
            }
        }
        Some((load(simd, &slope), load(simd, &base)))
    }

    /// Each row's running state before its first key block: empty (max `-inf`, sum 0), or
    /// with a sink as if it had seen one key of score `sinks[h]` and a zero value row (max
    /// the sink, sum its weight). A sink of `-inf` is no sink; NaN makes the row NaN.
    #[inline(always)]
    pub(super) fn start_rows(self, x: &Inputs, scratch: &mut Scratch) {
        // The sink's weight, e^0 = 1, as a redo (`shift` > 0) takes it.
        let one = weight(pulp::Scalar::new(), 0.0, self.shift);
        for r in 0..self.rows {
            let (max, sum) = x.p.start_state(self.row(r).0);
            scratch.max[r] = max;
            scratch.sum[r] = if sum == 1.0 { one } else { sum };
        }
        scratch.acc[..self.rows * scratch.t.v_cols].fill(0.0);
    }

    /// The online softmax step of every row for the key block `keys`: leaves the weights where
    /// the scores were and what the block means for each row in `scratch.rows`.
    #[inline(always)]
    pub(super) fn softmax<S: Simd>(self, simd: S, x: &Inputs, keys: Keys, scratch: &mut Scratch) {
        if self.packed() {
            self.softmax_rows(simd, x, keys, scratch);
        } else {
            for r in 0..self.rows {
                let row = self.softmax_row(simd, x, keys, r, scratch);
                scratch.set_row(r, row);
            }
        }
    }

    /// [`Block::softmax`] for a packed block, a lane per row over `scratch.scores`.
    #[inline(always)]
    fn softmax_rows<S: Simd>(self, simd: S, x: &Inputs, keys: Keys, scratch: &mut Scratch) {
        let (p, cols) = (x.p, keys.cols);
        let lanes = S::F32_LANES;
        let row_vectors = self.row_vectors::<S>();
        let (stride, v_cols) = (scratch.t.row_stride, scratch.t.v_cols);
        // Most blocks are seen whole by every row and have no bias: no window, no mask.
        let interior =
            p.bias.is_none() && self.inner.0 <= keys.k0 && keys.k0 + cols <= self.inner.1;
        let mut masked = false;
        if !interior {
            for r in 0..row_vectors * lanes {
                let (lo, hi) = match r < self.rows {
                    true => self.bias_row(x, keys, r, scratch),
                    false => (0, 0), // padding lanes: never read
                };
                masked |= r < self.rows && (lo, hi) != (0, cols);
                scratch.window_lo[r] = lo as f32;
                scratch.window_hi[r] = hi as f32;
            }
        }
        // A bias was added to scaled scores by `bias_row`.
        let scale = simd.splat_f32s(if p.bias.is_some() { 1.0 } else { x.scale });
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let zero = simd.splat_f32s(0.0);

        // Scale and mask; per row, the block's max and whether its visible scores are finite.
        for c in 0..row_vectors {
            let at = c * lanes;
            let lo = load(simd, &scratch.window_lo[at..]);
            let hi = load(simd, &scratch.window_hi[at..]);
            let alibi = self.alibi_lanes(simd, p, keys, at);
            let mut max = neg_inf;
            // 0 while every visible score is finite: ∞ · 0 and NaN · 0 are NaN. (A compare
            // and a select per score on Cortex-M4F, where `min` took four instructions.)
            let mut probe = zero;
            let plain = alibi.is_none() && (x.p.cap().is_none() || p.bias.is_some());
            if S::F32_LANES == 1 && masked && plain {
                // One lane is one row: its window as three runs of keys, no mask per score
                // (43 instructions a score on Cortex-M4F), each its own column (one count
                // per loop: a `take` of one column kept two). The same values bit for bit:
                // a masked key's `max` with -∞ only turns a NaN into -∞, once.
                let (lo, hi) = (
                    scratch.window_lo[at] as usize,
                    scratch.window_hi[at] as usize,
                );
                let hi = hi.max(lo);
                let run = |from: usize, to: usize| (at + from * stride, to - from);
                let (first, len) = run(0, lo);
                for row in column_mut(scratch.scores, first, stride, lanes, len) {
                    row[0] = f32::NEG_INFINITY;
                }
                let (first, len) = run(lo, hi);
                for row in column_mut(scratch.scores, first, stride, lanes, len) {
                    let s = &mut vectors_mut::<S>(row)[0];
                    let v = simd.mul_f32s(*s, scale);
                    probe = simd.mul_add_e_f32s(v, zero, probe);
                    max = max_f32s(simd, max, v);
                    *s = v;
                }
                let (first, len) = run(hi, cols.max(hi));
                for row in column_mut(scratch.scores, first, stride, lanes, len) {
                    row[0] = f32::NEG_INFINITY;
                }
                if hi < cols {
                    max = max_f32s(simd, max, neg_inf);
                }
                vectors_mut::<S>(&mut scratch.block_max[at..][..lanes])[0] = max;
                vectors_mut::<S>(&mut scratch.visible_probe[at..][..lanes])[0] = probe;
                continue;
            }
            // The block's scores of these rows, key by key.
            for (j, row) in column_mut(scratch.scores, at, stride, lanes, cols).enumerate() {
                let s = &mut vectors_mut::<S>(row)[0];
                let mut v = simd.mul_f32s(*s, scale);
                if let (Some(cap), None) = (x.p.cap(), p.bias) {
                    v = softcap(simd, v, cap);
                }
                if let Some((slope, base)) = alibi {
                    let d = simd.add_f32s(base, simd.splat_f32s(j as f32));
                    v = add_alibi(simd, v, slope, d);
                }
                if masked {
                    let jv = simd.splat_f32s(j as f32);
                    let visible = simd.and_m32s(
                        simd.greater_than_or_equal_f32s(jv, lo),
                        simd.less_than_f32s(jv, hi),
                    );
                    let seen = simd.select_f32s(visible, v, zero);
                    probe = simd.mul_add_e_f32s(seen, zero, probe);
                    v = simd.select_f32s(visible, v, neg_inf);
                } else {
                    probe = simd.mul_add_e_f32s(v, zero, probe);
                }
                max = max_f32s(simd, max, v);
                *s = v;
            }
            vectors_mut::<S>(&mut scratch.block_max[at..][..lanes])[0] = max;
            vectors_mut::<S>(&mut scratch.visible_probe[at..][..lanes])[0] = probe;
        }

        // The step's decision, per row.
        for r in 0..row_vectors * lanes {
            let old = scratch.max[r];
            let (weight_max, row) = match r < self.rows {
                false => (0.0, RowBlock::SKIP), // padding lanes: any finite max
                true => {
                    let window = match interior {
                        true => (0, cols),
                        false => (scratch.window_lo[r] as usize, scratch.window_hi[r] as usize),
                    };
                    let scores = &scratch.scores;
                    let row = RowScores {
                        window,
                        cols,
                        max: scratch.block_max[r],
                        finite: scratch.visible_probe[r] == 0.0,
                        score: |j: usize| scores[j * stride + r],
                    };
                    // A skipped row's weights are never read.
                    decide(old, row).unwrap_or((old, RowBlock::SKIP))
                }
            };
            scratch.weight_max[r] = weight_max;
            scratch.set_row(r, row);
        }

        // Weights and their sums.
        for c in 0..row_vectors {
            let at = c * lanes;
            let m = load(simd, &scratch.weight_max[at..]);
            let mut sum = simd.splat_f32s(0.0);
            for row in column_mut(scratch.scores, at, stride, lanes, cols) {
                let s = &mut vectors_mut::<S>(row)[0];
                let w = weight(simd, simd.sub_f32s(*s, m), self.shift);
                sum = simd.add_f32s(sum, w);
                *s = w;
            }
            vectors_mut::<S>(&mut scratch.block_sum[at..][..lanes])[0] = sum;
        }

        // The step's move of the running state, per row.
        for r in 0..self.rows {
            if scratch.row(r).keys != 0 {
                let (max, sum) = (&mut scratch.max[r], &mut scratch.sum[r]);
                let acc = &mut scratch.acc[r * v_cols..][..v_cols];
                advance(
                    simd,
                    max,
                    sum,
                    acc,
                    scratch.weight_max[r],
                    scratch.block_sum[r],
                );
            }
        }
    }

    /// Row `r`'s window of the block; with a bias, its visible scores become
    /// `scale · s + bias`, softcapped before the bias is added (or `-inf` where the bias is
    /// `-inf`).
    #[inline(always)]
    fn bias_row(self, x: &Inputs, keys: Keys, r: usize, scratch: &mut Scratch) -> (usize, usize) {
        let (h, i) = self.row(r);
        let (lo, hi) = window(x.p, i, keys);
        if let (Some(b), true) = (x.p.bias, lo < hi) {
            let bias = &b.data[b.layout().at(h, i) + keys.k0..][lo..hi];
            let stride = scratch.t.row_stride;
            for (j, &b) in (lo..hi).zip(bias) {
                let s = &mut scratch.scores[j * stride + r];
                let scaled = *s * x.scale;
                let capped = match x.p.cap() {
                    Some(cap) => softcap1(scaled, cap),
                    None => scaled,
                };
                *s = match b == f32::NEG_INFINITY {
                    true => f32::NEG_INFINITY,
                    false => core::hint::black_box(capped + b),
                };
            }
        }
        (lo, hi)
    }

    /// The online softmax step of row `r` of a block of at most `MR` rows, whose scores are
    /// in `scratch.dot_scores[r]`, lanes along keys. Leaves the weights there.
    #[inline(always)]
    fn softmax_row<S: Simd>(
        self, simd: S, x: &Inputs, keys: Keys, r: usize, scratch: &mut Scratch,
    ) -> RowBlock {
        let lanes = S::F32_LANES;
        let cols = keys.cols;
        let (h, i) = self.row(r);
        let (lo, hi) = window(x.p, i, keys);
        if lo >= hi {
            return RowBlock::SKIP;
        }
        let scale = simd.splat_f32s(x.scale);
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let zero = simd.splat_f32s(0.0);
        let iota = load(simd, &IOTA[..lanes]);
        let bias =
            x.p.bias
                .map(|b| &b.data[b.layout().at(h, i) + keys.k0..][..cols]);
        let n_vec = cols.div_ceil(lanes);
        let (ks, v_cols) = (scratch.t.key_stride, scratch.t.v_cols);
        let row = &mut vectors_mut::<S>(&mut scratch.dot_scores[r * ks..][..ks])[..n_vec];

        // Scale, bias and mask; the block's max and whether its visible scores are finite
        // (the probe stays 0 until one is not: ∞ · 0 and NaN · 0 are NaN).
        let mut max = neg_inf;
        let mut probe = zero;
        // The scaled score, softcapped.
        let scaled = |s: S::f32s| {
            let v = simd.mul_f32s(s, scale);
            match x.p.cap() {
                Some(cap) => softcap(simd, v, cap),
                None => v,
            }
        };
        // The ALiBi bias of vector `vi`: keys `k0 + vi·lanes + lane`, at `distance(i, k0)`
        // from the query plus their offsets in the block.
        let alibi = x.p.slopes().map(|_| {
            let base = simd.splat_f32s(x.p.distance(i, keys.k0) as f32);
            (simd.splat_f32s(x.p.slope(h)), simd.add_f32s(base, iota))
        });
        let with_alibi = |v: S::f32s, vi: usize| alibi_at(simd, v, alibi, vi);
        if bias.is_none() && (lo, hi) == (0, cols) && cols.is_multiple_of(lanes) {
            // Every lane is a visible key: no masks to build.
            for (vi, s) in row.iter_mut().enumerate() {
                let v = with_alibi(scaled(*s), vi);
                probe = simd.mul_add_e_f32s(v, zero, probe);
                max = max_f32s(simd, max, v);
                *s = v;
            }
        } else {
            for (vi, s) in row.iter_mut().enumerate() {
                let mut v = scaled(*s);
                if let Some(bias) = bias {
                    let b = load(simd, &bias[vi * lanes..]);
                    let excluded = simd.equal_f32s(b, neg_inf);
                    v = simd.select_f32s(excluded, neg_inf, simd.add_f32s(v, b));
                }
                v = with_alibi(v, vi);
                let j = simd.add_f32s(iota, simd.splat_f32s((vi * lanes) as f32));
                let visible = simd.and_m32s(
                    simd.greater_than_or_equal_f32s(j, simd.splat_f32s(lo as f32)),
                    simd.less_than_f32s(j, simd.splat_f32s(hi as f32)),
                );
                let seen = simd.select_f32s(visible, v, zero);
                probe = simd.mul_add_e_f32s(seen, zero, probe);
                v = simd.select_f32s(visible, v, neg_inf);
                max = max_f32s(simd, max, v);
                *s = v;
            }
        }

        let scores = &scratch.dot_scores[r * ks..][..cols];
        let summary = RowScores {
            window: (lo, hi),
            cols,
            max: simd.reduce_max_f32s(max),
            finite: simd.reduce_sum_f32s(probe) == 0.0,
            score: |j: usize| scores[j],
        };
        let Some((new_max, row_block)) = decide(scratch.max[r], summary) else {
            return RowBlock::SKIP;
        };

        // Weights and their sum.
        let m = simd.splat_f32s(new_max);
        let mut sum = simd.splat_f32s(0.0);
        let row = &mut vectors_mut::<S>(&mut scratch.dot_scores[r * ks..][..ks])[..n_vec];
        for s in row.iter_mut() {
            let w = weight(simd, simd.sub_f32s(*s, m), self.shift);
            sum = simd.add_f32s(sum, w);
            *s = w;
        }
        let (max, sum_r) = (&mut scratch.max[r], &mut scratch.sum[r]);
        let acc = &mut scratch.acc[r * v_cols..][..v_cols];
        advance(simd, max, sum_r, acc, new_max, simd.reduce_sum_f32s(sum));
        row_block
    }
}
