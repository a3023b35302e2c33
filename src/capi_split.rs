//! The C ABI of split-KV and streaming (feature `capi`): [`qkv_partial_f32`] and
//! [`qkv_merge_f32`], and the caller-owned stream state of [`qkv_stream_state_len`],
//! [`qkv_stream_init`], [`qkv_stream_update`] and [`qkv_stream_finish`], declared at the end
//! of `include/qkv.h`. They take the same [`QkvDesc`], return the same
//! [`QkvStatus`] codes and follow the same [pointer contract](crate::capi#the-pointer-contract)
//! as [`qkv_attention_f32`](crate::capi::qkv_attention_f32), so a `no_std` caller can spread
//! one long decode over its own threads or cores: one partial per key range, then merges.
//!
//! A key range outside `0..=kv_len` (or with `key_start > key_end`) is reported as
//! [`QKV_ERR_TOO_SHORT`]: the keys it names are not in the tensors the descriptor describes.

use crate::capi::{Buf, extent, guard, read_desc};
use crate::capi::{
    QKV_ERR_ALIASING, QKV_ERR_NULL_POINTER, QKV_ERR_OVERFLOW, QKV_ERR_TOO_SHORT,
    QKV_ERR_UNKNOWN_FLAGS, QKV_ERR_UNKNOWN_MASK, QKV_ERR_UNKNOWN_QUERY_POS, QKV_FLAG_SCALE,
    QKV_KNOWN_FLAGS, QKV_MASK_BAND, QKV_MASK_CAUSAL, QKV_MASK_NONE, QKV_OK,
    QKV_QUERY_POS_BOTTOM_RIGHT, QKV_QUERY_POS_OFFSET, QKV_QUERY_POS_TOP_LEFT, QKV_UNBOUNDED,
    QkvDesc, QkvLayout, QkvStatus, error_status,
};
use crate::{Bias, Error, Layout, Mask, Params, QueryPos, Shape, split};

/// The status of an [`Error`], with [`Error::KeyRange`] as [`QKV_ERR_TOO_SHORT`].
fn status(e: Error) -> QkvStatus {
    match e {
        Error::KeyRange { .. } => QKV_ERR_TOO_SHORT,
        e => error_status(e),
    }
}

fn layout(l: QkvLayout) -> Layout {
    Layout {
        head_stride: l.head_stride,
        row_stride: l.row_stride,
    }
}

fn shape(d: &QkvDesc) -> Shape {
    Shape {
        q_heads: d.q_heads,
        kv_heads: d.kv_heads,
        q_len: d.q_len,
        kv_len: d.kv_len,
        head_dim: d.head_dim,
        v_dim: d.v_dim,
    }
}

/// The mask the descriptor describes, checking flags, mask kind and query position.
fn mask(d: &QkvDesc) -> Result<Mask, QkvStatus> {
    if d.flags & !QKV_KNOWN_FLAGS != 0 {
        return Err(QKV_ERR_UNKNOWN_FLAGS);
    }
    let query_pos = match d.query_pos {
        QKV_QUERY_POS_BOTTOM_RIGHT => QueryPos::BottomRight,
        QKV_QUERY_POS_TOP_LEFT => QueryPos::TopLeft,
        QKV_QUERY_POS_OFFSET => QueryPos::Offset(d.query_offset),
        _ => return Err(QKV_ERR_UNKNOWN_QUERY_POS),
    };
    let side = |w: usize| (w != QKV_UNBOUNDED).then_some(w);
    match d.mask {
        QKV_MASK_NONE => Ok(Mask::NONE),
        QKV_MASK_CAUSAL => Ok(Mask::causal().aligned(query_pos)),
        QKV_MASK_BAND => Ok(Mask {
            left: side(d.window_left),
            right: side(d.window_right),
            query_pos,
        }),
        _ => Err(QKV_ERR_UNKNOWN_MASK),
    }
}

/// Whether any of `writes` overlaps another write or any of `reads`.
fn aliased(writes: &[Buf], reads: &[Option<Buf>]) -> bool {
    writes.iter().enumerate().any(|(n, &w)| {
        writes[n + 1..].iter().any(|&x| w.overlaps(x))
            || reads.iter().flatten().any(|&r| w.overlaps(r))
    })
}

/// # Safety
/// The contract of [`qkv_partial_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn partial(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    key_start: usize,
    key_end: usize,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the caller's contract for `desc`.
    let d = match unsafe { read_desc(desc) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    let mask = match mask(&d) {
        Ok(m) => m,
        Err(s) => return s,
    };
    let s = shape(&d);
    let bufs = (|| {
        let q = Buf::new(q, d.q_count, extent(d.q, s.q_heads, s.q_len, s.head_dim))?;
        let k = Buf::new(k, d.k_count, extent(d.k, s.kv_heads, s.kv_len, s.head_dim))?;
        let v = Buf::new(v, d.v_count, extent(d.v, s.kv_heads, s.kv_len, s.v_dim))?;
        let out = Buf::new(out, d.out_count, extent(d.out, s.q_heads, s.q_len, s.v_dim))?;
        let bias = match d.bias.is_null() {
            true => None,
            false => Some(Buf::new(
                d.bias,
                d.bias_count,
                extent(d.bias_layout, s.q_heads, s.q_len, s.kv_len),
            )?),
        };
        let lse = Buf::new(lse, d.lse_count, s.q_heads.checked_mul(s.q_len))?;
        if aliased(&[out, lse], &[Some(q), Some(k), Some(v), bias]) {
            return Err(QKV_ERR_ALIASING);
        }
        Ok((q, k, v, out, bias, lse))
    })();
    let (q, k, v, out, bias, lse) = match bufs {
        Ok(b) => b,
        Err(s) => return s,
    };
    // SAFETY: (all six) the caller's pointer contract for the lengths `Buf::new` derived;
    // `out` and `lse` were checked disjoint from each other and every input.
    let (q, k, v) = unsafe { (q.slice(), k.slice(), v.slice()) };
    // SAFETY: as above.
    let bias = bias.map(|b| unsafe { b.slice() });
    // SAFETY: as above.
    let (out, lse) = unsafe { (out.slice_mut(), lse.slice_mut()) };
    let mut params = Params::new(s)
        .with_layouts(layout(d.q), layout(d.k), layout(d.v), layout(d.out))
        .with_mask(mask);
    if d.flags & QKV_FLAG_SCALE != 0 {
        params = params.with_scale(d.scale);
    }
    if let Some(data) = bias {
        params = params.with_bias(Bias {
            data,
            head_stride: d.bias_layout.head_stride,
            row_stride: d.bias_layout.row_stride,
        });
    }
    match split::partial(&params, q, k, v, key_start..key_end, out, lse) {
        Ok(()) => QKV_OK,
        Err(e) => status(e),
    }
}

/// `qkv_partial_f32`: attention over the keys `key_start..key_end` of the problem `desc`
/// describes, as [`split::partial`]: `out` is normalised over the range's included keys and
/// `lse` (required, `[q_heads][q_len]`) receives their log-sum-exp; a row with no key in the
/// range gets `out = 0`, `lse = -inf`. Masks keep absolute positions and the bias is read at
/// the range's columns. `q`, `k`, `v`, `bias` and `out` are those of the whole problem.
///
/// Returns [`QKV_OK`] or the status `qkv_attention_f32` would return for the same
/// arguments, or [`QKV_ERR_TOO_SHORT`] for a key range outside `0..=kv_len`; nothing is
/// written on error.
///
/// # Safety
/// The contract of [`qkv_attention_f32`](crate::capi::qkv_attention_f32), with `lse`
/// treated like `out`.
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
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { partial(desc, q, k, v, key_start, key_end, out, lse) })
}

/// # Safety
/// The contract of [`qkv_merge_f32`].
unsafe fn merge(
    desc: *const QkvDesc,
    out_a: *mut f32,
    lse_a: *mut f32,
    out_b: *const f32,
    lse_b: *const f32,
) -> QkvStatus {
    // SAFETY: the caller's contract for `desc`.
    let d = match unsafe { read_desc(desc) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    let s = shape(&d);
    let bufs = (|| {
        let out_len = extent(d.out, s.q_heads, s.q_len, s.v_dim);
        let lse_len = s.q_heads.checked_mul(s.q_len);
        let oa = Buf::new(out_a, d.out_count, out_len)?;
        let la = Buf::new(lse_a, d.lse_count, lse_len)?;
        let ob = Buf::new(out_b, d.out_count, out_len)?;
        let lb = Buf::new(lse_b, d.lse_count, lse_len)?;
        if aliased(&[oa, la], &[Some(ob), Some(lb)]) {
            return Err(QKV_ERR_ALIASING);
        }
        Ok((oa, la, ob, lb))
    })();
    let (oa, la, ob, lb) = match bufs {
        Ok(b) => b,
        Err(s) => return s,
    };
    // SAFETY: (all four) the caller's pointer contract for the lengths `Buf::new` derived;
    // `out_a` and `lse_a` were checked disjoint from each other and from `b`.
    let (oa, la) = unsafe { (oa.slice_mut(), la.slice_mut()) };
    // SAFETY: as above.
    let (ob, lb) = unsafe { (ob.slice(), lb.slice()) };
    let params = Params::new(s).with_layouts(layout(d.q), layout(d.k), layout(d.v), layout(d.out));
    match split::merge(&params, oa, la, ob, lb) {
        Ok(()) => QKV_OK,
        Err(e) => status(e),
    }
}

/// `qkv_merge_f32`: joins the partial `(out_b, lse_b)` into `(out_a, lse_a)`, as
/// [`split::merge`]: afterwards `a` holds the result over both key ranges. Only the shape,
/// `out` layout and the `out_count`/`lse_count` fields of `desc` are used (both outputs have
/// the `out` layout, both lse are `[q_heads][q_len]`). Exact up to one rounding; `-inf`
/// partials contribute nothing and NaN propagates.
///
/// Returns [`QKV_OK`] or a status as `qkv_attention_f32` would for `out`/`lse`; nothing is
/// written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](crate::capi::qkv_attention_f32); `out_a` and
/// `lse_a` follow the contract of `out` and `lse`, `out_b` and `lse_b` that of inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_merge_f32(
    desc: *const QkvDesc,
    out_a: *mut f32,
    lse_a: *mut f32,
    out_b: *const f32,
    lse_b: *const f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { merge(desc, out_a, lse_a, out_b, lse_b) })
}

// ---- Streaming -----------------------------------------------------------------------

/// The [`Params`] of a decoded descriptor, with `bias` as its bias data.
fn params_of<'a>(d: &QkvDesc, mask: Mask, bias: Option<&'a [f32]>) -> Params<'a> {
    let mut params = Params::new(shape(d))
        .with_layouts(layout(d.q), layout(d.k), layout(d.v), layout(d.out))
        .with_mask(mask);
    if d.flags & QKV_FLAG_SCALE != 0 {
        params = params.with_scale(d.scale);
    }
    if let Some(data) = bias {
        params = params.with_bias(Bias {
            data,
            head_stride: d.bias_layout.head_stride,
            row_stride: d.bias_layout.row_stride,
        });
    }
    params
}

/// `qkv_stream_state_len`: writes to `*len` the number of floats a stream state for `desc`
/// needs ([`Stream::state_len`](crate::stream::Stream::state_len):
/// `q_heads·q_len·(3 + 2·v_dim)`).
///
/// Returns [`QKV_OK`], [`QKV_ERR_NULL_POINTER`] (`desc` or `len` NULL, nothing written),
/// [`QKV_ERR_STRUCT_SIZE`] or [`QKV_ERR_OVERFLOW`].
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](crate::capi::qkv_attention_f32); `len` is NULL or
/// points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_state_len(desc: *const QkvDesc, len: *mut usize) -> QkvStatus {
    guard(|| {
        // SAFETY: the caller's contract for `desc`.
        let d = match unsafe { read_desc(desc) } {
            Ok(d) => d,
            Err(s) => return s,
        };
        if len.is_null() {
            return QKV_ERR_NULL_POINTER;
        }
        let n = crate::stream::Stream::state_len(&shape(&d));
        if n == usize::MAX {
            return QKV_ERR_OVERFLOW;
        }
        // SAFETY: non-NULL, and the caller's contract makes it a writable `size_t`;
        // `write_unaligned` needs no alignment.
        unsafe { len.write_unaligned(n) };
        QKV_OK
    })
}

/// Which stream operation [`stream_op`] runs.
enum StreamOp {
    Init,
    Update {
        q: *const f32,
        k: *const f32,
        v: *const f32,
        keys: core::ops::Range<usize>,
    },
    Finish {
        out: *mut f32,
        lse: *mut f32,
    },
}

/// # Safety
/// The contracts of the `qkv_stream_*` functions.
unsafe fn stream_op(
    desc: *const QkvDesc,
    state: *mut f32,
    state_len: usize,
    op: StreamOp,
) -> QkvStatus {
    use crate::stream::Stream;
    // SAFETY: the caller's contract for `desc`.
    let d = match unsafe { read_desc(desc) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    let mask = match mask(&d) {
        Ok(m) => m,
        Err(s) => return s,
    };
    let s = shape(&d);
    let st = match Buf::new(state, state_len, Some(0)) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let result = match op {
        StreamOp::Init => {
            // SAFETY: `state_len` writable floats (the caller's contract), no other buffer.
            let state = unsafe { st.slice_mut() };
            Stream::new(&params_of(&d, mask, None), state).map(|_| ())
        }
        StreamOp::Update { q, k, v, keys } => {
            let bufs = (|| {
                let n = keys.end.checked_sub(keys.start).ok_or(QKV_ERR_TOO_SHORT)?;
                let q = Buf::new(q, d.q_count, extent(d.q, s.q_heads, s.q_len, s.head_dim))?;
                let k = Buf::new(k, 0, extent(d.k, s.kv_heads, n, s.head_dim))?;
                let v = Buf::new(v, 0, extent(d.v, s.kv_heads, n, s.v_dim))?;
                let bias = match d.bias.is_null() {
                    true => None,
                    false => Some(Buf::new(
                        d.bias,
                        d.bias_count,
                        extent(d.bias_layout, s.q_heads, s.q_len, s.kv_len),
                    )?),
                };
                if aliased(&[st], &[Some(q), Some(k), Some(v), bias]) {
                    return Err(QKV_ERR_ALIASING);
                }
                Ok((q, k, v, bias))
            })();
            let (q, k, v, bias) = match bufs {
                Ok(b) => b,
                Err(s) => return s,
            };
            // SAFETY: the caller's pointer contract for the lengths `Buf::new` derived; the
            // state was checked disjoint from every input.
            let (q, k, v) = unsafe { (q.slice(), k.slice(), v.slice()) };
            // SAFETY: as above.
            let bias = bias.map(|b| unsafe { b.slice() });
            // SAFETY: as above.
            let state = unsafe { st.slice_mut() };
            let params = params_of(&d, mask, bias);
            Stream::resume(&params, state).and_then(|mut stream| stream.update(q, k, v, keys))
        }
        StreamOp::Finish { out, lse } => {
            let bufs = (|| {
                let out = Buf::new(out, d.out_count, extent(d.out, s.q_heads, s.q_len, s.v_dim))?;
                let lse = match lse.is_null() {
                    true => None,
                    false => Some(Buf::new(lse, d.lse_count, s.q_heads.checked_mul(s.q_len))?),
                };
                let writes: &[Buf] = match lse {
                    Some(l) => &[st, out, l],
                    None => &[st, out],
                };
                if aliased(writes, &[]) {
                    return Err(QKV_ERR_ALIASING);
                }
                Ok((out, lse))
            })();
            let (out, lse) = match bufs {
                Ok(b) => b,
                Err(s) => return s,
            };
            // SAFETY: the caller's pointer contract; state, out and lse checked disjoint.
            let (state, out) = unsafe { (st.slice_mut(), out.slice_mut()) };
            // SAFETY: as above.
            let lse = lse.map(|l| unsafe { l.slice_mut() });
            Stream::resume(&params_of(&d, mask, None), state)
                .and_then(|mut stream| stream.finish(out, lse))
        }
    };
    match result {
        Ok(()) => QKV_OK,
        Err(e) => status(e),
    }
}

/// `qkv_stream_init`: starts a stream (no key seen yet) in `state`, `state_len` floats of
/// at least [`qkv_stream_state_len`]. The state is plain floats owned by the caller; the
/// same `desc` must be passed to every later call on it.
///
/// Returns [`QKV_OK`] or a status ([`QKV_ERR_TOO_SHORT`] for a short state, the shape
/// checks of `qkv_attention_f32`); nothing is written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](crate::capi::qkv_attention_f32); `state` points to
/// `state_len` writable floats (or `state_len` is 0) that nothing else accesses during the
/// call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_init(
    desc: *const QkvDesc,
    state: *mut f32,
    state_len: usize,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { stream_op(desc, state, state_len, StreamOp::Init) })
}

/// `qkv_stream_update`: feeds the keys at absolute positions `key_start..key_end`, as
/// [`Stream::update`](crate::stream::Stream::update): `k` and `v` hold only those keys' rows
/// (row 0 is key `key_start`) with the strides of `desc->k` and `desc->v`, and are taken to
/// hold the extent of `key_end − key_start` rows (`k_count` and `v_count` are ignored);
/// `q` and `bias` are those of the whole problem. Chunks may have any size and come in any
/// order; masks and bias use the absolute positions.
///
/// Returns [`QKV_OK`] or a status ([`QKV_ERR_TOO_SHORT`] also for a range outside
/// `0..=kv_len`); the state is unchanged on error.
///
/// # Safety
/// As [`qkv_stream_init`] for `desc` and `state` (a state that `qkv_stream_init` set up with
/// the same `desc`); `q`, `k`, `v` and `bias` follow the contract of inputs, none
/// overlapping `state`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_stream_update(
    desc: *const QkvDesc,
    state: *mut f32,
    state_len: usize,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    key_start: usize,
    key_end: usize,
) -> QkvStatus {
    let op = StreamOp::Update {
        q,
        k,
        v,
        keys: key_start..key_end,
    };
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { stream_op(desc, state, state_len, op) })
}

/// `qkv_stream_finish`: writes the attention over every key fed so far to `out` (the `out`
/// layout) and, unless NULL, `lse`; rows that saw no key get 0 and `-INFINITY`. The state
/// is left as it was, so streaming can go on.
///
/// Returns [`QKV_OK`] or a status as `qkv_attention_f32` would for `out`/`lse`; nothing is
/// written on error.
///
/// # Safety
/// As [`qkv_stream_update`] for `desc` and `state`; `out` and `lse` follow the contract of
/// outputs and overlap neither each other nor `state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_stream_finish(
    desc: *const QkvDesc,
    state: *mut f32,
    state_len: usize,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { stream_op(desc, state, state_len, StreamOp::Finish { out, lse }) })
}
