//! Incremental attention: feed K/V in chunks of any size, in any number of calls — the pages
//! of a paged KV cache, or tokens as they arrive — and read the result at the end.
//!
//! A [`Stream`] keeps, for every query row, a running max, a running sum and an unnormalised
//! accumulator, all in a caller-owned `&mut [f32]` of [`Stream::state_len`] elements (no
//! heap). Each [`update`](Stream::update) computes the chunk as a split-KV
//! [partial](crate::split::partial) (into scratch space inside the state) and folds it into
//! the running values; [`finish`](Stream::finish) writes `out` and `lse`.
//!
//! The stream is described by the [`Params`] of the whole problem, as if it were one call:
//! `shape.kv_len` is the number of key positions (it resolves [`QueryPos::BottomRight`] and
//! bounds the chunks), the layouts of `q` and `out` are used as given, and each chunk's K and V
//! slices are laid out with the strides of `params.k` and `params.v`, their row 0 being the
//! chunk's first key. A chunk names its absolute key positions, so causal and window masks
//! mean the same as in the one-shot call, and a [`Bias`](crate::Bias) in the params is read at
//! the chunk's columns. Chunks may come in any order; each key should be fed once (a key fed
//! twice counts twice). After all keys `0..kv_len`, the result equals the one-shot call within
//! [`tolerance::stream_output_bound`](crate::tolerance::stream_output_bound), for every
//! chunking; keys never fed count as excluded. The [sinks](Params::sinks) join each row's
//! running values once, when the stream starts ([`Stream::new`], [`Stream::reset`]).
//!
//! [`QueryPos::BottomRight`]: crate::QueryPos::BottomRight
//!
//! ```
//! use qkv::{Mask, Params, Shape, stream::Stream};
//!
//! // One head, 2 query rows at the end of 10 keys, causal, head_dim 4.
//! let params = Params::new(Shape::new(1, 2, 10, 4)).with_mask(Mask::causal());
//! let q = vec![0.5f32; 2 * 4];
//! let k: Vec<f32> = (0..40).map(|x| (x % 3) as f32).collect();
//! let v: Vec<f32> = (0..40).map(|x| x as f32 * 0.1).collect();
//! let mut state = vec![0.0f32; Stream::state_len(&params.shape)];
//! let mut stream = Stream::new(&params, &mut state)?;
//! for page in [0..4, 4..8, 8..9, 9..10] {
//!     let rows = page.start * 4..page.end * 4; // this page's K and V rows
//!     stream.update(&q, &k[rows.clone()], &v[rows], page)?;
//! }
//! let (mut out, mut lse) = (vec![0.0f32; 8], vec![0.0f32; 2]);
//! stream.finish(&mut out, Some(&mut lse))?;
//!
//! let mut want = vec![0.0f32; 8];
//! qkv::attention(&params, &q, &k, &v, &mut want, None)?;
//! assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
//! # Ok::<(), qkv::Error>(())
//! ```

use core::ops::Range;

use crate::dispatch::on_stack_workspace;
use crate::range::{Part, check_keys};
use crate::split::{validate_out, weight};
use crate::{Dim, Error, KvType, Layout, Level, Params, Shape, Tensor};

/// The running state of attention over a growing set of keys, for all query rows of a
/// problem. See the [module docs](self).
#[derive(Debug)]
pub struct Stream<'p, 's> {
    params: Params<'p>,
    level: Level,
    state: &'s mut [f32],
}

/// The state split into its parts: `[rows]` max, `[rows]` sum, `[rows]` chunk lse,
/// `[rows][v_dim]` accumulator, `[rows][v_dim]` chunk output.
pub(crate) struct Parts<'s> {
    pub max: &'s mut [f32],
    pub sum: &'s mut [f32],
    pub lse_c: &'s mut [f32],
    pub acc: &'s mut [f32],
    pub out_c: &'s mut [f32],
}

impl Parts<'_> {
    /// Folds the chunk in `lse_c` and `out_c` (rows of `v_dim` values) into the running
    /// max, sum and accumulator. Out of line: its frame is not under the kernel's.
    #[inline(never)]
    pub fn fold(self, v_dim: usize) {
        let p = self;
        for (r, (&lc, oc)) in p.lse_c.iter().zip(p.out_c.chunks_exact(v_dim)).enumerate() {
            if let (Some(m), Some(sum), Some(acc)) = (
                p.max.get_mut(r),
                p.sum.get_mut(r),
                p.acc.get_mut(r * v_dim..(r + 1) * v_dim),
            ) {
                fold(m, sum, acc, lc, oc);
            }
        }
    }
}

/// The chunk `keys` of a stream over `params` as a problem of its own: the keys checked,
/// its sub-problem, whose output is the state's chunk rows (`[rows][v_dim]`).
#[inline(always)]
fn chunk_params<'p>(params: &Params<'p>, keys: Range<usize>) -> Result<Params<'p>, Error> {
    check_keys(&keys, params.shape.kv_len)?;
    let s = params.shape;
    // Mapped, not moved out of its `Result` by `?`: one copy of the sub-problem, not two.
    Part::keys(params, keys).params(params).map(|mut sub| {
        sub.out = Layout::planar(s.q_len, s.v_dim);
        sub
    })
}

impl<'p, 's> Stream<'p, 's> {
    /// The number of `f32` a stream for `shape` needs: `q_heads · q_len · (3 + 2·v_dim)`
    /// (`usize::MAX` if that overflows, which no slice can hold).
    pub fn state_len(shape: &Shape) -> usize {
        shape
            .q_heads
            .checked_mul(shape.q_len)
            .and_then(|rows| {
                shape
                    .v_dim
                    .checked_mul(2)
                    .and_then(|x| x.checked_add(3))
                    .and_then(|per_row| rows.checked_mul(per_row))
            })
            .unwrap_or(usize::MAX)
    }

    /// A stream with no key yet, over `state` (at least [`Stream::state_len`] elements),
    /// running on the best level.
    ///
    /// Errors: [`Error::ZeroDim`], [`Error::HeadsNotDivisible`] and [`Error::InvalidScale`] as
    /// for the one-shot call; [`Error::TooShort`] (reported as [`Tensor::Out`]) if `state` is
    /// too short, [`Error::Overflow`] if its size overflows. Slices are checked when they
    /// are passed, in [`update`](Stream::update) and [`finish`](Stream::finish).
    pub fn new(params: &Params<'p>, state: &'s mut [f32]) -> Result<Stream<'p, 's>, Error> {
        let mut stream = Stream::resume(params, state)?;
        stream.reset();
        Ok(stream)
    }

    /// A stream over a `state` that an earlier stream with the same `params` left (for
    /// callers that keep the state between calls, such as the C ABI). Same errors as
    /// [`Stream::new`]. Any contents are memory-safe; only a state written by a stream with
    /// the same params gives meaningful results.
    pub fn resume(params: &Params<'p>, state: &'s mut [f32]) -> Result<Stream<'p, 's>, Error> {
        let s = params.shape;
        let needed = Stream::state_len(&s);
        if needed == usize::MAX {
            return Err(Error::Overflow(Tensor::Out));
        }
        if state.len() < needed {
            return Err(Error::TooShort {
                tensor: Tensor::Out,
                needed,
                len: state.len(),
            });
        }
        // The shape checks of the crate's validation, on the accumulator. Its probe stands in
        // a `head_dim` of 1 (the accumulator has none), so a zero `head_dim` is refused here,
        // in the one-shot call's order: after zero q and kv heads, before a zero `v_dim`.
        if s.q_heads != 0 && s.kv_heads != 0 && s.head_dim == 0 {
            return Err(Error::ZeroDim(Dim::HeadDim));
        }
        let rows = s.q_heads * s.q_len;
        let probe = Params {
            out: Layout::planar(s.q_len, s.v_dim),
            ..*params
        };
        let lse = state.get(..rows).unwrap_or(&[]);
        let acc = state.get(3 * rows..).unwrap_or(&[]);
        validate_out(&probe, acc, Some(lse))?;
        if !params.scale().is_finite() {
            return Err(Error::InvalidScale);
        }
        params.check_variants()?;
        Ok(Stream {
            params: *params,
            level: Level::Detect,
            state,
        })
    }

    /// The same stream, running its chunks on `level`.
    pub fn with_level(self, level: impl Into<Level>) -> Stream<'p, 's> {
        Stream {
            level: level.into(),
            ..self
        }
    }

    /// Forgets every key fed so far.
    pub fn reset(&mut self) {
        let (params, q_len) = (self.params, self.params.shape.q_len);
        if let Some(p) = self.parts() {
            // Each row starts with its head's sink, if any: it joins once, here.
            for (r, (max, sum)) in p.max.iter_mut().zip(p.sum.iter_mut()).enumerate() {
                (*max, *sum) = params.start_state(r / q_len.max(1));
            }
            p.acc.fill(0.0);
        }
    }

    fn parts(&mut self) -> Option<Parts<'_>> {
        parts(&self.params.shape, self.state)
    }

    /// Gives the stream up for its chunk `keys`, run elsewhere as a call of its own (the C
    /// ABI runs it as a one-shot call, so that the stream's params are not held under the
    /// kernel besides the chunk's): the chunk's sub-problem and the state's parts, whose
    /// `out_c` and `lse_c` the chunk writes before [`Parts::fold`]. Errors as
    /// [`update`](Stream::update)'s before its chunk runs.
    #[cfg(feature = "capi")]
    #[inline(never)]
    pub(crate) fn into_chunk(self, keys: Range<usize>) -> Result<(Params<'p>, Parts<'s>), Error> {
        let sub = chunk_params(&self.params, keys)?;
        let parts = parts(&self.params.shape, self.state).ok_or(Error::Overflow(Tensor::Out))?;
        Ok((sub, parts))
    }

    /// Feeds the keys at absolute positions `keys`: `k` and `v` hold their rows (row 0 is key
    /// `keys.start`), laid out with the strides of `params.k` and `params.v`; with pages
    /// ([`Params::pages`]), `k` and `v` are the whole pools and the table finds the keys. `q`
    /// is the problem's `q` (the same at every update).
    ///
    /// Errors (the state is unchanged): [`Error::KeyRange`] if `keys` is not within
    /// `0..=kv_len`, then what [`attention`](crate::attention) returns for the chunk as a
    /// problem of `keys.len()` keys (slices too short, an unavailable level…).
    pub fn update<K: KvType, V: KvType>(
        &mut self, q: &[f32], k: &[K], v: &[V], keys: Range<usize>,
    ) -> Result<(), Error> {
        self.update_by(keys, |level, sub, out, lse| {
            // Validated before the stack workspace exists.
            sub.validate(q, k, v, out, Some(lse))?;
            on_stack_workspace::<K, V, _>(sub, |ws| {
                level.attention_in(ws, sub, q, k, v, out, Some(lse))
            })
        })
    }

    /// [`update`](Stream::update) in the caller's working memory, as
    /// [`attention_in`](crate::attention_in): [`workspace_len`](crate::workspace_len) of the
    /// stream's params for full speed, at least [`min_workspace_len`](crate::min_workspace_len)
    /// ([`Error::WorkspaceTooSmall`] otherwise, the state unchanged).
    pub fn update_in<K: KvType, V: KvType>(
        &mut self, workspace: &mut [f32], q: &[f32], k: &[K], v: &[V], keys: Range<usize>,
    ) -> Result<(), Error> {
        self.update_by(keys, |level, sub, out, lse| {
            level.attention_in(workspace, sub, q, k, v, out, Some(lse))
        })
    }

    /// Runs the chunk `keys` with `chunk(level, sub-problem, out, lse)` into the state's
    /// scratch rows, then folds it into the running values.
    fn update_by(
        &mut self, keys: Range<usize>,
        chunk: impl FnOnce(Level, &Params, &mut [f32], &mut [f32]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // Used where it lies: moved out of its `Result`, the sub-problem would take a second
        // slot of this frame, under every frame of the kernel (firmware stacks are small).
        let mut sub = chunk_params(&self.params, keys);
        let sub = match &mut sub {
            Ok(sub) => sub,
            Err(e) => return Err(*e),
        };
        let (level, v_dim) = (self.level, self.params.shape.v_dim);
        let Some(p) = self.parts() else {
            return Err(Error::Overflow(Tensor::Out));
        };
        chunk(level, sub, p.out_c, p.lse_c)?;
        p.fold(v_dim);
        Ok(())
    }

    /// Writes the attention over every key fed so far: `out` laid out as `params.out`, and
    /// `lse`, if given, `[q_heads][q_len]`. Rows that saw no key get `out = 0` and
    /// `lse = -inf` (with sinks, `lse` is the row's sink).
    /// The stream is left as it was, so more keys can follow.
    ///
    /// Errors (nothing written): as [`attention`](crate::attention) for `out` and `lse`.
    pub fn finish(&mut self, out: &mut [f32], mut lse: Option<&mut [f32]>) -> Result<(), Error> {
        let params = self.params;
        validate_out(&params, out, lse.as_deref())?;
        let s = params.shape;
        let Some(p) = self.parts() else {
            return Err(Error::Overflow(Tensor::Out));
        };
        if s.q_len == 0 {
            return Ok(()); // nothing to write, however many heads
        }
        for h in 0..s.q_heads {
            for i in 0..s.q_len {
                let r = h * s.q_len + i;
                let start = params.out.at(h, i);
                let (Some(o), Some(&m), Some(&sum), Some(acc)) = (
                    out.get_mut(start..start + s.v_dim),
                    p.max.get(r),
                    p.sum.get(r),
                    p.acc.get(r * s.v_dim..(r + 1) * s.v_dim),
                ) else {
                    continue;
                };
                let row_lse = if m.is_nan() || sum.is_nan() {
                    o.fill(f32::NAN);
                    f32::NAN
                } else if m == f32::NEG_INFINITY || sum == 0.0 {
                    o.fill(0.0);
                    f32::NEG_INFINITY
                } else {
                    let inv = 1.0 / sum as f64;
                    for (o, &a) in o.iter_mut().zip(acc) {
                        *o = (a as f64 * inv) as f32;
                    }
                    (m as f64 + libm::log(sum as f64)) as f32
                };
                if let Some(l) = lse.as_deref_mut().and_then(|l| l.get_mut(r)) {
                    *l = row_lse;
                }
            }
        }
        Ok(())
    }
}

/// The parts of a stream's `state` for `shape` (`None` if it is too short).
fn parts<'s>(shape: &Shape, state: &'s mut [f32]) -> Option<Parts<'s>> {
    let rows = shape.q_heads * shape.q_len;
    let wide = rows * shape.v_dim;
    let (max, rest) = state.split_at_mut_checked(rows)?;
    let (sum, rest) = rest.split_at_mut_checked(rows)?;
    let (lse_c, rest) = rest.split_at_mut_checked(rows)?;
    let (acc, rest) = rest.split_at_mut_checked(wide)?;
    let out_c = rest.get_mut(..wide)?;
    Some(Parts {
        max,
        sum,
        lse_c,
        acc,
        out_c,
    })
}

/// Folds one chunk's row `(oc, lc)` into the running `(max, sum, acc)`, where the result so
/// far is `acc / sum` with `lse = max + ln sum`. NaN is sticky.
fn fold(max: &mut f32, sum: &mut f32, acc: &mut [f32], lc: f32, oc: &[f32]) {
    let m = *max;
    if m.is_nan() {
        return;
    }
    if lc.is_nan() {
        *max = f32::NAN;
        *sum = f32::NAN;
        acc.fill(f32::NAN);
        return;
    }
    if lc == f32::NEG_INFINITY {
        return;
    }
    if lc <= m {
        let w = weight(lc, m);
        *sum = (*sum as f64 + w) as f32;
        for (a, &o) in acc.iter_mut().zip(oc) {
            *a = (*a as f64 + w * o as f64) as f32;
        }
    } else {
        let r = weight(m, lc);
        *sum = (*sum as f64 * r + 1.0) as f32;
        for (a, &o) in acc.iter_mut().zip(oc) {
            *a = (*a as f64 * r + o as f64) as f32;
        }
        *max = lc;
    }
}
