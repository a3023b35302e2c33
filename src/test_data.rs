//! Inputs for the crate's unit tests (the integration tests have their own kit in
//! `tests/common`).

use std::vec::Vec;

/// `n` deterministic values in `[-0.5, 0.5)` from `seed` (a linear congruential generator).
pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}
