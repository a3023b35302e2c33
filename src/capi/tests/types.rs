//! K and V stored as `f16`, `bf16` and `q8_0` through the C ABI: every pair of types through
//! every entry point that takes K and V (plan tasks included) gives, bit for bit, what the
//! generic Rust call gives;
//! an unknown type is `QKV_ERR_TYPE` from each of them, with nothing written; a descriptor of
//! the first version (no type fields) still means `f32`; pointers need only their type's
//! alignment, and counts and strides are in the type's elements.

use super::super::*;
use super::data;
use crate::capi_split::*;
use crate::plan::{self, Plan};
use crate::split;
use crate::stream::Stream;
use crate::{BlockQ8_0, KvKind, KvType, Level, Mask, Params, Shape, bf16, f16};
use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
extern crate std;
use std::{vec, vec::Vec};

/// `x` stored as `T` (for `q8_0`, quantised 32 values to a block).
fn store<T: KvType>(x: &[f32]) -> Vec<T> {
    let n = x.len() / T::KIND.values();
    let mut out = vec![T::zeroed(); n];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
    match T::KIND {
        KvKind::F32 => bytes.copy_from_slice(bytemuck::cast_slice(x)),
        KvKind::F16 => {
            for (b, &x) in bytes.chunks_exact_mut(2).zip(x) {
                b.copy_from_slice(&f16::from_f32(x).to_le_bytes());
            }
        }
        KvKind::Bf16 => {
            for (b, &x) in bytes.chunks_exact_mut(2).zip(x) {
                b.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
            }
        }
        KvKind::Q8_0 => {
            for (b, x) in bytes.chunks_exact_mut(34).zip(x.chunks_exact(32)) {
                let block = BlockQ8_0::quantize(x.try_into().unwrap());
                b.copy_from_slice(bytemuck::bytes_of(&block));
            }
        }
    }
    out
}

/// GQA 4/2 heads, 3 queries, 6 keys, `head_dim` 32, `v_dim` 64, causal, scale 0.5 (the
/// default's `sqrtf` is inline assembly, which Miri cannot run).
fn shape() -> Shape {
    Shape {
        v_dim: 64,
        ..Shape::new(2, 3, 6, 32).gqa(4, 2)
    }
}

/// The Rust params of [`shape`] for `K` and `V`, and the same as a C descriptor.
fn problem<K: KvType, V: KvType>() -> (Params<'static>, QkvDesc) {
    let s = shape();
    let p = Params::new(s)
        .with_mask(Mask::causal())
        .with_scale(0.5)
        .with_kv_units::<K, V>();
    let d = QkvDesc {
        k: p.k.into(),
        v: p.v.into(),
        mask: QKV_MASK_CAUSAL,
        flags: QKV_FLAG_SCALE,
        scale: 0.5,
        k_type: K::KIND as u32,
        v_type: V::KIND as u32,
        ..QkvDesc::planar(
            s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim, s.v_dim,
        )
    };
    (p, d)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|x| x.to_bits()).collect()
}

/// A C call on `out`, `lse` and the workspace.
type CCall<'a> = dyn FnMut(*mut f32, *mut f32, *mut f32) -> QkvStatus + 'a;
/// The Rust call on `out`, `lse` and the workspace.
type RustCall<'a> = dyn FnMut(&mut [f32], &mut [f32], &mut [f32]) + 'a;

/// Every entry point that takes K and V, on `K` and `V`: the C result equals the Rust one
/// bit for bit (`out` and `lse`; the stream's through `qkv_stream_finish`).
fn same_as_rust<K: KvType, V: KvType>() {
    let (p, d) = problem::<K, V>();
    let s = p.shape;
    let name = (K::KIND, V::KIND);
    let q = data(s.q_heads * s.q_len * s.head_dim, 1);
    let k: Vec<K> = store(&data(s.kv_heads * s.kv_len * s.head_dim, 2));
    let v: Vec<V> = store(&data(s.kv_heads * s.kv_len * s.v_dim, 3));
    let (n_out, n_lse) = (s.q_heads * s.q_len * s.v_dim, s.q_heads * s.q_len);
    let (kp, vp) = (k.as_ptr().cast::<c_void>(), v.as_ptr().cast::<c_void>());
    if !(crate::capi::types::enabled(K::KIND) && crate::capi::types::enabled(V::KIND)) {
        // A type this build leaves out (its `kv-*` feature is off).
        let mut out = vec![7.0f32; n_out];
        // SAFETY: `d` describes the buffers; refused before any is read.
        let status =
            unsafe { qkv_attention_f32(&d, q.as_ptr(), kp, vp, out.as_mut_ptr(), ptr::null_mut()) };
        assert_eq!(status, QKV_ERR_TYPE, "{name:?}");
        return;
    }
    let ws_len = crate::workspace_len_for(&p, K::KIND, V::KIND);
    // SAFETY: `d` describes `shape()` for these types, which the buffers hold.
    assert_eq!(unsafe { qkv_workspace_size(&d) }, ws_len, "{name:?}");
    // SAFETY: as above.
    let min = unsafe { qkv_workspace_min_size(&d) };
    assert_eq!(min, crate::min_workspace_len_for(&p, K::KIND, V::KIND));
    let mut ws = vec![0.0f32; ws_len];
    let keys = 1..5;

    // One C call and its Rust twin, on fresh outputs.
    let mut check = |what: &str, c: &mut CCall, rust: &mut RustCall| {
        let (mut out, mut lse) = (vec![7.0f32; n_out], vec![7.0f32; n_lse]);
        let status = c(out.as_mut_ptr(), lse.as_mut_ptr(), ws.as_mut_ptr());
        assert_eq!(status, QKV_OK, "{what} {name:?}");
        let (mut want, mut want_lse) = (vec![7.0f32; n_out], vec![7.0f32; n_lse]);
        rust(&mut want, &mut want_lse, &mut ws);
        assert_eq!(bits(&out), bits(&want), "{what} {name:?}: out");
        assert_eq!(bits(&lse), bits(&want_lse), "{what} {name:?}: lse");
    };
    let qp = q.as_ptr();
    let (ks, ke) = (keys.start, keys.end);
    let scalar = Isa::Scalar as i32;
    // The C calls below are safe: `d` describes the buffers; the outputs are fresh vectors of
    // `n_out` and `n_lse` floats and the workspace holds `ws_len`.
    check(
        "attention",
        &mut |o, l, _| {
            // SAFETY: as said above.
            unsafe { qkv_attention_f32(&d, qp, kp, vp, o, l) }
        },
        &mut |o, l, _| crate::attention(&p, &q, &k, &v, o, Some(l)).unwrap(),
    );
    check(
        "attention_ws",
        &mut |o, l, w| {
            // SAFETY: as said above.
            unsafe { qkv_attention_f32_ws(&d, qp, kp, vp, o, l, w, ws_len) }
        },
        &mut |o, l, w| crate::attention_in(w, &p, &q, &k, &v, o, Some(l)).unwrap(),
    );
    check(
        "attention_isa",
        &mut |o, l, _| {
            // SAFETY: as said above.
            unsafe { qkv_attention_f32_isa(scalar, &d, qp, kp, vp, o, l) }
        },
        &mut |o, l, _| Isa::Scalar.attention(&p, &q, &k, &v, o, Some(l)).unwrap(),
    );
    check(
        "reference",
        &mut |o, l, _| {
            // SAFETY: as said above.
            unsafe { qkv_reference_f32(&d, qp, kp, vp, o, l) }
        },
        &mut |o, l, _| crate::reference::attention(&p, &q, &k, &v, o, Some(l)).unwrap(),
    );
    check(
        "partial",
        &mut |o, l, _| {
            // SAFETY: as said above.
            unsafe { qkv_partial_f32(&d, qp, kp, vp, ks, ke, o, l) }
        },
        &mut |o, l, _| split::partial(&p, &q, &k, &v, keys.clone(), o, l).unwrap(),
    );
    check(
        "partial_ws",
        &mut |o, l, w| {
            // SAFETY: as said above.
            unsafe { qkv_partial_f32_ws(&d, qp, kp, vp, ks, ke, o, l, w, ws_len) }
        },
        &mut |o, l, w| {
            split::partial_in(Level::Detect, w, &p, &q, &k, &v, keys.clone(), o, l).unwrap()
        },
    );
    // Streams: keys 0..2, then 2..6 from pointers at that chunk's first row, with and without
    // a workspace.
    let n_state = Stream::state_len(&s);
    let (k2, v2) = (&k[2 * p.k.row_stride..], &v[2 * p.v.row_stride..]);
    for with_ws in [false, true] {
        check(
            "stream",
            &mut |o, l, w| {
                let mut state = vec![0.0f32; n_state];
                let st = state.as_mut_ptr();
                let (k2p, v2p) = (k2.as_ptr().cast(), v2.as_ptr().cast());
                let wl = if with_ws { ws_len } else { 0 };
                // SAFETY: as said above; `k2p` and `v2p` hold the 4 rows of keys 2..6.
                unsafe {
                    assert_eq!(qkv_stream_init(&d, st, n_state), QKV_OK);
                    assert_eq!(
                        qkv_stream_update_ws(&d, st, n_state, qp, kp, vp, 0, 2, w, wl),
                        QKV_OK
                    );
                    assert_eq!(
                        qkv_stream_update_ws(&d, st, n_state, qp, k2p, v2p, 2, 6, w, wl),
                        QKV_OK
                    );
                    qkv_stream_finish(&d, st, n_state, o, l)
                }
            },
            &mut |o, l, w| {
                let mut state = vec![0.0f32; n_state];
                let mut st = Stream::new(&p, &mut state).unwrap();
                if with_ws {
                    st.update_in(w, &q, &k, &v, 0..2).unwrap();
                    st.update_in(w, &q, k2, v2, 2..6).unwrap();
                } else {
                    st.update(&q, &k, &v, 0..2).unwrap();
                    st.update(&q, k2, v2, 2..6).unwrap();
                }
                st.finish(o, Some(l)).unwrap();
            },
        );
    }
    // Plans: the automatic one for two threads (one task per kv head) and one of 2-row,
    // 2-key tasks (row blocks and key splits merged by the finish), each task run without
    // and with a workspace.
    let auto = Plan::auto(&s, 2);
    for pl in [
        auto,
        Plan {
            q_block: 2,
            kv_block: 2,
        },
    ] {
        let c_plan = QkvPlan {
            q_block: pl.q_block,
            kv_block: pl.kv_block,
            tasks: pl.tasks(&s),
            partial_len: pl.partial_len(&s),
        };
        assert!(c_plan.tasks > 0, "{name:?}");
        for with_ws in [false, true] {
            check(
                "plan",
                &mut |o, l, w| {
                    let mut partial = vec![0.0f32; c_plan.partial_len];
                    let part = partial.as_mut_ptr();
                    let (w, wl) = if with_ws {
                        (w, ws_len)
                    } else {
                        (ptr::null_mut(), 0)
                    };
                    // SAFETY: as said above; `partial` holds the plan's `partial_len` floats.
                    unsafe {
                        for t in 0..c_plan.tasks {
                            let status = qkv_plan_run_task(&c_plan, &d, qp, kp, vp, t, part, w, wl);
                            assert_eq!(status, QKV_OK, "plan task {t} {name:?}");
                        }
                        qkv_plan_finish(&c_plan, &d, part, o, l)
                    }
                },
                &mut |o, l, w| {
                    let mut partial = vec![0.0f32; pl.partial_len(&s)];
                    for t in 0..pl.tasks(&s) {
                        let part = &mut partial[pl.task_partial(&s, t).unwrap()];
                        let level = Level::Detect;
                        match with_ws {
                            false => plan::run_task(level, pl, &p, &q, &k, &v, t, part),
                            true => plan::run_task_in(level, w, pl, &p, &q, &k, &v, t, part),
                        }
                        .unwrap();
                    }
                    plan::finish(pl, &p, &partial, o, Some(l)).unwrap();
                },
            );
        }
    }
}

/// `same_as_rust` for every pair of the listed types.
macro_rules! every_pair {
    ($($k:ty),*; $vs:tt) => {
        $( every_pair!(@k $k; $vs); )*
    };
    (@k $k:ty; [$($v:ty),*]) => {
        $( same_as_rust::<$k, $v>(); )*
    };
}

#[test]
fn every_type_pair_equals_the_rust_call() {
    if cfg!(miri) {
        // Every type on each side once: all sixteen pairs run far longer than the other
        // unit tests under Miri.
        same_as_rust::<f32, BlockQ8_0>();
        same_as_rust::<f16, bf16>();
        same_as_rust::<BlockQ8_0, f16>();
        same_as_rust::<bf16, f32>();
        return;
    }
    every_pair!(f32, f16, bf16, BlockQ8_0; [f32, f16, bf16, BlockQ8_0]);
}

/// An unknown `k_type` or `v_type` is `QKV_ERR_TYPE` from every entry point that takes K
/// and V, before any pointer is looked at and with nothing written; the workspace sizes are
/// 0. The entry points without K and V ignore the types.
#[test]
fn unknown_types_are_refused_everywhere() {
    let (_, good) = problem::<f32, f32>();
    let s = shape();
    let big = 4096;
    let (q, k, v) = (data(big, 1), data(big, 2), data(big, 3));
    let (qp, kp, vp) = (q.as_ptr(), k.as_ptr().cast(), v.as_ptr().cast());
    for (kt, vt) in [(4, 0), (0, 4), (u32::MAX, 1), (3, 0x100)] {
        let d = QkvDesc {
            k_type: kt,
            v_type: vt,
            ..good
        };
        // SAFETY: `d` is a valid descriptor; the workspace sizes read nothing else.
        unsafe {
            assert_eq!(qkv_workspace_size(&d), 0);
            assert_eq!(qkv_workspace_min_size(&d), 0);
        }
        let mut out = vec![7.0f32; big];
        let mut lse = vec![7.0f32; big];
        let mut ws = vec![7.0f32; big];
        let mut state = vec![0.0f32; big];
        let (o, l, w, st) = (
            out.as_mut_ptr(),
            lse.as_mut_ptr(),
            ws.as_mut_ptr(),
            state.as_mut_ptr(),
        );
        let null = ptr::null();
        // SAFETY: every buffer holds `big` floats, more than any extent of `shape()`; NULL
        // K and V are refused (after the type) before they are read.
        unsafe {
            assert_eq!(
                qkv_stream_init(&d, st, big),
                QKV_OK,
                "init ignores the types"
            );
            let calls = [
                qkv_attention_f32(&d, qp, kp, vp, o, l),
                qkv_attention_f32(&d, qp, null, null, o, l),
                qkv_attention_f32_ws(&d, qp, kp, vp, o, l, w, big),
                qkv_attention_f32_isa(0, &d, qp, kp, vp, o, l),
                qkv_reference_f32(&d, qp, kp, vp, o, l),
                qkv_partial_f32(&d, qp, kp, vp, 0, 3, o, l),
                qkv_partial_f32_ws(&d, qp, kp, vp, 0, 3, o, l, w, big),
                qkv_stream_update(&d, st, big, qp, kp, vp, 0, 3),
                qkv_stream_update_ws(&d, st, big, qp, kp, vp, 0, 3, w, big),
            ];
            for (n, status) in calls.into_iter().enumerate() {
                assert_eq!(status, QKV_ERR_TYPE, "call {n}, types {kt} {vt}");
            }
            assert!(out.iter().chain(&lse).chain(&ws).all(|&x| x == 7.0));
            // No key was fed: finishing gives zero rows and -inf, whatever the types say.
            assert_eq!(qkv_stream_finish(&d, st, big, o, l), QKV_OK);
            assert!(
                out[..s.q_heads * s.q_len * s.v_dim]
                    .iter()
                    .all(|&x| x == 0.0)
            );
            let mut merged = vec![0.0f32; big];
            let mb = merged.as_mut_ptr();
            assert_eq!(
                qkv_merge_f32(&d, mb, w, o, l),
                QKV_OK,
                "merge ignores the types"
            );
        }
    }
}

/// A descriptor of the first version (`struct_size` = `QKV_DESC_SIZE_V1`, no type fields)
/// means `f32` K and V, whatever lies in memory where the fields would be.
#[test]
fn a_first_version_descriptor_means_f32() {
    let (p, d) = problem::<f32, f32>();
    let s = p.shape;
    let old = QkvDesc {
        struct_size: QKV_DESC_SIZE_V1,
        // Past `struct_size`: never read.
        k_type: QKV_TYPE_Q8_0,
        v_type: 99,
        ..d
    };
    let (q, k, v) = (data(384, 1), data(384, 2), data(768, 3)); // the extents
    let run = |d: &QkvDesc| {
        let mut out = vec![7.0f32; s.q_heads * s.q_len * s.v_dim];
        // SAFETY: the buffers hold the extents of `shape()` with `f32` K and V.
        let status = unsafe {
            qkv_attention_f32(
                d,
                q.as_ptr(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        (status, bits(&out))
    };
    assert_eq!(run(&old), run(&d));
    assert_eq!(run(&old).0, QKV_OK);
    // SAFETY: valid descriptors.
    unsafe {
        assert_eq!(qkv_workspace_size(&old), crate::workspace_len(&p));
        assert_eq!(qkv_workspace_min_size(&old), crate::min_workspace_len(&p));
    }
    assert_eq!(size_of::<QkvDesc>(), QKV_DESC_SIZE_V4);
    assert_eq!(QKV_DESC_SIZE_V2, QKV_DESC_SIZE_V1 + 8);
}

/// Pointers to K and V need their type's alignment only (2 for the 16-bit types and `q8_0`
/// blocks), counts are in elements, and aliasing is judged in bytes.
#[test]
fn pointers_counts_and_aliasing_in_elements() {
    let (_, d) = problem::<f16, BlockQ8_0>();
    let s = shape();
    let q = data(s.q_heads * s.q_len * s.head_dim, 1);
    // One more element than needed, so that each pointer can move by one.
    let k: Vec<f16> = store(&data(s.kv_heads * s.kv_len * s.head_dim + 32, 2));
    let v: Vec<BlockQ8_0> = store(&data(s.kv_heads * s.kv_len * s.v_dim + 32, 3));
    let blocks = s.kv_heads * s.kv_len * s.v_dim / 32;
    let mut out = vec![7.0f32; s.q_heads * s.q_len * s.v_dim];
    let call = |d: &QkvDesc, k: *const c_void, v: *const c_void, out: *mut f32| {
        // SAFETY: `k` and `v` point into buffers one element longer than the extents of `d`;
        // `out` is `out` or (refused before any write) inside `v`.
        unsafe { qkv_attention_f32(d, q.as_ptr(), k, v, out, ptr::null_mut()) }
    };
    let (kp, vp) = (k.as_ptr().cast::<u8>(), v.as_ptr().cast::<u8>());
    let o = out.as_mut_ptr();
    assert_eq!(call(&d, kp.wrapping_add(2).cast(), vp.cast(), o), QKV_OK);
    assert_eq!(call(&d, kp.cast(), vp.wrapping_add(34).cast(), o), QKV_OK);
    assert_eq!(
        call(&d, kp.wrapping_add(1).cast(), vp.cast(), o),
        QKV_ERR_MISALIGNED
    );
    assert_eq!(
        call(&d, kp.cast(), vp.wrapping_add(1).cast(), o),
        QKV_ERR_MISALIGNED
    );
    let short = QkvDesc {
        v_count: blocks - 1,
        ..d
    };
    assert_eq!(call(&short, kp.cast(), vp.cast(), o), QKV_ERR_TOO_SHORT);
    let exact = QkvDesc {
        v_count: blocks,
        ..d
    };
    assert_eq!(call(&exact, kp.cast(), vp.cast(), o), QKV_OK);
    // `out` starting inside the last block of `v` (4-aligned: the block at 34·(blocks-1)
    // bytes plus 2 or 0).
    let last = 34 * (blocks - 1);
    let inside = vp.wrapping_add(last + (4 - (vp as usize + last) % 4) % 4);
    assert_eq!(
        call(&d, kp.cast(), vp.cast(), inside.cast_mut().cast()),
        QKV_ERR_ALIASING
    );
    assert!(
        out.iter().all(|&x| x != 7.0),
        "the successful calls wrote out"
    );
}
