//! What the firmware programs and the host check agree on: the cases, their inputs and the
//! text format the programs print over semihosting.
//!
//! tests/c/firmware.c implements the same LCG and shapes in C.
#![no_std]

use qkv::{Mask, Params, Shape};

/// Keys in the first of two partials (split-KV) or stream chunks; the rest form the second.
pub const GQA_SPLIT: usize = 20;

/// The cases by the name the programs print: 1×1×1×1 and the GQA shape (8 query heads over
/// 2 kv heads, 5 queries, 37 keys, head_dim 64, causal bottom-right). `error` is the GQA
/// shape with 3 query heads, which no call accepts.
pub fn params(case: &str) -> Option<Params<'static>> {
    let gqa = Params::new(Shape::new(1, 5, 37, 64).gqa(8, 2)).with_mask(Mask::causal());
    match case {
        "tiny" => Some(Params::new(Shape::new(1, 1, 1, 1))),
        "gqa" => Some(gqa),
        "error" => Some(
            Params::new(Shape {
                q_heads: 3,
                ..gqa.shape
            })
            .with_mask(Mask::causal()),
        ),
        _ => None,
    }
}

/// Fills `x` from an LCG (Numerical Recipes' constants) started at `seed`: each value is
/// `(state >> 8) / 2²³ − 1`, exact in `f32` and in `[-1, 1)`.
pub fn fill(x: &mut [f32], mut seed: u32) {
    for x in x {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *x = (seed >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0;
    }
}

/// The seeds of q, k and v.
pub const SEEDS: [u32; 3] = [1, 2, 3];

/// Element counts of q, k, v, out and lse for dense planar tensors of `shape`.
pub fn lens(shape: &Shape) -> [usize; 5] {
    let rows = shape.q_heads * shape.q_len;
    [
        rows * shape.head_dim,
        shape.kv_heads * shape.kv_len * shape.head_dim,
        shape.kv_heads * shape.kv_len * shape.v_dim,
        rows * shape.v_dim,
        rows,
    ]
}

/// What outputs hold before a call, so that a call that must not write can be checked.
pub const SENTINEL: f32 = 12345.0;

/// How many instructions the calibration loop runs (`subs`, `bne`, 100 000 times).
pub const CALIBRATION_INSTRUCTIONS: u64 = 200_000;
