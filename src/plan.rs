//! One call cut into independent tasks that any thread pool, OpenMP loop, RTOS or set of
//! cores can run, in any order and at the same time; no allocation, no threads of its own,
//! `no_std`. `qkv::parallel` (feature `parallel`) runs its plans on rayon through these functions,
//! and the C ABI exposes them as `qkv_plan_*`.
//!
//! A [`Plan`] cuts the work into tasks of one kv head's group of query heads (so grouped-query
//! heads still share their K/V reads) × a block of query rows × a range of keys. Each task
//! writes a [split-KV partial](crate::split::partial) into its own region of one buffer of
//! [`Plan::partial_len`] floats ([`Plan::task_partial`]); [`finish`] then merges the key
//! ranges of each block and writes `out` and `lse`. The result means what the one-shot call
//! means: with one task per kv head (`q_block ≥ q_len`, no key split) it is that call's, bit
//! for bit; smaller query blocks change only which rows share a tile (within
//! [`tolerance`](crate::tolerance)); key splits are merged exactly up to the rounding
//! bounded by [`tolerance::merged_output_bound`](crate::tolerance::merged_output_bound) with
//! the depth `kv splits − 1`.
//!
//! ```
//! use qkv::plan::{self, Plan};
//! use qkv::{Level, Params, Shape};
//!
//! let shape = Shape::new(4, 1, 4096, 64).gqa(8, 2); // decode: 8 q heads, 2 kv heads
//! let params = Params::new(shape);
//! let (q, k, v) = (vec![0.1f32; 8 * 64], vec![0.2f32; 2 * 4096 * 64], vec![1.0f32; 2 * 4096 * 64]);
//! let plan = Plan::auto(&shape, 2);
//! let mut partial = vec![0.0f32; plan.partial_len(&shape)];
//! for task in 0..plan.tasks(&shape) {
//!     // Any thread may run any task; each writes only its own region of `partial`.
//!     let region = plan.task_partial(&shape, task).unwrap();
//!     plan::run_task(Level::Detect, plan, &params, &q, &k, &v, task, &mut partial[region])?;
//! }
//! let mut out = vec![0.0f32; 8 * 64];
//! plan::finish(plan, &params, &partial, &mut out, None)?;
//! assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-5));
//! # Ok::<(), qkv::Error>(())
//! ```

use core::ops::Range;

use crate::range::Part;
use crate::split::{merge_rows, merge_sink};
use crate::{Error, KvType, Layout, Level, Params, Shape, Tensor};

/// How a call is cut into tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plan {
    /// Query rows per task (at least 1; more than `q_len` means one block).
    pub q_block: usize,
    /// Keys per task (at least 1; more than `kv_len` means no key split). Blocks of the same
    /// rows over different keys are merged by [`finish`].
    pub kv_block: usize,
}

/// Query rows of one kernel block: task blocks are multiples of it.
const ROWS: usize = crate::kernel::BLOCK_Q;
/// The fewest keys a key split leaves to a task: smaller pieces cost more in overhead than
/// they gain.
pub(crate) const MIN_KEYS: usize = 512;
/// Tasks per thread that query blocks aim at: enough that the unequal blocks of a causal
/// prefill even out between the threads.
const BLOCKS_PER_THREAD: usize = 8;
/// Tasks per thread that key splits aim at, when query blocks are too few: each split is a
/// call of its own and a merge, and its key ranges cost the same. With 2 threads, 32k keys
/// of 8 query heads over 1 kv head ran ×1.34–1.84 the one-thread call in 16 splits and
/// ×1.76–1.94 in 4 (four alternating rounds on an Intel Xeon, benches/NOTES.md 33).
pub(crate) const SPLITS_PER_THREAD: usize = 2;

/// One task: kv head `g`, query rows `i0..i0 + rows`, keys `j0..j0 + keys`; its partial at
/// `at` in the plan's buffer, `[group][rows][v_dim]` then the lse `[group][rows]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Task {
    pub g: usize,
    pub i0: usize,
    pub rows: usize,
    pub j0: usize,
    pub keys: usize,
    pub at: usize,
}

/// The counts of a plan over a shape: query blocks per kv head, key splits per block, tasks,
/// and the floats of a partial per query row of a task (`group · (v_dim + 1)`).
#[derive(Clone, Copy)]
struct Counts {
    q_block: usize,
    kv_block: usize,
    blocks: usize,
    splits: usize,
    /// `kv_heads · blocks · splits`.
    tasks: usize,
    row_floats: usize,
}

impl Plan {
    /// A plan for `threads` threads: at least `8·threads` tasks where the query rows allow,
    /// query blocks in multiples of the kernel's block ([`BLOCK_Q`](crate::kernel::BLOCK_Q))
    /// rows; key splits of at least 512 keys only when heads × query blocks are fewer than
    /// `2·threads` (decode), for `2·threads` tasks; one thread, no key split.
    ///
    /// Among the query blocks that give enough tasks, the one whose tasks the threads share
    /// most evenly: the fewest kernel blocks on the busiest thread, `⌈tasks / threads⌉ ×
    /// blocks per task`, then the fewest tasks. (Dividing 4096 rows into the target's 16 gave
    /// 15 tasks of 288 rows and less, 8 of them on one of 2 threads: 1.6–1.8× one thread.)
    pub fn auto(shape: &Shape, threads: usize) -> Plan {
        let threads = threads.max(1);
        let target = threads.saturating_mul(BLOCKS_PER_THREAD);
        let groups = shape.kv_heads.max(1);
        let q_len = shape.q_len.max(1);
        // Query blocks are `per` kernel blocks each (the whole query when it is one).
        let blocks = q_len.div_ceil(ROWS);
        let tasks_of = |per: usize| groups.saturating_mul(blocks.div_ceil(per));
        let busiest = |per: usize| tasks_of(per).div_ceil(threads).saturating_mul(per);
        // The most kernel blocks per task that still give the target (or one block each):
        // `⌈blocks / per⌉ ≥ want` while `per ≤ (blocks − 1) / (want − 1)`.
        let most = match target.div_ceil(groups) {
            0 | 1 => blocks,
            want => ((blocks - 1) / (want - 1)).max(1),
        };
        // (A bounded search: any shape may be asked about.)
        let per = (1..=most)
            .rev()
            .take(4096)
            .min_by_key(|&per| busiest(per))
            .unwrap_or(1);
        let q_block = match q_len <= ROWS {
            true => q_len,
            false => per.saturating_mul(ROWS),
        };
        let tasks = tasks_of(per);
        let split_target = threads.saturating_mul(SPLITS_PER_THREAD);
        let kv_block = if threads == 1 || tasks >= split_target {
            usize::MAX
        } else {
            let splits = split_target.div_ceil(tasks);
            shape.kv_len.div_ceil(splits).max(MIN_KEYS)
        };
        Plan { q_block, kv_block }
    }

    /// The number of tasks over `shape` (0 when there is nothing to compute: no query rows or
    /// no keys, or a `shape` that [`Params::validate`] refuses).
    pub fn tasks(self, shape: &Shape) -> usize {
        self.counts(shape).map_or(0, |c| c.tasks)
    }

    /// The floats of the buffer the tasks write their partials into:
    /// `q_heads · q_len · (v_dim + 1) · kv splits` (0 when there are no tasks or it overflows).
    pub fn partial_len(self, shape: &Shape) -> usize {
        self.counts(shape)
            .and_then(|c| {
                shape
                    .kv_heads
                    .checked_mul(shape.q_len)?
                    .checked_mul(c.splits)?
                    .checked_mul(c.row_floats)
            })
            .unwrap_or(0)
    }

    /// The region of the partial buffer that task `task` writes (`None` past the last task).
    /// The regions of different tasks are disjoint, so each thread may hold its own as `&mut`.
    pub fn task_partial(self, shape: &Shape, task: usize) -> Option<Range<usize>> {
        let t = self.task(shape, task)?;
        let c = self.counts(shape)?;
        Some(t.at..t.at + t.rows * c.row_floats)
    }

    /// The counts of this plan over `shape`; `None` for a shape without tasks.
    fn counts(self, shape: &Shape) -> Option<Counts> {
        let s = shape;
        if s.q_len == 0 || s.kv_len == 0 || s.kv_heads == 0 || !s.q_heads.is_multiple_of(s.kv_heads)
        {
            return None;
        }
        let q_block = self.q_block.clamp(1, s.q_len);
        let kv_block = self.kv_block.clamp(1, s.kv_len);
        let (blocks, splits) = (s.q_len.div_ceil(q_block), s.kv_len.div_ceil(kv_block));
        Some(Counts {
            q_block,
            kv_block,
            blocks,
            splits,
            tasks: s.kv_heads.checked_mul(blocks)?.checked_mul(splits)?,
            row_floats: (s.q_heads / s.kv_heads).checked_mul(s.v_dim.checked_add(1)?)?,
        })
    }

    /// Task `task`: tasks are numbered by kv head, then query block, then key range.
    pub(crate) fn task(self, shape: &Shape, task: usize) -> Option<Task> {
        let c = self.counts(shape)?;
        if task >= c.tasks {
            return None;
        }
        let split = task % c.splits;
        let block = task / c.splits % c.blocks;
        let g = task / c.splits / c.blocks;
        let i0 = block * c.q_block;
        let rows = c.q_block.min(shape.q_len - i0);
        let j0 = split * c.kv_block;
        // Partials before this one: every row of the earlier kv heads and of the earlier
        // (full) blocks of this head, for every split; then the earlier splits of this block.
        let rows_before = (g * shape.q_len + i0) * c.splits + split * rows;
        Some(Task {
            g,
            i0,
            rows,
            j0,
            keys: c.kv_block.min(shape.kv_len - j0),
            at: rows_before * c.row_floats,
        })
    }
}

/// Runs task `task` of `plan` over the problem `params` describes (`q`, `k`, `v` are the whole
/// problem's), writing its partial into `partial`: the region
/// [`Plan::task_partial`] names, and no more. Uses a stack workspace as
/// [`attention`](crate::attention) does; [`run_task_in`] takes the caller's.
///
/// Errors (nothing written): those of [`Level::attention`] for the inputs of the whole
/// problem; [`Error::TaskIndex`] for an index past the last task; [`Error::TooShort`] with
/// [`Tensor::Out`] for a `partial` of another length than the task's region.
#[allow(clippy::too_many_arguments)] // the call's arguments, the level, the plan and the task
pub fn run_task<K: KvType, V: KvType>(
    level: Level, plan: Plan, params: &Params, q: &[f32], k: &[K], v: &[V], task: usize,
    partial: &mut [f32],
) -> Result<(), Error> {
    // Used where it lies: moved out of its `Result`, the sub-problem would take a second slot
    // of this frame, under every frame of the kernel (firmware stacks are small).
    let mut prepared = prepare(plan, params, q, k, v, task, partial);
    let (sub, part, (out, lse)) = match &mut prepared {
        Ok(p) => p,
        Err(e) => return Err(*e),
    };
    let (q, k, v) = part.inputs(params, q, k, v);
    level.attention(sub, q, k, v, out, Some(lse))
}

/// [`run_task`] in the caller's working memory, sized as for
/// [`attention_in`](crate::attention_in) (`workspace_len` of the whole problem is enough).
#[allow(clippy::too_many_arguments)] // run_task's arguments and the workspace
pub fn run_task_in<K: KvType, V: KvType>(
    level: Level, workspace: &mut [f32], plan: Plan, params: &Params, q: &[f32], k: &[K], v: &[V],
    task: usize, partial: &mut [f32],
) -> Result<(), Error> {
    // As in `run_task`.
    let mut prepared = prepare(plan, params, q, k, v, task, partial);
    let (sub, part, (out, lse)) = match &mut prepared {
        Ok(p) => p,
        Err(e) => return Err(*e),
    };
    let (q, k, v) = part.inputs(params, q, k, v);
    level.attention_in(workspace, sub, q, k, v, out, Some(lse))
}

/// Validates a task and returns its sub-problem, its part and its partial split into out and
/// lse.
#[allow(clippy::type_complexity)]
pub(crate) fn prepare<'a, 'p, K: KvType, V: KvType>(
    plan: Plan, params: &Params<'a>, q: &[f32], k: &[K], v: &[V], task: usize,
    partial: &'p mut [f32],
) -> Result<(Params<'a>, Part, (&'p mut [f32], &'p mut [f32])), Error> {
    let s = params.shape;
    // The inputs of the whole problem, so every task's slices are inside the caller's.
    params.validate_inputs(q, k, v)?;
    let tasks = plan.tasks(&s);
    let t = plan
        .task(&s, task)
        .ok_or(Error::TaskIndex { task, tasks })?;
    let group = s.q_heads / s.kv_heads;
    let out_len = group * t.rows * s.v_dim;
    let needed = out_len + group * t.rows;
    if partial.len() != needed {
        return Err(Error::TooShort {
            tensor: Tensor::Out,
            needed,
            len: partial.len(),
        });
    }
    let part = Part {
        heads: t.g * group..(t.g + 1) * group,
        rows: t.i0..t.i0 + t.rows,
        keys: t.j0..t.j0 + t.keys,
    };
    let sub = Params {
        out: Layout::planar(t.rows, s.v_dim),
        ..part.params(params)?
    };
    Ok((sub, part, partial.split_at_mut(out_len)))
}

/// Merges the key ranges of every block of `plan`'s tasks, read from `partial` (the buffer of
/// [`Plan::partial_len`] floats every task has written), into `out` and `lse` (optional,
/// `[q_heads][q_len]`), as [`attention`](crate::attention) lays them out.
///
/// Errors (nothing written): `out` or `lse` that do not fit `params` (as
/// [`Params::validate`] says), or a `partial` shorter than [`Plan::partial_len`]
/// ([`Error::TooShort`]`(`[`Tensor::Out`]`)`).
pub fn finish(
    plan: Plan, params: &Params, partial: &[f32], out: &mut [f32], mut lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate_outputs(out, lse.as_deref())?;
    let s = params.shape;
    if plan.tasks(&s) == 0 {
        // No tasks: no query rows, or no keys, where every row is 0 with lse −∞ as in the
        // one-shot call.
        for h in 0..s.q_heads {
            for i in 0..s.q_len {
                let at = params.out.at(h, i);
                let (dst, mut row_lse) = (&mut out[at..at + s.v_dim], f32::NEG_INFINITY);
                dst.fill(0.0);
                if params.sinks.is_some() {
                    merge_sink(dst, &mut row_lse, params.sink(h));
                }
                if let Some(l) = lse.as_deref_mut() {
                    l[h * s.q_len + i] = row_lse;
                }
            }
        }
        return Ok(());
    }
    let needed = plan.partial_len(&s);
    if partial.len() < needed {
        return Err(Error::TooShort {
            tensor: Tensor::Out,
            needed,
            len: partial.len(),
        });
    }
    let group = s.q_heads / s.kv_heads;
    let splits = s.kv_len.div_ceil(plan.kv_block.clamp(1, s.kv_len));
    let mut task = 0;
    while let Some(first) = plan.task(&s, task) {
        let part_of = |t: &Task, hh: usize, r: usize| {
            let out_len = group * t.rows * s.v_dim;
            let row = t.at + (hh * t.rows + r) * s.v_dim;
            (
                &partial[row..row + s.v_dim],
                partial[t.at + out_len + hh * t.rows + r],
            )
        };
        for hh in 0..group {
            let h = first.g * group + hh;
            for r in 0..first.rows {
                let dst = params.out.at(h, first.i0 + r);
                let dst = &mut out[dst..dst + s.v_dim];
                let (row, mut row_lse) = part_of(&first, hh, r);
                dst.copy_from_slice(row);
                for split in 1..splits {
                    if let Some(t) = plan.task(&s, task + split) {
                        let (b, lb) = part_of(&t, hh, r);
                        merge_rows(dst, &mut row_lse, b, lb)?;
                    }
                }
                // The sink joins once, after the key ranges.
                if params.sinks.is_some() {
                    merge_sink(dst, &mut row_lse, params.sink(h));
                }
                if let Some(l) = lse.as_deref_mut() {
                    l[h * s.q_len + first.i0 + r] = row_lse;
                }
            }
        }
        task += splits;
    }
    Ok(())
}
