//! The vectorised `exp` against `f64` exp over a dense sweep of the `f32` range, at every
//! level and emulated width.

mod common;
use common::exp::{ExpAll, TanhAll, ulps};
use pulp::Simd;

/// `f` (`ExpAll` or `TanhAll`) over `xs` at every level and emulated width.
fn levels_of<'a, F: pulp::WithSimd<Output = Vec<f32>>>(
    xs: &'a [f32], f: impl Fn(&'a [f32]) -> F,
) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = vec![("scalar", Simd::vectorize(pulp::Scalar::new(), f(xs)))];
    if !common::under_emulator() {
        r.push(("emulated4", Simd::vectorize(pulp::Scalar128b, f(xs))));
        r.push(("emulated16", Simd::vectorize(pulp::Scalar512b, f(xs))));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = pulp::x86::V3::try_new() {
        r.push(("avx2", Simd::vectorize(s, f(xs))));
    }
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    if let Some(s) = pulp::x86::V4::try_new() {
        r.push(("avx512", Simd::vectorize(s, f(xs))));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(s) = pulp::aarch64::Neon::try_new() {
        r.push(("neon", Simd::vectorize(s, f(xs))));
    }
    r
}

fn levels(xs: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    levels_of(xs, ExpAll)
}

/// Every 37th `f32` of `[lo, hi]` (`lo ≤ -0.0`, `hi ≥ 0.0`) in bit order, each sign from zero
/// out; every 370th under an emulator and a few hundred under Miri, to keep the time.
fn sweep(lo: f32, hi: f32) -> Vec<f32> {
    let step: usize = if cfg!(miri) {
        1 << 22
    } else if common::under_emulator() {
        370
    } else {
        37
    };
    let neg = (0x8000_0000u32..=lo.to_bits()).step_by(step);
    let pos = (0u32..=hi.to_bits()).step_by(step);
    neg.chain(pos).map(f32::from_bits).collect()
}

#[test]
fn exp_is_within_two_ulp_over_the_range() {
    // About 55 million points natively.
    let xs = sweep(-104.0, 89.0);
    for (name, ys) in levels(&xs) {
        let mut worst = (0.0, 0.0f32);
        for (&x, &y) in xs.iter().zip(&ys) {
            let e = ulps(y, x);
            if e > worst.0 {
                worst = (e, x);
            }
        }
        println!(
            "{name}: worst {:.3} ulp at x = {:e} ({} points)",
            worst.0,
            worst.1,
            xs.len()
        );
        assert!(
            worst.0 <= 2.0,
            "{name}: {} ulp at x = {:e}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn exp_special_values() {
    let xs = [
        f32::NEG_INFINITY,
        -1e30,
        -104.0,
        -103.0,
        -87.34,
        -0.0,
        0.0,
        1.0,
        88.72,
        88.73,
        1e30,
        f32::INFINITY,
        f32::NAN,
    ];
    for (name, ys) in levels(&xs) {
        assert_eq!(ys[0], 0.0, "{name}: exp(-inf)");
        assert_eq!(ys[1], 0.0, "{name}: exp(-1e30)");
        assert_eq!(ys[2], 0.0, "{name}: exp(-104) underflows to 0");
        assert!(
            ys[3] > 0.0 && ys[3] < f32::MIN_POSITIVE,
            "{name}: subnormal {}",
            ys[3]
        );
        assert_eq!(ys[5], 1.0, "{name}: exp(-0)");
        assert_eq!(ys[6], 1.0, "{name}: exp(0)");
        assert!(
            (ys[7] - core::f32::consts::E).abs() <= f32::EPSILON * 3.0,
            "{name}: e"
        );
        assert!(
            ys[8].is_finite() && ys[9] == f32::INFINITY,
            "{name}: overflow edge"
        );
        assert_eq!(ys[10], f32::INFINITY, "{name}");
        assert_eq!(ys[11], f32::INFINITY, "{name}");
        assert!(ys[12].is_nan(), "{name}: NaN stays NaN");
    }
}

/// The softcap's `tanh` (`qkv::exp::tanh`) against `f64` over every 37th `f32` in
/// `[-10, 10]` (beyond, it is ±1 exactly), at every level: within 1 ulp of 1 (`2⁻²³`)
/// absolutely, the error the softcap's tolerance counts, and within 3 ulp of the result.
#[test]
fn tanh_is_within_one_ulp_of_one() {
    let mut xs = sweep(-10.0, 10.0);
    xs.extend([0.3125f32, -0.3125, 0.31249998, 9.01, 44.0, 1e30, -1e30]);
    let ulp1 = f32::EPSILON as f64;
    for (name, ys) in levels_of(&xs, TanhAll) {
        let (mut worst_abs, mut worst_rel) = ((0.0f64, 0.0f32), (0.0f64, 0.0f32));
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).tanh();
            let abs = (y as f64 - want).abs() / ulp1;
            let w = want as f32;
            let unit = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
            let rel = (y as f64 - want).abs() / unit;
            if abs > worst_abs.0 {
                worst_abs = (abs, x);
            }
            if rel > worst_rel.0 {
                worst_rel = (rel, x);
            }
            assert_eq!(
                y.is_sign_negative(),
                x.is_sign_negative(),
                "{name}: tanh({x:e}) = {y:e}"
            );
        }
        println!(
            "{name}: tanh worst {:.3} ulp of 1 at {:e}, {:.3} ulp of the result at {:e}",
            worst_abs.0, worst_abs.1, worst_rel.0, worst_rel.1
        );
        assert!(
            worst_abs.0 <= 2.0,
            "{name}: {} ulp of 1 at {:e}",
            worst_abs.0,
            worst_abs.1
        );
        assert!(
            worst_rel.0 <= 4.0,
            "{name}: {} ulp at {:e}",
            worst_rel.0,
            worst_rel.1
        );
    }
}

#[test]
fn tanh_special_values() {
    let xs = [
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NAN,
        1e-40,
        -1e-40,
    ];
    for (name, ys) in levels_of(&xs, TanhAll) {
        assert_eq!(ys[0], -1.0, "{name}");
        assert_eq!(ys[1].to_bits(), (-0.0f32).to_bits(), "{name}");
        assert_eq!(ys[2].to_bits(), 0.0f32.to_bits(), "{name}");
        assert_eq!(ys[3], 1.0, "{name}");
        assert!(ys[4].is_nan(), "{name}");
        assert_eq!(ys[5], 1e-40, "{name}");
        assert_eq!(ys[6], -1e-40, "{name}");
    }
    assert_eq!(qkv::exp::tanh1(0.5), {
        let s = pulp::Scalar::new();
        qkv::exp::tanh(s, 0.5)
    });
}
