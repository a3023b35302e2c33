//! Properties that hold whatever the data: checked with quickcheck on random problems.

mod common;
use common::{Case, Rng, levels};
use quickcheck::{QuickCheck, TestResult};

fn tests() -> u64 {
    if cfg!(miri) { 2 } else { 60 }
}

fn max_len() -> usize {
    if cfg!(miri) { 6 } else { 80 }
}

/// V of all ones: every row that includes a key outputs exactly ones (up to rounding);
/// rows that include none output zeros.
#[test]
fn ones_in_ones_out() {
    fn prop(seed: u64) -> TestResult {
        let mut rng = Rng(seed);
        let mut case = Case::random(&mut rng, max_len(), 20);
        case.v.fill(1.0);
        let s = case.shape;
        let p = case.params();
        for runner in levels() {
            let mut out = vec![f32::NAN; case.out_len];
            let mut lse = vec![0.0; s.q_heads * s.q_len];
            runner
                .attention(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse))
                .unwrap();
            for h in 0..s.q_heads {
                for i in 0..s.q_len {
                    let row = &out[h * p.out.head_stride + i * p.out.row_stride..][..s.v_dim];
                    let empty = lse[h * s.q_len + i] == f32::NEG_INFINITY;
                    let want = if empty { 0.0 } else { 1.0 };
                    if row.iter().any(|&x| (x - want).abs() > 1e-5) {
                        return TestResult::error(format!("{runner:?} row {h},{i}: {row:?}"));
                    }
                }
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(tests())
        .quickcheck(prop as fn(u64) -> TestResult);
}

/// Without a mask or bias, attention is a function of the set of (k, v) pairs: permuting
/// the key/value rows together leaves the output unchanged.
#[test]
fn permuting_keys_with_values_changes_nothing() {
    fn prop(seed: u64) -> TestResult {
        let mut rng = Rng(seed);
        let mut case = Case::random(&mut rng, max_len(), 20);
        case.mask = qkv::Mask::NONE;
        case.bias = None;
        let s = case.shape;
        let p = case.params();
        let mut perm: Vec<usize> = (0..s.kv_len).collect();
        for i in (1..perm.len()).rev() {
            perm.swap(i, rng.range(0, i));
        }
        let (mut k2, mut v2) = (case.k.clone(), case.v.clone());
        for g in 0..s.kv_heads {
            for (j, &from) in perm.iter().enumerate() {
                let (dst, src) = (
                    g * p.k.head_stride + j * p.k.row_stride,
                    g * p.k.head_stride + from * p.k.row_stride,
                );
                k2[dst..dst + s.head_dim].copy_from_slice(&case.k[src..src + s.head_dim]);
                let (dst, src) = (
                    g * p.v.head_stride + j * p.v.row_stride,
                    g * p.v.head_stride + from * p.v.row_stride,
                );
                v2[dst..dst + s.v_dim].copy_from_slice(&case.v[src..src + s.v_dim]);
            }
        }
        for runner in levels() {
            let mut a = vec![0.0; case.out_len];
            let mut b = vec![0.0; case.out_len];
            let (mut la, mut lb) = (
                vec![0.0; s.q_heads * s.q_len],
                vec![0.0; s.q_heads * s.q_len],
            );
            runner
                .attention(&p, &case.q, &case.k, &case.v, &mut a, Some(&mut la))
                .unwrap();
            runner
                .attention(&p, &case.q, &k2, &v2, &mut b, Some(&mut lb))
                .unwrap();
            // Only the order of f32 sums changes: kv_len·ε relative, of values ≤ 1.
            let tol = 4.0 * (s.kv_len as f32 + 2.0) * f32::EPSILON + 1e-6;
            for (x, y) in a.iter().zip(&b).chain(la.iter().zip(&lb)) {
                if (x - y).abs() > tol * (1.0 + x.abs()) {
                    return TestResult::error(format!("{runner:?}: {x} vs {y} ({s:?})"));
                }
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(tests())
        .quickcheck(prop as fn(u64) -> TestResult);
}

/// Every level agrees with the reference, lse included (`check` compares both).
#[test]
fn every_level_matches_reference_quickcheck() {
    fn prop(seed: u64) -> TestResult {
        let mut rng = Rng(seed);
        let case = Case::random(&mut rng, max_len(), 40);
        for runner in levels() {
            common::check(&case, runner);
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(tests())
        .quickcheck(prop as fn(u64) -> TestResult);
}
