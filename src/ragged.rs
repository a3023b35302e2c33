//! Ragged batches: sequences of different lengths in one call, packed along the rows of the
//! tensors as FlashAttention's varlen API packs them, each sequence a problem of its own
//! (its own causal alignment, its own keys) run by the same kernel.
//!
//! ```
//! use qkv::ragged::{self, Batch};
//! use qkv::{Mask, Params, Shape};
//!
//! // Two sequences, [seq][heads][dim] packed: 3 queries over 5 keys, then 2 over 4.
//! let (cu_q, cu_k) = ([0, 3, 5], [0, 5, 9]);
//! let shape = Shape::new(2, 5, 9, 8); // q_len and kv_len are the totals
//! let params = Params::new(shape).interleaved().with_mask(Mask::causal());
//! let (q, kv) = (vec![0.1f32; 5 * 2 * 8], vec![0.2f32; 9 * 2 * 8]);
//! let (mut out, mut lse) = (vec![0.0f32; 5 * 2 * 8], vec![0.0f32; 2 * 5]);
//! ragged::attention(&params, &Batch::new(&cu_q, &cu_k), &q, &kv, &kv, &mut out, Some(&mut lse))?;
//! # Ok::<(), qkv::Error>(())
//! ```

use crate::error::Error;
use crate::kv::KvType;
use crate::range;
use crate::{Level, Params};

/// Where each sequence of a ragged batch is: sequence `b` owns query rows
/// `cu_q[b]..cu_q[b + 1]` and keys `cu_k[b]..cu_k[b + 1]` of the packed tensors, whose
/// [`Params::shape`] gives the totals as `q_len` and `kv_len`.
///
/// Both lists hold one more entry than there are sequences, start at 0, never decrease and
/// end at `q_len` and `kv_len` ([`Error::Batch`] otherwise). Sequences may be empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Batch<'a> {
    /// The cumulative query rows: FlashAttention's `cu_seqlens_q`.
    pub cu_q: &'a [usize],
    /// The cumulative keys: `cu_seqlens_k`.
    pub cu_k: &'a [usize],
}

impl<'a> Batch<'a> {
    /// The batch of these cumulative offsets.
    pub const fn new(cu_q: &'a [usize], cu_k: &'a [usize]) -> Batch<'a> {
        Batch { cu_q, cu_k }
    }

    /// The number of sequences.
    pub const fn len(&self) -> usize {
        self.cu_q.len().saturating_sub(1)
    }

    /// Whether there is no sequence.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Error::Batch`] unless the offsets describe sequences of `params`' totals.
    pub(crate) fn check(&self, params: &Params) -> Result<(), Error> {
        let s = params.shape;
        if self.cu_q.len() != self.cu_k.len() || self.cu_q.is_empty() {
            let index = self.cu_q.len().min(self.cu_k.len());
            return Err(Error::Batch { index });
        }
        for (cu, total) in [(self.cu_q, s.q_len), (self.cu_k, s.kv_len)] {
            let last = cu.len() - 1;
            let bad = cu.iter().enumerate().find(|&(i, &x)| {
                (i == 0 && x != 0) || (i > 0 && x < cu[i - 1]) || (i == last && x != total)
            });
            if let Some((index, _)) = bad {
                return Err(Error::Batch { index });
            }
        }
        Ok(())
    }

    /// Sequence `b` as a problem: its params (lengths, bias block, pages from its first key)
    /// and where its `q`, `k`, `v`, `out` and `lse` start in the packed tensors.
    pub(crate) fn sequence<'p>(&self, params: &Params<'p>, b: usize) -> (Params<'p>, [usize; 5]) {
        let (q0, k0) = (self.cu_q[b], self.cu_k[b]);
        let mut sub = *params;
        sub.shape.q_len = self.cu_q[b + 1] - q0;
        sub.shape.kv_len = self.cu_k[b + 1] - k0;
        (sub.bias, sub.pages) = range::from_corner(params, 0, q0, k0);
        let key = range::first_key(params, k0);
        let at = [
            params.q.at(0, q0),
            params.k.at(0, key),
            params.v.at(0, key),
            params.out.at(0, q0),
            q0,
        ];
        (sub, at)
    }
}

/// [`attention`](crate::attention) over a ragged batch: every sequence of `batch` attends to
/// its own keys, with the mask aligned to its own lengths (causal bottom-right per sequence
/// by default), its block of the bias, the same scale, softcap, sinks and ALiBi slopes.
///
/// `q`, `k`, `v` and `out` are laid out by `params` over the totals (`q_len = cu_q[last]`,
/// `kv_len = cu_k[last]`), usually `[total][heads][dim]` ([`Params::interleaved`]); `lse`,
/// if given, is `[q_heads][q_len]` over the total rows, as FlashAttention's varlen `lse`.
///
/// Errors, nothing written: what [`attention`](crate::attention) returns for the packed
/// tensors, and [`Error::Batch`] for offsets that do not describe them. (Each sequence is
/// then a valid problem; an unavailable level fails at the first one with rows.)
pub fn attention<K: KvType, V: KvType>(
    params: &Params, batch: &Batch, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    attention_at(Level::Detect, params, batch, q, k, v, out, lse)
}

/// [`attention`] at `level`.
#[allow(clippy::too_many_arguments)]
pub fn attention_at<K: KvType, V: KvType>(
    level: Level, params: &Params, batch: &Batch, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    mut lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    batch.check(params)?;
    let total = params.shape.q_len;
    for b in 0..batch.len() {
        let (sub, [qa, ka, va, oa, la]) = batch.sequence(params, b);
        let lse = lse
            .as_deref_mut()
            .map(|l| l.get_mut(la..).unwrap_or(&mut []));
        crate::dispatch::on_stack_workspace::<K, V, _>(&sub, |ws| {
            level.attention_rows(
                ws,
                &sub,
                q.get(qa..).unwrap_or(&[]),
                k.get(ka..).unwrap_or(&[]),
                v.get(va..).unwrap_or(&[]),
                out.get_mut(oa..).unwrap_or(&mut []),
                lse,
                total,
            )
        })?;
    }
    Ok(())
}
