//! The `exp` check: `qkv::exp::exp` on every width against `f64` exp, under the bound the
//! module documents:
//! - a normal result (`|e^x| ≥ f32::MIN_POSITIVE`) within 2 ulp of `e^x` (the ulp of the
//!   binade `e^x` lies in);
//! - a smaller result within one unit of the smallest subnormal (`2^-149`) of `e^x`;
//! - `e^x < 2^-150` (below half the smallest subnormal) gives `+0`, `exp(-inf) = +0`;
//! - `x > 88.7228…` (`e^x` rounds past `f32::MAX`) gives `+inf`; an infinite result
//!   elsewhere is only allowed within 2 ulp of `f32::MAX`;
//! - NaN gives NaN.
//!
//! Run on `pulp::Scalar`, the emulated 4/8/16-lane `Scalar128b/256b/512b`, `exp1`, and the
//! real AVX2 and AVX-512 levels when this CPU has them, with every lane holding a different
//! input (so lane mixing shows).

use crate::bytes::Bytes;
use crate::common::exp::ExpAll;
use pulp::Simd;

/// Every available instance: name and results.
pub fn levels(xs: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    // Only x86-64 and aarch64 add levels of their own.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut r = vec![
        ("scalar", Simd::vectorize(pulp::Scalar::new(), ExpAll(xs))),
        ("scalar128b", Simd::vectorize(pulp::Scalar128b, ExpAll(xs))),
        ("scalar256b", Simd::vectorize(pulp::Scalar256b, ExpAll(xs))),
        ("scalar512b", Simd::vectorize(pulp::Scalar512b, ExpAll(xs))),
        ("exp1", xs.iter().map(|&x| qkv::exp::exp1(x)).collect()),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V3::try_new() {
            r.push(("avx2", Simd::vectorize(simd, ExpAll(xs))));
        }
        #[cfg(feature = "x86-v4")]
        if let Some(simd) = pulp::x86::V4::try_new() {
            r.push(("avx512", Simd::vectorize(simd, ExpAll(xs))));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(simd) = pulp::aarch64::Neon::try_new() {
            r.push(("neon", Simd::vectorize(simd, ExpAll(xs))));
        }
    }
    r
}

/// Whether `got` is within the documented bound of `e^x`; `Err` says why not.
pub fn check_one(x: f32, got: f32) -> Result<(), String> {
    let want = (x as f64).exp();
    let tiny = 2f64.powi(-149);
    let max = f32::MAX as f64;
    let ulp_max = 2f64.powi(104);
    let ok = if x.is_nan() {
        got.is_nan()
    } else if want < tiny / 2.0 {
        got.to_bits() == 0
    } else if want >= max + ulp_max / 2.0 {
        // Rounds to +inf in round-to-nearest.
        got == f32::INFINITY
    } else if got.is_infinite() || got.is_nan() {
        got == f32::INFINITY && want >= max - 2.0 * ulp_max
    } else if want < f32::MIN_POSITIVE as f64 {
        (got as f64 - want).abs() <= tiny
    } else {
        let ulp = 2f64.powi(want.log2().floor() as i32 - 23);
        (got as f64 - want).abs() <= 2.0 * ulp
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "exp({x:e} = {:#010x}) = {got:e} ({:#010x}), f64 exp {want:e}",
            x.to_bits(),
            got.to_bits()
        ))
    }
}

/// Where an input comes from.
fn input(b: &mut Bytes) -> f32 {
    match b.below(8) {
        // Any bit pattern.
        0 | 1 => f32::from_bits(b.u32()),
        // The interesting range, uniformly.
        2..=4 => -110.0 + (b.u32() as f64 / u32::MAX as f64 * 205.0) as f32,
        // A few ulps around the edges of the algorithm.
        _ => {
            let edge: f32 = b.pick(&[
                0.0,
                -0.0,
                88.72284,
                88.7228,
                89.0,
                -87.33655,
                -103.27893,
                -103.97208,
                -104.0,
                core::f32::consts::LN_2 / 2.0, // the reduction's rounding boundary
                -core::f32::consts::LN_2 / 2.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                f32::MIN,
                1e-30,
                -1e-30,
            ]);
            let delta = b.u8() as i8 as i32;
            if edge.is_finite() && edge != 0.0 {
                f32::from_bits((edge.to_bits() as i32 + delta) as u32)
            } else {
                edge
            }
        }
    }
}

/// Decodes up to 64 inputs and checks every instance on them.
pub fn run(data: &[u8]) {
    let b = &mut Bytes::new(data);
    let n = b.range(1, 64);
    let xs: Vec<f32> = (0..n).map(|_| input(b)).collect();
    for (name, ys) in levels(&xs) {
        for (&x, &y) in xs.iter().zip(&ys) {
            if let Err(e) = check_one(x, y) {
                panic!("{name}: {e}");
            }
        }
    }
}
