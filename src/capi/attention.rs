//! The one-shot entry points: [`qkv_attention_f32`], [`qkv_attention_f32_isa`] and
//! [`qkv_reference_f32`], one decoding ([`run`]) over three Rust functions.

use super::buf::check_aliasing;
use super::desc::Problem;
use super::{QKV_ERR_UNKNOWN_ISA, QkvDesc, QkvStatus, error_status, guard, isa_from_i32};
use crate::{Error, Params};

/// Decodes the descriptor and pointers, checks the pointer contract, and calls `entry`: one
/// of [`attention`](crate::attention), [`Isa::attention`](crate::Isa::attention) or
/// [`reference::attention`](crate::reference::attention), each instantiated separately so
/// that firmware calling one links only that one.
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
unsafe fn run(
    entry: impl FnOnce(
        &Params,
        &[f32],
        &[f32],
        &[f32],
        &mut [f32],
        Option<&mut [f32]>,
    ) -> Result<(), Error>,
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> Result<(), QkvStatus> {
    // SAFETY: the caller's contract for `desc`.
    let p = unsafe { Problem::decode(desc, q, k, v, out) }?;
    let lse = p.desc.lse_opt(lse)?;
    match lse {
        Some(l) => check_aliasing(&[p.out, l], &p.inputs.all())?,
        None => check_aliasing(&[p.out], &p.inputs.all())?,
    }
    // SAFETY: the caller's pointer contract, for the lengths the buffers were given.
    let ([q, k, v], bias) = unsafe { p.inputs.slices() };
    // SAFETY: as above; `out` and `lse` were checked disjoint from each other and from
    // every input.
    let out = unsafe { p.out.slice_mut() };
    // SAFETY: as above.
    let lse = lse.map(|l| unsafe { l.slice_mut() });
    entry(&p.desc.params(p.mask, bias), q, k, v, out, lse).map_err(error_status)
}

/// `qkv_attention_f32`: attention with the best [`Isa`](crate::Isa) this CPU supports
/// ([`attention`](crate::attention)).
///
/// `lse` may be NULL; otherwise it receives `[q_heads][q_len]` log-sum-exps. Returns
/// [`QKV_OK`](super::QKV_OK) or an error status, in which case nothing was written.
///
/// # Safety
/// `desc` is NULL or points to a descriptor of at least `struct_size` readable bytes. Each
/// tensor pointer follows the [pointer contract](super#the-pointer-contract): it points to
/// as many floats as its count field or extent says (or that length is 0), those of `q`,
/// `k`, `v` and `bias` are not written by anyone during the call, and those of `out` and
/// `lse` are writable and not accessed by anyone else during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_attention_f32(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { run(crate::attention, desc, q, k, v, out, lse) })
}

/// `qkv_attention_f32_isa`: [`qkv_attention_f32`] at the level `isa` (a `QKV_ISA_*` value),
/// as [`Isa::attention`](crate::Isa::attention) does.
///
/// Returns [`QKV_ERR_UNKNOWN_ISA`] for a value that is no `QKV_ISA_*` and
/// [`QKV_ERR_UNSUPPORTED`](super::QKV_ERR_UNSUPPORTED) for a level this CPU or build lacks
/// (after every other check).
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_attention_f32_isa(
    isa: i32,
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    let Some(isa) = isa_from_i32(isa) else {
        return QKV_ERR_UNKNOWN_ISA;
    };
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        run(
            |p, q, k, v, out, lse| isa.attention(p, q, k, v, out, lse),
            desc,
            q,
            k,
            v,
            out,
            lse,
        )
    })
}

/// `qkv_reference_f32`: the `f64` reference
/// ([`reference::attention`](crate::reference::attention)), with the arguments, checks and
/// results of [`qkv_attention_f32`].
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_reference_f32(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { run(crate::reference::attention, desc, q, k, v, out, lse) })
}
