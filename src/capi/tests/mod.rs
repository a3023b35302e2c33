//! Unit tests of the C ABI: names, statuses, descriptor versions, NULL and aliasing
//! pointers; `errors.rs` tests the one `Error` → status mapping from every entry point,
//! `types.rs` the K/V types: every pair through every entry point against the Rust call,
//! and their statuses, and `ragged.rs` the ragged batches against their sequences alone.

mod errors;
#[cfg(feature = "capi-ragged")]
mod ragged;
mod types;

use super::*;
use crate::{Mask, Params, Shape};
use core::ffi::CStr;
use core::mem::size_of;
use core::ptr;
extern crate std;
use std::{vec, vec::Vec};

#[test]
fn isa_names_match() {
    for isa in Isa::ALL {
        // SAFETY: `qkv_isa_name` returns a static C string.
        let name = unsafe { CStr::from_ptr(qkv_isa_name(isa as i32)) };
        assert_eq!(name.to_str().unwrap(), isa.name());
    }
}

#[test]
fn statuses_are_dense_and_described() {
    for (i, &s) in ALL_STATUSES.iter().enumerate() {
        assert_eq!(s, i as i32);
        // SAFETY: `qkv_status_str` returns a static C string.
        let text = unsafe { CStr::from_ptr(qkv_status_str(s)) };
        assert_ne!(text.to_bytes(), b"unknown status");
    }
}

/// Deterministic inputs in `[-0.5, 0.5)`.
pub(super) use crate::test_data::values as data;

/// The planar 2×3×5×4 shape with an explicit scale (the default's `sqrtf` is inline
/// assembly, which Miri cannot run).
pub(super) fn desc() -> QkvDesc {
    QkvDesc {
        flags: QKV_FLAG_SCALE,
        scale: 0.5,
        ..QkvDesc::planar(2, 2, 3, 5, 4, 4)
    }
}

/// Calls `qkv_attention_f32` on `desc` with fresh buffers for the planar 2×3×5×4 shape.
fn call(desc: *const QkvDesc) -> (QkvStatus, Vec<f32>) {
    let (q, k, v) = (data(24, 1), data(40, 2), data(40, 3));
    let mut out = vec![7.0; 24];
    // SAFETY: the buffers hold the extents of the planar shape every caller here uses.
    let s = unsafe {
        qkv_attention_f32(
            desc,
            q.as_ptr(),
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            out.as_mut_ptr(),
            ptr::null_mut(),
        )
    };
    (s, out)
}

#[test]
fn same_result_as_rust() {
    let d = QkvDesc {
        mask: QKV_MASK_CAUSAL,
        ..desc()
    };
    let (s, out) = call(&d);
    assert_eq!(s, QKV_OK);
    let p = Params::new(Shape::new(2, 3, 5, 4))
        .with_mask(Mask::causal())
        .with_scale(0.5);
    let mut want = vec![0.0; 24];
    crate::attention(
        &p,
        &data(24, 1),
        &data(40, 2),
        &data(40, 3),
        &mut want,
        None,
    )
    .unwrap();
    assert_eq!(out, want);
}

#[test]
fn struct_sizes() {
    #[repr(C)]
    struct Newer {
        d: QkvDesc,
        extra: [u8; 8],
    }
    let mut n = Newer {
        d: desc(),
        extra: [0; 8],
    };
    n.d.struct_size = size_of::<Newer>();
    // A pointer to the whole struct: the library reads past `d`.
    assert_eq!(call(ptr::from_ref(&n).cast()).0, QKV_OK);
    n.extra[7] = 1;
    assert_eq!(call(ptr::from_ref(&n).cast()).0, QKV_ERR_STRUCT_SIZE);
    for size in [0, QKV_DESC_SIZE_V1 - 1, QKV_DESC_MAX_SIZE + 1, usize::MAX] {
        let d = QkvDesc {
            struct_size: size,
            ..desc()
        };
        let (s, out) = call(&d);
        assert_eq!(s, QKV_ERR_STRUCT_SIZE);
        assert!(out.iter().all(|&x| x == 7.0));
    }
    assert_eq!(call(ptr::null()).0, QKV_ERR_NULL_POINTER);
}

#[test]
fn in_place_is_refused() {
    let d = desc();
    let mut buf = data(40, 4);
    let p = buf.as_mut_ptr();
    // SAFETY: `buf` holds the extents of every tensor; the call refuses before touching it.
    let s = unsafe { qkv_attention_f32(&d, p, p.cast(), p.cast(), p, ptr::null_mut()) };
    assert_eq!(s, QKV_ERR_ALIASING);
}

#[test]
fn version_matches_cargo() {
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
    let (a, b, c) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert_eq!(qkv_version(), (a << 16) | (b << 8) | c);
}

/// With `q_len = 0` the extents of `q`, `out`, `lse` and `bias` are 0, so those pointers may
/// be NULL; those of `k` and `v` do not depend on `q_len`, so they may not (unless
/// `kv_len = 0`), and a nonzero count makes any pointer required.
#[test]
fn which_pointers_may_be_null() {
    let (k, v) = (data(40, 2), data(40, 3));
    let null = ptr::null::<f32>();
    let call = |d: &QkvDesc, k: *const f32, v: *const f32| {
        // SAFETY: `k` and `v` are NULL or hold the 40 floats of a 2×5×4 planar tensor; every
        // other extent is 0.
        unsafe {
            qkv_attention_f32(
                d,
                null,
                k.cast(),
                v.cast(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        }
    };
    let no_queries = QkvDesc {
        bias: null,
        ..QkvDesc::planar(2, 2, 0, 5, 4, 4)
    };
    assert_eq!(call(&no_queries, k.as_ptr(), v.as_ptr()), QKV_OK);
    assert_eq!(call(&no_queries, null, v.as_ptr()), QKV_ERR_NULL_POINTER);
    assert_eq!(call(&no_queries, k.as_ptr(), null), QKV_ERR_NULL_POINTER);
    let counted = QkvDesc {
        q_count: 1,
        ..no_queries
    };
    assert_eq!(call(&counted, k.as_ptr(), v.as_ptr()), QKV_ERR_NULL_POINTER);
    let no_keys = QkvDesc::planar(2, 2, 0, 0, 4, 4);
    assert_eq!(call(&no_keys, null, null), QKV_OK);
}

/// A second-version descriptor (before the softmax variants) ignores whatever lies past its
/// size, and a third-version one with the variant fields zero is the same call.
#[test]
fn a_second_version_descriptor_has_no_variants() {
    let sinks = [5.0f32; 16];
    let with = QkvDesc {
        sinks: sinks.as_ptr(),
        softcap: 0.25,
        ..desc()
    };
    let old = QkvDesc {
        struct_size: QKV_DESC_SIZE_V2,
        ..with
    };
    let (s, out) = call(&old);
    assert_eq!(s, QKV_OK);
    assert_eq!(call(&desc()), (QKV_OK, out));
    let (s, varied) = call(&with);
    assert_eq!(s, QKV_OK);
    assert_ne!(varied, call(&desc()).1);
}
