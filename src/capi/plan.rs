//! Plans from C: one call cut into independent tasks that the caller's threads run
//! ([`qkv_plan_make`], [`qkv_plan_run_task`], [`qkv_plan_finish`], over [`crate::plan`]), so
//! any thread pool, OpenMP loop or RTOS drives it; and [`qkv_attention_parallel_f32`], the
//! same call on the `parallel` feature's pool.

use core::ffi::c_void;

use super::attention::{Call, run};
use super::buf::{Buf, check_aliasing};
use super::decode::{Desc, Extras, KeyRows};
use super::types::with_kv;
use super::workspace::workspace;
use super::{QKV_ERR_NULL_POINTER, QKV_ERR_TASK, QKV_ERR_TOO_SHORT, QkvDesc, QkvStatus};
use super::{error_status, guard};
use crate::plan::{self, Plan};
use crate::{Level, Mask};

/// `qkv_plan`: how one call is cut into tasks, filled by [`qkv_plan_make`]. The caller may
/// change `q_block` and `kv_block` (a plan of its own) if it then sets `tasks` and
/// `partial_len` as [`qkv_plan_make`] would: every other call recomputes them from the
/// descriptor and refuses a plan whose `partial_len` is too small.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QkvPlan {
    /// Query rows per task.
    pub q_block: usize,
    /// Keys per task; a block of rows split over keys is merged by [`qkv_plan_finish`].
    pub kv_block: usize,
    /// The number of tasks, numbered from 0 (0 when there is nothing to compute).
    pub tasks: usize,
    /// The floats of the partial buffer that the tasks write (each its own part) and
    /// [`qkv_plan_finish`] reads.
    pub partial_len: usize,
}

impl QkvPlan {
    fn plan(&self) -> Plan {
        Plan {
            q_block: self.q_block,
            kv_block: self.kv_block,
        }
    }
}

/// Reads the caller's plan: [`QKV_ERR_NULL_POINTER`] for NULL.
///
/// # Safety
/// `plan` is NULL or points to a readable `qkv_plan`.
unsafe fn read_plan(plan: *const QkvPlan) -> Result<QkvPlan, QkvStatus> {
    if plan.is_null() {
        return Err(QKV_ERR_NULL_POINTER);
    }
    // SAFETY: the caller's contract; `read_unaligned` needs no alignment.
    Ok(unsafe { plan.read_unaligned() })
}

/// The partial buffer of a plan: the `partial_len` floats the caller says it holds, at least
/// what the plan needs for `desc` ([`QKV_ERR_TOO_SHORT`] otherwise).
fn partial_buf(plan: &QkvPlan, d: &Desc, ptr: *const f32) -> Result<Buf, QkvStatus> {
    let needed = plan.plan().partial_len(&d.shape());
    if plan.partial_len < needed {
        return Err(QKV_ERR_TOO_SHORT);
    }
    Buf::new(ptr, plan.partial_len, None)
}

/// `qkv_plan_make`: a plan for `threads` threads over the problem `desc` describes
/// ([`Plan::auto`]): at least `8·threads` tasks where the query rows allow, over heads and
/// blocks of query rows shared evenly, and over keys (for `2·threads` tasks) only when those
/// are fewer (decode) and `threads` > 1. Writes `*plan`.
///
/// Returns [`QKV_OK`](super::QKV_OK), or the status the shape, mask, or types of `desc`
/// would give `qkv_attention_f32`, or [`QKV_ERR_NULL_POINTER`] for a NULL `plan`; nothing is
/// written on error.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32); `plan` is NULL or points
/// to a writable `qkv_plan`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_plan_make(
    desc: *const QkvDesc, threads: usize, plan: *mut QkvPlan,
) -> QkvStatus {
    guard(|| {
        // SAFETY: the caller's contract for `desc`.
        let d = unsafe { Desc::read(desc) }?;
        let mask = d.mask()?;
        d.kv_kinds()?;
        let params = d.params(mask, Extras::default());
        params.validate_shape().map_err(error_status)?;
        if plan.is_null() {
            return Err(QKV_ERR_NULL_POINTER);
        }
        let shape = params.shape;
        let p = Plan::auto(&shape, threads);
        let made = QkvPlan {
            q_block: p.q_block,
            kv_block: p.kv_block,
            tasks: p.tasks(&shape),
            partial_len: p.partial_len(&shape),
        };
        // SAFETY: the caller's contract for `plan`, checked non-NULL.
        unsafe { plan.write_unaligned(made) };
        Ok(())
    })
}

/// `qkv_plan_run_task`: runs task `task` (`0 ≤ task < tasks`) of `plan` over the problem
/// `desc` describes (`q`, `k`, `v` and the bias are those of the whole problem), writing its
/// part of `partial` (`plan->partial_len` floats) and nothing else. Tasks may run in any
/// order and at the same time on different threads, each index once. `workspace` as for
/// [`qkv_attention_f32_ws`](super::qkv_attention_f32_ws) (NULL with 0 floats: a small stack
/// workspace, as `qkv_attention_f32`); each concurrent task needs its own.
///
/// Returns [`QKV_OK`](super::QKV_OK); the status `qkv_attention_f32_ws` would return for
/// the same descriptor and inputs; [`QKV_ERR_TASK`] for an index past the last task;
/// [`QKV_ERR_TOO_SHORT`] for a `partial_len` below what the plan needs; nothing is written on
/// error.
///
/// # Safety
/// `plan` is NULL or points to a readable `qkv_plan`; `desc`, `q`, `k`, `v` and the bias as
/// for [`qkv_attention_f32`](super::qkv_attention_f32); `partial` points to
/// `plan->partial_len` floats of which no one but this call reads or writes this task's part
/// during it; `workspace` as for `qkv_attention_f32_ws`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_plan_run_task(
    plan: *const QkvPlan, desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void,
    task: usize, partial: *mut f32, workspace_ptr: *mut f32, workspace_len: usize,
) -> QkvStatus {
    let ws = (workspace_ptr, workspace_len);
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let mut c = decode_task(plan, desc, (q, k, v), task, partial, ws);
        run!(c, |p, q, k, v, out, lse, ws| match ws.is_empty() {
            true => Level::Detect.attention(p, q, k, v, out, lse),
            false => Level::Detect.attention_in(ws, p, q, k, v, out, lse),
        })
    })
}

/// The task `task` of a C call of [`qkv_plan_run_task`] as a call of its own: its
/// sub-problem ([`plan::prepare`]: its params, and its inputs from the part's first
/// elements), its part of the partial buffer as `out` and `lse`, and the workspace.
///
/// Not inlined: the descriptor, the whole problem's params and the decoding live in this
/// frame, which is gone before the kernel's frames start (firmware stacks are small); what
/// [`plan::run_task`] would hold under the kernel, the whole problem's params besides the
/// task's, is not held at all.
///
/// # Safety
/// The contract of [`qkv_plan_run_task`].
#[inline(never)]
unsafe fn decode_task<'a>(
    plan: *const QkvPlan, desc: *const QkvDesc,
    (q, k, v): (*const f32, *const c_void, *const c_void), task: usize, partial: *mut f32,
    (ws_ptr, ws_len): (*mut f32, usize),
) -> Result<Call<'a>, QkvStatus> {
    // SAFETY: the caller's contract for `plan` and `desc`.
    let plan = unsafe { read_plan(plan) }?;
    // SAFETY: as above.
    let d = unsafe { Desc::read(desc) }?;
    let mask = d.mask()?;
    let kinds = d.kv_kinds()?;
    // The shape first: a plan over a shape without tasks would say QKV_ERR_TASK.
    d.params(mask, Extras::default())
        .validate_shape()
        .map_err(error_status)?;
    // SAFETY: the caller's contract for the inputs.
    let qkv = unsafe { d.qkv(q, [k, v], kinds, KeyRows::All) }?;
    let extras = d.extras()?;
    let part = partial_buf(&plan, &d, partial)?;
    let ws = workspace(ws_ptr, ws_len)?;
    let inputs = super::buf::Inputs { qkv, extras };
    check_aliasing(&[part, ws], &inputs.all())?;
    let p = plan.plan();
    let region = p.task_partial(&d.shape(), task).ok_or(QKV_ERR_TASK)?;
    // SAFETY: the caller's pointer contract, for the lengths the buffers were given.
    let slices = unsafe { inputs.slices() }?;
    let params = d.params(mask, slices.extras);
    // SAFETY: as above; the partial buffer and the workspace were checked disjoint from each
    // other and from every input. This task's part only: other tasks may be writing the rest.
    let (part, ws) = unsafe { (part.part_mut(region), ws.slice_mut()) };
    let (q, [k, v]) = (slices.q, slices.kv);
    let (sub, part, (out, lse)) = with_kv!([k, v], |k, v| plan::prepare(
        p, &params, q, k, v, task, part
    ))
    .map_err(error_status)?;
    let [qa, ka, va] = part.offsets(&params);
    Ok(Call {
        params: sub,
        q: crate::range::from(q, qa),
        kv: [k.from(ka), v.from(va)],
        out,
        lse: Some(lse),
        ws,
    })
}

/// `qkv_plan_finish`: merges the tasks' partials (`partial`, `plan->partial_len` floats,
/// written by every task of `plan`) into `out` and `lse` (optional: NULL means none wanted),
/// as `qkv_attention_f32` lays them out. Only the shape, `out` layout and the
/// `out_count`/`lse_count` fields of `desc` are used.
///
/// Returns [`QKV_OK`](super::QKV_OK), the status `qkv_attention_f32` would return for `out`
/// and `lse`, or [`QKV_ERR_TOO_SHORT`] for a `partial_len` below what the plan needs; nothing
/// is written on error.
///
/// # Safety
/// `plan` as for [`qkv_plan_run_task`]; `desc` as for
/// [`qkv_attention_f32`](super::qkv_attention_f32); `partial` follows the contract of an
/// input and `out` and `lse` that of outputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_plan_finish(
    plan: *const QkvPlan, desc: *const QkvDesc, partial: *const f32, out: *mut f32, lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let plan = read_plan(plan)?;
        let d = Desc::read(desc)?;
        d.params(Mask::NONE, Extras::default())
            .validate_shape()
            .map_err(error_status)?;
        let out = d.out(out)?;
        let lse = d.lse_opt(lse)?;
        let part = partial_buf(&plan, &d, partial)?;
        let sinks = d.sinks()?;
        match lse {
            Some(l) => check_aliasing(&[out, l], &[Some(part), sinks])?,
            None => check_aliasing(&[out], &[Some(part), sinks])?,
        }
        let (out, part) = (out.slice_mut(), part.slice());
        let lse = lse.map(|l| l.slice_mut());
        let extras = Extras {
            sinks: sinks.map(|s| s.slice()),
            ..Extras::default()
        };
        let params = d.params(Mask::NONE, extras);
        plan::finish(plan.plan(), &params, part, out, lse).map_err(error_status)
    })
}

#[cfg(feature = "parallel")]
super::attention::one_shot_entry! {
    /// `qkv_attention_parallel_f32`: [`qkv_attention_f32`](super::qkv_attention_f32) on the
    /// calling thread and the `parallel` feature's pool (rayon's global pool;
    /// [`parallel::attention`](crate::parallel::attention)). Same arguments, statuses and
    /// results (key splits are merged exactly up to one rounding).
    ///
    /// # Safety
    /// The contract of [`qkv_attention_f32`](super::qkv_attention_f32).
    qkv_attention_parallel_f32 => crate::parallel::attention
}
