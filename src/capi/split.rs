//! The split-KV entry points: [`qkv_partial_f32`] and [`qkv_merge_f32`], over
//! [`split::partial`] and [`split::merge`], so a `no_std` caller can spread one long decode
//! over its own threads or cores: one partial per key range, then merges.

use core::ops::Range;

use super::buf::check_aliasing;
use super::desc::{Desc, Problem};
use super::workspace::workspace;
use super::{QkvDesc, QkvStatus, error_status, guard};
use crate::{Error, Level, Mask, Params, split};

/// Decodes a partial's descriptor and pointers, checks the pointer contract, and calls
/// `entry` with the params, `q`, `k`, `v`, `out`, `lse` and the workspace (empty for
/// [`qkv_partial_f32`]).
///
/// # Safety
/// The contract of [`qkv_partial_f32_ws`] (`(NULL, 0)` for no workspace).
unsafe fn partial(
    entry: impl FnOnce(&Params, [&[f32]; 3], &mut [f32], &mut [f32], &mut [f32]) -> Result<(), Error>,
    desc: *const QkvDesc,
    [q, k, v]: [*const f32; 3],
    out: *mut f32,
    lse: *mut f32,
    (ws, ws_len): (*mut f32, usize),
) -> Result<(), QkvStatus> {
    // SAFETY: the caller's contract for `desc`.
    let p = unsafe { Problem::decode(desc, q, k, v, out) }?;
    let lse = p.desc.lse(lse)?;
    let ws = workspace(ws, ws_len)?;
    check_aliasing(&[p.out, lse, ws], &p.inputs.all())?;
    // SAFETY: the caller's pointer contract, for the lengths the buffers were given.
    let ([q, k, v], bias) = unsafe { p.inputs.slices() };
    // SAFETY: as above; `out`, `lse` and the workspace were checked disjoint from each other
    // and from every input.
    let (out, lse, ws) = unsafe { (p.out.slice_mut(), lse.slice_mut(), ws.slice_mut()) };
    let params = p.desc.params(p.mask, bias);
    entry(&params, [q, k, v], out, lse, ws).map_err(error_status)
}

/// `qkv_partial_f32`: attention over the keys `key_start..key_end` of the problem `desc`
/// describes, as [`split::partial`]: `out` is normalised over the range's included keys and
/// `lse` (required, `[q_heads][q_len]`) receives their log-sum-exp; a row with no key in the
/// range gets `out = 0`, `lse = -inf`. Masks keep absolute positions and the bias is read at
/// the range's columns. `q`, `k`, `v`, `bias` and `out` are those of the whole problem.
///
/// Returns [`QKV_OK`](super::QKV_OK) or the status `qkv_attention_f32` would return for the
/// same arguments, or [`QKV_ERR_TOO_SHORT`](super::QKV_ERR_TOO_SHORT) for a key range
/// outside `0..=kv_len`; nothing is written on error.
///
/// # Safety
/// The contract of [`qkv_attention_f32`](super::qkv_attention_f32), with `lse` treated like
/// `out`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_partial_f32(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    key_start: usize,
    key_end: usize,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    let keys: Range<usize> = key_start..key_end;
    let entry =
        |p: &Params, [q, k, v]: [&[f32]; 3], out: &mut [f32], lse: &mut [f32], _: &mut [f32]| {
            split::partial(p, q, k, v, keys, out, lse)
        };
    let none = (core::ptr::null_mut(), 0);
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { partial(entry, desc, [q, k, v], out, lse, none) })
}

/// `qkv_partial_f32_ws`: [`qkv_partial_f32`] in the caller's working memory, as
/// [`qkv_attention_f32_ws`](super::qkv_attention_f32_ws) (same sizes, checks and status
/// for the workspace).
///
/// # Safety
/// The contract of [`qkv_partial_f32`]; `workspace` as for
/// [`qkv_attention_f32_ws`](super::qkv_attention_f32_ws).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_partial_f32_ws(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    key_start: usize,
    key_end: usize,
    out: *mut f32,
    lse: *mut f32,
    workspace: *mut f32,
    workspace_len: usize,
) -> QkvStatus {
    let keys: Range<usize> = key_start..key_end;
    let entry =
        |p: &Params, [q, k, v]: [&[f32]; 3], out: &mut [f32], lse: &mut [f32], ws: &mut [f32]| {
            split::partial_in(Level::Detect, ws, p, q, k, v, keys, out, lse)
        };
    let ws = (workspace, workspace_len);
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { partial(entry, desc, [q, k, v], out, lse, ws) })
}

/// `qkv_merge_f32`: joins the partial `(out_b, lse_b)` into `(out_a, lse_a)`, as
/// [`split::merge`]: afterwards `a` holds the result over both key ranges. Only the shape,
/// `out` layout and the `out_count`/`lse_count` fields of `desc` are used (both outputs have
/// the `out` layout, both lse are `[q_heads][q_len]`). Exact up to one rounding; `-inf`
/// partials contribute nothing and NaN propagates.
///
/// Returns [`QKV_OK`](super::QKV_OK) or a status as `qkv_attention_f32` would for
/// `out`/`lse`; nothing is written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32); `out_a` and `lse_a`
/// follow the contract of `out` and `lse`, `out_b` and `lse_b` that of inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_merge_f32(
    desc: *const QkvDesc,
    out_a: *mut f32,
    lse_a: *mut f32,
    out_b: *const f32,
    lse_b: *const f32,
) -> QkvStatus {
    guard(|| {
        // SAFETY: the caller's contract for `desc`.
        let d = unsafe { Desc::read(desc) }?;
        let (oa, la) = (d.out(out_a)?, d.lse(lse_a)?);
        let (ob, lb) = (d.out(out_b)?, d.lse(lse_b)?);
        check_aliasing(&[oa, la], &[Some(ob), Some(lb)])?;
        // SAFETY: the caller's pointer contract for the lengths the buffers were given; `out_a`
        // and `lse_a` were checked disjoint from each other and from `b`.
        let (oa, la) = unsafe { (oa.slice_mut(), la.slice_mut()) };
        // SAFETY: as above.
        let (ob, lb) = unsafe { (ob.slice(), lb.slice()) };
        // `split::merge` uses only the shape and the `out` layout, so the flags, mask and bias
        // fields are neither checked nor needed.
        let params = d.params(Mask::NONE, None);
        split::merge(&params, oa, la, ob, lb).map_err(error_status)
    })
}
