//! The storage types of K and V in the C ABI: the `QKV_TYPE_*` values of
//! [`QkvDesc::k_type`](super::QkvDesc::k_type) and [`QkvDesc::v_type`](super::QkvDesc::v_type),
//! which of them this build dispatches to (the `kv-*` features), and [`with_kv!`], the one
//! place where a call's run-time types become the type parameters of the generic Rust call.

use core::mem::align_of;

use super::{QKV_ERR_TYPE, QkvStatus};
use crate::{BlockQ8_0, KvKind, bf16, f16};

/// [`QkvDesc::k_type`](super::QkvDesc::k_type) / `v_type`: `float` (the zero value, and what a
/// descriptor older than these fields means).
pub const QKV_TYPE_F32: u32 = KvKind::F32 as u32;
/// `k_type` / `v_type`: IEEE binary16 ([`f16`](struct@f16)), 2 bytes, aligned to 2 (feature `kv-f16`).
pub const QKV_TYPE_F16: u32 = KvKind::F16 as u32;
/// `k_type` / `v_type`: bfloat16 ([`bf16`]), 2 bytes, aligned to 2 (feature `kv-bf16`).
pub const QKV_TYPE_BF16: u32 = KvKind::Bf16 as u32;
/// `k_type` / `v_type`: ggml's `block_q8_0` ([`BlockQ8_0`]): 34-byte blocks of 32 values,
/// aligned to 2; strides, counts and extents count blocks (feature `kv-q8_0`).
pub const QKV_TYPE_Q8_0: u32 = KvKind::Q8_0 as u32;

/// Whether this build's C ABI dispatches to `kind` (`f32` always; the others with their
/// `kv-*` feature).
pub const fn enabled(kind: KvKind) -> bool {
    match kind {
        KvKind::F32 => true,
        KvKind::F16 => cfg!(feature = "kv-f16"),
        KvKind::Bf16 => cfg!(feature = "kv-bf16"),
        KvKind::Q8_0 => cfg!(feature = "kv-q8_0"),
    }
}

/// The kind a `k_type` / `v_type` value names: [`QKV_ERR_TYPE`] for a value that is no
/// `QKV_TYPE_*`, or one this build leaves out.
pub(crate) fn kind(value: u32) -> Result<KvKind, QkvStatus> {
    match KvKind::from_u32(value) {
        Some(kind) if enabled(kind) => Ok(kind),
        _ => Err(QKV_ERR_TYPE),
    }
}

/// The alignment the pointer contract asks of a pointer to elements of `kind`: that of the
/// Rust type (4 for `float`, 2 for the others).
pub(crate) const fn align(kind: KvKind) -> usize {
    match kind {
        KvKind::F32 => align_of::<f32>(),
        KvKind::F16 => align_of::<f16>(),
        KvKind::Bf16 => align_of::<bf16>(),
        KvKind::Q8_0 => align_of::<BlockQ8_0>(),
    }
}

/// K or V of a call as a slice of its type: one variant per type this build dispatches to.
#[derive(Clone, Copy)]
pub(crate) enum KvSlice<'a> {
    /// `QKV_TYPE_F32`.
    F32(&'a [f32]),
    /// `QKV_TYPE_F16`.
    #[cfg(feature = "kv-f16")]
    F16(&'a [f16]),
    /// `QKV_TYPE_BF16`.
    #[cfg(feature = "kv-bf16")]
    Bf16(&'a [bf16]),
    /// `QKV_TYPE_Q8_0`.
    #[cfg(feature = "kv-q8_0")]
    Q8_0(&'a [BlockQ8_0]),
}

/// `with_kv!([k, v], |k, v| body)`: evaluates `body` with `k` and `v` bound to the two
/// [`KvSlice`]s as slices of their own types: the one run-time dispatch of the C ABI over
/// `(k_type, v_type)`, used by every entry point that takes K and V. `body` is instantiated
/// once per pair of types this build has (1, 4, 9 or 16), each a call of the generic Rust
/// entry point; a firmware build without the `kv-*` features has only the `f32` one.
impl<'a> KvSlice<'a> {
    /// The slice from element `at` (block, for q8_0), as [`range::from`](crate::range::from).
    pub(crate) fn from(self, at: usize) -> KvSlice<'a> {
        use crate::range::from;
        match self {
            KvSlice::F32(x) => KvSlice::F32(from(x, at)),
            #[cfg(feature = "kv-f16")]
            KvSlice::F16(x) => KvSlice::F16(from(x, at)),
            #[cfg(feature = "kv-bf16")]
            KvSlice::Bf16(x) => KvSlice::Bf16(from(x, at)),
            #[cfg(feature = "kv-q8_0")]
            KvSlice::Q8_0(x) => KvSlice::Q8_0(from(x, at)),
        }
    }
}

macro_rules! with_kv {
    ($kv:expr, |$k:ident, $v:ident| $body:expr) => {{
        let [k_slice, v_slice]: [$crate::capi::types::KvSlice<'_>; 2] = $kv;
        $crate::capi::types::with_kv!(@one k_slice, |$k| {
            $crate::capi::types::with_kv!(@one v_slice, |$v| $body)
        })
    }};
    (@one $slice:ident, |$x:ident| $body:expr) => {
        match $slice {
            $crate::capi::types::KvSlice::F32($x) => $body,
            #[cfg(feature = "kv-f16")]
            $crate::capi::types::KvSlice::F16($x) => $body,
            #[cfg(feature = "kv-bf16")]
            $crate::capi::types::KvSlice::Bf16($x) => $body,
            #[cfg(feature = "kv-q8_0")]
            $crate::capi::types::KvSlice::Q8_0($x) => $body,
        }
    };
}
pub(crate) use with_kv;
