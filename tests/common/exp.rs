//! `qkv::exp::exp` over a slice on any pulp SIMD instance, and its error in ulps.

use pulp::{Simd, WithSimd};

/// Evaluates `qkv::exp::exp` over `xs` with the given SIMD level.
pub struct ExpAll<'a>(pub &'a [f32]);

impl WithSimd for ExpAll<'_> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let mut out = vec![0.0; self.0.len()];
        let lanes = S::F32_LANES;
        for (x, o) in self.0.chunks(lanes).zip(out.chunks_mut(lanes)) {
            let y = qkv::exp::exp(simd, simd.partial_load_f32s(x));
            simd.partial_store_f32s(o, y);
        }
        out
    }
}

/// Error in ulps of the correctly rounded result; for subnormal results, in units of the
/// smallest subnormal (2^-149).
pub fn ulps(got: f32, x: f32) -> f64 {
    let want = (x as f64).exp();
    let unit = if want < f32::MIN_POSITIVE as f64 {
        f64::from(f32::from_bits(1))
    } else {
        let w = want as f32;
        (f32::from_bits(w.to_bits() + 1) - w) as f64
    };
    (got as f64 - want).abs() / unit
}

/// Evaluates `qkv::exp::tanh` over `xs` with the given SIMD level.
pub struct TanhAll<'a>(pub &'a [f32]);

impl WithSimd for TanhAll<'_> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let mut out = vec![0.0; self.0.len()];
        let lanes = S::F32_LANES;
        for (x, o) in self.0.chunks(lanes).zip(out.chunks_mut(lanes)) {
            let y = qkv::exp::tanh(simd, simd.partial_load_f32s(x));
            simd.partial_store_f32s(o, y);
        }
        out
    }
}
