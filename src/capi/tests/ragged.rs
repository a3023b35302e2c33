//! Ragged batches through the C ABI: `qkv_attention_ragged_f32` gives every sequence the
//! bits `qkv_attention_f32` gives it alone (GQA, causal, `f32` and `f16` K/V, `lse` and
//! not), `qkv_attention_ragged_parallel_f32` the same within the merge's rounding; the
//! offsets' statuses (bad offsets, NULL, misaligned, aliasing the outputs), with nothing
//! written.

use super::super::*;
use super::data;
use crate::{KvKind, f16};
use core::ffi::c_void;
use core::ptr;
extern crate std;
use std::{vec, vec::Vec};

/// Three sequences (one without queries): query rows and keys, cumulative.
const CU_Q: [usize; 4] = [0, 3, 3, 8];
const CU_K: [usize; 4] = [0, 6, 10, 19];
const Q_HEADS: usize = 4;
const KV_HEADS: usize = 2;
const DIM: usize = 8;

/// The packed problem's descriptor (interleaved `[total][heads][dim]`, causal, scale 0.5:
/// the default's `sqrtf` is inline assembly, which Miri cannot run), or that of one sequence
/// of `q_len` rows over `kv_len` keys, K and V stored as `kind`.
fn desc(q_len: usize, kv_len: usize, kind: KvKind) -> QkvDesc {
    let interleaved = |heads| QkvLayout {
        head_stride: DIM,
        row_stride: heads * DIM,
    };
    QkvDesc {
        q: interleaved(Q_HEADS),
        k: interleaved(KV_HEADS),
        v: interleaved(KV_HEADS),
        out: interleaved(Q_HEADS),
        mask: QKV_MASK_CAUSAL,
        flags: QKV_FLAG_SCALE,
        scale: 0.5,
        k_type: kind as u32,
        v_type: kind as u32,
        ..QkvDesc::planar(Q_HEADS, KV_HEADS, q_len, kv_len, DIM, DIM)
    }
}

/// The packed inputs: `q`, and `k` and `v` as floats and as halves (`kind` says which the
/// calls read).
struct Inputs {
    q: Vec<f32>,
    kv32: [Vec<f32>; 2],
    kv16: [Vec<f16>; 2],
    kind: KvKind,
}

impl Inputs {
    fn new(kind: KvKind) -> Inputs {
        let (total_q, total_k) = (CU_Q[3], CU_K[3]);
        let kv32 = [2, 3].map(|seed| data(total_k * KV_HEADS * DIM, seed));
        let kv16 = kv32
            .each_ref()
            .map(|x| x.iter().map(|&x| f16::from_f32(x)).collect());
        Inputs {
            q: data(total_q * Q_HEADS * DIM, 1),
            kv32,
            kv16,
            kind,
        }
    }

    /// K and V from key `key` on, as `kind`.
    fn kv(&self, key: usize) -> (*const c_void, *const c_void) {
        let at = key * KV_HEADS * DIM;
        let [k, v] = match self.kind {
            KvKind::F16 => self.kv16.each_ref().map(|x| x[at..].as_ptr().cast()),
            _ => self.kv32.each_ref().map(|x| x[at..].as_ptr().cast()),
        };
        (k, v)
    }
}

type Ragged = unsafe extern "C" fn(
    *const QkvDesc,
    *const usize,
    *const usize,
    usize,
    *const f32,
    *const c_void,
    *const c_void,
    *mut f32,
    *mut f32,
) -> QkvStatus;

/// Runs `f` on the packed problem of `x` with the offsets `cu_q`, `cu_k`: its status, `out`
/// and `lse` (both filled with 7 first; `lse` given when `with_lse`).
fn run(
    f: Ragged, x: &Inputs, d: &QkvDesc, (cu_q, cu_k): (&[usize], &[usize]), with_lse: bool,
) -> (QkvStatus, Vec<f32>, Vec<f32>) {
    let (mut out, mut lse) = (
        vec![7.0f32; CU_Q[3] * Q_HEADS * DIM],
        vec![7.0f32; Q_HEADS * 8],
    );
    let lse_ptr = match with_lse {
        true => lse.as_mut_ptr(),
        false => ptr::null_mut(),
    };
    let (k, v) = x.kv(0);
    let n = cu_q.len().min(cu_k.len());
    // SAFETY: the buffers hold the extents of `d` (the packed problem, 8 rows over 19 keys)
    // and the offsets `n` entries each.
    let s = unsafe {
        f(
            d,
            cu_q.as_ptr(),
            cu_k.as_ptr(),
            n,
            x.q.as_ptr(),
            k,
            v,
            out.as_mut_ptr(),
            lse_ptr,
        )
    };
    (s, out, lse)
}

/// Each sequence's rows of `out` and `lse` against `qkv_attention_f32` on it alone: equal
/// bits (`tol` 0) or within `tol` relative.
fn check_against_alone(x: &Inputs, out: &[f32], lse: Option<&[f32]>, tol: f32) {
    let total_q = CU_Q[3];
    let close = |a: f32, b: f32| match tol {
        0.0 => a.to_bits() == b.to_bits(),
        _ => (a - b).abs() <= tol * (1.0 + b.abs()),
    };
    for b in 0..3 {
        let (lq, lk) = (CU_Q[b + 1] - CU_Q[b], CU_K[b + 1] - CU_K[b]);
        let one = desc(lq, lk, x.kind);
        let (mut want, mut want_lse) =
            (vec![0.0f32; lq * Q_HEADS * DIM], vec![0.0f32; Q_HEADS * lq]);
        let (k, v) = x.kv(CU_K[b]);
        let q = x.q[CU_Q[b] * Q_HEADS * DIM..].as_ptr();
        // SAFETY: the sequence's rows of the packed buffers hold its extents.
        let s =
            unsafe { qkv_attention_f32(&one, q, k, v, want.as_mut_ptr(), want_lse.as_mut_ptr()) };
        assert_eq!(s, QKV_OK);
        let got = &out[CU_Q[b] * Q_HEADS * DIM..][..lq * Q_HEADS * DIM];
        assert!(
            got.iter().zip(&want).all(|(&g, &w)| close(g, w)),
            "sequence {b}"
        );
        if let Some(lse) = lse {
            for h in 0..Q_HEADS {
                let got = &lse[h * total_q + CU_Q[b]..][..lq];
                let want = &want_lse[h * lq..][..lq];
                assert!(
                    got.iter().zip(want).all(|(&g, &w)| close(g, w)),
                    "lse {b}, {h}"
                );
            }
        }
    }
}

/// The entry points, with the tolerance each is held to against the sequences alone.
fn entries() -> Vec<(Ragged, f32)> {
    vec![
        (qkv_attention_ragged_f32, 0.0),
        #[cfg(feature = "parallel")]
        (qkv_attention_ragged_parallel_f32, 1e-5),
    ]
}

#[test]
fn every_sequence_is_its_own_call() {
    for (f, tol) in entries() {
        for kind in [KvKind::F32, KvKind::F16] {
            let x = Inputs::new(kind);
            let d = desc(CU_Q[3], CU_K[3], kind);
            let (s, out, lse) = run(f, &x, &d, (&CU_Q, &CU_K), true);
            assert_eq!(s, QKV_OK);
            check_against_alone(&x, &out, Some(&lse), tol);
            // `lse` stops at the total rows.
            assert!(lse[Q_HEADS * CU_Q[3]..].iter().all(|&l| l == 7.0));
            let (s, no_lse, _) = run(f, &x, &d, (&CU_Q, &CU_K), false);
            assert_eq!(s, QKV_OK);
            check_against_alone(&x, &no_lse, None, tol);
        }
    }
}

#[test]
fn offsets_statuses_write_nothing() {
    let x = Inputs::new(KvKind::F32);
    let d = desc(CU_Q[3], CU_K[3], KvKind::F32);
    let untouched = |out: &[f32], lse: &[f32]| out.iter().chain(lse).all(|&v| v == 7.0);
    for (f, _) in entries() {
        // Offsets that do not describe the tensors: `Error::Batch`.
        let short_q = [0, 3, 3, 7];
        let late_k = [1, 6, 10, 19];
        let decreasing = [0, 3, 2, 8];
        let bad: [(&[usize], &[usize]); 6] = [
            (&short_q, &CU_K),
            (&CU_Q, &late_k),
            (&decreasing, &CU_K),
            (&CU_Q[..3], &CU_K[..3]),
            (&CU_Q[..1], &CU_K[..1]),
            (&[], &[]),
        ];
        for offsets in bad {
            let (s, out, lse) = run(f, &x, &d, offsets, true);
            assert_eq!(s, QKV_ERR_TOO_SHORT, "{offsets:?}");
            assert!(untouched(&out, &lse), "{offsets:?}");
        }
        // The shape is checked before the offsets describe it. (K and V laid out so that
        // 3 heads stay inside their buffers, heads overlapping as inputs may: with 2 heads'
        // strides they reached 8 floats past them, and `out` or `lse`, allocated next, could
        // be found aliased.)
        let three_heads = QkvLayout {
            head_stride: DIM / 2,
            row_stride: KV_HEADS * DIM,
        };
        let odd = QkvDesc {
            kv_heads: 3,
            k: three_heads,
            v: three_heads,
            ..d
        };
        let (s, out, lse) = run(f, &x, &odd, (&short_q, &CU_K), true);
        assert_eq!(s, QKV_ERR_HEADS_NOT_DIVISIBLE);
        assert!(untouched(&out, &lse));

        // The pointer contract of the offsets.
        let (mut out, mut lse) = (vec![7.0f32; CU_Q[3] * Q_HEADS * DIM], vec![7.0f32; 32]);
        let (o, l) = (out.as_mut_ptr(), lse.as_mut_ptr());
        let call = |d: &QkvDesc, cu_q: *const usize, cu_k: *const usize, n: usize| {
            let (k, v) = x.kv(0);
            // SAFETY: the buffers as in `run`; every call here is refused before it reads the
            // offsets.
            unsafe { f(d, cu_q, cu_k, n, x.q.as_ptr(), k, v, o, l) }
        };
        let (cq, ck) = (CU_Q.as_ptr(), CU_K.as_ptr());
        assert_eq!(call(&d, ptr::null(), ptr::null(), 0), QKV_ERR_TOO_SHORT);
        assert_eq!(call(&d, ptr::null(), ck, 4), QKV_ERR_NULL_POINTER);
        assert_eq!(call(&d, cq, ptr::null(), 4), QKV_ERR_NULL_POINTER);
        let off = |p: *const usize, bytes| p.cast::<u8>().wrapping_add(bytes).cast::<usize>();
        assert_eq!(call(&d, off(cq, 1), ck, 3), QKV_ERR_MISALIGNED);
        if align_of::<usize>() > 4 {
            // Aligned for a float, not for a `size_t`.
            assert_eq!(call(&d, cq, off(ck, 4), 3), QKV_ERR_MISALIGNED);
        }
        // The offsets inside `out` or `lse`.
        let inside = |p: *mut f32| {
            let p = p.wrapping_add(8).cast::<u8>();
            off(p.cast(), p.align_offset(align_of::<usize>()))
        };
        assert_eq!(call(&d, inside(o), ck, 4), QKV_ERR_ALIASING);
        assert_eq!(call(&d, cq, inside(l), 4), QKV_ERR_ALIASING);
        // The descriptor's and the tensors' pointer checks come first.
        let old = QkvDesc {
            struct_size: 1,
            ..d
        };
        assert_eq!(call(&old, ptr::null(), ck, 4), QKV_ERR_STRUCT_SIZE);
        let huge = QkvLayout {
            head_stride: usize::MAX,
            row_stride: 4,
        };
        let overflowing = QkvDesc { q: huge, ..d };
        assert_eq!(call(&overflowing, ptr::null(), ck, 4), QKV_ERR_OVERFLOW);
        assert!(untouched(&out, &lse));
    }
}
