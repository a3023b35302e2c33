//! The same call as [`attention`](crate::attention), spread over threads with `rayon`
//! (feature `parallel`, which needs `std`).
//!
//! The tasks are those of a [`Plan`] ([`crate::plan`]): one kv head's group of query heads
//! (so grouped-query heads still share their K/V reads) × a block of query rows × a range of
//! keys, each a [split-KV partial](crate::split::partial) written into its own part of one
//! buffer; the caller's thread then merges the key ranges of each block into `out`
//! ([`crate::plan::finish`]). Prefill splits over heads × query blocks;
//! decode, with few query rows, also over keys. Decode whose kv heads' rows lie side by
//! side (interleaved K and V, most paged layouts), which the kernel reads a block of keys
//! for every head in turn, splits over keys only: each task a range of keys of every head,
//! merged in order on the caller's thread (see [`attention`]).
//!
//! The calling thread takes tasks beside `current_num_threads() − 1` jobs of the pool (the
//! current one: the pool a call from inside `ThreadPool::install` runs on, else rayon's
//! global pool), so no call waits for a sleeping worker to wake before its work starts: on
//! a VM that can take a millisecond, longer than a short prefill (`benches/NOTES.md` 36).
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

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::boxed::Box;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::vec;
use std::vec::Vec;

pub use crate::plan::Plan;
use crate::range::from;
use crate::{Error, KvKind, KvType, Layout, Level, Params, kernel, plan, split};

/// [`attention`](crate::attention) on the calling thread and the current rayon pool (see
/// the module's doc), with the best level and [`Plan::auto`] for the pool's thread count;
/// but decode whose kv heads' rows lie side by side (interleaved K and V, most pages), on
/// two threads or more and at least 1,024 keys, splits its keys over every head instead
/// (ranges of at least 512 keys, two per thread, merged in order). Same arguments, errors
/// and semantics.
pub fn attention<K: KvType, V: KvType>(
    params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32], lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    let threads = rayon::current_num_threads();
    if let Some(splits) = heads_in_turn(params, (K::KIND, V::KIND), threads) {
        return key_splits(splits, params, q, k, v, out, lse);
    }
    let plan = Plan::auto(&params.shape, threads);
    attention_planned(Level::Detect, plan, params, q, k, v, out, lse)
}

/// The key splits [`attention`] takes for `threads` threads when the kernel reads the kv
/// heads of a decode call in turn, a block of keys each (their rows lie side by side:
/// interleaved K and V, most paged layouts; see [`workspace_len`](crate::workspace_len)):
/// a [`Plan`]'s tasks are one kv head each, which would read those rows head by head again.
/// `2·threads` splits of at least 512 keys, as [`Plan::auto`] splits decode; `None` where
/// the heads are read one at a time, for one thread, or for too few keys.
fn heads_in_turn(params: &Params, kinds: (KvKind, KvKind), threads: usize) -> Option<usize> {
    let s = params.shape;
    let tiles = kernel::Tiles::best(&s, kinds);
    if threads < 2 || kernel::blocks_together(params, tiles, kinds) < 2 {
        return None;
    }
    let splits = threads
        .saturating_mul(plan::SPLITS_PER_THREAD)
        .min(s.kv_len / plan::MIN_KEYS);
    (splits >= 2).then_some(splits)
}

/// [`attention`] as `splits` key ranges over every head: each a [`split::partial`] (on a
/// task of its own) into a buffer, merged in order on the calling thread, the sinks added
/// once, then written into `out` and `lse`. Nothing is written on error.
fn key_splits<K: KvType, V: KvType>(
    splits: usize, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    let s = params.shape;
    if s.q_len == 0 {
        return Ok(()); // nothing to write, however many heads
    }
    // The partials are dense, `[q_heads][q_len][v_dim]`, each followed by its lse.
    let dense = Params {
        out: Layout::planar(s.q_len, s.v_dim),
        ..*params
    };
    let (rows, kv_len) = (s.q_heads * s.q_len, s.kv_len);
    let part_len = rows * (s.v_dim + 1);
    let mut partial = vec![0.0f32; splits * part_len];
    let parts: Vec<Mutex<&mut [f32]>> = partial.chunks_mut(part_len).map(Mutex::new).collect();
    for_each_task(splits, |i| {
        let mut part = parts[i].lock().unwrap_or_else(PoisonError::into_inner);
        let (part_out, part_lse) = part.split_at_mut(rows * s.v_dim);
        let keys = i * kv_len / splits..(i + 1) * kv_len / splits;
        split::partial(&dense, q, k, v, keys, part_out, part_lse)
    })?;
    drop(parts);
    let (first, rest) = partial.split_at_mut(part_len);
    let (merged, merged_lse) = first.split_at_mut(rows * s.v_dim);
    for part in rest.chunks(part_len) {
        let (part_out, part_lse) = part.split_at(rows * s.v_dim);
        split::merge(&dense, merged, merged_lse, part_out, part_lse)?;
    }
    split::add_sinks(&dense, merged, merged_lse)?;
    // Validated: every row and `lse[..rows]` lie inside `out` and `lse`.
    for (r, row) in merged.chunks(s.v_dim).enumerate() {
        let at = params.out.at(r / s.q_len, r % s.q_len);
        if let Some(dst) = out.get_mut(at..at + s.v_dim) {
            dst.copy_from_slice(row);
        }
    }
    if let Some(dst) = lse.and_then(|l| l.get_mut(..rows)) {
        dst.copy_from_slice(merged_lse);
    }
    Ok(())
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
    // The tasks' parts of the buffer follow each other in task order. Each task runs once,
    // so its part's lock is never contended.
    let mut partial = vec![0.0f32; plan.partial_len(&s)];
    let mut parts = Vec::with_capacity(tasks);
    let mut rest = partial.as_mut_slice();
    for task in 0..tasks {
        let len = plan.task_partial(&s, task).map_or(0, |r| r.len());
        let (part, tail) = rest.split_at_mut(len.min(rest.len()));
        parts.push(Mutex::new(part));
        rest = tail;
    }
    for_each_task(tasks, |task| {
        let mut part = parts[task].lock().unwrap_or_else(PoisonError::into_inner);
        plan::run_task(level, plan, params, q, k, v, task, &mut part)
    })?;
    plan::finish(plan, params, &partial, out, lse)
}

/// Runs `work(i)` for every `i < tasks`, on the calling thread and on up to
/// `current_num_threads() − 1` jobs of the current rayon pool, each taking the next task
/// left; returns the first error (no task starts after one).
///
/// The calling thread works instead of waiting: an idle worker can take from microseconds
/// to milliseconds to wake (an idle vCPU of a VM halts), and a call handed whole to the
/// pool waits that long before its first task (`benches/NOTES.md` 36). A helper that starts
/// after the last task was taken returns without touching `work`, and the call returns once
/// every task taken has ended, without waiting for such helpers.
fn for_each_task<F>(tasks: usize, work: F) -> Result<(), Error>
where
    F: Fn(usize) -> Result<(), Error> + Sync,
{
    let helpers = rayon::current_num_threads().min(tasks).saturating_sub(1);
    if helpers == 0 {
        return (0..tasks).try_for_each(&work);
    }
    /// `work` behind a pointer without its type (or lifetime), for the helpers.
    ///
    /// # Safety
    /// `work` points to a live `F`.
    unsafe fn call<F: Fn(usize) -> Result<(), Error>>(
        work: *const (), task: usize,
    ) -> Result<(), Error> {
        // SAFETY: the caller's promise.
        unsafe { (*work.cast::<F>())(task) }
    }
    let shared = Arc::new(Tasks {
        tasks,
        next: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        outcome: Mutex::new(None),
        work: (&raw const work).cast(),
        call: call::<F>,
    });
    for _ in 0..helpers {
        let shared = Arc::clone(&shared);
        rayon::spawn(move || while shared.take() {});
    }
    while shared.take() {}
    // Every task has been taken; wait for those still running on other threads. `work`
    // lives until this returns: past this loop no helper calls it.
    let mut spins = 0u32;
    while shared.ended.load(Ordering::Acquire) < tasks {
        spins += 1;
        match spins < 64 {
            true => core::hint::spin_loop(),
            false => std::thread::yield_now(),
        }
    }
    let outcome = shared
        .outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match outcome {
        None => Ok(()),
        Some(Outcome::Failed(e)) => Err(e),
        Some(Outcome::Panicked(payload)) => std::panic::resume_unwind(payload),
    }
}

/// The state [`for_each_task`] shares with its helpers.
struct Tasks {
    tasks: usize,
    /// The next task to take (past `tasks` once all are taken).
    next: AtomicUsize,
    /// Tasks taken and ended, run or skipped.
    ended: AtomicUsize,
    /// Set by the first error or panic: the tasks taken after it are skipped.
    stop: AtomicBool,
    /// The first error or panic.
    outcome: Mutex<Option<Outcome>>,
    /// The closure, called as `call(work, task)`.
    work: *const (),
    call: unsafe fn(*const (), usize) -> Result<(), Error>,
}

/// How a task of [`for_each_task`] ended, if not well.
enum Outcome {
    Failed(Error),
    Panicked(Box<dyn core::any::Any + Send>),
}

// SAFETY: `work` points to a `Sync` closure (`for_each_task`'s bound), which any thread may
// call through `&`; `take` says when it is alive. Every other field is `Send` and `Sync`.
unsafe impl Send for Tasks {}
// SAFETY: as above.
unsafe impl Sync for Tasks {}

impl Tasks {
    /// Takes the next task and runs it (skips it after an error or panic); `false` once none
    /// is left.
    fn take(&self) -> bool {
        let task = self.next.fetch_add(1, Ordering::Relaxed);
        if task >= self.tasks {
            return false;
        }
        if !self.stop.load(Ordering::Relaxed) {
            // SAFETY: `task < tasks` and `ended` does not count it yet, so `for_each_task` is
            // still waiting and its `work` alive.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe {
                (self.call)(self.work, task)
            }));
            let failed = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Outcome::Failed(e)),
                Err(payload) => Some(Outcome::Panicked(payload)),
            };
            if let Some(failed) = failed {
                self.stop.store(true, Ordering::Relaxed);
                self.outcome
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(failed);
            }
        }
        self.ended.fetch_add(1, Ordering::Release);
        true
    }
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
    let results: Vec<Mutex<(Vec<f32>, Vec<f32>)>> =
        (0..batch.len()).map(|_| Mutex::default()).collect();
    for_each_task(batch.len(), |b| {
        let (mut sub, [qa, ka, va, _, _]) = batch.sequence(params, b);
        let n = sub.shape.q_heads * sub.shape.q_len;
        sub.out = crate::Layout::planar(sub.shape.q_len, s.v_dim);
        let (mut o, mut l) = (vec![0.0f32; n * s.v_dim], vec![0.0f32; n]);
        let (q, k, v) = (from(q, qa), from(k, ka), from(v, va));
        attention(&sub, q, k, v, &mut o, Some(&mut l))?;
        *results[b].lock().unwrap_or_else(PoisonError::into_inner) = (o, l);
        Ok(())
    })?;
    let mut lse = lse;
    for (b, result) in results.into_iter().enumerate() {
        let (o, l) = result.into_inner().unwrap_or_else(PoisonError::into_inner);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Runs `for_each_task` over `tasks` counting how often each task ran.
    fn counts(tasks: usize, fail_at: Option<usize>) -> (Result<(), Error>, Vec<usize>) {
        let ran: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        let result = for_each_task(tasks, |t| {
            ran[t].fetch_add(1, Ordering::Relaxed);
            match Some(t) == fail_at {
                true => Err(Error::TaskIndex { task: t, tasks }),
                false => Ok(()),
            }
        });
        (
            result,
            ran.iter().map(|r| r.load(Ordering::Relaxed)).collect(),
        )
    }

    #[test]
    fn every_task_runs_once_on_the_caller_and_the_pool() {
        // From a thread outside the pool (the global pool) and from inside pools of 1–4.
        for tasks in [0, 1, 2, 3, 7, 64, 257] {
            let (result, ran) = counts(tasks, None);
            assert_eq!((result, ran), (Ok(()), vec![1; tasks]), "{tasks} tasks");
            for threads in 1..=4 {
                let (result, ran) = pool(threads).install(|| counts(tasks, None));
                assert_eq!(
                    (result, ran),
                    (Ok(()), vec![1; tasks]),
                    "{tasks} on {threads}"
                );
            }
        }
        // Many short calls in a row: helpers that start after their call returned take
        // nothing (this is what ThreadSanitizer watches in the CI's parallel tests too).
        let pool = pool(3);
        for tasks in 0..400 {
            let (result, ran) = pool.install(|| counts(tasks % 5, None));
            assert_eq!((result, ran), (Ok(()), vec![1; tasks % 5]));
        }
    }

    #[test]
    fn the_first_error_is_returned_and_no_task_runs_twice() {
        for threads in [1, 2, 4] {
            let (result, ran) = pool(threads).install(|| counts(40, Some(3)));
            assert_eq!(result, Err(Error::TaskIndex { task: 3, tasks: 40 }));
            assert!(ran.iter().all(|&n| n <= 1), "{ran:?}");
            // Tasks 0..=3 were taken before the error was seen.
            assert!(ran[..4].iter().all(|&n| n == 1), "{ran:?}");
        }
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller() {
        for threads in [1, 2, 4] {
            let caught = pool(threads).install(|| {
                std::panic::catch_unwind(|| {
                    for_each_task(16, |t| match t {
                        9 => panic!("task {t} panicked"),
                        _ => Ok(()),
                    })
                })
            });
            let payload = caught.expect_err("the panic comes back");
            let message = payload.downcast_ref::<String>().map(String::as_str);
            assert_eq!(message, Some("task 9 panicked"));
        }
    }
}
