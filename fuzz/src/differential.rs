//! The differential check: every level against `qkv::reference`, on one decoded case.
//!
//! # What a case is
//! [`Case::decode`] turns any byte string into a valid problem: 1–3 kv heads with GQA
//! ratios 1–4; `q_len`, `kv_len` in `0..=40` and `head_dim`, `v_dim` in `1..=40`, except that
//! one of them may reach 140 so that the kernel's 48-row and 48-key blocks, its 128-column
//! Q panel (wider heads are packed panel by panel) and its 128-column V panel are crossed; planar, interleaved, padded or broadcast (stride 0) layouts
//! with padding filled with NaN (so any read of it shows); every mask kind (none, causal,
//! sliding window, arbitrary band with huge sides) with every [`QueryPos`], small or extreme
//! offsets; no bias, a broadcast bias (also with row stride 0) or a per-head one, with `-inf`
//! entries at a chosen rate; default or explicit scale (0, negative, tiny, huge); with or
//! without `lse`. Each tensor draws its values from `±amp` or, at a chosen rate, from
//! [`SPECIALS`]: 0, −0, ±subnormal, ±tiny, ±huge (1e30, 3e38, `f32::MAX`), ±inf and NaN.
//!
//! # What is compared
//! Every [`Isa::available`] level and every [`Emulated`] width run on the case, with `out`
//! and `lse` pre-filled with a sentinel NaN. For every runner:
//! - the call returns `Ok` (the case is valid by construction);
//! - every element of every output row and of `lse[..q_heads·q_len]` is written, and nothing
//!   else in `out` or `lse` is (the sentinel bits survive);
//! - each row *inside the contract* (below) matches the reference, per element:
//!   - reference NaN ⇒ NaN (NaN score, NaN in an included `v`, `0·inf`, `inf − inf`);
//!   - reference finite ⇒ finite and `|got − want| ≤ tolerance::output_bound(score_abs,
//!     v_abs, head_dim, kv_len)` with `score_abs = max (|scale|·Σ_d |q_d k_d| + |bias|)` and
//!     `v_abs = max |v|` over the row's included keys (finite `v` only): the documented
//!     bound, with the bias added to `score_abs` (rule 5); `lse` likewise under
//!     `tolerance::lse_bound`; `±inf`/`−inf` (a row with no key) must match exactly.
//!
//! # The contract, precisely
//! A row's *candidate* keys are those its mask shows whose bias is not `-inf` (the kernel
//! never reads the others). The kernel works in `f32`, the reference in `f64`, so:
//! 1. **Scores must be representable in `f32`.** A row is compared only if, for every
//!    candidate key, `F = Σ_d |q_d·k_d|` over the terms whose two factors are finite
//!    satisfies `F ≤ 1e38`, `|scale|·F ≤ 1e38` and, when the bias `b` is finite,
//!    `|scale|·F + |b| ≤ 1e38`. `F` bounds every partial sum of the dot product in any order
//!    (and every product), so no `f32` intermediate of the score, nor a difference of two
//!    scores, can overflow; `f64` never does. Rows outside this are not compared (all the
//!    other checks still apply to them).
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
//! 4. **`v` sums must be representable in `f32`.** The kernel accumulates `Σ_j w_j·v_j` with
//!    weights `≤ 1`; a column whose included finite `|v|` sum to more than `1e38` may
//!    overflow there, so it is not compared, unless the reference is NaN because of a NaN
//!    score or a NaN `v`, which the kernel must reproduce whatever else happens.
//! 5. **The bias rounds too.** `tolerance::output_bound` documents `score_abs` as
//!    `max |scale|·Σ|q_d k_d|`, but the `f32` sum `scale·q·k + bias` rounds against the bias
//!    as well: with a bias of `1e10`, scores `1e10 + 0` and `1e10 + 1` are the same `f32`, so
//!    no `f32` kernel can tell those keys apart. `score_abs` here therefore adds `|bias|`
//!    (regression test `bias_magnitude_is_not_in_the_documented_bound`).

use crate::bytes::Bytes;
use qkv::tolerance::{EPS, lse_bound, output_bound};
use qkv::{Bias, Emulated, Isa, Layout, Mask, Params, QueryPos, Shape};

/// The magnitude below which scores, partial dot products and `v` sums must stay (rules 1, 4).
pub const LIMIT: f64 = 1e38;

/// What `out` and `lse` hold before a call: a quiet NaN with a payload no arithmetic makes.
pub const SENTINEL: u32 = 0xffc0_5a5a;

/// The special values the data is drawn from at a chosen rate.
pub const SPECIALS: [f32; 24] = [
    0.0,
    -0.0,
    1e-40,
    -1e-40,
    1e-30,
    -1e-30,
    f32::MIN_POSITIVE,
    1e10,
    -1e10,
    1e30,
    -1e30,
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1.0,
    -1.0,
    100.0,
    -100.0,
    88.0,
    -104.0,
];

/// Something that computes attention: a level or an emulated width.
#[derive(Clone, Copy, Debug)]
pub enum Runner {
    /// A real instruction set.
    Isa(Isa),
    /// A portable instance of 4, 8 or 16 lanes.
    Emulated(Emulated),
}

impl Runner {
    /// Every available level, then every emulated width.
    pub fn all() -> Vec<Runner> {
        let mut r: Vec<Runner> = Isa::available().map(Runner::Isa).collect();
        r.extend(Emulated::ALL.map(Runner::Emulated));
        r
    }

    /// Runs attention on this runner.
    pub fn run(
        self,
        p: &Params,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), qkv::Error> {
        match self {
            Runner::Isa(i) => i.attention(p, q, k, v, out, lse),
            Runner::Emulated(e) => e.attention(p, q, k, v, out, lse),
        }
    }
}

/// One owned problem.
#[derive(Clone, Debug)]
pub struct Case {
    /// The sizes.
    pub shape: Shape,
    /// Layouts of q, k, v, out.
    pub layouts: [Layout; 4],
    /// The scale override.
    pub scale: Option<f32>,
    /// The mask.
    pub mask: Mask,
    /// Bias data, head stride, row stride.
    pub bias: Option<(Vec<f32>, usize, usize)>,
    /// Queries.
    pub q: Vec<f32>,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
    /// Length of the `out` slice.
    pub out_len: usize,
    /// Whether `lse` is asked for.
    pub lse: bool,
}

/// Index of element `[head][row][0]`.
pub fn at(l: Layout, head: usize, row: usize) -> usize {
    head * l.head_stride + row * l.row_stride
}

/// Elements the layout reaches (0 when nothing is reached).
pub fn extent(l: Layout, heads: usize, rows: usize, dim: usize) -> usize {
    if heads == 0 || rows == 0 || dim == 0 {
        return 0;
    }
    (heads - 1) * l.head_stride + (rows - 1) * l.row_stride + dim
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
struct Draw {
    /// Probability (of 256) of a value from [`SPECIALS`].
    spice: u8,
    /// Amplitude of the ordinary values.
    amp: f32,
}

impl Draw {
    fn decode(b: &mut Bytes) -> Draw {
        Draw {
            spice: b.pick(&[0, 0, 0, 2, 8, 32, 128, 255]),
            amp: b.pick(&[1.0, 1.0, 1.0, 4.0, 30.0, 1e3, 1e6, 1e-3]),
        }
    }

    fn value(self, b: &mut Bytes) -> f32 {
        if self.spice > 0 && b.u8() < self.spice {
            b.pick(&SPECIALS)
        } else {
            (b.u16() as f32 / 32767.5 - 1.0) * self.amp
        }
    }
}

/// A length: often one on either side of a lane width or tile, else anything in `lo..=hi`.
fn length(b: &mut Bytes, lo: usize, hi: usize) -> usize {
    const EDGES: [usize; 19] = [
        0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129,
    ];
    let n = if b.chance(128) {
        b.pick(&EDGES)
    } else {
        b.range(lo, hi)
    };
    n.clamp(lo, hi)
}

/// A layout for `heads × rows × dim`; inputs may also broadcast (a stride of 0).
fn layout(b: &mut Bytes, heads: usize, rows: usize, dim: usize, input: bool) -> Layout {
    let kind = b.below(if input { 6 } else { 4 });
    let mut pad = || if b.chance(96) { b.range(1, 3) } else { 0 };
    let (pr, ph) = (pad(), pad());
    match kind {
        0 => Layout::planar(rows, dim),
        1 => Layout::interleaved(heads, dim),
        2 => Layout {
            head_stride: rows * (dim + pr) + ph,
            row_stride: dim + pr,
        },
        3 => Layout {
            head_stride: dim + pr,
            row_stride: heads * (dim + pr) + ph,
        },
        4 => Layout {
            head_stride: 0,
            row_stride: dim + pr,
        },
        _ => Layout {
            head_stride: dim + pr,
            row_stride: 0,
        },
    }
}

/// A tensor: NaN everywhere (padding included), the values at the elements the layout reaches.
fn tensor(b: &mut Bytes, l: Layout, heads: usize, rows: usize, dim: usize, draw: Draw) -> Vec<f32> {
    let extra = b.below(3);
    let mut t = vec![f32::NAN; extent(l, heads, rows, dim) + extra];
    for h in 0..heads {
        for r in 0..rows {
            for c in 0..dim {
                t[at(l, h, r) + c] = draw.value(b);
            }
        }
    }
    t
}

fn side(b: &mut Bytes, kv_len: usize) -> Option<usize> {
    match b.below(8) {
        0..=2 => None,
        3 => Some(b.pick(&[usize::MAX, usize::MAX / 2, 1 << 40, u32::MAX as usize])),
        _ => Some(b.range(0, kv_len + 3)),
    }
}

fn mask(b: &mut Bytes, q_len: usize, kv_len: usize) -> Mask {
    let pos = match b.below(8) {
        0..=2 => QueryPos::BottomRight,
        3 | 4 => QueryPos::TopLeft,
        5 | 6 => QueryPos::Offset(b.range(0, q_len + kv_len + 6) as i64 - (q_len as i64 + 3)),
        _ => QueryPos::Offset(b.pick(&[i64::MIN, i64::MIN + 1, i64::MAX, -(1 << 40), 1 << 40])),
    };
    match b.below(5) {
        0 => Mask::NONE.aligned(pos),
        1 => Mask::causal().aligned(pos),
        2 => Mask::sliding_window(b.range(0, kv_len + 2)).aligned(pos),
        3 => Mask::sliding_window(b.range(0, kv_len + 2))
            .with_right(side(b, kv_len))
            .aligned(pos),
        _ => Mask {
            left: side(b, kv_len),
            right: side(b, kv_len),
            query_pos: pos,
        },
    }
}

/// Upper bound on the multiply-adds of one call, to keep executions fast.
const MAX_WORK: usize = 400_000;

impl Case {
    /// Decodes any bytes into a valid case (see the module docs).
    pub fn decode(data: &[u8]) -> Case {
        let b = &mut Bytes::new(data);
        let mut kv_heads = b.range(1, 3);
        let mut group = b.pick(&[1, 1, 2, 3, 4]);
        // At most one dimension beyond 40, to cross the kernel's blocks.
        let big = b.below(8);
        let hi = |which: usize, normal: usize, big_hi: usize| {
            if big == which { big_hi } else { normal }
        };
        let mut q_len = length(b, 0, hi(0, 40, 140));
        let kv_len = length(b, 0, hi(1, 40, 140));
        let head_dim = length(b, 1, hi(2, 40, 140));
        let v_dim = if b.chance(128) {
            head_dim
        } else {
            length(b, 1, hi(3, 40, 140))
        };
        let work = |qh: usize, q: usize| qh * q * kv_len * (head_dim + v_dim);
        if work(kv_heads * group, q_len) > MAX_WORK {
            kv_heads = 1;
            group = group.min(2);
        }
        while q_len > 1 && work(kv_heads * group, q_len) > MAX_WORK {
            q_len /= 2;
        }
        let q_heads = kv_heads * group;
        let shape = Shape {
            q_heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim,
            v_dim,
        };
        let layouts = [
            layout(b, q_heads, q_len, head_dim, true),
            layout(b, kv_heads, kv_len, head_dim, true),
            layout(b, kv_heads, kv_len, v_dim, true),
            layout(b, q_heads, q_len, v_dim, false),
        ];
        let scale = match b.below(4) {
            0 | 1 => None,
            2 => Some(b.pick(&[
                0.0,
                -1.0,
                1.0,
                0.5,
                1e-20,
                1e20,
                1e-40,
                -3.0,
                1e-3,
                f32::MAX,
            ])),
            _ => Some((b.u16() as f32 / 32767.5 - 1.0) * 4.0),
        };
        let mask = mask(b, q_len, kv_len);
        let lse = b.chance(192);
        let out_len = extent(layouts[3], q_heads, q_len, v_dim) + b.below(3);
        let bias_kind = b.below(5);
        let (dq, dk, dv, db) = (
            Draw::decode(b),
            Draw::decode(b),
            Draw::decode(b),
            Draw::decode(b),
        );
        let neg_inf = b.pick(&[0, 0, 16, 64, 160, 240, 255]);
        let q = tensor(b, layouts[0], q_heads, q_len, head_dim, dq);
        let k = tensor(b, layouts[1], kv_heads, kv_len, head_dim, dk);
        let v = tensor(b, layouts[2], kv_heads, kv_len, v_dim, dv);
        let bias = match bias_kind {
            0 | 1 => None,
            kind => {
                let pad = b.range(0, 2);
                let (hs, rs) = match kind {
                    2 => (0, kv_len + pad),
                    3 => (0, 0),
                    _ => ((kv_len + pad) * q_len + b.range(0, 2), kv_len + pad),
                };
                let l = Layout {
                    head_stride: hs,
                    row_stride: rs,
                };
                let mut data = vec![f32::NAN; extent(l, q_heads, q_len, kv_len) + b.below(2)];
                for h in 0..q_heads {
                    for i in 0..q_len {
                        for j in 0..kv_len {
                            data[at(l, h, i) + j] = if b.u8() < neg_inf {
                                f32::NEG_INFINITY
                            } else {
                                db.value(b)
                            };
                        }
                    }
                }
                Some((data, hs, rs))
            }
        };
        Case {
            shape,
            layouts,
            scale,
            mask,
            bias,
            q,
            k,
            v,
            out_len,
            lse,
        }
    }

    /// The parameters of the case.
    pub fn params(&self) -> Params<'_> {
        let [q, k, v, out] = self.layouts;
        let mut p = Params::new(self.shape)
            .with_layouts(q, k, v, out)
            .with_mask(self.mask);
        p.scale = self.scale;
        if let Some((data, hs, rs)) = &self.bias {
            p = p.with_bias(Bias {
                data,
                head_stride: *hs,
                row_stride: *rs,
            });
        }
        p
    }
}

/// What the reference's `f64` scores say about one output row.
struct Row {
    /// Rule 1 holds for every candidate key.
    in_contract: bool,
    /// Some candidate's score is NaN or `+inf`: the whole row is NaN.
    nan: bool,
    /// Included keys (finite scores) and their scores.
    included: Vec<(usize, f64)>,
    /// The largest included score.
    max: f64,
    /// `max |scale|·Σ|q_d k_d| + |bias|` over the included keys (rule 5).
    score_abs: f64,
}

fn row(case: &Case, p: &Params, h: usize, i: usize) -> Row {
    let s = case.shape;
    let g = h / (s.q_heads / s.kv_heads);
    let scale = p.scale() as f64;
    let q = &case.q[at(p.q, h, i)..][..s.head_dim];
    let mut r = Row {
        in_contract: true,
        nan: false,
        included: vec![],
        max: f64::NEG_INFINITY,
        score_abs: 0.0,
    };
    for j in 0..s.kv_len {
        if !p.is_visible(i, j) {
            continue;
        }
        let bias = match &p.bias {
            Some(b) => b.data[h * b.head_stride + i * b.row_stride + j] as f64,
            None => 0.0,
        };
        if bias == f64::NEG_INFINITY {
            continue;
        }
        let k = &case.k[at(p.k, g, j)..][..s.head_dim];
        let (mut dot, mut finite_abs) = (0.0f64, 0.0f64);
        for (&a, &b) in q.iter().zip(k) {
            let prod = a as f64 * b as f64;
            dot += prod;
            if a.is_finite() && b.is_finite() {
                finite_abs += prod.abs();
            }
        }
        let scaled_abs = scale.abs() * finite_abs;
        if finite_abs > LIMIT
            || scaled_abs > LIMIT
            || (bias.is_finite() && scaled_abs + bias.abs() > LIMIT)
        {
            r.in_contract = false;
        }
        let score = scale * dot + bias;
        if score == f64::NEG_INFINITY {
            continue;
        }
        if score.is_nan() || score == f64::INFINITY {
            r.nan = true;
            continue;
        }
        r.included.push((j, score));
        r.max = r.max.max(score);
        // Rule 5: the bias's magnitude counts.
        r.score_abs = r.score_abs.max(scaled_abs + bias.abs());
    }
    r
}

/// Runs every runner on the case and checks it against the reference (see the module docs).
pub fn check(case: &Case) {
    let p = case.params();
    let s = case.shape;
    let sentinel = f32::from_bits(SENTINEL);
    let lse_len = s.q_heads * s.q_len;
    let mut want = vec![sentinel; case.out_len];
    let mut want_lse = vec![sentinel; lse_len];
    qkv::reference::attention(
        &p,
        &case.q,
        &case.k,
        &case.v,
        &mut want,
        Some(&mut want_lse),
    )
    .unwrap_or_else(|e| panic!("the reference refused a valid case: {e}\n{case:?}"));

    let mut inside = vec![false; case.out_len];
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            inside[at(p.out, h, i)..][..s.v_dim].fill(true);
        }
    }
    let rows: Vec<Row> = (0..s.q_heads)
        .flat_map(|h| (0..s.q_len).map(move |i| (h, i)))
        .map(|(h, i)| row(case, &p, h, i))
        .collect();

    for runner in Runner::all() {
        let mut got = vec![sentinel; case.out_len];
        let lse_extra = 2;
        let mut got_lse = vec![sentinel; lse_len + lse_extra];
        runner
            .run(
                &p,
                &case.q,
                &case.k,
                &case.v,
                &mut got,
                case.lse.then_some(&mut got_lse[..]),
            )
            .unwrap_or_else(|e| panic!("{runner:?} refused a valid case: {e}\n{case:?}"));
        for (idx, (&x, &ins)) in got.iter().zip(&inside).enumerate() {
            assert!(
                (x.to_bits() == SENTINEL) != ins,
                "{runner:?}: out[{idx}] {} (inside an output row: {ins})\n{case:?}",
                if ins { "not written" } else { "written" },
            );
        }
        for (idx, &x) in got_lse.iter().enumerate() {
            let written = x.to_bits() != SENTINEL;
            let should = case.lse && idx < lse_len;
            assert!(
                written == should,
                "{runner:?}: lse[{idx}] written: {written}, should be: {should}\n{case:?}"
            );
        }
        for h in 0..s.q_heads {
            for i in 0..s.q_len {
                let r = &rows[h * s.q_len + i];
                if !r.in_contract {
                    continue;
                }
                let base = at(p.out, h, i);
                compare_row(
                    case,
                    &p,
                    r,
                    (h, i),
                    &want[base..][..s.v_dim],
                    &got[base..][..s.v_dim],
                    runner,
                );
                if case.lse {
                    let (w, g) = (want_lse[h * s.q_len + i], got_lse[h * s.q_len + i]);
                    let bound = lse_bound(r.score_abs as f32, s.head_dim, s.kv_len, w.abs());
                    let ok = if w.is_nan() {
                        g.is_nan()
                    } else if w.is_infinite() {
                        g == w
                    } else {
                        g.is_finite() && (w == g || (w - g).abs() <= bound)
                    };
                    assert!(
                        ok,
                        "{runner:?}: lse[{h}][{i}] = {g}, reference {w}, bound {bound}\n{case:?}"
                    );
                }
            }
        }
    }
}

fn compare_row(
    case: &Case,
    p: &Params,
    r: &Row,
    (h, i): (usize, usize),
    want: &[f32],
    got: &[f32],
    runner: Runner,
) {
    let s = case.shape;
    let g_head = h / (s.q_heads / s.kv_heads);
    let v_row = |j: usize| &case.v[at(p.v, g_head, j)..][..s.v_dim];
    let v_abs = r
        .included
        .iter()
        .flat_map(|&(j, _)| v_row(j).iter())
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let mut bound = output_bound(r.score_abs as f32, v_abs, s.head_dim, s.kv_len);
    if bound.is_nan() {
        // An infinite weight error times `v_abs = 0`: every included `v` is 0.
        bound = if v_abs == 0.0 { 1e-6 } else { f32::INFINITY };
    }
    let ds = (s.head_dim as f64 + 2.0) * EPS as f64 * r.score_abs + 4.0 * EPS as f64;
    for c in 0..s.v_dim {
        let (w, g) = (want[c], got[c]);
        let col = r.included.iter().map(|&(j, sj)| (v_row(j)[c], sj));
        let nan_v = col.clone().any(|(x, _)| x.is_nan());
        let finite_sum: f64 = col
            .clone()
            .filter(|(x, _)| x.is_finite())
            .map(|(x, _)| x.abs() as f64)
            .sum();
        let inf_keys = col.clone().filter(|(x, _)| x.is_infinite());
        let has_inf = inf_keys.clone().next().is_some();
        let unsure = inf_keys.clone().any(|(_, sj)| {
            let d = sj - r.max;
            let surely_positive = d >= -80.0 + 2.0 * ds;
            let surely_zero = d < -746.0 && 2.0 * ds < 600.0;
            !surely_positive && !surely_zero
        });
        let ok = if r.nan || nan_v {
            // Rule 2 and the NaN rules: nothing may hide these.
            g.is_nan()
        } else if finite_sum > LIMIT {
            true // rule 4: not compared
        } else if has_inf {
            // Rule 3.
            if w.is_nan() {
                g.is_nan() || (unsure && g.is_infinite())
            } else {
                g == w || (unsure && g.is_nan())
            }
        } else if w.is_nan() {
            g.is_nan()
        } else {
            g.is_finite() && (w == g || (w - g).abs() <= bound)
        };
        assert!(
            ok,
            "{runner:?}: out[{h}][{i}][{c}] = {g:e}, reference {w:e}, bound {bound:e} \
             (score_abs {sa:e}, v_abs {v_abs:e}, nan row {nan}, nan v {nan_v}, inf v {has_inf}, \
             unsure {unsure})\n{case:?}",
            sa = r.score_abs,
            nan = r.nan,
        );
    }
}

/// The fuzz entry point: decode, run, check.
pub fn run(data: &[u8]) {
    check(&Case::decode(data));
}
