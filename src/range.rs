//! Parts of a problem as problems of their own: a block of query heads, query rows and keys,
//! with every position kept absolute. Split-KV partials, stream chunks and the tasks of
//! `parallel` are all such parts, run by the same kernel.
//!
//! A part keeps the layouts (so the strides) of the whole problem; its `q`, `k`, `v` and `bias`
//! start at the part's first element, and its query position is shifted so that key `j` of
//! the part means key `keys.start + j` of the problem to the mask.

use core::ops::Range;

use crate::{Bias, Error, Params, QueryPos, Tensor};

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

    /// The problem this part is: its shape, the query position shifted so keys keep their
    /// absolute positions, and the bias from the part's first element. Layouts are those of
    /// `params`.
    ///
    /// Errors with [`Error::Overflow`]`(`[`Tensor::Q`]`)` when the shifted position does not
    /// fit in `i64`.
    pub fn params<'a>(&self, params: &Params<'a>) -> Result<Params<'a>, Error> {
        let s = params.shape;
        let group = s.q_heads / s.kv_heads.max(1);
        let mut sub = *params;
        sub.shape.q_heads = self.heads.len();
        sub.shape.kv_heads = self.heads.len() / group.max(1);
        sub.shape.q_len = self.rows.len();
        sub.shape.kv_len = self.keys.len();
        let shift = self.keys.start as i128 - self.rows.start as i128;
        sub.mask.query_pos = shifted_query_pos(params, shift)?;
        sub.bias = params.bias.map(|b| {
            let first = b
                .layout()
                .at(self.heads.start, self.rows.start)
                .wrapping_add(self.keys.start);
            Bias {
                data: b.data.get(first..).unwrap_or(&[]),
                ..b
            }
        });
        Ok(sub)
    }

    /// `q`, `k` and `v` from the part's first element (empty past the end, which only an
    /// empty part reaches).
    pub fn inputs<'s>(
        &self,
        params: &Params,
        q: &'s [f32],
        k: &'s [f32],
        v: &'s [f32],
    ) -> (&'s [f32], &'s [f32], &'s [f32]) {
        let group = params.shape.q_heads / params.shape.kv_heads.max(1);
        let g = self.heads.start / group.max(1);
        let from = |data: &'s [f32], at: usize| data.get(at..).unwrap_or(&[]);
        (
            from(q, params.q.at(self.heads.start, self.rows.start)),
            from(k, params.k.at(g, self.keys.start)),
            from(v, params.v.at(g, self.keys.start)),
        )
    }
}

/// The query position of `params`' row 0, moved `shift` positions back, as the [`QueryPos`] of
/// a part. When the mask has no bound the position does not matter.
///
/// Errors with [`Error::Overflow`]`(`[`Tensor::Q`]`)` when the shifted position does not fit
/// in `i64`: with `kv_len` beyond `2⁶³` (broadcast K and V), or with a [`QueryPos::Offset`]
/// less than `shift` above `i64::MIN`.
fn shifted_query_pos(params: &Params, shift: i128) -> Result<QueryPos, Error> {
    if params.mask.left.is_none() && params.mask.right.is_none() {
        return Ok(QueryPos::Offset(0));
    }
    let offset = params.query_offset() - shift;
    i64::try_from(offset)
        .map(QueryPos::Offset)
        .map_err(|_| Error::Overflow(Tensor::Q))
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
