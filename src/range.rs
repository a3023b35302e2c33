//! Parts of a problem as problems of their own: a block of query heads, query rows and keys,
//! with every position kept absolute. Split-KV partials, stream chunks and the tasks of
//! `parallel` are all such parts, run by the same kernel.
//!
//! A part keeps the layouts (so the strides) of the whole problem; its `q`, `k`, `v` and `bias`
//! start at the part's first element, and its query position is shifted so that key `j` of
//! the part means key `keys.start + j` of the problem to the mask.

use core::ops::Range;

use crate::{Bias, Error, Mask, Pages, Params, QueryPos, Tensor};

/// A block of a problem: query heads `heads` (whole GQA groups), query rows `rows` and keys
/// `keys`.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub heads: Range<usize>,
    pub rows: Range<usize>,
    pub keys: Range<usize>,
}

impl Part {
    /// Every head and row of `params`, over the keys `keys`.
    pub fn keys(params: &Params, keys: Range<usize>) -> Part {
        Part {
            heads: 0..params.shape.q_heads,
            rows: 0..params.shape.q_len,
            keys,
        }
    }

    /// The problem this part is: its shape, the mask shifted so keys keep their absolute
    /// positions ([`shifted_mask`]), the bias and ALiBi slopes from the part's first element,
    /// the pages from its first key, and no sinks. Layouts and the softcap are those of `params`.
    ///
    /// Errors as [`shifted_mask`].
    pub fn params<'a>(&self, params: &Params<'a>) -> Result<Params<'a>, Error> {
        let s = params.shape;
        let group = s.q_heads / s.kv_heads.max(1);
        let mut sub = *params;
        sub.shape.q_heads = self.heads.len();
        sub.shape.kv_heads = self.heads.len() / group.max(1);
        sub.shape.q_len = self.rows.len();
        sub.shape.kv_len = self.keys.len();
        let shift = self.keys.start as i128 - self.rows.start as i128;
        sub.mask = shifted_mask(params, shift, &sub)?;
        // A part's result is a partial: the sinks join once, where partials are joined
        // (`split::add_sinks`, a plan's finish, a stream's state), never per part.
        sub.sinks = None;
        sub.alibi = params
            .alibi
            .map(|s| s.get(self.heads.start..).unwrap_or(&[]));
        (sub.bias, sub.pages) =
            from_corner(params, self.heads.start, self.rows.start, self.keys.start);
        Ok(sub)
    }

    /// `q`, `k` and `v` from the part's first element (empty past the end, which only an
    /// empty part reaches).
    pub fn inputs<'s, K, V>(
        &self, params: &Params, q: &'s [f32], k: &'s [K], v: &'s [V],
    ) -> (&'s [f32], &'s [K], &'s [V]) {
        let [qa, ka, va] = self.offsets(params);
        (from(q, qa), from(k, ka), from(v, va))
    }

    /// Where the part's `q`, `k` and `v` start in the problem's, in elements of each (blocks
    /// for q8_0).
    pub fn offsets(&self, params: &Params) -> [usize; 3] {
        let group = params.shape.q_heads / params.shape.kv_heads.max(1);
        let g = self.heads.start / group.max(1);
        let key = first_key(params, self.keys.start);
        [
            params.q.at(self.heads.start, self.rows.start),
            params.k.at(g, key),
            params.v.at(g, key),
        ]
    }
}

/// The bias and the pages of a sub-problem whose head 0, query row 0 and key 0 are head `h`,
/// row `row` and key `key` of `params` (a part, or a sequence of a ragged batch).
pub(crate) fn from_corner<'a>(
    params: &Params<'a>, h: usize, row: usize, key: usize,
) -> (Option<Bias<'a>>, Option<Pages<'a>>) {
    let bias = params.bias.map(|b| {
        let first = b.layout().at(h, row).wrapping_add(key);
        Bias {
            data: b.data.get(first..).unwrap_or(&[]),
            ..b
        }
    });
    (bias, params.pages.map(|p| p.starting_at(key)))
}

/// The key from which a sub-problem starting at key `key` slices K and V: `key`, or 0 with
/// pages, where K and V stay whole pools and the sub-problem's pages find its keys.
pub(crate) fn first_key(params: &Params, key: usize) -> usize {
    if params.paged().is_some() { 0 } else { key }
}

/// `data` from element `at` (empty past the end).
pub(crate) fn from<T>(data: &[T], at: usize) -> &[T] {
    data.get(at..).unwrap_or(&[])
}

/// The mask of a part whose row 0 and key 0 are `shift` positions apart more than in
/// `params`: the query position moved `shift` back, so every (row, key) pair of `part` is
/// visible exactly when it is in the whole problem.
///
/// With ALiBi the position is kept even without a window (the bias reads it), and one that
/// leaves `i64` errs with [`Error::Overflow`]`(`[`Tensor::Q`]`)`.
///
/// A position that leaves `i64` is brought back to its edge with the window moved along
/// (`pos − left` and `pos + right` unchanged): a side that no longer reaches the part's keys
/// becomes an empty band, one that overflows `usize` unbounded. This is exact while the part
/// has fewer than `2⁶³` rows and keys (only broadcast tensors reach more); beyond that it
/// errs with [`Error::Overflow`]`(`[`Tensor::Q`]`)`.
fn shifted_mask(params: &Params, shift: i128, part: &Params) -> Result<Mask, Error> {
    let mask = params.mask;
    let offset = params.query_offset() - shift;
    // ALiBi reads the position even without a window: it must stay exact.
    if mask.left.is_none() && mask.right.is_none() && params.alibi.is_none() {
        return Ok(Mask {
            query_pos: QueryPos::Offset(0),
            ..mask
        });
    }
    if let Ok(o) = i64::try_from(offset) {
        return Ok(Mask {
            query_pos: QueryPos::Offset(o),
            ..mask
        });
    }
    if params.alibi.is_some() {
        // No exact position to give ALiBi: distances of 2⁶³ keys or more.
        return Err(Error::Overflow(Tensor::Q));
    }
    let half = 1u128 << 63;
    let (rows, keys) = (part.shape.q_len as u128, part.shape.kv_len as u128);
    if rows >= half || keys >= half {
        return Err(Error::Overflow(Tensor::Q));
    }
    // Moves the position by `d` (> 0) towards the edge `edge`: the side facing away from the
    // edge shrinks by `d`, the other grows by `d`.
    let (edge, d) = match offset > 0 {
        true => (i64::MAX, offset - i64::MAX as i128),
        false => (i64::MIN, i64::MIN as i128 - offset),
    };
    let d = u128::try_from(d).map_err(|_| Error::Overflow(Tensor::Q))?;
    let grow = |side: Option<usize>| side.and_then(|n| usize::try_from(n as u128 + d).ok());
    // A side that shrinks past 0 sees no key: the whole band is empty (with the position at
    // the edge, beyond every key), which a band of width 0 on that side says.
    let shrink = |side: Option<usize>| side.map(|n| (n as u128).saturating_sub(d) as usize);
    let empty = |side: Option<usize>| side.is_some_and(|n| (n as u128) < d);
    let (left, right) = match offset > 0 {
        true => (shrink(mask.left), grow(mask.right)),
        false => (grow(mask.left), shrink(mask.right)),
    };
    let facing = if offset > 0 { mask.left } else { mask.right };
    let (left, right) = match empty(facing) {
        // Past the edge, no key is visible: an empty band (left 0 with the position beyond
        // every key, or right 0 with it before every key).
        true if offset > 0 => (Some(0), right),
        true => (left, Some(0)),
        false => (left, right),
    };
    Ok(Mask {
        left,
        right,
        query_pos: QueryPos::Offset(edge),
    })
}

/// Checks `keys` against `0..=kv_len`.
pub(crate) fn check_keys(keys: &Range<usize>, kv_len: usize) -> Result<(), Error> {
    if keys.start > keys.end || keys.end > kv_len {
        return Err(Error::KeyRange {
            start: keys.start,
            end: keys.end,
            kv_len,
        });
    }
    Ok(())
}
