//! A result against `qkv::reference`, row by row, under the bounds of `qkv::tolerance`.
//!
//! [`row`] says what the reference's `f64` scores mean for one output row, [`compare_row`]
//! holds a computed row to it (and measures its error, for the benchmark's error column),
//! [`check`] runs one instance of the kernel on a whole [`Case`] and checks every row, `lse`
//! and what was written; [`compare_joined`] does the same for split, stream and parallel
//! results under their merged bounds.
//!
//! # The contract, precisely
//! A row's *candidate* keys are those its mask shows whose bias is not `-inf` (the kernel
//! never reads the others). The kernel works in `f32`, the reference in `f64`, so:
//! 1. **Scores must be representable in `f32`.** A row is compared only if, for every
//!    candidate key, `F = Σ_d |q_d·k_d|` over the terms whose two factors are finite
//!    satisfies `F ≤ 1e38`, `|scale|·F ≤ 1e38` and, when the bias `b` is finite,
//!    `|scale|·F + |b| ≤ 1e38`; with a softcap `cap`, also `C + |b| + |a| ≤ 1e38` for the
//!    capped score `C = min(|scale|·F, cap)` (`cap` when a product is infinite) and the
//!    ALiBi term `a`. `F` bounds every partial sum of the dot product in any order
//!    (and every product), so no `f32` intermediate of the score, nor a difference of two
//!    scores, can overflow; `f64` never does. Rows outside this are not compared (what was
//!    written is still checked).
//! 2. **Infinite `q`/`k` entries are compared.** A product with an infinite factor is exactly
//!    `±inf` or NaN (`inf·0`) in both precisions, and with rule 1 the finite part cannot
//!    overflow, so each score is NaN, `±inf` or finite alike in both: `-inf` excludes the key,
//!    NaN or `+inf` makes the whole row NaN. Nothing about them needs an exception.
//! 3. **Infinite `v` entries** (in a column with no NaN `v` among the included keys): the
//!    reference multiplies `inf` by an `f64` weight that is positive down to `e^-745`, the
//!    kernel by an `f32` weight that is 0 below about `e^-104` (then `0·inf = NaN`). So with
//!    `d = s_j − max s` (in `f64`) and `δs` the documented per-score error bound
//!    `(head_dim + 2)·ε·score_abs + 4ε`, a key with infinite `v` is *unsure* unless
//!    `d ≥ −80 + 2δs` (its `f32` weight is surely positive) or `d < −746` with `2δs < 600`
//!    (both weights are surely 0). Where the reference is `±inf`, the kernel must give the
//!    same infinity, or NaN if an unsure key exists; where the reference is NaN, the kernel
//!    must give NaN, or `±inf` if an unsure key exists. Never a finite value.
//! 4. **`v` sums overflow only beside huge scores.** The kernel accumulates `Σ_j w_j·v_j`
//!    with weights `≤ 1` and redoes a block whose sum overflowed with its weights scaled by
//!    2⁻⁶⁴, so a finite reference needs a finite result however large the finite `v` are.
//!    The one exception: when the row's largest score is beyond ±2²⁹ the scaling is below its
//!    rounding, so a column whose included finite `|v|` sum to more than `1e38` is then not
//!    compared (unless the reference is NaN because of a NaN score or a NaN `v`, which the
//!    kernel must reproduce whatever else happens).
//! 5. **The bias rounds too.** The `f32` sum `scale·q·k + bias` rounds against the bias as
//!    well as the dot product (with a bias of `1e10`, scores `1e10 + 0` and `1e10 + 1` are the
//!    same `f32`), so `score_abs` is `max |scale|·Σ|q_d k_d| + |bias|` over the included
//!    keys, as `tolerance::output_bound` documents it. An ALiBi term `slope·(j − pos)` counts
//!    the same way, `+ |slope·(j − pos)|`, and one past `1e38` puts the row out of contract.
//! 6. **The softcap rounds too.** `cap·tanh(s/cap)` is within 1 ulp of 1 of `tanh`
//!    (`qkv::exp::tanh`) and two roundings, under `4ε·cap`: `score_abs` counts `2·cap` more,
//!    as `tolerance::output_bound` documents, which covers it for any `head_dim`.
//! 7. **A sink is a score.** `sinks[h]` joins the row as a score with no `v` row: NaN or
//!    `+inf` makes the row NaN, and it counts in the row's max (rule 3).
//!
//! Everywhere else an element is [`close`]: NaN where the reference is NaN, the same infinity
//! where it is infinite, else finite and within the bound.

use super::Case;
use super::kv::{Stored, with_stored};
use qkv::split::Level;
use qkv::tolerance::{EPS, lse_bound, output_bound};
use qkv::{Layout, Params, Shape};

/// The magnitude below which scores, partial dot products and `v` sums must stay (rules 1, 4).
pub const LIMIT: f64 = 1e38;

/// What `out` and `lse` hold before a checked call: a quiet NaN with a payload no arithmetic
/// makes, so an element the call writes, even with NaN, shows.
pub const SENTINEL: u32 = 0xffc0_5a5a;

/// `got` against `want` under `bound`: NaN where `want` is NaN, the same infinity where
/// `want` is infinite, else finite and equal or within `bound`.
pub fn close(want: f32, got: f32, bound: f32) -> bool {
    if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        got.is_finite() && (want == got || (want - got).abs() <= bound)
    }
}

/// What the reference's `f64` scores say about one output row.
#[derive(Clone, Debug)]
pub struct Row {
    /// Rule 1 holds for every candidate key.
    pub in_contract: bool,
    /// Some candidate's score is NaN or `+inf`: the whole row is NaN.
    pub nan: bool,
    /// `max |scale|·Σ|q_d k_d| + |bias|` over the included keys (rule 5).
    pub score_abs: f64,
    /// The same without the bias: the `score_abs` [`compare_joined`] gives the merged and
    /// stream bounds, tighter than `score_abs` where there is a bias and enough for the
    /// tests' small biases.
    pub dot_abs: f64,
    /// The largest finite `|v|` over the included keys.
    pub v_abs: f32,
    /// `tolerance::output_bound` of the row.
    pub bound: f32,
    shape: Shape,
    cols: Vec<Col>,
}

/// What rules 3 and 4 say about one output column of a row.
#[derive(Clone, Copy, Debug)]
struct Col {
    /// Some included key has a NaN `v` here: the reference and the kernel give NaN.
    nan_v: bool,
    /// Rule 4: the included finite `|v|` sum past [`LIMIT`].
    overflows: bool,
    /// Some included key has an infinite `v` here (rule 3).
    inf_v: bool,
    /// One of those keys has a weight that may be 0 in `f32` and not in `f64`, or the reverse.
    unsure: bool,
}

/// [`Row`] `i` of head `h` of the problem `p` over `q`, `k` and `v`.
pub fn row(p: &Params, q: &[f32], k: &[f32], v: &[f32], h: usize, i: usize) -> Row {
    let s = p.shape;
    let g = h / (s.q_heads / s.kv_heads);
    let scale = p.scale() as f64;
    let q = &q[p.q.at(h, i)..][..s.head_dim];
    let (mut in_contract, mut nan) = (true, false);
    let (mut score_abs, mut dot_abs) = (0.0f64, 0.0f64);
    let mut included: Vec<(usize, f64)> = vec![];
    for j in (0..s.kv_len).filter(|&j| p.is_visible(i, j)) {
        let bias = p.bias.map_or(0.0, |b| {
            let l = Layout {
                head_stride: b.head_stride,
                row_stride: b.row_stride,
            };
            b.data[l.at(h, i) + j] as f64
        });
        if bias == f64::NEG_INFINITY {
            continue;
        }
        let k = &k[p.k.at(g, j)..][..s.head_dim];
        let (mut dot, mut finite_abs) = (0.0f64, 0.0f64);
        for (&a, &b) in q.iter().zip(k) {
            let prod = a as f64 * b as f64;
            dot += prod;
            if a.is_finite() && b.is_finite() {
                finite_abs += prod.abs();
            }
        }
        let alibi = match p.alibi {
            Some(slopes) => slopes[h] as f64 * (j as f64 - (p.query_offset() + i as i128) as f64),
            None => 0.0,
        };
        let scaled_abs = scale.abs() * finite_abs;
        if finite_abs > LIMIT
            || scaled_abs > LIMIT
            || (bias.is_finite() && scaled_abs + bias.abs() > LIMIT)
            || alibi.abs() > LIMIT
        {
            in_contract = false;
        }
        // A capped score is at most `cap` (exactly `±cap` from an infinite dot product), and
        // with a cap near `f32::MAX` adding the bias or the ALiBi term can overflow (rule 1).
        if let Some(cap) = p.softcap {
            let capped = if dot.is_finite() {
                scaled_abs.min(cap as f64)
            } else {
                cap as f64
            };
            let b = if bias.is_finite() { bias.abs() } else { 0.0 };
            if capped + b + alibi.abs() > LIMIT {
                in_contract = false;
            }
        }
        let score = match p.softcap {
            Some(cap) => cap as f64 * (scale * dot / cap as f64).tanh(),
            None => scale * dot,
        } + bias;
        // ALiBi is added only to a score that is not already `-inf`.
        let score = if score == f64::NEG_INFINITY {
            score
        } else {
            score + alibi
        };
        if score == f64::NEG_INFINITY {
            continue;
        }
        if score.is_nan() || score == f64::INFINITY {
            nan = true;
            continue;
        }
        // With a softcap, `2·cap` more (rule 6).
        let capped_abs = scaled_abs + p.softcap.map_or(0.0, |cap| 2.0 * cap as f64);
        included.push((j, score));
        // ALiBi rounds like a bias (rule 5).
        score_abs = score_abs.max(capped_abs + bias.abs() + alibi.abs());
        dot_abs = dot_abs.max(capped_abs);
    }
    // A sink is one more score, with no `v` row (rule 7).
    let sink = p.sinks.map_or(f64::NEG_INFINITY, |s| s[h] as f64);
    nan |= sink.is_nan() || sink == f64::INFINITY;
    let max = included.iter().fold(sink, |m, &(_, x)| m.max(x));
    let v_row = |j: usize| &v[p.v.at(g, j)..][..s.v_dim];
    let v_abs = included
        .iter()
        .flat_map(|&(j, _)| v_row(j).iter())
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let mut bound = output_bound(score_abs as f32, v_abs, s.head_dim, s.kv_len);
    if bound.is_nan() {
        // An infinite weight error times `v_abs = 0`: every included `v` is 0.
        bound = if v_abs == 0.0 { 1e-6 } else { f32::INFINITY };
    }
    let ds = (s.head_dim as f64 + 2.0) * EPS as f64 * score_abs + 4.0 * EPS as f64;
    let cols = (0..s.v_dim)
        .map(|c| {
            let col = included.iter().map(|&(j, sj)| (v_row(j)[c], sj));
            let finite_sum: f64 = col
                .clone()
                .filter(|(x, _)| x.is_finite())
                .map(|(x, _)| x.abs() as f64)
                .sum();
            let mut inf_keys = col.clone().filter(|(x, _)| x.is_infinite()).peekable();
            Col {
                nan_v: col.clone().any(|(x, _)| x.is_nan()),
                overflows: finite_sum > LIMIT && max.abs() >= (1u64 << 29) as f64,
                inf_v: inf_keys.peek().is_some(),
                unsure: inf_keys.any(|(_, sj)| {
                    let d = sj - max;
                    let surely_positive = d >= -80.0 + 2.0 * ds;
                    let surely_zero = d < -746.0 && 2.0 * ds < 600.0;
                    !surely_positive && !surely_zero
                }),
            }
        })
        .collect();
    Row {
        in_contract,
        nan,
        score_abs,
        dot_abs,
        v_abs,
        bound,
        shape: s,
        cols,
    }
}

/// How far one computed row is from the reference's.
#[derive(Clone, Debug, Default)]
pub struct RowError {
    /// The largest `|got − want|` over the compared columns; NaN against a number counts as
    /// infinitely wrong.
    pub max_err: f64,
    /// The largest error over the row's bound (at most 1 when the row passes).
    pub worst_ratio: f64,
    /// The first column that breaks the contract, described.
    pub bad: Option<String>,
}

/// Compares `got` with the reference's `want` for the row `r` describes; nothing is compared
/// outside the contract (rules 1 and 4).
pub fn compare_row(r: &Row, want: &[f32], got: &[f32]) -> RowError {
    let mut e = RowError::default();
    if !r.in_contract {
        return e;
    }
    for (c, ((&w, &g), col)) in want.iter().zip(got).zip(&r.cols).enumerate() {
        let ok = if r.nan || col.nan_v {
            // Rule 2 and the NaN rules: nothing may hide these.
            g.is_nan()
        } else if col.overflows {
            continue; // rule 4: not compared
        } else if col.inf_v {
            // Rule 3.
            if w.is_nan() {
                g.is_nan() || (col.unsure && g.is_infinite())
            } else {
                g == w || (col.unsure && g.is_nan())
            }
        } else {
            close(w, g, r.bound)
        };
        let err = if w == g || (w.is_nan() && g.is_nan()) {
            0.0
        } else {
            let d = (w as f64 - g as f64).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        };
        e.max_err = e.max_err.max(err);
        e.worst_ratio = e.worst_ratio.max(err / r.bound as f64);
        if !ok && e.bad.is_none() {
            e.bad = Some(format!(
                "column {c} = {g:e}, reference {w:e}, bound {:e} (score_abs {:e}, v_abs {:e}, \
                 nan row {}, nan v {}, inf v {}, unsure {})",
                r.bound, r.score_abs, r.v_abs, r.nan, col.nan_v, col.inf_v, col.unsure
            ));
        }
    }
    e
}

impl Row {
    /// Whether `got` is the row's `lse` under `tolerance::lse_bound`; `Err` says why not.
    pub fn check_lse(&self, want: f32, got: f32) -> Result<(), String> {
        if !self.in_contract {
            return Ok(());
        }
        let s = self.shape;
        let bound = lse_bound(self.score_abs as f32, s.head_dim, s.kv_len, want.abs());
        if close(want, got, bound) {
            Ok(())
        } else {
            Err(format!("lse {got}, reference {want}, bound {bound}"))
        }
    }
}

/// The case without its data, for failure messages.
pub(super) fn describe(case: &Case) -> String {
    format!(
        "{:?} layouts {:?} scale {:?} mask {:?} bias strides {:?} lse {} K/V stored as {:?} \
         softcap {:?} sinks {:?} alibi {:?} paging {:?} ragged {:?}",
        case.shape,
        case.layouts,
        case.scale,
        case.mask,
        case.bias.as_ref().map(|(_, hs, rs)| (hs, rs)),
        case.lse,
        case.kinds,
        case.softcap,
        case.sinks,
        case.alibi,
        case.paging,
        case.ragged
    )
}

/// Which elements of `out` lie in an output row.
fn inside_rows(case: &Case, out_len: usize) -> Vec<bool> {
    let s = case.shape;
    let l = case.layouts[3];
    let mut inside = vec![false; out_len];
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            inside[l.at(h, i)..][..s.v_dim].fill(true);
        }
    }
    inside
}

/// The reference's results on a case, and its [`Row`]s (head-major).
pub struct Expected {
    pub out: Vec<f32>,
    pub lse: Vec<f32>,
    pub rows: Vec<Row>,
}

impl Expected {
    pub fn new(case: &Case) -> Expected {
        let p = case.params();
        let s = case.shape;
        let sentinel = f32::from_bits(SENTINEL);
        let mut out = vec![sentinel; case.out_len];
        let mut lse = vec![sentinel; s.q_heads * s.q_len];
        qkv::reference::attention(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse))
            .unwrap_or_else(|e| panic!("the reference refused a valid case: {e}\n{case:?}"));
        let rows = (0..s.q_heads)
            .flat_map(|h| (0..s.q_len).map(move |i| (h, i)))
            .map(|(h, i)| row(&p, &case.q, &case.k, &case.v, h, i))
            .collect();
        Expected { out, lse, rows }
    }
}

/// Runs `level` on `case` and checks it against the reference (see the module docs).
pub fn check(case: &Case, level: Level) {
    check_level(case, &Expected::new(case), level);
}

/// [`check`] on every level of [`levels`](super::levels), the reference run once; a ragged
/// case ([`Case::ragged`]) is checked as its batch ([`check_ragged`](super::check_ragged)).
pub fn check_all(case: &Case) {
    if let Some(r) = &case.ragged {
        return super::ragged::check_ragged(case, r);
    }
    let want = Expected::new(case);
    for level in super::levels() {
        check_level(case, &want, level);
    }
}

/// [`check`] against the reference's results computed once, for several levels: the call
/// returns `Ok` (the case is valid); every element of every output row and of
/// `lse[..q_heads·q_len]` (when asked for) is written and nothing else in `out` or `lse` is;
/// each row and its `lse` meet the contract.
pub fn check_level(case: &Case, want: &Expected, level: Level) {
    check_in(case, want, level, None);
}

/// [`check_level`], in a caller-owned workspace of `workspace` floats filled with NaN (so a
/// read before a write shows) when given, else in the call's own.
pub fn check_in(case: &Case, want: &Expected, level: Level, workspace: Option<usize>) {
    let p = case.params();
    let s = case.shape;
    let sentinel = f32::from_bits(SENTINEL);
    let lse_len = s.q_heads * s.q_len;
    let mut got = vec![sentinel; case.out_len];
    // Longer than asked, to show writes past the end.
    let mut got_lse = vec![sentinel; lse_len + 2];
    let (q, k, v, lse) = (
        &case.q,
        &case.k,
        &case.v,
        case.lse.then_some(&mut got_lse[..]),
    );
    let _ = (k, v);
    let call = case.call_inputs();
    let sp = call.params(case);
    with_stored!(&call.k, |k| with_stored!(&call.v, |v| match workspace {
        None => level.attention(&sp, q, k, v, &mut got, lse),
        Some(n) => level.attention_in(&mut vec![f32::NAN; n], &sp, q, k, v, &mut got, lse),
    }))
    .unwrap_or_else(|e| panic!("{level:?} refused a valid case: {e}\n{}", describe(case)));
    let level = format!("{level:?} in {workspace:?} floats");
    check_written(case, &level, &got, &got_lse);
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let r = &want.rows[h * s.q_len + i];
            let base = p.out.at(h, i);
            let e = compare_row(r, &want.out[base..][..s.v_dim], &got[base..][..s.v_dim]);
            if let Some(bad) = e.bad {
                panic!("{level:?}: out[{h}][{i}]: {bad}\n{}", describe(case));
            }
            if case.lse {
                let n = h * s.q_len + i;
                if let Err(bad) = r.check_lse(want.lse[n], got_lse[n]) {
                    panic!("{level:?}: lse[{h}][{i}]: {bad}\n{}", describe(case));
                }
            }
        }
    }
}

/// Exactly the output rows of `out` and `lse[..q_heads·q_len]` (when the case asks for it)
/// were written by `who`: every other element still holds [`SENTINEL`].
pub(super) fn check_written(case: &Case, who: &str, got: &[f32], got_lse: &[f32]) {
    let inside = inside_rows(case, case.out_len);
    for (idx, (&x, &ins)) in got.iter().zip(&inside).enumerate() {
        assert!(
            (x.to_bits() == SENTINEL) != ins,
            "{who}: out[{idx}] {} (inside an output row: {ins})\n{}",
            if ins { "not written" } else { "written" },
            describe(case)
        );
    }
    let lse_len = case.shape.q_heads * case.shape.q_len;
    for (idx, &x) in got_lse.iter().enumerate() {
        let written = x.to_bits() != SENTINEL;
        let should = case.lse && idx < lse_len;
        assert!(
            written == should,
            "{who}: lse[{idx}] written: {written}, should be: {should}\n{}",
            describe(case)
        );
    }
}

/// `out` and `lse` of one call.
pub type Outputs = (Vec<f32>, Vec<f32>);

/// `level` (or, for `None`, the reference) on the whole of `case`, with `lse`, into NaN-filled
/// outputs.
pub fn one_shot(case: &Case, level: Option<Level>) -> Outputs {
    let s = case.shape;
    let p = case.params();
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    // The reference reads the keys in order: paged or not, it is the same oracle.
    let call = match level {
        Some(_) => case.call_inputs(),
        None => Case {
            paging: None,
            ..case.clone()
        }
        .call_inputs(),
    };
    let sp = call.params(case);
    let _ = p;
    with_stored!(&call.k, |k| with_stored!(&call.v, |v| match level {
        Some(l) => l.attention(&sp, &case.q, k, v, &mut out, Some(&mut lse)),
        None => qkv::reference::attention(&sp, &case.q, k, v, &mut out, Some(&mut lse)),
    }))
    .expect("one-shot accepts the case");
    (out, lse)
}

/// `got` is `want` bit for bit (any NaN matching any NaN): for two paths that must do the
/// same arithmetic in the same order.
pub fn assert_same_bits(want: &Outputs, got: &Outputs, who: &str) {
    for (name, w, g) in [("out", &want.0, &got.0), ("lse", &want.1, &got.1)] {
        assert_eq!(w.len(), g.len(), "{who}: {name} lengths");
        for (idx, (x, y)) in w.iter().zip(g).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{who}: {name}[{idx}] = {y:e}, want {x:e} bit for bit"
            );
        }
    }
}

/// How a result was joined from pieces, which picks its bound.
#[derive(Clone, Copy, Debug)]
pub enum Joined {
    /// Partials merged by `split::merge`, the merge tree this deep:
    /// `tolerance::merged_*_bound`.
    Merged(usize),
    /// A `stream::Stream` fed in this many updates: `tolerance::stream_*_bound`.
    Stream(usize),
}

/// The random series of the split, stream and parallel tests: `count` cases (1 under Miri)
/// of [`series_case`](super::series_case) from the generator seeded with `seed`. On each
/// level, `join` computes the case from pieces and says how (and who, for messages); the
/// result is compared with the reference and, at `slack` 2, with the one-shot call of the
/// same level.
pub fn joined_series(
    seed: u64, count: usize, big_every: usize,
    mut join: impl FnMut(&mut super::Rng, &Case, Level) -> (Outputs, Joined, String),
) {
    let mut rng = super::Rng(seed);
    for n in 0..super::budget(count, 1) {
        let case = super::series_case(&mut rng, n, big_every);
        let want = one_shot(&case, None);
        for level in super::levels() {
            let (got, how, who) = join(&mut rng, &case, level);
            compare_joined(&case, &want, &got, how, 1.0, &who);
            let same = one_shot(&case, Some(level));
            compare_joined(&case, &same, &got, how, 2.0, &who);
        }
    }
}

/// Compares a joined result `got` with `want` (the reference, or a one-shot call with
/// `slack` 2 for the one-shot's own error) under the bound of `how`; elements outside the
/// output rows of `got` must still be NaN.
pub fn compare_joined(
    case: &Case, want: &Outputs, got: &Outputs, how: Joined, slack: f32, who: &str,
) {
    use qkv::tolerance::{merged_lse_bound, merged_output_bound};
    use qkv::tolerance::{stream_lse_bound, stream_output_bound};
    let p = case.params();
    let s = case.shape;
    let (hd, kv) = (s.head_dim, s.kv_len);
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let r = row(&p, &case.q, &case.k, &case.v, h, i);
            let (score_abs, v_abs) = (r.dot_abs as f32, r.v_abs);
            let w_lse = want.1[h * s.q_len + i];
            let lse_abs = if w_lse.is_finite() {
                w_lse.abs() + 20.0
            } else {
                0.0
            };
            let (bound, lb) = match how {
                Joined::Merged(depth) => (
                    merged_output_bound(score_abs, v_abs, hd, kv, lse_abs, depth),
                    merged_lse_bound(score_abs, hd, kv, lse_abs, depth),
                ),
                Joined::Stream(chunks) => (
                    stream_output_bound(score_abs, v_abs, hd, kv, lse_abs, chunks),
                    stream_lse_bound(score_abs, hd, kv, lse_abs, chunks),
                ),
            };
            let (bound, lb) = (slack * bound, slack * lb);
            let row = p.out.at(h, i);
            for c in 0..s.v_dim {
                let (w, g) = (want.0[row + c], got.0[row + c]);
                assert!(
                    close(w, g, bound),
                    "{who}: out[{h}][{i}][{c}] = {g}, want {w}, bound {bound}\n{}",
                    describe(case)
                );
            }
            let g_lse = got.1[h * s.q_len + i];
            assert!(
                close(w_lse, g_lse, lb),
                "{who}: lse[{h}][{i}] = {g_lse}, want {w_lse}, bound {lb}\n{}",
                describe(case)
            );
        }
    }
    let inside = inside_rows(case, got.0.len());
    for (idx, (x, ins)) in got.0.iter().zip(inside).enumerate() {
        assert!(
            ins || x.is_nan(),
            "{who}: wrote outside the output rows at {idx}"
        );
    }
}
