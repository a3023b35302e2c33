//! How close every kernel level must be to the [reference](crate::reference), and why.
//!
//! The reference computes in `f64`; the kernel in `f32`, with:
//! - a dot product of `head_dim` terms (error ≲ `head_dim · ε · Σ|q_d k_d|`, `ε = 2⁻²⁴`),
//!   multiplied by `scale`: the score error `δs`;
//! - weights `e^(s − max)`: the relative error of a weight is about `δs` plus 2 ulp of [`exp`](crate::exp);
//! - a weighted sum of `kv_len` values divided by a sum of `kv_len` weights, each with
//!   relative error ≲ `kv_len · ε`.
//!
//! So the output error is bounded by the relative weight error times `max |v|` plus the
//! summation error. [`output_bound`] turns that into a number per row; tests compare each
//! element with `|kernel − reference| ≤ output_bound(...)`.

/// Unit roundoff of `f32`.
pub const EPS: f32 = f32::EPSILON / 2.0;

/// The bound on `|out − reference|` for one output row.
///
/// - `score_abs`: the largest `|scale| · Σ_d |q_d · k_d| + |bias_j|` over the row's included
///   keys (the magnitude the score rounds against: the dot product, then the added bias),
///   plus `|slope · (j − pos)|` with ALiBi and `2·cap` with a softcap (whose `tanh` is within
///   1 ulp of 1 and two roundings, under `4ε·cap`, which `(head_dim + 2)·ε·2·cap` covers);
/// - `v_abs`: the largest `|v|` over the included keys and this column panel;
/// - `head_dim`, `kv_len`: the lengths summed over.
///
/// `δs = (head_dim + 2)·ε·score_abs + 4ε` bounds the error of one score; a weight then
/// has relative error at most `e^(2δs) − 1` (its own and the max's score), plus `4ε` for `exp`;
/// sums over `kv_len` terms add `(kv_len + 2)·ε`. The factor 4 covers the rounding of the
/// bounds themselves and the division; 1e-6 absolute keeps the bound away from 0.
pub fn output_bound(score_abs: f32, v_abs: f32, head_dim: usize, kv_len: usize) -> f32 {
    let ds = (head_dim as f32 + 2.0) * EPS * score_abs + 4.0 * EPS;
    let weight_rel = libm::expm1f(2.0 * ds) + 4.0 * EPS;
    let sum_rel = (kv_len as f32 + 2.0) * EPS;
    4.0 * (weight_rel + sum_rel) * v_abs + 1e-6
}

/// The bound on `|lse − reference lse|`: the score error plus the relative error of the sum.
pub fn lse_bound(score_abs: f32, head_dim: usize, kv_len: usize, lse_abs: f32) -> f32 {
    let ds = (head_dim as f32 + 2.0) * EPS * score_abs + 4.0 * EPS;
    4.0 * (ds + (kv_len as f32 + 2.0) * EPS + lse_abs * EPS) + 1e-6
}

/// The bound on `|out − reference|` for a result merged by [`split::merge`](crate::split::merge)
/// from partials, each of which passed through at most `depth` merges (the depth of the merge
/// tree: 1 for two partials, `n − 1` for a chain of `n`).
///
/// A merge computes its weights and mean in `f64` and rounds once, so it adds `ε` to `out`
/// and `|lse|·ε` to `lse` per level. Its output is a weighted mean of the partials' outputs,
/// so the partials' own errors carry over unchanged ([`output_bound`] over the whole `kv_len`
/// bounds each of them), and an error `δ` in a partial's lse is a relative error `≈ δ` of its
/// weight, which moves a weighted mean of values within `±v_abs` by at most `2·δ·v_abs`.
/// With `η = lse_bound + 2·depth·(lse_abs + 1)·ε` (the lse error of a partial after the
/// roundings of `depth` levels): `output_bound + 4·v_abs·(η + depth·ε)`, the 4 covering the
/// first-order approximations.
///
/// `lse_abs` is the largest `|lse|` of a partial with a weight that matters: the merged
/// `|lse|` plus 20 (a weight below `e^−20` contributes less than its rounding) is safe.
pub fn merged_output_bound(
    score_abs: f32, v_abs: f32, head_dim: usize, kv_len: usize, lse_abs: f32, depth: usize,
) -> f32 {
    let d = depth as f32;
    let eta = lse_bound(score_abs, head_dim, kv_len, lse_abs) + 2.0 * d * (lse_abs + 1.0) * EPS;
    let partial = output_bound(score_abs, v_abs, head_dim, kv_len);
    weighted_mean_bound(partial, v_abs, eta, d)
}

/// The bound on a weighted mean of values within `±v_abs` from partials whose outputs are each
/// within `partial` and whose weights have relative error `eta`, the mean adding `roundings`
/// roundings: `partial + 4·v_abs·(eta + roundings·ε)`, the 4 covering the first-order
/// approximations.
fn weighted_mean_bound(partial: f32, v_abs: f32, eta: f32, roundings: f32) -> f32 {
    partial + 4.0 * v_abs * (eta + roundings * EPS)
}

/// The bound on `|lse − reference lse|` for a result of merges of depth `depth`: a merged
/// lse is a smooth maximum of the partials' (Lipschitz 1), so their error carries over, plus
/// one rounding per level.
pub fn merged_lse_bound(
    score_abs: f32, head_dim: usize, kv_len: usize, lse_abs: f32, depth: usize,
) -> f32 {
    lse_bound(score_abs, head_dim, kv_len, lse_abs)
        + 4.0 * (depth as f32 + 1.0) * (lse_abs + 1.0) * EPS
}

/// The bound on `|out − reference|` for a [`stream::Stream`](crate::stream::Stream) fed in
/// `chunks` updates.
///
/// Each chunk is a partial (error within [`output_bound`] and [`lse_bound`] for the whole
/// `kv_len`); the state keeps the running max exactly (it is one of the chunks' lse), so the
/// weight `e^(lse_c − max)` of chunk `c` has relative error `η = lse_bound + 2·(chunks + 2)·ε`
/// (its lse, one `f64` exponential rounded to `f32`, and at most one rescale per later chunk),
/// the `f32` running sums add `(chunks + 2)·ε`, and the result is a weighted mean:
/// `output_bound + 4·v_abs·(η + (chunks + 2)·ε)`. Unlike a merge tree it does not grow with
/// `|lse|·chunks`: the max is never rounded.
///
/// `lse_abs` as in [`merged_output_bound`].
pub fn stream_output_bound(
    score_abs: f32, v_abs: f32, head_dim: usize, kv_len: usize, lse_abs: f32, chunks: usize,
) -> f32 {
    let n = stream_roundings(chunks);
    let eta = lse_bound(score_abs, head_dim, kv_len, lse_abs) + 2.0 * n * EPS;
    let partial = output_bound(score_abs, v_abs, head_dim, kv_len);
    weighted_mean_bound(partial, v_abs, eta, n)
}

/// `chunks + 2`: the roundings a stream of `chunks` updates puts in a chunk's weight and in
/// the running sums (the chunk's lse, its exponential, and one rescale per later chunk).
fn stream_roundings(chunks: usize) -> f32 {
    chunks as f32 + 2.0
}

/// The bound on `|lse − reference lse|` for a stream of `chunks` updates: the chunks' lse
/// error, the relative error of the running sum (`2·(chunks + 2)·ε`, as a log) and the final
/// rounding.
pub fn stream_lse_bound(
    score_abs: f32, head_dim: usize, kv_len: usize, lse_abs: f32, chunks: usize,
) -> f32 {
    lse_bound(score_abs, head_dim, kv_len, lse_abs)
        + 4.0 * (2.0 * stream_roundings(chunks) + lse_abs) * EPS
}
