//! The split-KV entry points: [`qkv_partial_f32`] and [`qkv_merge_f32`], over
//! [`split::partial`] and [`split::merge`], so a `no_std` caller can spread one long decode
//! over its own threads or cores: one partial per key range, then merges.

use core::ffi::c_void;
use core::ops::Range;

use super::attention::{Call, Lse, NONE, run};
use super::buf::check_aliasing;
use super::decode::{Desc, Extras};
use super::types::with_kv;
use super::{QkvDesc, QkvStatus, error_status, guard};
use crate::{Level, Mask, split};

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
    desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void, key_start: usize,
    key_end: usize, out: *mut f32, lse: *mut f32,
) -> QkvStatus {
    let keys: Range<usize> = key_start..key_end;
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let mut c = Call::decode(desc, (q, k, v), out, Lse::Required(lse), NONE);
        make_partial(&mut c, keys);
        run!(c, |p, q, k, v, out, lse, _| Level::Detect
            .attention(p, q, k, v, out, lse))
    })
}

/// A decoded C call (its `lse` required) made the partial of keys `keys`: the partial's
/// checks and sub-problem ([`split::validate_partial`]) in place of the whole problem's,
/// its inputs from the part's first elements. What `split::partial` and `partial_in` run
/// is that call; the C partials run it as `qkv_attention_f32` and `_ws` run theirs.
///
/// Out of line, on the decoded call where it lies: the sub-problem is built in this frame,
/// after the decoder's is gone and before the kernel's start (firmware stacks are small).
#[inline(never)]
fn make_partial(decoded: &mut Result<Call, QkvStatus>, keys: Range<usize>) {
    if let Ok(c) = decoded
        && let Err(status) = partial_of(c, keys)
    {
        *decoded = Err(status);
    }
}

/// [`make_partial`] of a decoded call.
#[inline(always)]
fn partial_of(c: &mut Call, keys: Range<usize>) -> Result<(), QkvStatus> {
    // `Lse::Required` made `lse` `Some`.
    let lse = c.lse.as_deref().unwrap_or_default();
    let [k, v] = c.kv;
    let (sub, part) = with_kv!([k, v], |k, v| split::validate_partial(
        &c.params,
        (c.q, k, v),
        &keys,
        c.out,
        lse
    ))
    .map_err(error_status)?;
    let [qa, ka, va] = part.offsets(&c.params);
    c.q = crate::range::from(c.q, qa);
    c.kv = [k.from(ka), v.from(va)];
    c.params = sub;
    Ok(())
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
    desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void, key_start: usize,
    key_end: usize, out: *mut f32, lse: *mut f32, workspace: *mut f32, workspace_len: usize,
) -> QkvStatus {
    let keys: Range<usize> = key_start..key_end;
    let ws = (workspace, workspace_len);
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let mut c = Call::decode(desc, (q, k, v), out, Lse::Required(lse), ws);
        make_partial(&mut c, keys);
        run!(c, |p, q, k, v, out, lse, ws| Level::Detect
            .attention_in(ws, p, q, k, v, out, lse))
    })
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
    desc: *const QkvDesc, out_a: *mut f32, lse_a: *mut f32, out_b: *const f32, lse_b: *const f32,
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
        let params = d.params(Mask::NONE, Extras::default());
        split::merge(&params, oa, la, ob, lb).map_err(error_status)
    })
}

/// `qkv_add_sinks_f32`: merges the descriptor's sinks into a result merged from partials
/// (`out`, `lse` required), as [`split::add_sinks`]: partials never count the sinks, so call
/// it once, after the last merge. Only the shape, the `out` layout, the counts and `sinks`
/// are used; without sinks (`sinks` NULL) it changes nothing.
///
/// Returns [`QKV_OK`](super::QKV_OK) or a status as `qkv_attention_f32` would for `out`,
/// `lse` and `sinks`; nothing is written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32); `out` and `lse` follow
/// the contract of outputs, `sinks` that of an input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_add_sinks_f32(
    desc: *const QkvDesc, out: *mut f32, lse: *mut f32,
) -> QkvStatus {
    guard(|| {
        // SAFETY: the caller's contract for `desc`.
        let d = unsafe { Desc::read(desc) }?;
        let (out, lse) = (d.out(out)?, d.lse(lse)?);
        let sinks = d.sinks()?;
        check_aliasing(&[out, lse], &[sinks])?;
        // SAFETY: the caller's pointer contract for the lengths the buffers were given; `out`
        // and `lse` were checked disjoint from each other and from the sinks.
        let (out, lse) = unsafe { (out.slice_mut(), lse.slice_mut()) };
        // SAFETY: as above.
        let sinks = sinks.map(|s| unsafe { s.slice() });
        let extras = Extras {
            sinks,
            ..Extras::default()
        };
        split::add_sinks(&d.params(Mask::NONE, extras), out, lse).map_err(error_status)
    })
}
