//! Ragged batches for the test kit: a [`Case`] read as a packed batch of sequences
//! ([`Ragged`], FlashAttention's cumulative offsets), checked sequence by sequence against the
//! reference on that sequence cut out of the case by hand ([`Case::sequence`]: its rows, its
//! keys, its block of the bias, its outputs, each from its first element), independently of
//! the crate's batch code.

use qkv::Level;
use qkv::ragged::{self, Batch};

use super::case::Case;
use super::compare::{Expected, SENTINEL, check_written, compare_row, describe};
use super::kv::{Stored, with_stored};

/// The sequences of a ragged case: sequence `b` owns query rows `cu_q[b]..cu_q[b + 1]` and
/// keys `cu_k[b]..cu_k[b + 1]` of the case's tensors, whose shape gives the totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ragged {
    pub cu_q: Vec<usize>,
    pub cu_k: Vec<usize>,
}

impl Ragged {
    /// The number of sequences.
    pub fn len(&self) -> usize {
        self.cu_q.len() - 1
    }
}

impl Case {
    /// Sequence `b` of `r` as a case of its own: the same layouts, mask, scale, variants,
    /// storage types and paging, over its rows and keys (the data from their first element).
    pub fn sequence(&self, r: &Ragged, b: usize) -> Case {
        let (q0, k0) = (r.cu_q[b], r.cu_k[b]);
        let [lq, lk, lv, lo] = self.layouts;
        let from = |data: &[f32], start: usize| data.get(start..).unwrap_or(&[]).to_vec();
        let mut shape = self.shape;
        shape.q_len = r.cu_q[b + 1] - q0;
        shape.kv_len = r.cu_k[b + 1] - k0;
        Case {
            shape,
            q: from(&self.q, q0 * lq.row_stride),
            k: from(&self.k, k0 * lk.row_stride),
            v: from(&self.v, k0 * lv.row_stride),
            bias: self
                .bias
                .as_ref()
                .map(|(d, hs, rs)| (from(d, q0 * rs + k0), *hs, *rs)),
            out_len: self.out_len.saturating_sub(q0 * lo.row_stride),
            ragged: None,
            ..self.clone()
        }
    }
}

/// Runs every level of the test kit on `case` as the ragged batch `r` and checks, for each:
/// `Ok`; exactly the output rows and `lse[..q_heads·q_len]` (when asked for) written; each
/// sequence's rows and `lse` within the contract against the reference on
/// [`Case::sequence`].
pub fn check_ragged(case: &Case, r: &Ragged) {
    let s = case.shape;
    let subs: Vec<(Case, Expected)> = (0..r.len())
        .map(|b| {
            let sub = case.sequence(r, b);
            let want = Expected::new(&sub);
            (sub, want)
        })
        .collect();
    let call = case.call_inputs();
    let sp = call.params(case);
    let batch = Batch::new(&r.cu_q, &r.cu_k);
    let sentinel = f32::from_bits(SENTINEL);
    let lse_len = s.q_heads * s.q_len;
    for level in super::levels() {
        let mut got = vec![sentinel; case.out_len];
        let mut got_lse = vec![sentinel; lse_len + 2];
        let lse = case.lse.then_some(&mut got_lse[..]);
        with_stored!(&call.k, |k| with_stored!(&call.v, |v| {
            ragged::attention_at(level, &sp, &batch, &case.q, k, v, &mut got, lse)
        }))
        .unwrap_or_else(|e| {
            panic!(
                "{level:?} refused a valid batch {r:?}: {e}\n{}",
                describe(case)
            )
        });
        check_written(case, &format!("{level:?}, ragged"), &got, &got_lse);
        for (b, (sub, want)) in subs.iter().enumerate() {
            check_sequence(case, r, b, (sub, want), level, (&got, &got_lse));
        }
    }
}

/// Sequence `b`'s rows of the packed results against the reference on the sequence alone.
fn check_sequence(
    case: &Case, r: &Ragged, b: usize, (sub, want): (&Case, &Expected), level: Level,
    (got, got_lse): (&[f32], &[f32]),
) {
    let (s, q0) = (case.shape, r.cu_q[b]);
    let (out, sub_out) = (case.layouts[3], sub.layouts[3]);
    let len = sub.shape.q_len;
    for h in 0..s.q_heads {
        for i in 0..len {
            let row = &want.rows[h * len + i];
            let wanted = &want.out[sub_out.at(h, i)..][..s.v_dim];
            let e = compare_row(row, wanted, &got[out.at(h, q0 + i)..][..s.v_dim]);
            if let Some(bad) = e.bad {
                panic!(
                    "{level:?}: sequence {b} of {r:?}, out[{h}][{i}]: {bad}\n{}",
                    describe(case)
                );
            }
            if case.lse {
                let (w, g) = (want.lse[h * len + i], got_lse[h * s.q_len + q0 + i]);
                if let Err(bad) = row.check_lse(w, g) {
                    panic!(
                        "{level:?}: sequence {b} of {r:?}, lse[{h}][{i}]: {bad}\n{}",
                        describe(case)
                    );
                }
            }
        }
    }
}
