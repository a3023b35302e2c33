//! The types K and V may be stored in: `f32`, IEEE `f16`, `bf16` and 8-bit `q8_0` blocks.
//! Q, the bias, `out` and `lse` are always `f32`, and every type is accumulated in `f32`.
//!
//! K and V each take any of the four, independently, as slices of [`KvType`]. Strides count
//! the slice's own elements: values for `f32`, [`f16`](struct@f16) and [`bf16`], 32-value blocks for
//! [`BlockQ8_0`] (`head_dim` and `v_dim` must then be multiples of 32;
//! [`Params::with_kv_units`](crate::Params::with_kv_units) turns layouts given in values into
//! blocks). Each stored value decodes exactly to an `f32` (a `q8_0` value is `d · q` with an
//! `f16` scale `d`), so the kernel and the reference see the same inputs.
//!
//! Every type-specific operation of the crate is one `match` on [`KvType::KIND`] here; the
//! kernel is otherwise the same for every type.

pub use half::{bf16, f16};

use crate::kernel::Widen;

/// Values in one [`BlockQ8_0`].
pub const Q8_0_VALUES: usize = 32;

/// A storage type of K or V, named at run time (the C ABI's `k_type` and `v_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum KvKind {
    /// `f32`.
    F32 = 0,
    /// IEEE binary16, [`f16`](struct@f16).
    F16 = 1,
    /// bfloat16, [`bf16`]: the top half of an `f32`.
    Bf16 = 2,
    /// [`BlockQ8_0`]: 32 `i8` values and their `f16` scale.
    Q8_0 = 3,
}

impl KvKind {
    /// Every kind, in order of discriminant.
    pub const ALL: [KvKind; 4] = [KvKind::F32, KvKind::F16, KvKind::Bf16, KvKind::Q8_0];

    /// The kind with this discriminant, if any.
    pub const fn from_u32(n: u32) -> Option<KvKind> {
        match n {
            0 => Some(KvKind::F32),
            1 => Some(KvKind::F16),
            2 => Some(KvKind::Bf16),
            3 => Some(KvKind::Q8_0),
            _ => None,
        }
    }

    /// A short lowercase name: `f32`, `f16`, `bf16`, `q8_0`.
    pub const fn name(self) -> &'static str {
        match self {
            KvKind::F32 => "f32",
            KvKind::F16 => "f16",
            KvKind::Bf16 => "bf16",
            KvKind::Q8_0 => "q8_0",
        }
    }

    /// Values per element of the slice: 32 for `q8_0` blocks, 1 for the others.
    pub const fn values(self) -> usize {
        match self {
            KvKind::Q8_0 => Q8_0_VALUES,
            _ => 1,
        }
    }

    /// Bytes per element of the slice (4, 2, 2 and 34).
    pub const fn bytes(self) -> usize {
        match self {
            KvKind::F32 => 4,
            KvKind::F16 | KvKind::Bf16 => 2,
            KvKind::Q8_0 => core::mem::size_of::<BlockQ8_0>(),
        }
    }
}

impl core::fmt::Display for KvKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// 32 values as ggml's `block_q8_0` stores them: value `i` is `d · qs[i]`. 34 bytes, aligned
/// to 2, byte for byte the layout of a llama.cpp `q8_0` cache, so such a cache can be passed
/// as it is (cast its bytes with `bytemuck::cast_slice`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ8_0 {
    /// The scale.
    pub d: f16,
    /// The quantised values.
    pub qs: [i8; Q8_0_VALUES],
}

// SAFETY: `repr(C)` of an `f16` (2 bytes, align 2) and 32 `i8`: 34 bytes with no padding (the
// assertion below), every bit pattern valid, and all zeros is a valid block.
unsafe impl bytemuck::Zeroable for BlockQ8_0 {}
// SAFETY: as above; `Copy` and `'static`.
unsafe impl bytemuck::Pod for BlockQ8_0 {}

const _: () =
    assert!(core::mem::size_of::<BlockQ8_0>() == 34 && core::mem::align_of::<BlockQ8_0>() == 2);

impl BlockQ8_0 {
    /// Quantises 32 values as ggml does (`d = max |x| / 127`, `q = round(x / d)`). For tests,
    /// examples and callers without a quantiser of their own; the kernel never quantises.
    pub fn quantize(x: &[f32; Q8_0_VALUES]) -> BlockQ8_0 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs: core::array::from_fn(|i| libm::roundf(x[i] * inv) as i8),
        }
    }
}

mod sealed {
    use super::{BlockQ8_0, bf16, f16};

    /// A K or V slice as the concrete type it is: what picks the kernel's instance for a type
    /// pair (`dispatch`), with no cast.
    #[derive(Clone, Copy)]
    pub enum Typed<'a> {
        F32(&'a [f32]),
        F16(&'a [f16]),
        Bf16(&'a [bf16]),
        Q8_0(&'a [BlockQ8_0]),
    }

    pub trait Sealed: Sized {
        /// `s` as its concrete type.
        fn typed(s: &[Self]) -> Typed<'_>;
    }

    /// Each type names its own variant of [`Typed`].
    macro_rules! typed {
        ($($t:ty => $variant:ident),*) => {$(
            impl Sealed for $t {
                #[inline(always)]
                fn typed(s: &[$t]) -> Typed<'_> {
                    Typed::$variant(s)
                }
            }
        )*};
    }
    typed!(f32 => F32, f16 => F16, bf16 => Bf16, BlockQ8_0 => Q8_0);
}
pub(crate) use sealed::Typed;

/// A type K or V may be stored in: `f32`, [`f16`](struct@f16), [`bf16`] or [`BlockQ8_0`]. Sealed: the
/// kernel has a load for each.
pub trait KvType: sealed::Sealed + bytemuck::Pod + Send + Sync + 'static {
    /// The type, named at run time.
    const KIND: KvKind;
}

impl KvType for f32 {
    const KIND: KvKind = KvKind::F32;
}
impl KvType for f16 {
    const KIND: KvKind = KvKind::F16;
}
impl KvType for bf16 {
    const KIND: KvKind = KvKind::Bf16;
}
impl KvType for BlockQ8_0 {
    const KIND: KvKind = KvKind::Q8_0;
}

/// `row` as `f32`s when `T` is `f32` (the kernel then reads the caller's memory as it is).
#[inline(always)]
pub(crate) fn as_f32<T: KvType>(row: &[T]) -> Option<&[f32]> {
    match T::KIND {
        KvKind::F32 => bytemuck::try_cast_slice(row).ok(),
        _ => None,
    }
}

/// The value of column `col` of a row that starts at `row[0]`, decoded exactly (`None` past
/// the slice).
#[inline(always)]
pub(crate) fn value<T: KvType>(row: &[T], col: usize) -> Option<f32> {
    let bytes: &[u8] = bytemuck::cast_slice(row);
    let half = |at: usize| Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    match T::KIND {
        KvKind::F32 => as_f32(row)?.get(col).copied(),
        KvKind::F16 => Some(f16::from_bits(half(2 * col)?).to_f32()),
        KvKind::Bf16 => Some(bf16::from_bits(half(2 * col)?).to_f32()),
        KvKind::Q8_0 => {
            let block: &[BlockQ8_0] = bytemuck::try_cast_slice(row).ok()?;
            let b = block.get(col / Q8_0_VALUES)?;
            Some(b.d.to_f32() * b.qs[col % Q8_0_VALUES] as f32)
        }
    }
}

/// The byte at which column `col` of the row at `row` is stored: a pointer for a prefetch or
/// a load (no access here).
#[inline(always)]
pub(crate) fn value_ptr<T: KvType>(row: *const T, col: usize) -> *const u8 {
    match T::KIND {
        KvKind::Q8_0 => {
            let block = row.wrapping_add(col / Q8_0_VALUES) as *const u8;
            block.wrapping_add(2 + col % Q8_0_VALUES)
        }
        kind => (row as *const u8).wrapping_add(col * kind.bytes()),
    }
}

/// Values between the decode paths' prefetches: a 64-byte line's worth, and one per q8_0
/// block (34 bytes, so every line a row touches is asked for although rows and blocks do
/// not start on lines).
pub(crate) const fn line_values(kind: KvKind) -> usize {
    match kind {
        KvKind::F32 => 16,
        KvKind::F16 | KvKind::Bf16 => 32,
        KvKind::Q8_0 => Q8_0_VALUES,
    }
}

/// The `lanes` values of columns `col..col + lanes` of the row at `row`, widened to `f32` in
/// registers. `col` is a multiple of the lanes (so a `q8_0` vector never straddles blocks:
/// every lane count divides 32).
///
/// # Safety
/// Columns `col..col + S::F32_LANES` of the row are readable.
#[inline(always)]
pub(crate) unsafe fn load<S: Widen, T: KvType>(simd: S, row: *const T, col: usize) -> S::f32s {
    let at = value_ptr(row, col);
    // SAFETY: in every arm, the caller's guarantee, for the bytes of those columns, which
    // start at `at`; the scale of a q8_0 block is the two bytes before its first value.
    unsafe {
        match T::KIND {
            KvKind::F32 => crate::kernel::mem::read_vector::<S>((row as *const f32).add(col)),
            KvKind::F16 => simd.widen_f16(at as *const u16),
            KvKind::Bf16 => simd.widen_bf16(at as *const u16),
            KvKind::Q8_0 => {
                let block = row.add(col / Q8_0_VALUES) as *const BlockQ8_0;
                let d = simd.splat_f16(core::ptr::addr_of!((*block).d).read_unaligned().to_bits());
                simd.mul_f32s(simd.widen_i8(at as *const i8), d)
            }
        }
    }
}

/// Columns `col..col + n` (`n < lanes`) of `row`, zeros after: the tail of a row whose length
/// is not a multiple of the lanes. `row` holds the whole row; columns past it read as 0.
#[inline(always)]
pub(crate) fn load_tail<S: Widen, T: KvType>(simd: S, row: &[T], col: usize, n: usize) -> S::f32s {
    let n = n.min(S::F32_LANES);
    // f32 rows load as they are, as the P·V tiles' panel tails did before the types.
    if let Some(tail) = as_f32(row).and_then(|r| r.get(col..col + n)) {
        return simd.partial_load_f32s(tail);
    }
    let mut buf = [0.0f32; 16];
    for (i, b) in buf.iter_mut().enumerate().take(n) {
        *b = value(row, col + i).unwrap_or(0.0);
    }
    simd.partial_load_f32s(&buf[..n])
}

/// Writes columns `col..col + dst.len()` of `row` into `dst` as `f32`, whole vectors widened in
/// registers and the tail one value at a time. `row` holds the whole row.
#[inline(always)]
pub(crate) fn widen_row<S: Widen, T: KvType>(simd: S, row: &[T], col: usize, dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let (vectors, tail) = S::as_mut_simd_f32s(dst);
    let full = vectors.len() * lanes;
    let in_row = full == 0 || value(row, col + full - 1).is_some();
    if in_row && col.is_multiple_of(lanes) {
        let mut loads = RowLoads::<S, T, 1>::new(simd, [row.as_ptr()]);
        for (c, d) in vectors.iter_mut().enumerate() {
            // SAFETY: columns col + c·lanes .. + lanes are inside `row`: its value at
            // col + full − 1 exists, and a row's values are contiguous.
            [*d] = unsafe { loads.at(simd, col + c * lanes) };
        }
    } else {
        let flat: &mut [f32] = bytemuck::cast_slice_mut(vectors);
        for (i, d) in flat.iter_mut().enumerate() {
            *d = value(row, col + i).unwrap_or(0.0);
        }
    }
    for (i, d) in tail.iter_mut().enumerate() {
        *d = value(row, col + full + i).unwrap_or(0.0);
    }
}

/// Loads of the same columns of `X` rows stored as `T`, for columns visited in increasing
/// order: the decode tiles' reads. A q8_0 block's scale is widened once per block and row,
/// not once per vector.
pub(crate) struct RowLoads<S: Widen, T, const X: usize> {
    rows: [*const T; X],
    /// The q8_0 block whose scales are in `scales` and whose values start at `values`
    /// (`usize::MAX`: none yet).
    block: usize,
    scales: [S::f32s; X],
    values: [*const i8; X],
}

impl<S: Widen, T: KvType, const X: usize> RowLoads<S, T, X> {
    /// Loads of `rows` (nothing is read yet).
    #[inline(always)]
    pub fn new(simd: S, rows: [*const T; X]) -> Self {
        RowLoads {
            rows,
            block: usize::MAX,
            scales: [simd.splat_f32s(0.0); X],
            values: [core::ptr::null(); X],
        }
    }

    /// Columns `col..col + lanes` of every row, widened ([`load`]).
    ///
    /// # Safety
    /// As [`load`], for every row.
    #[inline(always)]
    pub unsafe fn at(&mut self, simd: S, col: usize) -> [S::f32s; X] {
        if T::KIND == KvKind::Q8_0 && col / Q8_0_VALUES != self.block {
            // SAFETY: the caller's guarantee covers the block holding `col`.
            unsafe { self.line(simd, col) };
        }
        // SAFETY: the caller's guarantee; `col`'s block was entered just above.
        unsafe { self.get(simd, col) }
    }

    /// Enters the line ([`line_values`]) holding column `col`: for q8_0, the block whose scale
    /// [`RowLoads::get`] multiplies by; nothing for the other types.
    ///
    /// # Safety
    /// For q8_0, the block holding column `col` of every row is readable.
    #[inline(always)]
    pub unsafe fn line(&mut self, simd: S, col: usize) {
        if T::KIND != KvKind::Q8_0 {
            return;
        }
        let block = col / Q8_0_VALUES;
        self.block = block;
        for x in 0..X {
            let b = self.rows[x].wrapping_add(block) as *const BlockQ8_0;
            // SAFETY: the block holding column `col` is readable (the caller's guarantee).
            let d = unsafe { core::ptr::addr_of!((*b).d).read_unaligned() };
            self.scales[x] = simd.splat_f16(d.to_bits());
            self.values[x] = value_ptr(b, 0) as *const i8;
        }
    }

    /// Columns `col..col + lanes` of every row, widened, `col` in the line last entered
    /// ([`RowLoads::line`]; any column for types other than q8_0).
    ///
    /// # Safety
    /// As [`load`], for every row; for q8_0, `col`'s block is the one last entered.
    #[inline(always)]
    pub unsafe fn get(&self, simd: S, col: usize) -> [S::f32s; X] {
        if T::KIND != KvKind::Q8_0 {
            // SAFETY: the caller's guarantee.
            return core::array::from_fn(|x| unsafe { load::<S, T>(simd, self.rows[x], col) });
        }
        core::array::from_fn(|x| {
            let qs = self.values[x].wrapping_add(col % Q8_0_VALUES);
            // SAFETY: the caller's guarantee, for the values of those columns.
            simd.mul_f32s(unsafe { simd.widen_i8(qs) }, self.scales[x])
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{Emulated, Level, Mask, Params, Shape};

    fn to<T: KvType>(x: &[f32], f: fn(f32) -> T) -> Vec<T> {
        x.iter().map(|&x| f(x)).collect()
    }

    fn q8(x: &[f32]) -> Vec<BlockQ8_0> {
        x.chunks_exact(Q8_0_VALUES)
            .map(|c| BlockQ8_0::quantize(c.try_into().unwrap_or(&[0.0; Q8_0_VALUES])))
            .collect()
    }

    /// Each type on each side, decode (the tiles that widen in registers, a key block past
    /// the prefetch distance) and a packed block (the widened tile), on the scalar level and
    /// every emulated width, against the reference on the same stored values. Small enough
    /// for Miri, which runs it on every load path's unsafe code (`tests/kv_types.rs` is the
    /// thorough version).
    #[test]
    fn every_type_on_each_side_matches_the_reference() {
        let levels = [
            Level::Isa(crate::Isa::Scalar),
            Level::Emulated(Emulated::Lanes4),
            Level::Emulated(Emulated::Lanes16),
        ];
        // Decode over a key block past the prefetch distance (24 keys), and a packed block.
        let decode = match cfg!(miri) {
            true => Shape::new(2, 1, 26, 32).gqa(2, 1),
            false => Shape::new(2, 1, 30, 64).gqa(2, 1),
        };
        for shape in [decode, Shape::new(1, 6, 9, 32)] {
            let n = |len: usize, s: f32| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0 * s)
                    .collect()
            };
            let s = shape;
            let q = n(s.q_heads * s.q_len * s.head_dim, 1.0);
            let k = n(s.kv_heads * s.kv_len * s.head_dim, 0.5);
            let v = n(s.kv_heads * s.kv_len * s.v_dim, 1.0);
            let p = Params::new(shape).with_mask(Mask::causal());
            let out_len = s.q_heads * s.q_len * s.v_dim;
            let check = |got: &[f32], want: &[f32]| {
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
                }
            };
            let (k16, vb, k8, v8) = (
                to(&k, f16::from_f32),
                to(&v, bf16::from_f32),
                q8(&k),
                q8(&v),
            );
            let mut want = std::vec![0.0f32; out_len];
            let mut got = std::vec![0.0f32; out_len];
            for (n, level) in levels.into_iter().enumerate() {
                // Under Miri (minutes per call) each level takes one of the two pairs, in turn:
                // every type is still read on each side, by the scalar and the emulated loads.
                if !cfg!(miri) || n % 2 == 0 {
                    let p8k = p.with_kv_units::<BlockQ8_0, bf16>();
                    crate::reference::attention(&p8k, &q, &k8, &vb, &mut want, None).unwrap();
                    level.attention(&p8k, &q, &k8, &vb, &mut got, None).unwrap();
                    check(&got, &want);
                }
                if !cfg!(miri) || n % 2 == 1 {
                    let p8v = p.with_kv_units::<f16, BlockQ8_0>();
                    crate::reference::attention(&p8v, &q, &k16, &v8, &mut want, None).unwrap();
                    level
                        .attention(&p8v, &q, &k16, &v8, &mut got, None)
                        .unwrap();
                    check(&got, &want);
                }
            }
        }
    }
}
