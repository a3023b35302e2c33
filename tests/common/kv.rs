//! K and V stored as 16- or 8-bit types: a [`Case`] whose `k` and `v` hold values each
//! type represents exactly, and the typed slices the kernel is called with. The reference
//! runs on the `f32` values (the same numbers), so every check of the kit applies unchanged.

use qkv::{BlockQ8_0, KvKind, Layout, Params, bf16, f16};

use super::case::{Case, laid_out};

/// A tensor in one of the K/V storage types.
#[derive(Clone, Debug)]
pub enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Q8_0(Vec<BlockQ8_0>),
}

/// Runs `$body` with `$x` bound to the typed slice of a [`Stored`] (in scope where it is
/// called).
macro_rules! with_stored {
    ($stored:expr, |$x:ident| $body:expr) => {
        with_stored!(@arms $stored, $x, $body, F32, F16, Bf16, Q8_0)
    };
    // The same arm for each variant: `$body` is compiled once per slice type.
    (@arms $stored:expr, $x:ident, $body:expr, $($variant:ident),*) => {
        match $stored {
            $(Stored::$variant(t) => {
                let $x = &t[..];
                $body
            })*
        }
    };
}

pub(crate) use with_stored;

/// `x` as the nearest value `kind` stores exactly (q8_0 is per block: see [`quantized`]).
pub fn round(kind: KvKind, x: f32) -> f32 {
    match kind {
        KvKind::F16 => f16::from_f32(x).to_f32(),
        KvKind::Bf16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Every run of 32 values of `t` quantised as a q8_0 block and decoded again.
pub fn quantized(t: &[f32]) -> Vec<BlockQ8_0> {
    t.chunks(32)
        .map(|c| {
            let mut x = [0.0f32; 32];
            x[..c.len()].copy_from_slice(c);
            BlockQ8_0::quantize(&x)
        })
        .collect()
}

/// The values of q8_0 blocks, in order.
pub fn decoded(blocks: &[BlockQ8_0]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|b| b.qs.map(|q| b.d.to_f32() * q as f32))
        .collect()
}

/// `t`, whose values `kind` represents exactly, stored as `kind`.
pub fn store(kind: KvKind, t: &[f32]) -> Stored {
    match kind {
        KvKind::F32 => Stored::F32(t.to_vec()),
        KvKind::F16 => Stored::F16(t.iter().map(|&x| f16::from_f32(x)).collect()),
        KvKind::Bf16 => Stored::Bf16(t.iter().map(|&x| bf16::from_f32(x)).collect()),
        KvKind::Q8_0 => Stored::Q8_0(encoded(t)),
    }
}

/// q8_0 blocks that decode to `t` exactly, whose values were decoded from q8_0 blocks.
///
/// Quantising again is exact for a finite scale, but not for an infinite one (a block of a
/// value past `f16::MAX · 127`): its values are `±inf` (`q ≠ 0`) and NaN (`inf · 0`), which
/// quantise to another block. Those are encoded with the scale `inf` (NaN if all are NaN).
pub fn encoded(t: &[f32]) -> Vec<BlockQ8_0> {
    let same = |b: &BlockQ8_0, c: &[f32]| {
        decoded(core::slice::from_ref(b))
            .iter()
            .zip(c)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    };
    quantized(t)
        .into_iter()
        .zip(t.chunks(32))
        .map(|(b, c)| {
            if same(&b, c) {
                return b;
            }
            let all_nan = c.iter().all(|x| x.is_nan());
            let inf = BlockQ8_0 {
                d: if all_nan { f16::NAN } else { f16::INFINITY },
                qs: core::array::from_fn(|i| match c.get(i) {
                    Some(&x) if x == f32::INFINITY => 1,
                    Some(&x) if x == f32::NEG_INFINITY => -1,
                    _ => 0,
                }),
            };
            assert!(same(&inf, c), "{c:?} are not the values of a q8_0 block");
            inf
        })
        .collect()
}

/// `l` (in values) in elements of `kind`.
pub fn in_units(kind: KvKind, l: Layout) -> Layout {
    Layout {
        head_stride: l.head_stride / kind.values(),
        row_stride: l.row_stride / kind.values(),
    }
}

impl Case {
    /// Stores K and V as `kinds`: their values become ones the types represent exactly
    /// (q8_0 K or V is re-laid planar, whose strides are whole blocks). Returns `false`, the
    /// case unchanged, when a q8_0 row length is not a multiple of 32.
    pub fn store(&mut self, kinds: (KvKind, KvKind)) -> bool {
        let s = self.shape;
        let q8 = |kind, dim: usize| kind == KvKind::Q8_0 && !dim.is_multiple_of(32);
        if q8(kinds.0, s.head_dim) || q8(kinds.1, s.v_dim) {
            return false;
        }
        let [_, lk, lv, _] = &mut self.layouts;
        for (t, (layout, (kind, dim))) in [&mut self.k, &mut self.v].into_iter().zip(
            [lk, lv]
                .into_iter()
                .zip([(kinds.0, s.head_dim), (kinds.1, s.v_dim)]),
        ) {
            if kind == KvKind::Q8_0 {
                let planar = Layout::planar(s.kv_len, dim);
                let old = *layout;
                *t = laid_out(planar, (s.kv_heads, s.kv_len, dim), 0, |h, r, c| {
                    t[old.at(h, r) + c]
                });
                *layout = planar;
                *t = decoded(&quantized(t));
                t.truncate(planar.extent(s.kv_heads, s.kv_len, dim).unwrap_or(0));
            } else {
                for x in t.iter_mut() {
                    *x = round(kind, *x);
                }
            }
        }
        self.kinds = kinds;
        true
    }

    /// K and V as the case stores them.
    pub fn stored(&self) -> (Stored, Stored) {
        (store(self.kinds.0, &self.k), store(self.kinds.1, &self.v))
    }

    /// [`Case::params`] with the K and V layouts in elements of their types.
    pub fn stored_params(&self) -> Params<'_> {
        let mut p = self.params();
        p.k = in_units(self.kinds.0, p.k);
        p.v = in_units(self.kinds.1, p.v);
        p
    }
}
