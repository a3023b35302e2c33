//! The same call as [`attention`](crate::attention), spread over threads with `rayon`
//! (feature `parallel`, which needs `std`).
//!
//! The tasks are those of a [`Plan`] ([`crate::plan`]): one kv head's group of query heads
//! (so grouped-query heads still share their K/V reads) × a block of query rows × a range of
//! keys, each a [split-KV partial](crate::split::partial) written into its own part of one
//! buffer; the caller's thread then merges the key ranges of each block into `out`
//! ([`crate::plan::finish`]). Prefill splits over heads × query blocks;
//! decode, with few query rows, also over keys.
//!
//! The result means the same as the single-threaded call: a task's rows are the rows of the
//! full problem (masks keep absolute positions), and the merge is exact up to the rounding
//! bounded by [`tolerance::merged_output_bound`](crate::tolerance::merged_output_bound) with
//! the depth `kv splits − 1`. Without a key split the per-row arithmetic is the kernel's own.
//!
//! ```
//! use qkv::{Mask, Params, Shape};
//!
//! let shape = Shape::new(4, 1, 4096, 64).gqa(8, 2); // decode: 8 q heads, 2 kv heads
//! let params = Params::new(shape).with_mask(Mask::causal());
//! let q = vec![0.1f32; 8 * 64];
//! let k = vec![0.2f32; 2 * 4096 * 64];
//! let v = vec![1.0f32; 2 * 4096 * 64];
//! let mut out = vec![0.0f32; 8 * 64];
//! qkv::parallel::attention(&params, &q, &k, &v, &mut out, None)?;
//! assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-5));
//! # Ok::<(), qkv::Error>(())
//! ```

use std::vec;
use std::vec::Vec;

use rayon::prelude::*;

pub use crate::plan::Plan;
use crate::range::from;
use crate::{Error, KvType, Level, Params, plan};

/// [`attention`](crate::attention) on the current rayon pool, with the best level and
/// [`Plan::auto`]. Same arguments, errors and semantics.
pub fn attention<K: KvType, V: KvType>(
    params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32], lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    let plan = Plan::auto(&params.shape, rayon::current_num_threads());
    attention_planned(Level::Detect, plan, params, q, k, v, out, lse)
}

/// [`attention`] with a chosen level and plan. Same errors as [`Level::attention`]; nothing
/// is written on error.
#[allow(clippy::too_many_arguments)]
pub fn attention_planned<K: KvType, V: KvType>(
    level: Level, plan: Plan, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    level.check()?;
    let s = params.shape;
    let tasks = plan.tasks(&s);
    if tasks == 0 {
        return level.attention(params, q, k, v, out, lse);
    }
    // The tasks' parts of the buffer follow each other in task order.
    let mut partial = vec![0.0f32; plan.partial_len(&s)];
    let mut parts = Vec::with_capacity(tasks);
    let mut rest = partial.as_mut_slice();
    for task in 0..tasks {
        let len = plan.task_partial(&s, task).map_or(0, |r| r.len());
        let (part, tail) = rest.split_at_mut(len.min(rest.len()));
        parts.push((task, part));
        rest = tail;
    }
    parts
        .into_par_iter()
        .try_for_each(|(task, part)| plan::run_task(level, plan, params, q, k, v, task, part))?;
    plan::finish(plan, params, &partial, out, lse)
}

/// [`ragged::attention`](crate::ragged::attention) on the threads of rayon's pool: the
/// sequences of the batch and, within each, the tasks of its own [`Plan`] (heads × query
/// blocks × key ranges) are one pool of work, so a batch of many short sequences and one of
/// a few long ones both fill the threads. Each sequence's result is what
/// [`attention`] gives for it alone; they are written into `out` and `lse` after every
/// sequence succeeded (nothing is written on error).
pub fn ragged<K: KvType, V: KvType>(
    params: &Params, batch: &crate::ragged::Batch, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    batch.check(params)?;
    let s = params.shape;
    // Each sequence into dense rows of its own: `[q_heads][q_len][v_dim]` and its lse.
    let results: Vec<(Vec<f32>, Vec<f32>)> = (0..batch.len())
        .into_par_iter()
        .map(|b| {
            let (mut sub, [qa, ka, va, _, _]) = batch.sequence(params, b);
            let n = sub.shape.q_heads * sub.shape.q_len;
            sub.out = crate::Layout::planar(sub.shape.q_len, s.v_dim);
            let (mut o, mut l) = (vec![0.0f32; n * s.v_dim], vec![0.0f32; n]);
            let (q, k, v) = (from(q, qa), from(k, ka), from(v, va));
            attention(&sub, q, k, v, &mut o, Some(&mut l))?;
            Ok((o, l))
        })
        .collect::<Result<_, Error>>()?;
    let mut lse = lse;
    for (b, (o, l)) in results.iter().enumerate() {
        let (q0, len) = (batch.cu_q[b], batch.cu_q[b + 1] - batch.cu_q[b]);
        for h in 0..s.q_heads {
            for i in 0..len {
                let at = params.out.at(h, q0 + i);
                out[at..at + s.v_dim].copy_from_slice(&o[(h * len + i) * s.v_dim..][..s.v_dim]);
            }
            if let Some(lse) = lse.as_deref_mut() {
                lse[h * s.q_len + q0..][..len].copy_from_slice(&l[h * len..][..len]);
            }
        }
    }
    Ok(())
}
