//! Caller-owned working memory for the C ABI: how many floats a descriptor's calls need
//! ([`qkv_workspace_size`] for full speed, [`qkv_workspace_min_size`] at least), the buffer
//! checks, and what the `_ws` entry points share.

use super::buf::Buf;
use super::decode::Desc;
use super::{QkvDesc, QkvStatus};
use crate::{KvKind, Params};

/// `qkv_workspace_size`: the floats of workspace with which `qkv_attention_f32_ws`,
/// `qkv_partial_f32_ws` and `qkv_stream_update_ws` run at full speed for `desc`
/// ([`workspace_len_for`](crate::workspace_len_for)): at most about 15,300 (60 KiB) for
/// `float` K and V, up to about 6,100 more when either is narrower (the tile its values are
/// widened into); less for small heads, short queries and narrow values. Depends only on the
/// shape, `k_type` and `v_type` fields. 0 when `desc` is NULL, its `struct_size` is not
/// accepted or a type is not ([`QKV_ERR_TYPE`](super::QKV_ERR_TYPE)); no valid call needs 0
/// floats.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_workspace_size(desc: *const QkvDesc) -> usize {
    // SAFETY: the same contract, passed on.
    unsafe { size(desc, crate::workspace_len_for) }
}

/// `qkv_workspace_min_size`: the fewest floats of workspace the `_ws` calls run in for
/// `desc` ([`min_workspace_len_for`](crate::min_workspace_len_for): 58, whatever the shape and
/// types); fewer is `QKV_ERR_WORKSPACE_TOO_SMALL`. 0 as for [`qkv_workspace_size`].
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_workspace_min_size(desc: *const QkvDesc) -> usize {
    // SAFETY: the same contract, passed on.
    unsafe { size(desc, crate::min_workspace_len_for) }
}

/// `len(params, k_type, v_type)` of the descriptor's shape and types, or 0 when it cannot be
/// read or a type is refused.
///
/// # Safety
/// `desc` as for [`qkv_attention_f32`](super::qkv_attention_f32).
unsafe fn size(desc: *const QkvDesc, len: fn(&Params, KvKind, KvKind) -> usize) -> usize {
    // SAFETY: the caller's contract for `desc`.
    let read = unsafe { Desc::read(desc) };
    match read.and_then(|d| Ok((d.shape(), d.kv_kinds()?))) {
        Ok((shape, [k, v])) => len(&Params::new(shape), k, v),
        Err(_) => 0,
    }
}

/// The workspace argument of a `_ws` call: `len` floats at `ptr` (NULL allowed when `len` is
/// 0), checked like any output buffer.
pub(crate) fn workspace(ptr: *mut f32, len: usize) -> Result<Buf, QkvStatus> {
    Buf::new(ptr, 0, Some(len))
}
