//! The vectorised `exp` against `f64` exp over a dense sweep of the `f32` range, at every
//! level and emulated width.

mod common;
use common::exp::{ExpAll, ulps};
use pulp::Simd;

fn levels(xs: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = vec![("scalar", Simd::vectorize(pulp::Scalar::new(), ExpAll(xs)))];
    if !common::under_emulator() {
        r.push(("emulated4", Simd::vectorize(pulp::Scalar128b, ExpAll(xs))));
        r.push(("emulated16", Simd::vectorize(pulp::Scalar512b, ExpAll(xs))));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = pulp::x86::V3::try_new() {
        r.push(("avx2", Simd::vectorize(s, ExpAll(xs))));
    }
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    if let Some(s) = pulp::x86::V4::try_new() {
        r.push(("avx512", Simd::vectorize(s, ExpAll(xs))));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(s) = pulp::aarch64::Neon::try_new() {
        r.push(("neon", Simd::vectorize(s, ExpAll(xs))));
    }
    r
}

#[test]
fn exp_is_within_two_ulp_over_the_range() {
    // Every 37th f32 natively (about 55 million points); every 370th under an emulator.
    let step: usize = if cfg!(miri) {
        1 << 22
    } else if common::under_emulator() {
        370
    } else {
        37
    };
    let neg = (0x8000_0000u32..=(-104.0f32).to_bits()).step_by(step);
    let pos = (0u32..=89.0f32.to_bits()).step_by(step);
    let xs: Vec<f32> = neg.chain(pos).map(f32::from_bits).collect();
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
