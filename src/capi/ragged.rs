//! Ragged batches from C: [`qkv_attention_ragged_f32`] over
//! [`ragged::attention`](crate::ragged::attention), and with the `parallel` feature
//! [`qkv_attention_ragged_parallel_f32`] over [`parallel::ragged`](crate::parallel::ragged).
//! The descriptor, K/V types and pointers are decoded and run as for
//! [`qkv_attention_f32`](super::qkv_attention_f32) ([`Call::decode`], [`run!`]); the offsets
//! `cu_q` and `cu_k` are two more read-only buffers, of `size_t`s, checked after the others.

use core::ffi::c_void;

use super::attention::{Call, Lse, NONE, run};
use super::buf::{Buf, check_aliasing};
use super::{QkvDesc, QkvStatus, guard};
use crate::ragged::Batch;

/// The batch of the offsets `cu_q` and `cu_k` (`len` `size_t`s each) of a call that
/// [`Call::decode`] decoded (`decoded`; its status if it failed): each checked against the
/// pointer contract (its length, NULL with a nonzero `len`
/// ([`QKV_ERR_NULL_POINTER`](super::QKV_ERR_NULL_POINTER)), then alignment to `size_t`
/// ([`QKV_ERR_MISALIGNED`](super::QKV_ERR_MISALIGNED))), then both for aliasing with the
/// call's `out` and `lse` ([`QKV_ERR_ALIASING`](super::QKV_ERR_ALIASING)). Whether the
/// offsets describe the tensors is checked by the Rust call
/// ([`Error::Batch`](crate::Error::Batch)).
///
/// # Safety
/// `cu_q` and `cu_k` each point to `len` readable `size_t`s (or `len` is 0) that nobody
/// writes during `'a`.
unsafe fn batch<'a>(
    (cu_q, cu_k, len): (*const usize, *const usize, usize), decoded: &Result<Call, QkvStatus>,
) -> Result<Batch<'a>, QkvStatus> {
    let call = decoded.as_ref().map_err(|&status| status)?;
    let (cu_q, cu_k) = (Buf::sizes(cu_q, len)?, Buf::sizes(cu_k, len)?);
    // `out` and `lse` were checked against every other buffer by `Call::decode`; an empty
    // one reaches no byte.
    let out = Buf::new(call.out.as_ptr(), call.out.len(), Some(0))?;
    let lse = match call.lse.as_deref() {
        Some(l) => Buf::new(l.as_ptr(), l.len(), Some(0))?,
        None => Buf::new(core::ptr::null(), 0, Some(0))?,
    };
    check_aliasing(&[out, lse], &[Some(cu_q), Some(cu_k)])?;
    // SAFETY: the caller's contract, for the `len` `size_t`s the buffers were checked to
    // hold (non-NULL and aligned where `len` is not 0); neither overlaps `out` or `lse`, the
    // only memory the call writes.
    Ok(unsafe { Batch::new(cu_q.slice_usize(), cu_k.slice_usize()) })
}

/// Declares a ragged entry point with [`qkv_attention_ragged_f32`]'s arguments and contract
/// that decodes the call and its offsets and runs `$run(params, batch, q, k, v, out, lse)`;
/// its docs (`# Safety` included) and attributes go first in the macro call.
macro_rules! ragged_entry {
    ($(#[$attr:meta])* $name:ident => $run:path) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            desc: *const QkvDesc, cu_q: *const usize, cu_k: *const usize, offsets_len: usize,
            q: *const f32, k: *const c_void, v: *const c_void, out: *mut f32, lse: *mut f32,
        ) -> QkvStatus {
            // SAFETY: the entry point's contract (its `# Safety`), passed on.
            guard(|| unsafe {
                let mut c = Call::decode(desc, (q, k, v), out, Lse::Optional(lse), NONE);
                let batch = batch((cu_q, cu_k, offsets_len), &c)?;
                run!(c, |p, q, k, v, out, lse, _| $run(p, &batch, q, k, v, out, lse))
            })
        }
    };
}

ragged_entry! {
    /// `qkv_attention_ragged_f32`: attention over a ragged batch
    /// ([`ragged::attention`](crate::ragged::attention)): sequences of different lengths packed
    /// along the rows of `q`, `k`, `v` and `out`, as FlashAttention's varlen API packs them.
    /// Sequence `b` (of `offsets_len − 1`) owns query rows `cu_q[b]..cu_q[b + 1]` and keys
    /// `cu_k[b]..cu_k[b + 1]`; the descriptor describes the packed tensors, its `q_len` and
    /// `kv_len` being the totals. Each sequence is a problem of its own: the mask aligned to its
    /// own lengths, its block of the bias, the same scale, softcap, sinks and ALiBi slopes; its
    /// rows are, bit for bit, what [`qkv_attention_f32`](super::qkv_attention_f32) gives for it
    /// alone. `k` and `v` are stored as the descriptor's `k_type` and `v_type` say, and may be
    /// pools of pages (one table over the packed keys). `lse` may be NULL; otherwise it receives
    /// `[q_heads][q_len]` log-sum-exps over the total rows.
    ///
    /// Returns [`QKV_OK`](super::QKV_OK) or an error status, in which case nothing was written:
    /// the statuses of `qkv_attention_f32`; after its pointer checks, `cu_q` and `cu_k`
    /// (NULL with a nonzero `offsets_len`, misaligned to `size_t`, or overlapping `out` or `lse`:
    /// [`QKV_ERR_NULL_POINTER`](super::QKV_ERR_NULL_POINTER),
    /// [`QKV_ERR_MISALIGNED`](super::QKV_ERR_MISALIGNED),
    /// [`QKV_ERR_ALIASING`](super::QKV_ERR_ALIASING)); and, after the descriptor's own checks,
    /// [`QKV_ERR_TOO_SHORT`](super::QKV_ERR_TOO_SHORT) for offsets that do not describe the
    /// tensors ([`Error::Batch`](crate::Error::Batch): fewer than two entries, not starting at 0,
    /// decreasing, or not ending at `q_len` and `kv_len`).
    ///
    /// # Safety
    /// The contract of [`qkv_attention_f32`](super::qkv_attention_f32); `cu_q` and `cu_k` each
    /// point to `offsets_len` readable `size_t`s (or `offsets_len` is 0) that nobody writes
    /// during the call.
    qkv_attention_ragged_f32 => crate::ragged::attention
}

ragged_entry! {
    /// `qkv_attention_ragged_parallel_f32`: [`qkv_attention_ragged_f32`] on the threads of the
    /// `parallel` feature's pool (rayon's global pool;
    /// [`parallel::ragged`](crate::parallel::ragged)), the sequences and each sequence's own
    /// plan one pool of work. Same arguments and statuses; each sequence's rows are what
    /// [`qkv_attention_parallel_f32`](super::qkv_attention_parallel_f32) gives for it alone
    /// (key splits are merged exactly up to one rounding).
    ///
    /// # Safety
    /// The contract of [`qkv_attention_ragged_f32`].
    #[cfg(feature = "parallel")]
    qkv_attention_ragged_parallel_f32 => crate::parallel::ragged
}
