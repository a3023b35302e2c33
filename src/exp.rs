//! A vectorised `exp` for `f32`, written once over [`pulp::Simd`], and the `tanh` of the
//! softcap ([`tanh`]) built on it.
//!
//! `e^x = 2^n · e^r` with `n = round(x / ln 2)` and `r = x − n·ln 2` (Cody–Waite, two
//! constants, exact without FMA because `ln2_hi` has 8 trailing zero bits and `|n| ≤ 150`),
//! `e^r` by a minimax polynomial of degree 6 on `|r| ≤ ln2/2` (error below 3.2·10⁻⁹, far
//! under half an ulp), then `2^n` applied in two steps so subnormal results are rounded
//! once, correctly.
//!
//! Multiply-adds are `mul_add_e`: fused where the level has an FMA instruction (AVX2,
//! AVX-512, NEON), a plain multiply and add on pulp's scalar level, where a fused one is a
//! software `fmaf` call; unfused, a few more roundings, still within the bound below.
//!
//! Accuracy (tested over every 37th `f32` in `[-104, 89]` against `f64` exp): at most
//! 2 ulp for normal results, and within one unit of the smallest subnormal below them
//! (measured: 0.863 ulp fused, 1.149 ulp on the scalar level).
//! `exp(-inf) = 0`, results below half the smallest subnormal are `+0`, `exp(x) = +inf` for
//! `x > 88.722…`, and NaN stays NaN.

use pulp::Simd;

const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// `ln 2` split so that `n · LN2_HI` is exact for `|n| < 2^8`.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // ln 2 − LN2_HI ≈ 1.4286068e-6
/// `1.5 · 2^23`: adding it rounds an `f32` of magnitude below `2^22` to an integer, which
/// then sits in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Inputs are clamped to `[MIN_X, MAX_X]`: below, the result rounds to 0; above, to `+inf`.
const MIN_X: f32 = -104.0;
const MAX_X: f32 = 89.0;

/// The part of `e^x` both [`exp`] and [`exp_weight`] share, for an already clamped `x`.
struct Reduced<V> {
    /// `x / ln 2 + ROUND`, rounded: `n` as an integer in its low mantissa bits.
    t: V,
    /// `n = round(x / ln 2)` as a float.
    n: V,
    /// `e^r` for `r = x − n·ln 2`.
    p: V,
}

/// `max(a, b)` lane by lane, for the kernel's clamps and running maxima, whose callers give
/// the same results whichever operand a NaN yields (instruction sets differ there). On SIMD
/// levels pulp's; on the one-lane level a compare and a select (`a` where `a > b`, else `b`),
/// since `f32::max` is a call to `fmaxf` on targets without a max instruction (Cortex-M4F,
/// `benches/NOTES.md` 23).
#[inline(always)]
pub(crate) fn max_f32s<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
    match S::F32_LANES {
        1 => simd.select_f32s(simd.greater_than_f32s(a, b), a, b),
        _ => simd.max_f32s(a, b),
    }
}

/// `min(a, b)` lane by lane, as [`max_f32s`] (`a` where `a < b`, else `b`, on one lane).
#[inline(always)]
pub(crate) fn min_f32s<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
    match S::F32_LANES {
        1 => simd.select_f32s(simd.less_than_f32s(a, b), a, b),
        _ => simd.min_f32s(a, b),
    }
}

/// The polynomial `c[0]·x^(n−1) + … + c[n−1]` by Horner's rule, lane by lane. A `while`
/// loop over the coefficients: at opt-level z a `for` over an array stays an iterator, a
/// call per coefficient and the array copied into the caller's frame.
#[inline(always)]
fn horner<S: Simd>(simd: S, x: S::f32s, c: &[f32]) -> S::f32s {
    let mut p = simd.splat_f32s(c[0]);
    let mut i = 1;
    while i < c.len() {
        p = simd.mul_add_e_f32s(p, x, simd.splat_f32s(c[i]));
        i += 1;
    }
    p
}

/// `e^r ≈ 1 + r + c₂r² + … + c₆r⁶` on `|r| ≤ ln2/2`, highest degree first: a minimax fit
/// of the relative error, each coefficient refitted after the ones below it were rounded to
/// `f32` (relative error below 3.2·10⁻⁹, 0.03 ulp, before the arithmetic's rounding). The
/// degree-7 Taylor polynomial it replaced took a multiply-add more per value.
const EXP_POLY: [f32; 7] = [
    f32::from_bits(0x3ab5_275e), // 1.3820936e-3
    f32::from_bits(0x3c09_1ccd), // 8.368683e-3
    f32::from_bits(0x3d2a_ac58), // 4.1668266e-2
    f32::from_bits(0x3e2a_aa49), // 0.16666521
    f32::from_bits(0x3eff_fffe), // 0.49999994
    1.0,
    1.0,
];

/// Range reduction (Cody–Waite) and the degree-6 polynomial for `e^r`.
#[inline(always)]
fn reduce<S: Simd>(simd: S, clamped: S::f32s) -> Reduced<S::f32s> {
    // n = round(x / ln 2), both as a float and as an integer in the low bits of `t`.
    let t = simd.mul_add_e_f32s(clamped, simd.splat_f32s(LOG2_E), simd.splat_f32s(ROUND));
    let n = simd.sub_f32s(t, simd.splat_f32s(ROUND));
    let r = simd.negate_mul_add_e_f32s(n, simd.splat_f32s(LN2_HI), clamped);
    let r = simd.negate_mul_add_e_f32s(n, simd.splat_f32s(LN2_LO), r);

    // e^r by its degree-6 minimax polynomial, Horner.
    let p = horner(simd, r, &EXP_POLY);
    Reduced { t, n, p }
}

/// `e^x` lane by lane; see the module docs for accuracy and special values.
#[inline(always)]
pub fn exp<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let clamped = min_f32s(
        simd,
        max_f32s(simd, x, simd.splat_f32s(MIN_X)),
        simd.splat_f32s(MAX_X),
    );

    let Reduced { t, n, p } = reduce(simd, clamped);

    // 2^n = 2^n1 · 2^n2 with n1 = round(n / 2): both halves are normal for n in [-150, 128].
    let t1 = simd.mul_add_e_f32s(n, simd.splat_f32s(0.5), simd.splat_f32s(ROUND));
    let round_bits = simd.transmute_u32s_f32s(simd.splat_f32s(ROUND));
    let n_int = simd.sub_u32s(simd.transmute_u32s_f32s(t), round_bits);
    let n1_int = simd.sub_u32s(simd.transmute_u32s_f32s(t1), round_bits);
    let n2_int = simd.sub_u32s(n_int, n1_int);
    let pow2 = |e: S::u32s| {
        // (e + 127) << 23, as wrapping u32 arithmetic on the two's-complement exponent.
        let biased = simd.add_u32s(e, simd.splat_u32s(127));
        simd.transmute_f32s_u32s(simd.mul_u32s(biased, simd.splat_u32s(1 << 23)))
    };
    let y = simd.mul_f32s(simd.mul_f32s(p, pow2(n1_int)), pow2(n2_int));

    // min/max may drop NaN depending on the instruction set; put it back.
    simd.select_f32s(simd.equal_f32s(x, x), y, x)
}

/// `e^x` for the softmax weights, `x = score − max ≤ 0` (or NaN): [`exp`] with its results
/// below `2^-126` flushed to 0 instead of rounded to a subnormal, which lets `2^n` be applied
/// in one step. Such a weight is far below the rounding of the row's sum (at least 1), so the
/// flush changes no output; results of `2^-126` and above are bit-identical to [`exp`]. NaN
/// stays NaN; `+inf` or positive inputs give unspecified finite or infinite values (the
/// kernel calls it only on rows whose weights it then ignores).
#[inline(always)]
pub(crate) fn exp_weight<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // Below -88, n = -127 and 2^n is the zero bit pattern: the result flushes to 0. A NaN
    // compares false and passes through the clamp (a `max` may drop it on some levels), and
    // then through the polynomial: `p` is NaN, and so is `p · 2^n` whatever bits the NaN
    // gave `2^n`. (No select at the end to put it back: 4 instructions a weight on
    // Cortex-M4F.)
    let low = simd.splat_f32s(-88.0);
    let clamped = simd.select_f32s(simd.less_than_f32s(x, low), low, x);
    let Reduced { t, p, .. } = reduce(simd, clamped);
    // 2^n has the bits (n + 127) << 23, and n = bits(t) − bits(ROUND) (wrapping), in
    // [-127, 0]; n = -127 gives +0.
    let bias = simd.splat_u32s(127u32.wrapping_sub(ROUND.to_bits()));
    let biased = simd.add_u32s(simd.transmute_u32s_f32s(t), bias);
    let pow2 = simd.transmute_f32s_u32s(simd.mul_u32s(biased, simd.splat_u32s(1 << 23)));
    simd.mul_f32s(p, pow2)
}

/// Scalar `e^x` with the same algorithm, for per-row factors.
#[inline(always)]
pub fn exp1(x: f32) -> f32 {
    exp(pulp::Scalar::new(), x)
}

/// Below this `|x|`, [`tanh`] takes its Taylor polynomial.
const TANH_SMALL: f32 = 0.3125;

/// `tanh x` lane by lane, for the softcap of scores.
///
/// For `|x| < 0.3125` the odd Taylor polynomial to `x¹¹` (truncation below `10⁻⁹·|x|`);
/// above, `1 − 2/(e^{2|x|} + 1)`, whose cancellation near the threshold costs relative
/// accuracy but not absolute. Tested over every 37th `f32` in `[-10, 10]` against `f64` at
/// every level: within 1 ulp of 1 (`2⁻²³`; measured 0.78) and 3 ulp of the result (measured
/// 2.48). `±inf` gives `±1`, NaN stays NaN, and `tanh(−x) = −tanh(x)` exactly, zeros
/// included.
#[inline(always)]
pub fn tanh<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // tanh is odd: computed on |x|, the sign put back last (so ±0 keep their sign).
    let sign = simd.and_u32s(simd.transmute_u32s_f32s(x), simd.splat_u32s(0x8000_0000));
    let ax = simd.abs_f32s(x);
    let one = simd.splat_f32s(1.0);
    // e^{2|x|} is +inf above 44: then 2/(inf + 1) = 0 and the result is exactly 1.
    let e = exp(simd, simd.add_f32s(ax, ax));
    let big = simd.sub_f32s(
        one,
        simd.div_f32s(simd.splat_f32s(2.0), simd.add_f32s(e, one)),
    );
    let small = simd.mul_add_e_f32s(tanh_poly(simd, simd.mul_f32s(ax, ax)), ax, ax);
    // NaN compares false: it takes `big`, NaN through `exp`.
    let r = simd.select_f32s(
        simd.less_than_f32s(ax, simd.splat_f32s(TANH_SMALL)),
        small,
        big,
    );
    simd.transmute_f32s_u32s(simd.or_u32s(simd.transmute_u32s_f32s(r), sign))
}

/// `tanh x = x + x · x²·P(x²)` below [`TANH_SMALL`]: `x²·P(x²)` from `x²`, the odd Taylor
/// series to `x¹¹`: `x²·(−1/3 + x²·(2/15 + x²·(−17/315 + x²·(62/2835 − x²·1382/155925))))`.
#[inline(always)]
fn tanh_poly<S: Simd>(simd: S, x2: S::f32s) -> S::f32s {
    let p = horner(
        simd,
        x2,
        &[
            -1382.0 / 155_925.0,
            62.0 / 2835.0,
            -17.0 / 315.0,
            2.0 / 15.0,
            -1.0 / 3.0,
        ],
    );
    simd.mul_f32s(p, x2)
}

/// Scalar [`tanh`], the same algorithm.
#[inline(always)]
pub fn tanh1(x: f32) -> f32 {
    tanh(pulp::Scalar::new(), x)
}

/// The softcap of scaled scores `s`: `cap · tanh(s / cap)`, as the kernel computes it. Where
/// `|s / cap|` is small it is `s + s · x²·P(x²)` (`x = s / cap`), which keeps `s` exact when
/// the cap is huge (`x` may then be subnormal, and `cap · x` would lose bits of `s`); the
/// quotient is divided, not multiplied by `1 / cap`, for the same reason.
#[inline(always)]
pub fn softcap<S: Simd>(simd: S, s: S::f32s, cap: f32) -> S::f32s {
    let cap = simd.splat_f32s(cap);
    let x = simd.div_f32s(s, cap);
    let small = simd.mul_add_e_f32s(s, tanh_poly(simd, simd.mul_f32s(x, x)), s);
    let big = simd.mul_f32s(cap, tanh(simd, x));
    let is_small = simd.less_than_f32s(simd.abs_f32s(x), simd.splat_f32s(TANH_SMALL));
    simd.select_f32s(is_small, small, big)
}

/// Scalar [`softcap`], the same algorithm.
#[inline(always)]
pub fn softcap1(s: f32, cap: f32) -> f32 {
    softcap(pulp::Scalar::new(), s, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_weight` is `exp` where `exp` is at least `2^-126`, 0 or `exp` below, on every
    /// 7th `f32` in `[-104, 0]` (on the scalar level, whose arithmetic every level shares),
    /// and keeps NaN and -inf → 0.
    #[test]
    fn exp_weight_is_exp_or_a_flushed_tiny_result() {
        let simd = pulp::Scalar::new();
        let (lo, hi) = ((-104.0f32).to_bits(), 0x8000_0000u32);
        // Every 7th f32; every 70th when CI runs this under an emulator (tests/common's
        // `under_emulator`), where a dense sweep of scalar code that does not change with the
        // CPU would cost a minute.
        #[cfg(feature = "std")]
        let emulated = std::env::var_os("QKV_UNDER_EMULATOR").is_some();
        #[cfg(not(feature = "std"))]
        let emulated = false;
        let step = if cfg!(miri) {
            7_000_003
        } else if emulated {
            70
        } else {
            7
        };
        let mut checked = 0;
        for bits in (hi..=lo).step_by(step) {
            let x = f32::from_bits(bits);
            let (w, e) = (exp_weight(simd, x), exp(simd, x));
            if e >= f32::MIN_POSITIVE {
                assert_eq!(w.to_bits(), e.to_bits(), "x = {x:e}");
            } else {
                assert!(w == 0.0 || w == e, "x = {x:e}: {w:e} against {e:e}");
            }
            checked += 1;
        }
        assert!(checked > (lo - hi) as usize / step);
        assert!(exp_weight(simd, f32::NAN).is_nan());
        assert_eq!(exp_weight(simd, f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_weight(simd, 0.0), 1.0);
    }
}
