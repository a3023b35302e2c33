//! Every level and emulated width against the reference on random problems.

mod common;
use common::{Case, Rng, check, levels};

/// (problems, max length, max dim): far fewer under Miri, which is ~1000x slower.
fn budget(native: (usize, usize, usize), miri: (usize, usize, usize)) -> (usize, usize, usize) {
    if cfg!(miri) { miri } else { native }
}

#[test]
fn random_small_problems_match_reference() {
    let (n, len, dim) = budget((300, 40, 24), (2, 6, 6));
    let mut rng = Rng(1);
    for _ in 0..n {
        let case = Case::random(&mut rng, len, dim);
        for runner in levels() {
            check(&case, runner);
        }
    }
}

#[test]
fn random_tile_sized_problems_match_reference() {
    let (n, len, dim) = budget((40, 140, 140), (1, 9, 9));
    let mut rng = Rng(2);
    for _ in 0..n {
        let case = Case::random(&mut rng, len, dim);
        for runner in levels() {
            check(&case, runner);
        }
    }
}
