//! Split-KV (flash-decoding): attention over a range of keys as a *partial* result, and the
//! merge that joins partials into the exact full result.
//!
//! A partial over keys `a..b` is the attention of the full problem restricted to those keys:
//! its `out` is normalised over the included keys of that range and its `lse` is the log of
//! their softmax denominator. Partials over disjoint ranges that cover `0..kv_len` merge (in
//! any order and grouping) into the one-shot result, because
//! `out = Σ_r e^(lse_r) out_r / Σ_r e^(lse_r)` and `lse = ln Σ_r e^(lse_r)`.
//!
//! ```
//! use qkv::{Mask, Params, Shape, split};
//!
//! let shape = Shape::new(2, 1, 100, 8); // one decoded token, 100 keys
//! let params = Params::new(shape).with_mask(Mask::causal());
//! let q = vec![0.3f32; 2 * 8];
//! let k: Vec<f32> = (0..2 * 100 * 8).map(|x| (x % 7) as f32 * 0.1).collect();
//! let v: Vec<f32> = (0..2 * 100 * 8).map(|x| (x % 5) as f32).collect();
//! // Two halves, e.g. on two cores.
//! let (mut out_a, mut lse_a) = (vec![0.0; 16], vec![0.0; 2]);
//! let (mut out_b, mut lse_b) = (vec![0.0; 16], vec![0.0; 2]);
//! split::partial(&params, &q, &k, &v, 0..60, &mut out_a, &mut lse_a)?;
//! split::partial(&params, &q, &k, &v, 60..100, &mut out_b, &mut lse_b)?;
//! split::merge(&params, &mut out_a, &mut lse_a, &out_b, &lse_b)?;
//!
//! let (mut out, mut lse) = (vec![0.0; 16], vec![0.0; 2]);
//! qkv::attention(&params, &q, &k, &v, &mut out, Some(&mut lse))?;
//! assert!(out.iter().zip(&out_a).all(|(x, y)| (x - y).abs() < 1e-5));
//! # Ok::<(), qkv::Error>(())
//! ```
//!
//! ## Exactness
//! The merge is exact in real arithmetic; in floating point it computes the weights
//! `e^(lse − max)` and the weighted mean in `f64` and rounds once to `f32`, so a merge adds at
//! most about one `f32` rounding to `out` and to `lse`. What it cannot remove is the error of
//! its inputs: a partial's `lse` error becomes a relative error of its weight. The bound the
//! tests hold merged results to is [`tolerance::merged_output_bound`] and
//! [`tolerance::merged_lse_bound`](crate::tolerance::merged_lse_bound).
//!
//! ## Sinks
//! A partial never counts [`Params::sinks`]: each head's sink must join the softmax once, and
//! a problem split into `n` ranges has `n` partials. Merge the partials, then call
//! [`add_sinks`] once on the result: it merges in each row's sink as one more partial, with
//! `lse = sinks[h]` and an output of zeros. (Plans, threads and streams do this themselves.)
//!
//! [`tolerance::merged_output_bound`]: crate::tolerance::merged_output_bound

use core::ops::Range;

use crate::range::{Part, check_keys};
use crate::{Error, KvType, Layout, Params, Shape, Tensor};

/// The instance a split, streaming or parallel call runs on (the same type as
/// [`qkv::Level`](crate::Level)).
pub use crate::Level;

/// Attention over the keys `keys` of the problem `params` describes, with the best level.
///
/// `q`, `k`, `v`, `out` and `lse` are those of the full problem (K and V rows are indexed by
/// absolute key position; only rows in `keys` are read). `out` receives the output
/// normalised over the included keys of the range, `lse` (`[q_heads][q_len]`, dense, required)
/// the log of their softmax denominator. A row that includes no key of the range gets
/// `out = 0` and `lse = -inf`, which [`merge`] treats as "no contribution". Masks keep their
/// absolute positions, so a causal or window mask means the same as in the one-shot call;
/// a bias is read at columns `keys`; the softcap applies; the sinks do not (see
/// [`add_sinks`]).
///
/// Errors: the same as [`attention`](crate::attention) for the full problem, then
/// [`Error::KeyRange`] if `keys` is not within `0..=kv_len`. Every query position the
/// one-shot call accepts works here too (`QueryPos::Offset` near `i64::MIN` or `i64::MAX`
/// included); only a range of `2⁶³` keys or more (broadcast K and V) whose shifted position
/// leaves `i64` is [`Error::Overflow`]`(`[`Tensor::Q`]`)`. Nothing is written on error.
pub fn partial<K: KvType, V: KvType>(
    params: &Params, q: &[f32], k: &[K], v: &[V], keys: Range<usize>, out: &mut [f32],
    lse: &mut [f32],
) -> Result<(), Error> {
    partial_at(Level::Detect, params, q, k, v, keys, out, lse)
}

/// [`partial`] on a chosen [`Level`].
#[allow(clippy::too_many_arguments)] // `partial`'s arguments and the level
pub fn partial_at<K: KvType, V: KvType>(
    level: Level, params: &Params, q: &[f32], k: &[K], v: &[V], keys: Range<usize>,
    out: &mut [f32], lse: &mut [f32],
) -> Result<(), Error> {
    // Used where it lies: moved out of its `Result`, the sub-problem would take a second
    // slot of this frame, under every frame of the kernel (firmware stacks are small).
    let validated = validate_partial(params, (q, k, v), &keys, out, lse);
    let (sub, part) = match &validated {
        Ok(v) => v,
        Err(e) => return Err(*e),
    };
    let (q, k, v) = part.inputs(params, q, k, v);
    crate::dispatch::on_stack_workspace::<K, V, _>(sub, |ws| {
        level.attention_in(ws, sub, q, k, v, out, Some(lse))
    })
}

/// [`partial_at`] in the caller's working memory, as [`attention_in`](crate::attention_in):
/// [`workspace_len`](crate::workspace_len)`(params)` floats for full speed, at least
/// [`min_workspace_len`](crate::min_workspace_len)`(params)`
/// ([`Error::WorkspaceTooSmall`] otherwise).
#[allow(clippy::too_many_arguments)] // `partial`'s arguments, the level and the workspace
pub fn partial_in<K: KvType, V: KvType>(
    level: Level, workspace: &mut [f32], params: &Params, q: &[f32], k: &[K], v: &[V],
    keys: Range<usize>, out: &mut [f32], lse: &mut [f32],
) -> Result<(), Error> {
    // Used where it lies, as in `partial_at`.
    let validated = validate_partial(params, (q, k, v), &keys, out, lse);
    let (sub, part) = match &validated {
        Ok(v) => v,
        Err(e) => return Err(*e),
    };
    let (q, k, v) = part.inputs(params, q, k, v);
    level.attention_in(workspace, sub, q, k, v, out, Some(lse))
}

/// The checks of a partial, in the documented order, its sub-problem and its part (whose
/// inputs start at the part's first elements: `Part::inputs`, `Part::offsets`).
///
/// Not inlined: the sub-problem is built in this frame, gone before the kernel's frames
/// start (firmware stacks are small).
#[inline(never)]
pub(crate) fn validate_partial<'a, K: KvType, V: KvType>(
    params: &Params<'a>, (q, k, v): (&[f32], &[K], &[V]), keys: &Range<usize>, out: &[f32],
    lse: &[f32],
) -> Result<(Params<'a>, Part), Error> {
    params.validate(q, k, v, out, Some(lse))?;
    check_keys(keys, params.shape.kv_len)?;
    let part = Part::keys(params, keys.clone());
    Ok((part.params(params)?, part))
}

/// Checks an output slice laid out as `params.out` and an lse slice of `[q_heads][q_len]`
/// with the crate's own validation (extent, overlap, lse length).
pub(crate) fn validate_out(params: &Params, out: &[f32], lse: Option<&[f32]>) -> Result<(), Error> {
    // A problem with no keys and a one-element q reaches only `out` and `lse`.
    let s = params.shape;
    let probe = Params {
        shape: Shape {
            kv_len: 0,
            head_dim: 1,
            ..s
        },
        q: Layout {
            head_stride: 0,
            row_stride: 0,
        },
        scale: Some(1.0),
        bias: None,
        softcap: None,
        sinks: None,
        ..*params
    };
    probe.validate::<f32, f32>(&[0.0], &[], &[], out, lse)
}

/// Joins the partial `(out_b, lse_b)` into `(out_a, lse_a)`: afterwards `a` holds the result
/// over the union of both key ranges (which must be disjoint).
///
/// Both outputs are laid out as `params.out` (only `params.shape` and `params.out` are used);
/// both lse slices are `[q_heads][q_len]`, dense. Per row, with `m = max(lse_a, lse_b)`,
/// `w_a = e^(lse_a − m)`, `w_b = e^(lse_b − m)`:
/// `out = (w_a·out_a + w_b·out_b) / (w_a + w_b)` and `lse = m + ln(w_a + w_b)`; see
/// [`merge_rows`] for empty and NaN rows. The merge is commutative and associative up to
/// rounding (see the [module docs](self)).
///
/// Errors (nothing written): [`Error::TooShort`], [`Error::Overflow`] or [`Error::Overlap`]
/// for `out_a`/`out_b` (reported as [`Tensor::Out`]) and the lse slices ([`Tensor::Lse`]),
/// [`Error::ZeroDim`] and [`Error::HeadsNotDivisible`] as for the shape.
pub fn merge(
    params: &Params, out_a: &mut [f32], lse_a: &mut [f32], out_b: &[f32], lse_b: &[f32],
) -> Result<(), Error> {
    validate_out(params, out_a, Some(lse_a))?;
    validate_out(params, out_b, Some(lse_b))?;
    let s = params.shape;
    if s.q_len == 0 {
        return Ok(()); // nothing to merge, however many heads
    }
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let row = params.out.at(h, i);
            let l = h * s.q_len + i;
            let (Some(oa), Some(ob), Some(la), Some(&lb)) = (
                out_a.get_mut(row..row + s.v_dim),
                out_b.get(row..row + s.v_dim),
                lse_a.get_mut(l),
                lse_b.get(l),
            ) else {
                // Unreachable after validation.
                continue;
            };
            merge_row(oa, la, Some(ob), lb);
        }
    }
    Ok(())
}

/// Merges each row's sink into a result merged from partials (see [Sinks](self#sinks)):
/// row `i` of head `h` becomes the merge of itself with a partial of output 0 and
/// `lse = sinks[h]`, so it equals the one-shot call with the sinks. Does nothing when
/// `params.sinks` is `None`.
///
/// Errors (nothing written): as [`merge`] for `out` and `lse`, and
/// [`Error::TooShort`]`(`[`Tensor::Sinks`]`)` for too few sinks.
pub fn add_sinks(params: &Params, out: &mut [f32], lse: &mut [f32]) -> Result<(), Error> {
    validate_out(params, out, Some(lse))?;
    params.check_sinks()?;
    let s = params.shape;
    if params.sinks.is_none() || s.q_len == 0 {
        return Ok(());
    }
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let row = params.out.at(h, i);
            let (Some(o), Some(l)) = (
                out.get_mut(row..row + s.v_dim),
                lse.get_mut(h * s.q_len + i),
            ) else {
                continue; // unreachable after validation
            };
            merge_sink(o, l, params.sink(h));
        }
    }
    Ok(())
}

/// Merges a sink into one row: [`merge_row`] with a partial of zeros and `lse = sink`, except
/// that an infinite sink makes the row NaN, as an infinite score does in the one-shot call
/// (its weight is `e^(inf − inf)`).
pub(crate) fn merge_sink(oa: &mut [f32], la: &mut f32, sink: f32) {
    merge_row(oa, la, None, sink);
}

/// [`merge`] for one row: joins `(out_b, lse_b)` into `(out_a, lse_a)`.
///
/// - If either lse is NaN, the row and its lse become NaN.
/// - An lse of `-inf` means "no key": that side contributes nothing (its `out` is not read);
///   if both are `-inf`, `out_a` becomes 0 and `lse_a` stays `-inf`.
/// - Otherwise the weighted mean, computed in `f64` and rounded once. A NaN in a contributing
///   `out` stays NaN (even with a weight that underflows to 0), as in the one-shot call.
///
/// Errors with [`Error::TooShort`]`(`[`Tensor::Out`]`)` (nothing written) when the rows differ
/// in length.
pub fn merge_rows(
    out_a: &mut [f32], lse_a: &mut f32, out_b: &[f32], lse_b: f32,
) -> Result<(), Error> {
    if out_a.len() != out_b.len() {
        return Err(Error::TooShort {
            tensor: Tensor::Out,
            needed: out_a.len().max(out_b.len()),
            len: out_a.len().min(out_b.len()),
        });
    }
    merge_row(out_a, lse_a, Some(out_b), lse_b);
    Ok(())
}

/// `e^(x − m)` for `x ≤ m`, with `x == m` giving exactly 1 (also for infinite `m`).
#[inline]
pub(crate) fn weight(x: f32, m: f32) -> f64 {
    if x == m {
        1.0
    } else {
        libm::exp(x as f64 - m as f64)
    }
}

/// The row merge; the rows have the same length. `ob = None` is a row of zeros whose lse
/// is a sink's, and then an infinite `lb` makes the row NaN.
fn merge_row(oa: &mut [f32], la: &mut f32, ob: Option<&[f32]>, lb: f32) {
    let a = *la;
    if a.is_nan() || lb.is_nan() || (ob.is_none() && lb == f32::INFINITY) {
        oa.fill(f32::NAN);
        *la = f32::NAN;
        return;
    }
    if lb == f32::NEG_INFINITY {
        if a == f32::NEG_INFINITY {
            oa.fill(0.0);
        }
        return;
    }
    if a == f32::NEG_INFINITY {
        match ob {
            Some(ob) => oa.copy_from_slice(ob),
            None => oa.fill(0.0),
        }
        *la = lb;
        return;
    }
    let m = a.max(lb);
    let (wa, wb) = (weight(a, m), weight(lb, m));
    let total = wa + wb;
    let (wa, wb) = (wa / total, wb / total);
    match ob {
        Some(ob) => {
            for (x, &y) in oa.iter_mut().zip(ob) {
                *x = (wa * *x as f64 + wb * y as f64) as f32;
            }
        }
        None => oa.iter_mut().for_each(|x| *x = (wa * *x as f64) as f32),
    }
    *la = (m as f64 + libm::log(total)) as f32;
}
