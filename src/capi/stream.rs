//! The streaming entry points: a caller-owned [`Stream`] state of [`qkv_stream_state_len`]
//! floats, set up by [`qkv_stream_init`], fed key chunks by [`qkv_stream_update`] and read
//! by [`qkv_stream_finish`]; each call decodes the same descriptor again and resumes the
//! stream from the state.

use core::ffi::c_void;
use core::ops::Range;

use super::attention::Call;
use super::buf::{Buf, Inputs, check_aliasing};
use super::decode::{Desc, Extras, KeyRows};
use super::types::with_kv;
use super::workspace::workspace;
use super::{QKV_ERR_NULL_POINTER, QKV_ERR_OVERFLOW, QkvDesc, QkvStatus, error_status, guard};
use crate::stream::{Parts, Stream};
use crate::{Error, Level};

/// `qkv_stream_state_len`: writes to `*len` the number of floats a stream state for `desc`
/// needs ([`Stream::state_len`](crate::stream::Stream::state_len):
/// `q_heads·q_len·(3 + 2·v_dim)`).
///
/// Returns [`QKV_OK`](super::QKV_OK), [`QKV_ERR_NULL_POINTER`] (`desc` or `len` NULL,
/// nothing written), [`QKV_ERR_STRUCT_SIZE`](super::QKV_ERR_STRUCT_SIZE) or
/// [`QKV_ERR_OVERFLOW`].
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32); `len` is NULL or
/// points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_state_len(desc: *const QkvDesc, len: *mut usize) -> QkvStatus {
    guard(|| {
        // SAFETY: the caller's contract for `desc`.
        let d = unsafe { Desc::read(desc) }?;
        if len.is_null() {
            return Err(QKV_ERR_NULL_POINTER);
        }
        let n = Stream::state_len(&d.shape());
        if n == usize::MAX {
            return Err(QKV_ERR_OVERFLOW);
        }
        // SAFETY: non-NULL, and the caller's contract makes it a writable `size_t`;
        // `write_unaligned` needs no alignment.
        unsafe { len.write_unaligned(n) };
        Ok(())
    })
}

/// The state argument of a stream call: `state_len` floats (`Stream` checks the length).
fn state_buf(state: *mut f32, state_len: usize) -> Result<Buf, QkvStatus> {
    Buf::new(state, state_len, Some(0))
}

/// # Safety
/// The contract of [`qkv_stream_init`].
unsafe fn init(desc: *const QkvDesc, state: *mut f32, state_len: usize) -> Result<(), QkvStatus> {
    // SAFETY: the caller's contract for `desc`.
    let d = unsafe { Desc::read(desc) }?;
    let mask = d.mask()?;
    let st = state_buf(state, state_len)?;
    let sinks = d.sinks()?;
    check_aliasing(&[st], &[sinks])?;
    // SAFETY: `state_len` writable floats (the caller's contract), checked disjoint from the
    // sinks, which nothing writes during the call.
    let (state, sinks) = unsafe { (st.slice_mut(), sinks.map(|s| s.slice())) };
    let extras = Extras {
        sinks,
        ..Extras::default()
    };
    Stream::new(&d.params(mask, extras), state)
        .map(|_| ())
        .map_err(error_status)
}

/// A stream update decoded and checked against the pointer contract: its chunk as a
/// one-shot call (the chunk's sub-problem, its inputs, the state's chunk rows as `out` and
/// `lse`, the workspace), and the state's running values the chunk is folded into.
struct Update<'a> {
    chunk: Call<'a>,
    max: &'a mut [f32],
    sum: &'a mut [f32],
    acc: &'a mut [f32],
}

impl<'a> Update<'a> {
    /// # Safety
    /// The contract of [`qkv_stream_update_ws`] for `'a` (a workspace `(NULL, 0)` for none).
    // Not inlined: the descriptor's copy, the stream's params and the decoding live in this
    // frame, gone before the kernel runs, under which only the chunk's params stay.
    #[inline(never)]
    unsafe fn decode(
        desc: *const QkvDesc, (state, state_len): (*mut f32, usize),
        (q, k, v): (*const f32, *const c_void, *const c_void), keys: &Range<usize>,
        (ws, ws_len): (*mut f32, usize),
    ) -> Result<Update<'a>, QkvStatus> {
        // SAFETY: the caller's contract for `desc`.
        let d = unsafe { Desc::read(desc) }?;
        let mask = d.mask()?;
        let kinds = d.kv_kinds()?;
        let st = state_buf(state, state_len)?;
        // A reversed range has no length to size `k` and `v` with: refused before they are
        // looked at, with the status `Stream::update` gives it.
        let range_error = Error::KeyRange {
            start: keys.start,
            end: keys.end,
            kv_len: d.shape().kv_len,
        };
        let n = (keys.end.checked_sub(keys.start)).ok_or(error_status(range_error))?;
        let inputs = Inputs {
            // SAFETY: the caller's contract, for the block table.
            qkv: unsafe { d.qkv(q, [k, v], kinds, KeyRows::Chunk(n)) }?,
            extras: d.extras()?,
        };
        let ws = workspace(ws, ws_len)?;
        check_aliasing(&[st, ws], &inputs.all())?;
        // SAFETY: the caller's pointer contract for the lengths the buffers were given; the
        // state and the workspace were checked disjoint from each other and from every input.
        let inputs = unsafe { inputs.slices() }?;
        // SAFETY: as above.
        let (state, ws) = unsafe { (st.slice_mut(), ws.slice_mut()) };
        let stream = Stream::resume(&d.params(mask, inputs.extras), state);
        let (params, parts) = stream
            .and_then(|s| s.into_chunk(keys.clone()))
            .map_err(error_status)?;
        Ok(Update {
            chunk: Call {
                params,
                q: inputs.q,
                kv: inputs.kv,
                out: parts.out_c,
                lse: Some(parts.lse_c),
                ws,
            },
            max: parts.max,
            sum: parts.sum,
            acc: parts.acc,
        })
    }
}

/// # Safety
/// The contract of [`qkv_stream_update_ws`] (a workspace `(NULL, 0)` for none).
// Inlined into both entry points: a frame of its own held their arguments again.
#[inline(always)]
unsafe fn update(
    desc: *const QkvDesc, state: (*mut f32, usize),
    qkv: (*const f32, *const c_void, *const c_void), keys: Range<usize>, ws: (*mut f32, usize),
) -> Result<(), QkvStatus> {
    // SAFETY: the same contract, passed on.
    let mut decoded = unsafe { Update::decode(desc, state, qkv, &keys, ws) };
    // Used where it lies: moved out of its `Result`, the update would take a second slot of
    // this frame, under every frame of the kernel.
    let u = match &mut decoded {
        Ok(u) => u,
        Err(status) => return Err(*status),
    };
    // The chunk runs as `Stream::update` and `update_in` run it (the level a resumed stream
    // has), then is folded in as they fold it.
    let (c, level) = (&mut u.chunk, Level::Detect);
    let (p, q, out, lse, ws) = (
        &c.params,
        c.q,
        &mut *c.out,
        c.lse.as_deref_mut(),
        &mut *c.ws,
    );
    with_kv!(c.kv, |k, v| match ws.len() {
        0 => level.attention(p, q, k, v, out, lse),
        _ => level.attention_in(ws, p, q, k, v, out, lse),
    })
    .map_err(error_status)?;
    u.fold();
    Ok(())
}

impl Update<'_> {
    /// Folds the chunk the call wrote into the running values, as `Stream::update` does.
    /// Out of line, and given the update by reference: the parts are gathered in this frame,
    /// not in the caller's, which is under the kernel's.
    #[inline(never)]
    fn fold(&mut self) {
        let c = &mut self.chunk;
        let v_dim = c.params.shape.v_dim;
        let (out_c, lse_c) = (&mut *c.out, c.lse.as_deref_mut().unwrap_or(&mut []));
        let (max, sum, acc) = (&mut *self.max, &mut *self.sum, &mut *self.acc);
        Parts {
            max,
            sum,
            lse_c,
            acc,
            out_c,
        }
        .fold(v_dim);
    }
}

/// # Safety
/// The contract of [`qkv_stream_finish`].
unsafe fn finish(
    desc: *const QkvDesc, state: *mut f32, state_len: usize, out: *mut f32, lse: *mut f32,
) -> Result<(), QkvStatus> {
    // SAFETY: the caller's contract for `desc`.
    let d = unsafe { Desc::read(desc) }?;
    let mask = d.mask()?;
    let st = state_buf(state, state_len)?;
    let out = d.out(out)?;
    let lse = d.lse_opt(lse)?;
    match lse {
        Some(l) => check_aliasing(&[st, out, l], &[])?,
        None => check_aliasing(&[st, out], &[])?,
    }
    // SAFETY: the caller's pointer contract; state, out and lse checked disjoint.
    let (state, out) = unsafe { (st.slice_mut(), out.slice_mut()) };
    // SAFETY: as above.
    let lse = lse.map(|l| unsafe { l.slice_mut() });
    Stream::resume(&d.params(mask, Extras::default()), state)
        .and_then(|mut stream| stream.finish(out, lse))
        .map_err(error_status)
}

/// `qkv_stream_init`: starts a stream (no key seen yet) in `state`, `state_len` floats of
/// at least [`qkv_stream_state_len`]. The state is plain floats owned by the caller; the
/// same `desc` must be passed to every later call on it.
///
/// Returns [`QKV_OK`](super::QKV_OK) or a status ([`QKV_ERR_TOO_SHORT`](super::QKV_ERR_TOO_SHORT) for a short state, the shape
/// checks of `qkv_attention_f32`); nothing is written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32); `state` points to
/// `state_len` writable floats (or `state_len` is 0) that nothing else accesses during the
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_init(
    desc: *const QkvDesc, state: *mut f32, state_len: usize,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { init(desc, state, state_len) })
}

/// `qkv_stream_update`: feeds the keys at absolute positions `key_start..key_end`, as
/// [`Stream::update`](crate::stream::Stream::update): `k` and `v` hold only those keys' rows
/// (row 0 is key `key_start`) with the strides of `desc->k` and `desc->v`, and are taken to
/// hold the extent of `key_end − key_start` rows (`k_count` and `v_count` are ignored) —
/// or, with a block table, `k` and `v` are the whole pools of pages (`k_count` and
/// `v_count` apply); `q` and `bias` are those of the whole problem. Chunks may have any size and come in any
/// order; masks and bias use the absolute positions.
///
/// Returns [`QKV_OK`](super::QKV_OK) or a status ([`QKV_ERR_TOO_SHORT`](super::QKV_ERR_TOO_SHORT) also for a range outside
/// `0..=kv_len`); the state is unchanged on error.
///
/// # Safety
/// As [`qkv_stream_init`] for `desc` and `state` (a state that `qkv_stream_init` set up with
/// the same `desc`); `q`, `k`, `v` and `bias` follow the contract of inputs, none
/// overlapping `state`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_stream_update(
    desc: *const QkvDesc, state: *mut f32, state_len: usize, q: *const f32, k: *const c_void,
    v: *const c_void, key_start: usize, key_end: usize,
) -> QkvStatus {
    let (st, keys, none) = (
        (state, state_len),
        key_start..key_end,
        (core::ptr::null_mut(), 0),
    );
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { update(desc, st, (q, k, v), keys, none) })
}

/// `qkv_stream_update_ws`: [`qkv_stream_update`] in the caller's working memory, as
/// [`qkv_attention_f32_ws`](super::qkv_attention_f32_ws) (same sizes, checks and status for
/// the workspace; a `workspace_len` of 0 runs as [`qkv_stream_update`]).
///
/// # Safety
/// The contract of [`qkv_stream_update`]; `workspace` as for
/// [`qkv_attention_f32_ws`](super::qkv_attention_f32_ws), overlapping neither `state` nor an
/// input.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_stream_update_ws(
    desc: *const QkvDesc, state: *mut f32, state_len: usize, q: *const f32, k: *const c_void,
    v: *const c_void, key_start: usize, key_end: usize, workspace: *mut f32, workspace_len: usize,
) -> QkvStatus {
    let (st, keys, ws) = (
        (state, state_len),
        key_start..key_end,
        (workspace, workspace_len),
    );
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { update(desc, st, (q, k, v), keys, ws) })
}

/// `qkv_stream_finish`: writes the attention over every key fed so far to `out` (the `out`
/// layout) and, unless NULL, `lse`; rows that saw no key get 0 and `-INFINITY`. The state
/// is left as it was, so streaming can go on.
///
/// Returns [`QKV_OK`](super::QKV_OK) or a status as `qkv_attention_f32` would for `out`/`lse`; nothing is
/// written on error.
///
/// # Safety
/// As [`qkv_stream_update`] for `desc` and `state`; `out` and `lse` follow the contract of
/// outputs and overlap neither each other nor `state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_finish(
    desc: *const QkvDesc, state: *mut f32, state_len: usize, out: *mut f32, lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { finish(desc, state, state_len, out, lse) })
}
