//! The C ABI (feature `capi`): `extern "C"` functions over [`attention`](crate::attention),
//! [`reference::attention`](crate::reference::attention), [`Isa`], [`split`](crate::split),
//! [`stream`](crate::stream) and [`ragged`](crate::ragged), declared for C and C++ in `include/qkv.h`.
//! `docs/c-api.md` is the C reference: how to build and link the library, the descriptor,
//! every function and status.
//!
//! One home per concept: `desc.rs` declares the descriptor, `decode.rs` decodes it for every
//! entry point, `buf.rs`
//! checks the pointers, `types.rs` holds the K/V types and `with_kv!`, the one run-time
//! dispatch over them, [`error_status`] is the one [`Error`] → status mapping, and
//! `attention.rs`, `ragged.rs`, `plan.rs`, `split.rs` and `stream.rs` hold the entry points
//! (those of the last two are exported as [`capi_split`](crate::capi_split)).
//!
//! Everything here is plain data and integers: a call is described by a [`QkvDesc`], enums
//! are `int32_t` constants (an unknown value is an error, never undefined behaviour), and
//! every fallible function returns a [`QkvStatus`]. No function panics or unwinds into C on
//! any input; with the `std` feature a panic (there is none on a reachable path) would
//! still be caught and reported as [`QKV_ERR_INTERNAL`].
//!
//! # The pointer contract
//! Each tensor pointer must point to at least `len` readable (for `out` and `lse`,
//! writable) elements, aligned to their type, where `len` is the tensor's *count* field in
//! the descriptor when that is nonzero, and otherwise its *extent*. The elements are
//! `float`s (4 bytes, aligned to 4), but those of `k` and `v`, which are of the
//! [`QkvDesc::k_type`] and [`QkvDesc::v_type`] (`QKV_TYPE_*`): `float`; `f16` or `bf16`
//! (2 bytes, aligned to 2); or `q8_0` blocks (34 bytes, aligned to 2, 32 values each). The
//! strides, counts and extents of `k` and `v` count those elements, so the last term of
//! their extents is `head_dim / 32` and `v_dim / 32` blocks for `q8_0` (rounded up; a
//! `head_dim` or `v_dim` that is no multiple of 32 is [`QKV_ERR_BLOCK_SIZE`]):
//!
//! | tensor | extent                                                                   |
//! |--------|--------------------------------------------------------------------------|
//! | `q`    | `(q_heads-1)·q.head_stride + (q_len-1)·q.row_stride + head_dim`          |
//! | `k`    | `(kv_heads-1)·k.head_stride + (kv_len-1)·k.row_stride + head_dim/values` |
//! | `v`    | `(kv_heads-1)·v.head_stride + (kv_len-1)·v.row_stride + v_dim/values`    |
//! | `out`  | `(q_heads-1)·out.head_stride + (q_len-1)·out.row_stride + v_dim`         |
//! | `bias` | `(q_heads-1)·bias_layout.head_stride + (q_len-1)·bias_layout.row_stride + kv_len` |
//! | `lse`  | `q_heads·q_len`                                                          |
//!
//! An extent is 0 when any of its three factors (heads, rows, last dimension) is 0
//! ([`Layout::extent`](crate::Layout::extent)); a pointer whose `len` is 0 is never read and
//! may be NULL. With `q_len = 0` that is `q`, `out` and `lse`, but not `k` and `v`, whose
//! extents do not depend on `q_len`; with `kv_len = 0` it is `k` and `v`. A nonzero count
//! field makes its pointer required whatever the extent. (A NULL `bias` means no bias, and
//! a NULL `lse`, where it is optional, that none is wanted.) The extents are computed with
//! checked arithmetic; one that overflows `size_t`, or a `len` of more than `PTRDIFF_MAX` bytes, is
//! [`QKV_ERR_OVERFLOW`]. `out` and `lse` must not overlap each other or any input
//! ([`QKV_ERR_ALIASING`]); inputs may overlap each other. The descriptor itself needs no
//! alignment and must hold `struct_size` readable bytes.

mod attention;
mod buf;
mod decode;
mod desc;
mod plan;
#[cfg(feature = "capi-ragged")]
mod ragged;
pub(crate) mod split;
pub(crate) mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod types;
mod workspace;

use core::ffi::c_char;

use crate::{Error, Isa};

pub use attention::{
    qkv_attention_f32, qkv_attention_f32_isa, qkv_attention_f32_ws, qkv_reference_f32,
};
pub use desc::{
    QKV_DESC_MAX_SIZE, QKV_DESC_SIZE_V1, QKV_DESC_SIZE_V2, QKV_DESC_SIZE_V3, QKV_DESC_SIZE_V4,
    QKV_FLAG_SCALE, QKV_KNOWN_FLAGS, QKV_MASK_BAND, QKV_MASK_CAUSAL, QKV_MASK_NONE,
    QKV_QUERY_POS_BOTTOM_RIGHT, QKV_QUERY_POS_OFFSET, QKV_QUERY_POS_TOP_LEFT, QKV_UNBOUNDED,
    QkvDesc, QkvLayout,
};
#[cfg(feature = "parallel")]
pub use plan::qkv_attention_parallel_f32;
pub use plan::{QkvPlan, qkv_plan_finish, qkv_plan_make, qkv_plan_run_task};
#[cfg(feature = "capi-ragged")]
pub use ragged::qkv_attention_ragged_f32;
#[cfg(all(feature = "capi-ragged", feature = "parallel"))]
pub use ragged::qkv_attention_ragged_parallel_f32;
pub use types::{QKV_TYPE_BF16, QKV_TYPE_F16, QKV_TYPE_F32, QKV_TYPE_Q8_0};
pub use workspace::{qkv_workspace_min_size, qkv_workspace_size};

/// A status code: [`QKV_OK`] or one of the `QKV_ERR_*` constants.
pub type QkvStatus = i32;

/// Success.
pub const QKV_OK: QkvStatus = 0;
/// [`Error::ZeroDim`]: `q_heads`, `kv_heads`, `head_dim` or `v_dim` is 0.
pub const QKV_ERR_ZERO_DIM: QkvStatus = 1;
/// [`Error::HeadsNotDivisible`]: `q_heads` is not a multiple of `kv_heads`.
pub const QKV_ERR_HEADS_NOT_DIVISIBLE: QkvStatus = 2;
/// [`Error::TooShort`]: a nonzero count field is smaller than the tensor's extent; also
/// [`Error::KeyRange`], a key range outside `0..=kv_len` (the keys it names are not in the
/// tensors the descriptor describes), and [`Error::Batch`], ragged offsets that do not
/// describe the tensors ([`qkv_attention_ragged_f32`]: the sequences they name are not the
/// rows and keys the descriptor describes).
pub const QKV_ERR_TOO_SHORT: QkvStatus = 3;
/// [`Error::Overflow`], or a length over `PTRDIFF_MAX` bytes: an extent overflows `size_t`.
pub const QKV_ERR_OVERFLOW: QkvStatus = 4;
/// [`Error::Overlap`]: the strides of `out` make two of its elements share memory.
pub const QKV_ERR_OVERLAP: QkvStatus = 5;
/// [`Error::InvalidScale`]: the scale in use is NaN or infinite.
pub const QKV_ERR_INVALID_SCALE: QkvStatus = 6;
/// [`Error::Unsupported`]: the requested [`Isa`] is not available on this CPU or build.
pub const QKV_ERR_UNSUPPORTED: QkvStatus = 7;
/// The descriptor is NULL, or a tensor pointer is NULL while its length is not 0.
pub const QKV_ERR_NULL_POINTER: QkvStatus = 8;
/// A tensor pointer whose length is not 0 is not aligned to its type (4 bytes for `float`,
/// 2 for the 16-bit types and `q8_0` blocks).
pub const QKV_ERR_MISALIGNED: QkvStatus = 9;
/// `out` or `lse` overlaps another buffer of the call.
pub const QKV_ERR_ALIASING: QkvStatus = 10;
/// `struct_size` is below [`QKV_DESC_SIZE_V1`], above [`QKV_DESC_MAX_SIZE`], or larger than
/// this library's [`QkvDesc`] with a nonzero byte past the end of it.
pub const QKV_ERR_STRUCT_SIZE: QkvStatus = 11;
/// `flags` has a bit this library does not know.
pub const QKV_ERR_UNKNOWN_FLAGS: QkvStatus = 12;
/// `mask` is not a `QKV_MASK_*` value.
pub const QKV_ERR_UNKNOWN_MASK: QkvStatus = 13;
/// `query_pos` is not a `QKV_QUERY_POS_*` value.
pub const QKV_ERR_UNKNOWN_QUERY_POS: QkvStatus = 14;
/// The `isa` argument is not a `QKV_ISA_*` value.
pub const QKV_ERR_UNKNOWN_ISA: QkvStatus = 15;
/// A bug in the library (a caught panic); never returned by a correct build.
pub const QKV_ERR_INTERNAL: QkvStatus = 16;
/// [`Error::WorkspaceTooSmall`]: the workspace holds fewer floats than
/// [`qkv_workspace_min_size`] returns for the descriptor.
pub const QKV_ERR_WORKSPACE_TOO_SMALL: QkvStatus = 17;
/// [`Error::BlockSize`]: K or V is stored in `q8_0` blocks and `head_dim` (for K) or `v_dim`
/// (for V) is not a multiple of 32.
pub const QKV_ERR_BLOCK_SIZE: QkvStatus = 18;
/// `k_type` or `v_type` is not a `QKV_TYPE_*` value, or names a type this build of the
/// library leaves out (see the `kv-*` features).
pub const QKV_ERR_TYPE: QkvStatus = 19;
/// [`Error::TaskIndex`]: a task index past the last task of the plan
/// ([`qkv_plan_run_task`]).
pub const QKV_ERR_TASK: QkvStatus = 20;
/// [`Error::InvalidSoftcap`]: the descriptor's `softcap` is neither 0 (none) nor finite and
/// positive.
pub const QKV_ERR_INVALID_SOFTCAP: QkvStatus = 21;
/// [`Error::VariantsNotBuilt`]: the descriptor sets `sinks`, `alibi` or `softcap`, which this
/// build of the library leaves out (the feature `softmax-variants`).
pub const QKV_ERR_VARIANT: QkvStatus = 22;

/// Defines [`ALL_STATUSES`] and [`STATUS_NAMES`] from one list, so the two cannot disagree.
macro_rules! statuses {
    ($($status:ident),* $(,)?) => {
        /// Every status code, in order of value (`QKV_OK` is 0, each next one is one more).
        pub const ALL_STATUSES: [QkvStatus; 23] = [$($status),*];
        /// The C name of each of [`ALL_STATUSES`], in the same order (`"QKV_OK"`, ...).
        pub const STATUS_NAMES: [&str; 23] = [$(stringify!($status)),*];
    };
}
statuses!(
    QKV_OK,
    QKV_ERR_ZERO_DIM,
    QKV_ERR_HEADS_NOT_DIVISIBLE,
    QKV_ERR_TOO_SHORT,
    QKV_ERR_OVERFLOW,
    QKV_ERR_OVERLAP,
    QKV_ERR_INVALID_SCALE,
    QKV_ERR_UNSUPPORTED,
    QKV_ERR_NULL_POINTER,
    QKV_ERR_MISALIGNED,
    QKV_ERR_ALIASING,
    QKV_ERR_STRUCT_SIZE,
    QKV_ERR_UNKNOWN_FLAGS,
    QKV_ERR_UNKNOWN_MASK,
    QKV_ERR_UNKNOWN_QUERY_POS,
    QKV_ERR_UNKNOWN_ISA,
    QKV_ERR_INTERNAL,
    QKV_ERR_WORKSPACE_TOO_SMALL,
    QKV_ERR_BLOCK_SIZE,
    QKV_ERR_TYPE,
    QKV_ERR_TASK,
    QKV_ERR_INVALID_SOFTCAP,
    QKV_ERR_VARIANT,
);

/// The status code of an [`Error`]: the one mapping every entry point returns its errors
/// through. No wildcard arm, so a new variant does not compile until it has a status.
pub const fn error_status(e: Error) -> QkvStatus {
    match e {
        Error::ZeroDim(_) | Error::ZeroPageLen => QKV_ERR_ZERO_DIM,
        Error::HeadsNotDivisible { .. } => QKV_ERR_HEADS_NOT_DIVISIBLE,
        Error::TooShort { .. } | Error::KeyRange { .. } | Error::Batch { .. } => QKV_ERR_TOO_SHORT,
        Error::Overflow(_) => QKV_ERR_OVERFLOW,
        Error::Overlap(_) => QKV_ERR_OVERLAP,
        Error::InvalidScale => QKV_ERR_INVALID_SCALE,
        Error::Unsupported(_) => QKV_ERR_UNSUPPORTED,
        Error::WorkspaceTooSmall { .. } => QKV_ERR_WORKSPACE_TOO_SMALL,
        Error::BlockSize { .. } => QKV_ERR_BLOCK_SIZE,
        Error::TaskIndex { .. } => QKV_ERR_TASK,
        Error::InvalidSoftcap => QKV_ERR_INVALID_SOFTCAP,
        Error::VariantsNotBuilt | Error::PagesNotBuilt => QKV_ERR_VARIANT,
    }
}

/// [`Isa::Scalar`] as an `int32_t`.
pub const QKV_ISA_SCALAR: i32 = Isa::Scalar as i32;
/// [`Isa::Avx2`] as an `int32_t`.
pub const QKV_ISA_AVX2: i32 = Isa::Avx2 as i32;
/// [`Isa::Avx512`] as an `int32_t`.
pub const QKV_ISA_AVX512: i32 = Isa::Avx512 as i32;
/// [`Isa::Neon`] as an `int32_t`.
pub const QKV_ISA_NEON: i32 = Isa::Neon as i32;

/// The crate version, `MAJOR.MINOR.PATCH` from `Cargo.toml`, as `(MAJOR << 16) | (MINOR << 8)
/// | PATCH`: what [`qkv_version`] returns and `QKV_VERSION` in the header.
pub const QKV_VERSION: u32 = (parse_u32(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
    | (parse_u32(env!("CARGO_PKG_VERSION_MINOR")) << 8)
    | parse_u32(env!("CARGO_PKG_VERSION_PATCH"));

/// A decimal number, at compile time.
const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut n = 0u32;
    let mut i = 0;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// Runs one entry point: its result as a status, and a panic as [`QKV_ERR_INTERNAL`] where
/// `std` can catch it. Inlined into the entry point: at opt-level z a frame of its own
/// held the entry point's arguments a second time, under the kernel's frames.
#[inline(always)]
fn guard(f: impl FnOnce() -> Result<(), QkvStatus>) -> QkvStatus {
    let status = || match f() {
        Ok(()) => QKV_OK,
        Err(s) => s,
    };
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(status)).unwrap_or(QKV_ERR_INTERNAL)
    }
    #[cfg(not(feature = "std"))]
    {
        status()
    }
}

fn isa_from_i32(isa: i32) -> Option<Isa> {
    u8::try_from(isa).ok().and_then(Isa::from_u8)
}

/// `qkv_detected_isa`: the `QKV_ISA_*` level [`qkv_attention_f32`] uses ([`Isa::detect`]).
#[unsafe(no_mangle)]
pub extern "C" fn qkv_detected_isa() -> i32 {
    Isa::detect() as i32
}

/// `qkv_isa_available`: 1 if the level `isa` is compiled in and this CPU runs it
/// ([`Isa::is_available`]), 0 otherwise (also for an unknown value).
#[unsafe(no_mangle)]
pub extern "C" fn qkv_isa_available(isa: i32) -> i32 {
    isa_from_i32(isa).is_some_and(Isa::is_available) as i32
}

/// `qkv_isa_name`: the static, NUL-terminated [`Isa::name`] of `isa`, or `"unknown"`.
/// Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn qkv_isa_name(isa: i32) -> *const c_char {
    let name = match isa_from_i32(isa) {
        Some(Isa::Scalar) => c"scalar",
        Some(Isa::Avx2) => c"avx2",
        Some(Isa::Avx512) => c"avx512",
        Some(Isa::Neon) => c"neon",
        None => c"unknown",
    };
    name.as_ptr()
}

/// `qkv_status_str`: a static, NUL-terminated description of `status`, or
/// `"unknown status"`. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn qkv_status_str(status: QkvStatus) -> *const c_char {
    let s = match status {
        QKV_OK => c"ok",
        QKV_ERR_ZERO_DIM => c"q_heads, kv_heads, head_dim or v_dim is 0",
        QKV_ERR_HEADS_NOT_DIVISIBLE => c"q_heads is not a multiple of kv_heads",
        QKV_ERR_TOO_SHORT => c"a count, key range or ragged offset does not fit the shape",
        QKV_ERR_OVERFLOW => c"an extent overflows size_t or PTRDIFF_MAX bytes",
        QKV_ERR_OVERLAP => c"the strides of out make elements overlap",
        QKV_ERR_INVALID_SCALE => c"scale is NaN or infinite",
        QKV_ERR_UNSUPPORTED => c"the instruction set is not available on this CPU or build",
        QKV_ERR_NULL_POINTER => c"a required pointer is NULL",
        QKV_ERR_MISALIGNED => c"a tensor pointer is not aligned to its type",
        QKV_ERR_ALIASING => c"out or lse overlaps another buffer",
        QKV_ERR_STRUCT_SIZE => c"struct_size is not a descriptor size this library accepts",
        QKV_ERR_UNKNOWN_FLAGS => c"flags has an unknown bit",
        QKV_ERR_UNKNOWN_MASK => c"unknown mask kind",
        QKV_ERR_UNKNOWN_QUERY_POS => c"unknown query position",
        QKV_ERR_UNKNOWN_ISA => c"unknown instruction set",
        QKV_ERR_INTERNAL => c"internal error",
        QKV_ERR_WORKSPACE_TOO_SMALL => c"the workspace is smaller than qkv_workspace_min_size",
        QKV_ERR_BLOCK_SIZE => c"head_dim or v_dim is not a multiple of the q8_0 block (32)",
        QKV_ERR_TYPE => c"k_type or v_type is unknown or not in this build",
        QKV_ERR_TASK => c"the task index is past the last task of the plan",
        QKV_ERR_INVALID_SOFTCAP => c"softcap is neither 0 nor finite and positive",
        QKV_ERR_VARIANT => c"sinks, alibi or softcap set in a library built without them",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// `qkv_version`: [`QKV_VERSION`], `(MAJOR << 16) | (MINOR << 8) | PATCH` of the library
/// linked in, to compare with the header's `QKV_VERSION`.
#[unsafe(no_mangle)]
pub extern "C" fn qkv_version() -> u32 {
    QKV_VERSION
}

/// For a `no_std` static or shared library linked into firmware that is not itself Rust
/// (feature `panic-handler`): no path of this crate panics on any input, so this is never
/// reached; if it were, it stops the core with an undefined-instruction trap where there is
/// one, and otherwise spins.
#[cfg(all(feature = "panic-handler", not(feature = "std"), not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        #[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
        // SAFETY: `udf` only raises an undefined-instruction exception; no memory or
        // register the compiler relies on is touched.
        unsafe {
            core::arch::asm!("udf #0", options(nomem, nostack))
        };
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        // SAFETY: `ud2` only raises an invalid-opcode exception.
        unsafe {
            core::arch::asm!("ud2", options(nomem, nostack))
        };
        #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
        // SAFETY: `unimp` only raises an illegal-instruction exception.
        unsafe {
            core::arch::asm!("unimp", options(nomem, nostack))
        };
        core::hint::spin_loop();
    }
}
