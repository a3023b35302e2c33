//! The problems the small examples (`kv_cache`, `parallel`, `variant_cost`) run: a prefill or
//! a decode step at head_dim 128 with a mask, named from its numbers so that the name printed
//! always says what ran, and its planar inputs.

#![allow(dead_code)]

use qkv::{Mask, Params, Shape};

/// The head dimension of every problem here, the common one of current models.
pub const HEAD_DIM: usize = 128;

/// One problem: what the example prints for it, its shape and its mask.
pub struct Problem {
    pub name: String,
    pub shape: Shape,
    pub mask: Mask,
}

/// `heads` heads of `len` queries over `len` keys.
pub fn prefill(heads: usize, len: usize, mask: Mask) -> Problem {
    Problem {
        name: format!(
            "prefill {heads}h {len}x{len} d{HEAD_DIM}{}",
            mask_name(mask)
        ),
        shape: Shape::new(heads, len, len, HEAD_DIM),
        mask,
    }
}

/// One query of `q_heads` heads over `kv_len` keys of `kv_heads` heads (GQA).
pub fn decode(q_heads: usize, kv_heads: usize, kv_len: usize, mask: Mask) -> Problem {
    Problem {
        name: format!(
            "decode {q_heads}q/{kv_heads}kv kv={kv_len} d{HEAD_DIM}{}",
            mask_name(mask)
        ),
        shape: Shape::new(q_heads, 1, kv_len, HEAD_DIM).gqa(q_heads, kv_heads),
        mask,
    }
}

/// ` causal`, ` window N` or ` band L..R` (nothing without a mask).
fn mask_name(mask: Mask) -> String {
    match (mask.left, mask.right) {
        (None, None) => String::new(),
        (None, Some(0)) => " causal".to_string(),
        (Some(w), Some(0)) => format!(" window {w}"),
        (l, r) => format!(" band {l:?}..{r:?}"),
    }
}

impl Problem {
    /// Planar layouts, default scale, this problem's mask.
    pub fn params(&self) -> Params<'static> {
        Params::new(self.shape).with_mask(self.mask)
    }

    /// Planar q, k and v, drawn by `fill(len, seed)` with seeds 1, 2 and 3 (each example
    /// keeps its own generator, so its numbers stay as they were).
    pub fn inputs(&self, mut fill: impl FnMut(usize, u64) -> Vec<f32>) -> [Vec<f32>; 3] {
        let s = self.shape;
        [
            fill(s.q_heads * s.q_len * s.head_dim, 1),
            fill(s.kv_heads * s.kv_len * s.head_dim, 2),
            fill(s.kv_heads * s.kv_len * s.v_dim, 3),
        ]
    }

    /// The length of the output.
    pub fn out_len(&self) -> usize {
        let s = self.shape;
        s.q_heads * s.q_len * s.v_dim
    }
}
