//! The same call as [`attention`](crate::attention), spread over threads with `rayon`
//! (feature `parallel`, which needs `std`).
//!
//! The work is cut into tasks of one kv head's group of query heads (so grouped-query heads
//! still share their K/V reads) × a block of query rows × a range of keys ([`Plan`]). Each task
//! is a [split-KV partial](crate::split::partial) computed into its own buffers; the caller's
//! thread then [merges](crate::split::merge_rows) the key ranges of each block and copies the
//! result into `out` (whose layout may interleave heads, so tasks never write into it).
//! Prefill splits over heads × query blocks; decode, with few query rows, also over keys.
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

use crate::range::Part;
use crate::split::merge_rows;
use crate::{Error, KvType, Layout, Level, Params, Shape};

/// How [`attention_planned`] cuts a problem into tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plan {
    /// Query rows per task (at least 1; more than `q_len` means one block).
    pub q_block: usize,
    /// Keys per task (at least 1; more than `kv_len` means no key split). Blocks of the same
    /// rows over different keys are merged.
    pub kv_block: usize,
}

/// Query rows of one kernel block: task blocks are multiples of it.
const ROWS: usize = crate::kernel::BLOCK_Q;
/// The fewest keys a key split leaves to a task: smaller pieces cost more in overhead than
/// they gain.
const MIN_KEYS: usize = 512;

impl Plan {
    /// A plan for `threads` threads: at least `8·threads` tasks where the problem allows,
    /// query blocks in multiples of the kernel's block ([`BLOCK_Q`](crate::kernel::BLOCK_Q))
    /// rows, and key splits of at least 512 keys only when heads × query blocks are too few
    /// (decode).
    pub fn auto(shape: &Shape, threads: usize) -> Plan {
        let target = 8 * threads.max(1);
        let groups = shape.kv_heads.max(1);
        let q_len = shape.q_len.max(1);
        // Query blocks: enough of them for the target, each a whole number of kernel blocks.
        let blocks_wanted = target.div_ceil(groups);
        let q_block = if q_len <= ROWS {
            q_len
        } else {
            q_len.div_ceil(blocks_wanted).div_ceil(ROWS) * ROWS
        };
        let tasks = groups * q_len.div_ceil(q_block);
        let kv_block = if tasks >= target {
            usize::MAX
        } else {
            let splits = target.div_ceil(tasks);
            shape.kv_len.div_ceil(splits).max(MIN_KEYS)
        };
        Plan { q_block, kv_block }
    }
}

/// [`attention`](crate::attention) on the current rayon pool, with the best level and
/// [`Plan::auto`]. Same arguments, errors and semantics.
pub fn attention<K: KvType, V: KvType>(
    params: &Params,
    q: &[f32],
    k: &[K],
    v: &[V],
    out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    let plan = Plan::auto(&params.shape, rayon::current_num_threads());
    attention_planned(Level::Detect, plan, params, q, k, v, out, lse)
}

/// A task's output and lse.
type Partial = (Vec<f32>, Vec<f32>);

/// One task: a kv head `g`, query rows `i0..i0 + rows`, keys `j0..j0 + keys`.
#[derive(Clone, Copy)]
struct Task {
    g: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    keys: usize,
}

/// [`attention`] with a chosen level and plan. Same errors as [`Level::attention`]; nothing
/// is written on error.
#[allow(clippy::too_many_arguments)]
pub fn attention_planned<K: KvType, V: KvType>(
    level: Level,
    plan: Plan,
    params: &Params,
    q: &[f32],
    k: &[K],
    v: &[V],
    out: &mut [f32],
    mut lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    level.check()?;
    let s = params.shape;
    if s.q_len == 0 || s.kv_len == 0 {
        return level.attention(params, q, k, v, out, lse);
    }
    let group = s.q_heads / s.kv_heads;
    let q_block = plan.q_block.clamp(1, s.q_len);
    let kv_block = plan.kv_block.clamp(1, s.kv_len);
    let mut tasks = Vec::new();
    for g in 0..s.kv_heads {
        for i0 in (0..s.q_len).step_by(q_block) {
            for j0 in (0..s.kv_len).step_by(kv_block) {
                tasks.push(Task {
                    g,
                    i0,
                    rows: q_block.min(s.q_len - i0),
                    j0,
                    keys: kv_block.min(s.kv_len - j0),
                });
            }
        }
    }
    let results: Vec<Result<Partial, Error>> = tasks
        .par_iter()
        .map(|t| run_task(level, params, q, k, v, group, t))
        .collect();
    let mut results = results.into_iter().collect::<Result<Vec<_>, Error>>()?;

    // Merge the key splits of each block into its first, then copy out.
    let splits = s.kv_len.div_ceil(kv_block);
    for (block, parts) in results.chunks_mut(splits).enumerate() {
        let t = tasks[block * splits];
        let Some(((first_out, first_lse), rest)) = parts.split_first_mut() else {
            continue;
        };
        for (o, l) in rest.iter() {
            for r in 0..first_lse.len() {
                let row = r * s.v_dim..(r + 1) * s.v_dim;
                if let (Some(a), Some(la), Some(b), Some(&lb)) = (
                    first_out.get_mut(row.clone()),
                    first_lse.get_mut(r),
                    o.get(row),
                    l.get(r),
                ) {
                    merge_rows(a, la, b, lb)?;
                }
            }
        }
        for hh in 0..group {
            let h = t.g * group + hh;
            for r in 0..t.rows {
                let src = (hh * t.rows + r) * s.v_dim;
                let dst = params.out.at(h, t.i0 + r);
                if let (Some(d), Some(x)) = (
                    out.get_mut(dst..dst + s.v_dim),
                    first_out.get(src..src + s.v_dim),
                ) {
                    d.copy_from_slice(x);
                }
                if let (Some(l), Some(&x)) = (
                    lse.as_deref_mut()
                        .and_then(|l| l.get_mut(h * s.q_len + t.i0 + r)),
                    first_lse.get(hh * t.rows + r),
                ) {
                    *l = x;
                }
            }
        }
    }
    Ok(())
}

/// Computes one task into fresh buffers: `out` `[group][rows][v_dim]` and `lse`
/// `[group][rows]`.
fn run_task<K: KvType, V: KvType>(
    level: Level,
    params: &Params,
    q: &[f32],
    k: &[K],
    v: &[V],
    group: usize,
    t: &Task,
) -> Result<Partial, Error> {
    let s = params.shape;
    let h0 = t.g * group;
    let part = Part {
        heads: h0..h0 + group,
        rows: t.i0..t.i0 + t.rows,
        keys: t.j0..t.j0 + t.keys,
    };
    let sub = Params {
        out: Layout::planar(t.rows, s.v_dim),
        ..part.params(params)?
    };
    let (q, k, v) = part.inputs(params, q, k, v);
    let mut out = vec![0.0f32; group * t.rows * s.v_dim];
    let mut lse = vec![0.0f32; group * t.rows];
    level.attention(&sub, q, k, v, &mut out, Some(&mut lse))?;
    Ok((out, lse))
}
