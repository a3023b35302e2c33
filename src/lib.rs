//! # qkv
//!
//! Scaled dot-product attention for CPUs, `out = softmax(scale · Q·Kᵀ + bias) · V`, over plain
//! slices: `f32` queries and K/V in `f32`, `f16`, `bf16` or `q8_0` ([`kv`]). `#![no_std]`, no
//! allocation, no panics on any input.
//!
//! - **One kernel**, written once over [`pulp::Simd`] and dispatched at run time to AVX-512,
//!   AVX2+FMA, NEON or plain scalar code ([`Isa`]).
//! - **Streaming softmax**: one pass over K/V with a running max and sum, so any score
//!   magnitude is stable and the `q_len × kv_len` score matrix never exists.
//! - **Masks as loop bounds**: causal (any alignment), sliding windows and `-inf` bias entries
//!   skip keys instead of multiplying them by zero.
//! - **A reference** ([`reference::attention`]) computing the same function in `f64`, against
//!   which every level is tested and fuzzed.
//!
//! ```
//! use qkv::{Mask, Params, Shape};
//!
//! let shape = Shape::new(2, 3, 5, 4); // 2 heads, 3 queries, 5 keys, head_dim 4
//! let q = vec![0.1f32; 2 * 3 * 4];
//! let k = vec![0.2f32; 2 * 5 * 4];
//! let v = vec![1.0f32; 2 * 5 * 4];
//! let mut out = vec![0.0f32; 2 * 3 * 4];
//! let params = Params::new(shape).with_mask(Mask::causal());
//! qkv::attention(&params, &q, &k, &v, &mut out, None)?;
//! assert!(out.iter().all(|&x| (x - 1.0).abs() < 1e-6));
//! # Ok::<(), qkv::Error>(())
//! ```
//!
//! ## Semantics
//! For query head `h`, row `i` and the kv head `g = h / (q_heads / kv_heads)`, the keys `j`
//! that row `i` *includes* are those inside its [`Mask`] band whose bias is not `-inf` and whose
//! score `s_j = scale · q[h][i]·k[g][j] + bias[h][i][j]` is not `-inf`. Then
//! `out[h][i] = Σ_j e^(s_j) v[g][j] / Σ_j e^(s_j)` and `lse[h][i] = ln Σ_j e^(s_j)` over the
//! included keys.
//! - A row that includes no key gets `out = 0` and `lse = -inf`, never NaN.
//! - A NaN score makes its row and lse NaN; a NaN in an included `v` row makes the output
//!   columns it touches NaN. An excluded key's score is discarded (not multiplied by zero)
//!   and its `v` row is not read for that row, so NaN or garbage there never leaks.
//! - Scores of any magnitude representable in `f32` give the right softmax.
//! - Bad input returns an [`Error`] before anything is written.
//!
//! ## Memory and stack
//! Nothing is allocated. The kernel works in a working memory of `f32`s: the caller's, with
//! [`attention_in`] ([`workspace_len`] floats for full speed, at least
//! [`min_workspace_len`], 58, for any shape and K/V type), or, for [`attention`] and the
//! other calls without one, a workspace on the stack: about 60 KiB ([`kernel::STACK_BYTES`])
//! with the default `stack-workspace` feature, those 58 floats (232 bytes) without it. With a
//! caller's workspace the stack holds only the kernel's frames: under 1.3 KiB in Rust on a
//! Cortex-M4F, and with the stack workspace every call takes at most 2 KiB (README
//! "Firmware"). A `no_std` build needs `default-features = false`:
//! `qkv = { version = "0.1", default-features = false }`.
//!
//! ## Accuracy
//! Scores and sums are accumulated in `f32`; [`tolerance`] documents and justifies the bound
//! the tests hold every level to.

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "capi")]
#[cfg_attr(docsrs, doc(cfg(feature = "capi")))]
pub mod capi;
/// The split-KV and streaming functions of the C ABI (feature `capi`): partials and
/// merges, and a caller-owned stream state. They take the descriptor, statuses and pointer
/// contract of [`capi`], which decodes them.
#[cfg(feature = "capi")]
#[cfg_attr(docsrs, doc(cfg(feature = "capi")))]
pub mod capi_split {
    pub use crate::capi::split::{
        qkv_add_sinks_f32, qkv_merge_f32, qkv_partial_f32, qkv_partial_f32_ws,
    };
    pub use crate::capi::stream::{
        qkv_stream_finish, qkv_stream_init, qkv_stream_state_len, qkv_stream_update,
        qkv_stream_update_ws,
    };
}
mod dispatch;
mod error;
pub mod exp;
pub mod kernel;
pub mod kv;
mod mask;
mod pages;
#[cfg(feature = "parallel")]
#[cfg_attr(docsrs, doc(cfg(feature = "parallel")))]
pub mod parallel;
mod params;
pub mod plan;
pub mod ragged;
mod range;
pub mod reference;
pub mod split;
pub mod stream;
// Unit-test inputs, for the builds whose unit tests use them: the C ABI's, and the
// assembly tiles' on hard-float Arm.
#[cfg(all(
    test,
    feature = "std",
    any(feature = "capi", all(target_arch = "arm", target_abi = "eabihf"))
))]
mod test_data;
pub mod tolerance;
mod validate;

#[cfg(feature = "emulated")]
pub use dispatch::Emulated;
pub use dispatch::{Isa, Level};
pub use error::{Dim, Error, Tensor};
pub use kv::{BlockQ8_0, KvKind, KvType, bf16, f16};
pub use mask::{Mask, QueryPos};
pub use pages::Pages;
pub use params::{Bias, Layout, Params, Shape};

/// Computes attention with the best [`Isa`] this CPU supports.
///
/// `q`, `k`, `v` and `out` are laid out as `params` says; `lse`, if given, receives the
/// natural log of each row's softmax denominator, `[q_heads][q_len]`. See the crate docs for
/// the exact semantics. Returns an [`Error`] (and writes nothing) if the slices do not match
/// the shape and strides.
///
/// K and V may each be stored as `f32`, [`f16`](struct@f16), [`bf16`] or [`BlockQ8_0`] ([`kv`]); their
/// values are widened to `f32` as they are read.
pub fn attention<K: KvType, V: KvType>(
    params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32], lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    Level::Detect.attention(params, q, k, v, out, lse)
}

/// [`attention`] in the caller's working memory `workspace`, which needs no initialisation
/// and is never read before it is written. With [`workspace_len`] floats the call runs at
/// full speed; with less, down to [`min_workspace_len`], it runs with smaller tiles (slower,
/// same results within [`tolerance`]); with less than that it returns
/// [`Error::WorkspaceTooSmall`]. No other memory is used: the stack stays small (no tile
/// lives there), whatever the shape. With K or V narrower than `f32`, size it with
/// [`workspace_len_for`].
pub fn attention_in<K: KvType, V: KvType>(
    workspace: &mut [f32], params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    Level::Detect.attention_in(workspace, params, q, k, v, out, lse)
}

/// The `f32`s of working memory with which [`attention_in`] (and the split-KV and streaming
/// calls on the same params) runs at full speed with `f32` K and V: at most about 15k
/// (60 KiB), less for small heads, short queries (decode) and narrow `v_dim`. Decode whose
/// kv heads' rows lie side by side (interleaved K and V, most paged layouts) takes the tiles
/// of up to 8 blocks, one per kv head it reads in turn: about 7.5k floats at d128.
pub fn workspace_len(params: &Params) -> usize {
    workspace_len_for(params, KvKind::F32, KvKind::F32)
}

/// The fewest `f32`s of working memory [`attention_in`] runs in for this shape with `f32` K
/// and V (tiles of one query row, 16 keys and 16 value columns): 58, whatever the sizes.
pub fn min_workspace_len(params: &Params) -> usize {
    min_workspace_len_for(params, KvKind::F32, KvKind::F32)
}

/// [`workspace_len`] for K and V stored as `k` and `v` (`K::KIND`, `V::KIND`): K or V
/// narrower than `f32` adds a tile their values are widened into (at most 6,144 floats).
pub fn workspace_len_for(params: &Params, k: KvKind, v: KvKind) -> usize {
    kernel::workspace_len(params, (k, v))
}

/// [`min_workspace_len`] for K and V stored as `k` and `v`: the same for every type (the
/// least tiles read K and V as they are stored, widening nothing), whatever the shape.
pub fn min_workspace_len_for(params: &Params, k: KvKind, v: KvKind) -> usize {
    kernel::Tiles::least(&params.shape, (k, v)).len()
}

/// The README's examples are compiled and run as doc tests (not under Miri: its example is a
/// full-size prefill, hours there; the crate-level example above covers the same calls).
#[cfg(all(doctest, not(miri)))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
