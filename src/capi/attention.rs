//! The one-shot entry points: [`qkv_attention_f32`], [`qkv_attention_f32_ws`],
//! [`qkv_attention_f32_isa`] and [`qkv_reference_f32`], and [`Call`], the decoding they
//! and the split-KV partials share.

use core::ffi::c_void;

use super::buf::check_aliasing;
use super::decode::Problem;
use super::types::KvSlice;
use super::workspace::workspace;
use super::{QKV_ERR_UNKNOWN_ISA, QkvDesc, QkvStatus, guard, isa_from_i32};
use crate::Params;

/// Whether a call's `lse` pointer may be NULL (one-shot calls) or not (partials).
#[derive(Clone, Copy)]
pub(super) enum Lse {
    /// Decoded as [`Desc::lse_opt`](super::decode::Desc::lse_opt): NULL means none wanted.
    Optional(*mut f32),
    /// Decoded as [`Desc::lse`](super::decode::Desc::lse): the entry always gets `Some`.
    Required(*mut f32),
}

/// A call over the whole problem (one-shot or split-KV partial), its descriptor and
/// pointers decoded and checked against the pointer contract, in the order the statuses
/// document (the problem, `lse`, the workspace, then aliasing): the params and slices the
/// Rust call takes, K and V as [`KvSlice`]s for [`with_kv!`].
pub(super) struct Call<'a> {
    pub(super) params: Params<'a>,
    pub(super) q: &'a [f32],
    pub(super) kv: [KvSlice<'a>; 2],
    pub(super) out: &'a mut [f32],
    pub(super) lse: Option<&'a mut [f32]>,
    pub(super) ws: &'a mut [f32],
}

impl<'a> Call<'a> {
    /// # Safety
    /// `desc` as [`Desc::read`](super::decode::Desc::read) requires, and the pointer contract
    /// of [`qkv_attention_f32`] (of [`qkv_partial_f32`](super::qkv_partial_f32) for a
    /// required `lse`, and for the workspace that of [`qkv_attention_f32_ws`]) for `'a`.
    // Not inlined: the descriptor's copy and its decoding live in this frame, which is gone
    // before the kernel's frames start (firmware stacks are small).
    #[inline(never)]
    pub(super) unsafe fn decode(
        desc: *const QkvDesc, (q, k, v): (*const f32, *const c_void, *const c_void), out: *mut f32,
        lse: Lse, (ws, ws_len): (*mut f32, usize),
    ) -> Result<Call<'a>, QkvStatus> {
        // SAFETY: the caller's contract for `desc`.
        let p = unsafe { Problem::decode(desc, q, k, v, out) }?;
        let lse = match lse {
            Lse::Optional(l) => p.desc.lse_opt(l)?,
            Lse::Required(l) => Some(p.desc.lse(l)?),
        };
        let ws = workspace(ws, ws_len)?;
        match lse {
            Some(l) => check_aliasing(&[p.out, l, ws], &p.inputs.all())?,
            None => check_aliasing(&[p.out, ws], &p.inputs.all())?,
        }
        // SAFETY: the caller's pointer contract, for the lengths the buffers were given.
        let inputs = unsafe { p.inputs.slices() }?;
        // SAFETY: as above; `out`, `lse` and the workspace were checked disjoint from each
        // other and from every input.
        let (out, ws) = unsafe { (p.out.slice_mut(), ws.slice_mut()) };
        // SAFETY: as above.
        let lse = lse.map(|l| unsafe { l.slice_mut() });
        let params = p.desc.params(p.mask, inputs.extras);
        Ok(Call {
            params,
            q: inputs.q,
            kv: inputs.kv,
            out,
            lse,
            ws,
        })
    }
}

/// Runs a decoded [`Call`] (`$decoded`, the result of [`Call::decode`]): `$call` with `p`,
/// `q`, `k`, `v`, `out`, `lse` and `ws` bound to its params, slices and workspace (empty for
/// the calls without one), K and V as slices of their types (through [`with_kv!`]), the
/// error as its status. `$call` is one of [`attention`](crate::attention),
/// [`attention_in`](crate::attention_in), [`Isa::attention`](crate::Isa::attention),
/// [`reference::attention`](crate::reference::attention) or a [`split`](crate::split)
/// partial, each instantiated separately so that firmware calling one links only that one.
///
/// The call is used where it lies in its `Result`: moved out, it would take a second slot of
/// the entry point's frame (208 bytes on a Cortex-M), under every frame of the kernel.
macro_rules! run {
    ($decoded:expr, |$p:ident, $q:ident, $k:ident, $v:ident, $out:ident, $lse:ident, $ws:pat_param| $call:expr) => {{
        // Borrowed where it lies: moved, a decoded call another function saw (a partial's)
        // was copied, a second 208 bytes under the kernel.
        let decoded = &mut $decoded;
        let Call {
            params,
            q,
            kv,
            out,
            lse,
            ws,
        } = match decoded {
            Ok(call) => call,
            Err(status) => return Err(*status),
        };
        let ($p, $q, kv): (&$crate::Params, &[f32], _) = (&*params, *q, *kv);
        let ($out, $lse): (&mut [f32], _) = (&mut **out, lse.as_deref_mut());
        let $ws: &mut [f32] = &mut **ws;
        $crate::capi::types::with_kv!(kv, |$k, $v| $call).map_err($crate::capi::error_status)
    }};
}
pub(super) use run;

/// No workspace.
pub(super) const NONE: (*mut f32, usize) = (core::ptr::null_mut(), 0);

/// Declares a one-shot entry point with [`qkv_attention_f32`]'s arguments and contract that
/// decodes the call and runs `$run(params, q, k, v, out, lse)`, `$run` being an
/// [`attention`](crate::attention)-shaped function; its docs (`# Safety` included) go first
/// in the macro call.
macro_rules! one_shot_entry {
    ($(#[$doc:meta])* $name:ident => $($run:tt)+) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            desc: *const $crate::capi::QkvDesc, q: *const f32, k: *const ::core::ffi::c_void,
            v: *const ::core::ffi::c_void, out: *mut f32, lse: *mut f32,
        ) -> $crate::capi::QkvStatus {
            use $crate::capi::attention::{Call, Lse, NONE};
            // SAFETY: the entry point's contract (its `# Safety`), passed on.
            $crate::capi::guard(|| unsafe {
                let mut c = Call::decode(desc, (q, k, v), out, Lse::Optional(lse), NONE);
                $crate::capi::attention::run!(c, |p, q, k, v, out, lse, _| {
                    $($run)+(p, q, k, v, out, lse)
                })
            })
        }
    };
}
// For `qkv_attention_parallel_f32` in `plan.rs`.
#[cfg(feature = "parallel")]
pub(super) use one_shot_entry;

one_shot_entry! {
    /// `qkv_attention_f32`: attention with the best [`Isa`](crate::Isa) this CPU supports
    /// ([`attention`](crate::attention)).
    ///
    /// `k` and `v` are stored as the descriptor's `k_type` and `v_type` say. `lse` may be NULL;
    /// otherwise it receives `[q_heads][q_len]` log-sum-exps. Returns [`QKV_OK`](super::QKV_OK)
    /// or an error status, in which case nothing was written.
    ///
    /// # Safety
    /// `desc` is NULL or points to a descriptor of at least `struct_size` readable bytes. Each
    /// tensor pointer follows the [pointer contract](super#the-pointer-contract): it points to
    /// as many elements of its type (floats, or those of `k_type` and `v_type`) as its count
    /// field or extent says (or that length is 0), those of `q`,
    /// `k`, `v` and `bias` are not written by anyone during the call, and those of `out` and
    /// `lse` are writable and not accessed by anyone else during the call.
    qkv_attention_f32 => crate::attention
}

/// `qkv_attention_f32_ws`: [`qkv_attention_f32`] in the caller's working memory `workspace`
/// of `workspace_len` floats ([`attention_in`](crate::attention_in)): with
/// [`qkv_workspace_size`](super::qkv_workspace_size) floats it runs at full speed, with
/// fewer (down to [`qkv_workspace_min_size`](super::qkv_workspace_min_size)) with smaller
/// tiles, and the stack holds no tile. The workspace needs no initialisation and may be
/// reused by any later call.
///
/// Returns what [`qkv_attention_f32`] returns, checking the workspace after the other
/// pointers (NULL with a nonzero length, misaligned, or overlapping another buffer), and
/// [`QKV_ERR_WORKSPACE_TOO_SMALL`](super::QKV_ERR_WORKSPACE_TOO_SMALL) after every other
/// check; nothing is written to `out` or `lse` on error.
///
/// # Safety
/// The contract of [`qkv_attention_f32`]; `workspace` points to `workspace_len` writable
/// floats (or `workspace_len` is 0) that nothing else accesses during the call.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qkv_attention_f32_ws(
    desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void, out: *mut f32,
    lse: *mut f32, workspace: *mut f32, workspace_len: usize,
) -> QkvStatus {
    let ws = (workspace, workspace_len);
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let mut c = Call::decode(desc, (q, k, v), out, Lse::Optional(lse), ws);
        run!(c, |p, q, k, v, out, lse, ws| crate::attention_in(
            ws, p, q, k, v, out, lse
        ))
    })
}

/// `qkv_attention_f32_isa`: [`qkv_attention_f32`] at the level `isa` (a `QKV_ISA_*` value),
/// as [`Isa::attention`](crate::Isa::attention) does.
///
/// Returns [`QKV_ERR_UNKNOWN_ISA`] for a value that is no `QKV_ISA_*` and
/// [`QKV_ERR_UNSUPPORTED`](super::QKV_ERR_UNSUPPORTED) for a level this CPU or build lacks
/// (after every other check).
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_attention_f32_isa(
    isa: i32, desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void,
    out: *mut f32, lse: *mut f32,
) -> QkvStatus {
    let Some(isa) = isa_from_i32(isa) else {
        return QKV_ERR_UNKNOWN_ISA;
    };
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        let mut c = Call::decode(desc, (q, k, v), out, Lse::Optional(lse), NONE);
        run!(c, |p, q, k, v, out, lse, _| isa
            .attention(p, q, k, v, out, lse))
    })
}

one_shot_entry! {
    /// `qkv_reference_f32`: the `f64` reference
    /// ([`reference::attention`](crate::reference::attention)), with the arguments, checks and
    /// results of [`qkv_attention_f32`].
    ///
    /// # Safety
    /// The contract of [`qkv_attention_f32`].
    qkv_reference_f32 => crate::reference::attention
}
