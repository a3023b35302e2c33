//! Every level and emulated width against the reference on random problems.

mod common;
use common::{Case, Rng, Runner, check};

#[test]
fn random_small_problems_match_reference() {
    let mut rng = Rng(1);
    for n in 0..300 {
        let case = Case::random(&mut rng, 40, 24);
        for runner in Runner::all() {
            check(&case, runner);
        }
        let _ = n;
    }
}

#[test]
fn random_tile_sized_problems_match_reference() {
    let mut rng = Rng(2);
    for _ in 0..40 {
        let case = Case::random(&mut rng, 140, 140);
        for runner in Runner::all() {
            check(&case, runner);
        }
    }
}
