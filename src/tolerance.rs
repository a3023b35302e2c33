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
/// - `score_abs`: the largest `|scale| · Σ_d |q_d · k_d|` over the row's included keys (the
///   magnitude the dot products round against);
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
