//! Every level and emulated width against the reference on random problems.

mod common;
use common::{Case, Rng, budget, check_all};

/// `n` random problems of up to `len` rows and keys and `dim` columns.
fn sweep(seed: u64, (n, len, dim): (usize, usize, usize)) {
    let mut rng = Rng(seed);
    for _ in 0..n {
        check_all(&Case::random(&mut rng, len, dim));
    }
}

#[test]
fn random_small_problems_match_reference() {
    sweep(1, budget((300, 40, 24), (2, 6, 6)));
}

#[test]
fn random_tile_sized_problems_match_reference() {
    sweep(2, budget((40, 140, 140), (1, 9, 9)));
}
