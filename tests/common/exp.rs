//! `qkv::exp::exp` and `qkv::exp::tanh` over a slice on any pulp SIMD instance, and the error
//! of `exp` in ulps.

use pulp::{Simd, WithSimd};

/// Defines `$name(xs)`, which evaluates `$f` over `xs`, a vector of lanes at a time (the last
/// one partial), at the level `pulp::Simd::vectorize` runs it on. A type per function:
/// `WithSimd::with_simd` is generic over the level, which a closure or fn pointer cannot be.
macro_rules! over_slice {
    ($(#[$doc:meta])* $name:ident, $f:path) => {
        $(#[$doc])*
        pub struct $name<'a>(pub &'a [f32]);

        impl WithSimd for $name<'_> {
            type Output = Vec<f32>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
                let mut out = vec![0.0; self.0.len()];
                let lanes = S::F32_LANES;
                for (x, o) in self.0.chunks(lanes).zip(out.chunks_mut(lanes)) {
                    simd.partial_store_f32s(o, $f(simd, simd.partial_load_f32s(x)));
                }
                out
            }
        }
    };
}

over_slice!(
    /// Evaluates `qkv::exp::exp` over `xs` with the given SIMD level.
    ExpAll,
    qkv::exp::exp
);
over_slice!(
    /// Evaluates `qkv::exp::tanh` over `xs` with the given SIMD level.
    TanhAll,
    qkv::exp::tanh
);

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
