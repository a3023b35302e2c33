//! What the firmware programs and the host check agree on: the cases, their inputs and the
//! text format the programs print over semihosting.
//!
//! tests/c/firmware.c implements the same LCG and shapes in C.
#![no_std]

use qkv::{BlockQ8_0, KvKind, Mask, Params, Shape, f16};

/// Keys in the first of two partials (split-KV) or stream chunks; the rest form the second.
pub const GQA_SPLIT: usize = 20;

/// The cases by the name the programs print: 1×1×1×1 and the GQA shape (8 query heads over
/// 2 kv heads, 5 queries, 37 keys, head_dim 64, causal bottom-right). `error` is the GQA
/// shape with 3 query heads, which no call accepts. `gqa_f16` and `gqa_q8_0` are the GQA
/// shape with K and V stored as [`kv_kind`] says (strides in its elements).
pub fn params(case: &str) -> Option<Params<'static>> {
    let gqa = Params::new(Shape::new(1, 5, 37, 64).gqa(8, 2)).with_mask(Mask::causal());
    match case {
        "tiny" => Some(Params::new(Shape::new(1, 1, 1, 1))),
        "gqa" => Some(gqa),
        "gqa_f16" => Some(gqa),
        "gqa_q8_0" => Some(gqa.with_kv_units::<BlockQ8_0, BlockQ8_0>()),
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

/// How a case stores K and V (both the same): `f16` for `gqa_f16`, `q8_0` for `gqa_q8_0`,
/// `f32` otherwise.
pub fn kv_kind(case: &str) -> KvKind {
    match case {
        "gqa_f16" => KvKind::F16,
        "gqa_q8_0" => KvKind::Q8_0,
        _ => KvKind::F32,
    }
}

/// Fills `x` with half values from the LCG of [`fill`]: `n / 1024` for `n = (state >> 21) −
/// 1024`, exact in `f16`.
pub fn fill_f16(x: &mut [f16], mut seed: u32) {
    for x in x {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *x = f16::from_f32(((seed >> 21) as i32 - 1024) as f32 / 1024.0);
    }
}

/// Fills `x` with `q8_0` blocks from the LCG of [`fill`]: block `b` has the scale
/// `2^(b % 4) / 64` and the values `(state >> 24) − 128`, −128 taken as −127.
pub fn fill_q8_0(x: &mut [BlockQ8_0], mut seed: u32) {
    for (b, x) in x.iter_mut().enumerate() {
        x.d = f16::from_f32((1u32 << (b % 4)) as f32 / 64.0);
        for q in &mut x.qs {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *q = ((seed >> 24) as i32 - 128).max(-127) as i8;
        }
    }
}

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
