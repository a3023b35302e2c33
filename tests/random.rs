//! Every level and emulated width against the reference on random problems.

mod common;
use common::{budget, check_all, random_cases};

#[test]
fn random_small_problems_match_reference() {
    random_cases(1, budget((300, 40, 24), (2, 6, 6))).for_each(|case| check_all(&case));
}

#[test]
fn random_tile_sized_problems_match_reference() {
    random_cases(2, budget((40, 140, 140), (1, 9, 9))).for_each(|case| check_all(&case));
}
