//! Properties that hold whatever the data: checked with quickcheck on random problems.

mod common;
use common::{Case, Rng, budget, check_all, laid_out, levels, one_shot};
use qkv::Layout;
use qkv::split::Level;
use quickcheck::{QuickCheck, TestResult};

/// Runs `prop` on random seeds: 60 natively, 2 under Miri.
fn quickcheck(prop: fn(u64) -> TestResult) {
    QuickCheck::new().tests(budget(60, 2)).quickcheck(prop);
}

fn max_len() -> usize {
    budget(80, 6)
}

/// The property on one seed's random problem (head dimensions up to `max_dim`): `prepare`
/// adjusts the case and returns what every level's `check` needs, then `check` runs at each
/// level; its first error fails the property.
fn at_every_level<T>(
    seed: u64, max_dim: usize, prepare: impl FnOnce(&mut Rng, &mut Case) -> T,
    check: impl Fn(&Case, &T, Level) -> Result<(), String>,
) -> TestResult {
    let mut rng = Rng(seed);
    let mut case = Case::random(&mut rng, max_len(), max_dim);
    let prepared = prepare(&mut rng, &mut case);
    for level in levels() {
        if let Err(e) = check(&case, &prepared, level) {
            return TestResult::error(e);
        }
    }
    TestResult::passed()
}

/// V of all ones: every row that includes a key outputs exactly ones (up to rounding);
/// rows that include none output zeros.
#[test]
fn ones_in_ones_out() {
    fn prop(seed: u64) -> TestResult {
        let ones = |_: &mut Rng, case: &mut Case| {
            case.v.fill(1.0);
            // A sink takes weight from the keys: the mean of ones is then below 1.
            case.sinks = None;
        };
        at_every_level(seed, 20, ones, |case, (), level| {
            let s = case.shape;
            let p = case.params();
            let (out, lse) = one_shot(case, Some(level));
            for h in 0..s.q_heads {
                for i in 0..s.q_len {
                    let row = &out[p.out.at(h, i)..][..s.v_dim];
                    let empty = lse[h * s.q_len + i] == f32::NEG_INFINITY;
                    let want = if empty { 0.0 } else { 1.0 };
                    if row.iter().any(|&x| (x - want).abs() > 1e-5) {
                        return Err(format!("{level:?} row {h},{i}: {row:?}"));
                    }
                }
            }
            Ok(())
        })
    }
    quickcheck(prop);
}

/// Without a mask or bias, attention is a function of the set of (k, v) pairs: permuting
/// the key/value rows together leaves the output unchanged.
#[test]
fn permuting_keys_with_values_changes_nothing() {
    fn prop(seed: u64) -> TestResult {
        let permute = |rng: &mut Rng, case: &mut Case| {
            case.mask = qkv::Mask::NONE;
            case.bias = None;
            // ALiBi ties a score to its key's position.
            case.alibi = None;
            let s = case.shape;
            let p = case.params();
            let mut perm: Vec<usize> = (0..s.kv_len).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, rng.range(0, i));
            }
            let permuted = |data: &[f32], l: Layout, dim: usize| {
                laid_out(l, (s.kv_heads, s.kv_len, dim), 0, |g, j, c| {
                    data[l.at(g, perm[j]) + c]
                })
            };
            let mut moved = case.clone();
            moved.k = permuted(&case.k, p.k, s.head_dim);
            moved.v = permuted(&case.v, p.v, s.v_dim);
            moved
        };
        at_every_level(seed, 20, permute, |case, moved, level| {
            let s = case.shape;
            // Outside the output rows both are NaN, which compares as equal below.
            let (a, la) = one_shot(case, Some(level));
            let (b, lb) = one_shot(moved, Some(level));
            // Only the order of f32 sums changes: kv_len·ε relative, of values ≤ 1.
            let tol = 4.0 * (s.kv_len as f32 + 2.0) * f32::EPSILON + 1e-6;
            let mut pairs = a.iter().zip(&b).chain(la.iter().zip(&lb));
            match pairs.find(|(x, y)| (*x - *y).abs() > tol * (1.0 + x.abs())) {
                Some((x, y)) => Err(format!("{level:?}: {x} vs {y} ({s:?})")),
                None => Ok(()),
            }
        })
    }
    quickcheck(prop);
}

/// Every level agrees with the reference, lse included (`check` compares both).
#[test]
fn every_level_matches_reference_quickcheck() {
    fn prop(seed: u64) -> TestResult {
        let mut rng = Rng(seed);
        let case = Case::random(&mut rng, max_len(), 40);
        check_all(&case);
        TestResult::passed()
    }
    quickcheck(prop);
}
