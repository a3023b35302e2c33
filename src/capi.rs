//! The C ABI (feature `capi`): `extern "C"` functions over [`attention`](crate::attention),
//! [`reference::attention`](crate::reference::attention) and [`Isa`], declared for C and C++
//! in `include/qkv.h`. `docs/c-api.md` shows how to build the static library and link it.
//!
//! Everything here is plain data and integers: a call is described by a [`QkvDesc`], enums
//! are `int32_t` constants (an unknown value is an error, never undefined behaviour), and
//! every fallible function returns a [`QkvStatus`]. No function panics or unwinds into C on
//! any input; with the `std` feature a panic (there is none on a reachable path) would
//! still be caught and reported as [`QKV_ERR_INTERNAL`].
//!
//! # The pointer contract
//! Each tensor pointer must point to at least `len` readable (for `out` and `lse`,
//! writable) `float`s, 4-byte aligned, where `len` is the tensor's *count* field in the
//! descriptor when that is nonzero, and otherwise its *extent*:
//!
//! | tensor | extent                                                                   |
//! |--------|--------------------------------------------------------------------------|
//! | `q`    | `(q_heads-1)·q.head_stride + (q_len-1)·q.row_stride + head_dim`          |
//! | `k`    | `(kv_heads-1)·k.head_stride + (kv_len-1)·k.row_stride + head_dim`        |
//! | `v`    | `(kv_heads-1)·v.head_stride + (kv_len-1)·v.row_stride + v_dim`           |
//! | `out`  | `(q_heads-1)·out.head_stride + (q_len-1)·out.row_stride + v_dim`         |
//! | `bias` | `(q_heads-1)·bias_layout.head_stride + (q_len-1)·bias_layout.row_stride + kv_len` |
//! | `lse`  | `q_heads·q_len`                                                          |
//!
//! An extent is 0 when any of its three factors (heads, rows, last dimension) is 0; a
//! pointer whose `len` is 0 is never read and may be NULL. The extents are computed with
//! checked arithmetic; one that overflows `size_t`, or a `len` over `PTRDIFF_MAX` bytes, is
//! [`QKV_ERR_OVERFLOW`]. `out` and `lse` must not overlap each other or any input
//! ([`QKV_ERR_ALIASING`]); inputs may overlap each other. The descriptor itself needs no
//! alignment and must hold `struct_size` readable bytes.

use core::ffi::c_char;
use core::mem::size_of;
use core::ptr;

use crate::{Bias, Error, Isa, Layout, Mask, Params, QueryPos, Shape};

/// A status code: [`QKV_OK`] or one of the `QKV_ERR_*` constants.
pub type QkvStatus = i32;

/// Success.
pub const QKV_OK: QkvStatus = 0;
/// [`Error::ZeroDim`]: `q_heads`, `kv_heads`, `head_dim` or `v_dim` is 0.
pub const QKV_ERR_ZERO_DIM: QkvStatus = 1;
/// [`Error::HeadsNotDivisible`]: `q_heads` is not a multiple of `kv_heads`.
pub const QKV_ERR_HEADS_NOT_DIVISIBLE: QkvStatus = 2;
/// [`Error::TooShort`]: a nonzero count field is smaller than the tensor's extent.
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
/// A tensor pointer whose length is not 0 is not aligned to `float` (4 bytes).
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

/// Every status code, in order of value (`QKV_OK` is 0, each next one is one more).
pub const ALL_STATUSES: [QkvStatus; 17] = [
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
];

/// [`QkvDesc::mask`]: every key is visible to every query ([`Mask::NONE`]); the window and
/// query position fields are ignored.
pub const QKV_MASK_NONE: i32 = 0;
/// [`QkvDesc::mask`]: causal ([`Mask::causal`]), aligned as `query_pos` says; the window
/// fields are ignored.
pub const QKV_MASK_CAUSAL: i32 = 1;
/// [`QkvDesc::mask`]: the band `pos - window_left ..= pos + window_right`, aligned as
/// `query_pos` says; a side equal to [`QKV_UNBOUNDED`] has no limit.
pub const QKV_MASK_BAND: i32 = 2;

/// [`QkvDesc::query_pos`]: [`QueryPos::BottomRight`], the queries are the last `q_len`
/// positions (the default, and the KV-cache convention).
pub const QKV_QUERY_POS_BOTTOM_RIGHT: i32 = 0;
/// [`QkvDesc::query_pos`]: [`QueryPos::TopLeft`], query `i` sits at position `i`.
pub const QKV_QUERY_POS_TOP_LEFT: i32 = 1;
/// [`QkvDesc::query_pos`]: [`QueryPos::Offset`], query `i` sits at `query_offset + i`.
pub const QKV_QUERY_POS_OFFSET: i32 = 2;

/// [`QkvDesc::flags`] bit: use [`QkvDesc::scale`]; without it the scale is `1/√head_dim`.
pub const QKV_FLAG_SCALE: u32 = 1;
/// Every [`QkvDesc::flags`] bit this version knows.
pub const QKV_KNOWN_FLAGS: u32 = QKV_FLAG_SCALE;

/// `window_left` / `window_right` value meaning "no limit on this side" (`SIZE_MAX`).
pub const QKV_UNBOUNDED: usize = usize::MAX;

/// [`Isa::Scalar`] as an `int32_t`.
pub const QKV_ISA_SCALAR: i32 = Isa::Scalar as i32;
/// [`Isa::Avx2`] as an `int32_t`.
pub const QKV_ISA_AVX2: i32 = Isa::Avx2 as i32;
/// [`Isa::Avx512`] as an `int32_t`.
pub const QKV_ISA_AVX512: i32 = Isa::Avx512 as i32;
/// [`Isa::Neon`] as an `int32_t`.
pub const QKV_ISA_NEON: i32 = Isa::Neon as i32;

/// The size of the first version of [`QkvDesc`]: 26 `size_t`-sized fields, then 24 bytes
/// (`int64_t`, `float`, `uint32_t`, two `int32_t`), with no padding on any target.
pub const QKV_DESC_SIZE_V1: usize = 26 * size_of::<usize>() + 24;
/// The largest `struct_size` accepted; a larger one is taken for garbage and nothing past
/// `struct_size` is read.
pub const QKV_DESC_MAX_SIZE: usize = 4096;

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

/// `qkv_layout`: where a tensor's elements live, in elements; see [`Layout`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QkvLayout {
    /// Elements between the starts of consecutive heads.
    pub head_stride: usize,
    /// Elements between the starts of consecutive rows of one head.
    pub row_stride: usize,
}

impl QkvLayout {
    fn to_layout(self) -> Layout {
        Layout {
            head_stride: self.head_stride,
            row_stride: self.row_stride,
        }
    }
}

impl From<Layout> for QkvLayout {
    fn from(l: Layout) -> QkvLayout {
        QkvLayout {
            head_stride: l.head_stride,
            row_stride: l.row_stride,
        }
    }
}

/// `qkv_desc`: everything an attention call needs besides the tensor pointers; the C form
/// of [`Params`].
///
/// All-zero bytes (with `struct_size` set) mean: default scale, no mask, bottom-right
/// alignment, no bias, lengths derived from the shape. Fields added by later versions will
/// be appended, and their zero value will mean what the library did before they existed, so
/// a caller built against an older header keeps working ([`QKV_ERR_STRUCT_SIZE`] documents
/// what sizes are accepted).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QkvDesc {
    /// `sizeof(qkv_desc)` as the caller compiled it.
    pub struct_size: usize,
    /// [`Shape::q_heads`].
    pub q_heads: usize,
    /// [`Shape::kv_heads`].
    pub kv_heads: usize,
    /// [`Shape::q_len`].
    pub q_len: usize,
    /// [`Shape::kv_len`].
    pub kv_len: usize,
    /// [`Shape::head_dim`].
    pub head_dim: usize,
    /// [`Shape::v_dim`].
    pub v_dim: usize,
    /// Layout of `q`.
    pub q: QkvLayout,
    /// Layout of `k`.
    pub k: QkvLayout,
    /// Layout of `v`.
    pub v: QkvLayout,
    /// Layout of `out`.
    pub out: QkvLayout,
    /// [`QKV_MASK_BAND`] only: keys at most this many positions before the query, or
    /// [`QKV_UNBOUNDED`].
    pub window_left: usize,
    /// [`QKV_MASK_BAND`] only: keys at most this many positions after the query, or
    /// [`QKV_UNBOUNDED`]; 0 is causal.
    pub window_right: usize,
    /// The additive bias `[q_heads][q_len][kv_len]` laid out as `bias_layout` says (see
    /// [`Bias`]), or NULL for none.
    pub bias: *const f32,
    /// Strides of `bias`; a head stride of 0 shares one matrix across heads.
    pub bias_layout: QkvLayout,
    /// Floats `q` points to, or 0 to use its extent.
    pub q_count: usize,
    /// Floats `k` points to, or 0 to use its extent.
    pub k_count: usize,
    /// Floats `v` points to, or 0 to use its extent.
    pub v_count: usize,
    /// Floats `out` points to, or 0 to use its extent.
    pub out_count: usize,
    /// Floats `lse` points to, or 0 to use `q_heads·q_len`; ignored when `lse` is NULL.
    pub lse_count: usize,
    /// Floats `bias` points to, or 0 to use its extent; ignored when `bias` is NULL.
    pub bias_count: usize,
    /// [`QKV_QUERY_POS_OFFSET`] only: the position of query row 0; may be negative.
    pub query_offset: i64,
    /// The factor applied to every `q·k`, used when `flags` has [`QKV_FLAG_SCALE`].
    pub scale: f32,
    /// `QKV_FLAG_*` bits; an unknown bit is [`QKV_ERR_UNKNOWN_FLAGS`].
    pub flags: u32,
    /// `QKV_MASK_*`: which keys each query sees.
    pub mask: i32,
    /// `QKV_QUERY_POS_*`: where the query rows sit (for causal and band masks).
    pub query_pos: i32,
}

const _: () = assert!(size_of::<QkvDesc>() == QKV_DESC_SIZE_V1);
const _: () = assert!(size_of::<QkvDesc>() <= QKV_DESC_MAX_SIZE);

impl Default for QkvDesc {
    /// All zero, `struct_size = size_of::<QkvDesc>()`, `bias` NULL.
    fn default() -> QkvDesc {
        QkvDesc::planar(0, 0, 0, 0, 0, 0)
    }
}

impl QkvDesc {
    /// The descriptor of [`Params::new`]: planar layouts, default scale, no mask, no bias,
    /// lengths derived from the shape. The header's `qkv_desc_planar` does the same.
    pub const fn planar(
        q_heads: usize,
        kv_heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
        v_dim: usize,
    ) -> QkvDesc {
        const fn p(rows: usize, dim: usize) -> QkvLayout {
            QkvLayout {
                head_stride: rows.wrapping_mul(dim),
                row_stride: dim,
            }
        }
        QkvDesc {
            struct_size: size_of::<QkvDesc>(),
            q_heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim,
            v_dim,
            q: p(q_len, head_dim),
            k: p(kv_len, head_dim),
            v: p(kv_len, v_dim),
            out: p(q_len, v_dim),
            window_left: 0,
            window_right: 0,
            bias: ptr::null(),
            bias_layout: QkvLayout {
                head_stride: 0,
                row_stride: 0,
            },
            q_count: 0,
            k_count: 0,
            v_count: 0,
            out_count: 0,
            lse_count: 0,
            bias_count: 0,
            query_offset: 0,
            scale: 0.0,
            flags: 0,
            mask: QKV_MASK_NONE,
            query_pos: QKV_QUERY_POS_BOTTOM_RIGHT,
        }
    }

    fn shape(&self) -> Shape {
        Shape {
            q_heads: self.q_heads,
            kv_heads: self.kv_heads,
            q_len: self.q_len,
            kv_len: self.kv_len,
            head_dim: self.head_dim,
            v_dim: self.v_dim,
        }
    }

    /// The [`Mask`] the `mask`, `query_pos`, `query_offset` and window fields describe.
    fn decode_mask(&self) -> Result<Mask, QkvStatus> {
        let query_pos = match self.query_pos {
            QKV_QUERY_POS_BOTTOM_RIGHT => QueryPos::BottomRight,
            QKV_QUERY_POS_TOP_LEFT => QueryPos::TopLeft,
            QKV_QUERY_POS_OFFSET => QueryPos::Offset(self.query_offset),
            _ => return Err(QKV_ERR_UNKNOWN_QUERY_POS),
        };
        let side = |w: usize| (w != QKV_UNBOUNDED).then_some(w);
        match self.mask {
            QKV_MASK_NONE => Ok(Mask::NONE),
            QKV_MASK_CAUSAL => Ok(Mask::causal().aligned(query_pos)),
            QKV_MASK_BAND => Ok(Mask {
                left: side(self.window_left),
                right: side(self.window_right),
                query_pos,
            }),
            _ => Err(QKV_ERR_UNKNOWN_MASK),
        }
    }
}

/// The status code of an [`Error`].
pub const fn error_status(e: Error) -> QkvStatus {
    match e {
        Error::ZeroDim(_) => QKV_ERR_ZERO_DIM,
        Error::HeadsNotDivisible { .. } => QKV_ERR_HEADS_NOT_DIVISIBLE,
        Error::TooShort { .. } => QKV_ERR_TOO_SHORT,
        Error::Overflow(_) => QKV_ERR_OVERFLOW,
        Error::Overlap(_) => QKV_ERR_OVERLAP,
        Error::InvalidScale => QKV_ERR_INVALID_SCALE,
        Error::Unsupported(_) => QKV_ERR_UNSUPPORTED,
        // Errors of entry points the C ABI does not expose (split-KV and streaming ranges).
        #[allow(unreachable_patterns)]
        _ => QKV_ERR_INTERNAL,
    }
}

/// Copies the caller's descriptor, whatever version it is, into this version's layout.
///
/// # Safety
/// `desc` is NULL or points to at least `struct_size` readable bytes (any alignment),
/// `struct_size` being its first `size_t`.
pub(crate) unsafe fn read_desc(desc: *const QkvDesc) -> Result<QkvDesc, QkvStatus> {
    if desc.is_null() {
        return Err(QKV_ERR_NULL_POINTER);
    }
    // SAFETY: every version begins with `struct_size`, and the caller guarantees `desc`
    // points to at least that many bytes; `read_unaligned` needs no alignment.
    let size = unsafe { ptr::read_unaligned(desc.cast::<usize>()) };
    if !(QKV_DESC_SIZE_V1..=QKV_DESC_MAX_SIZE).contains(&size) {
        return Err(QKV_ERR_STRUCT_SIZE);
    }
    let known = size_of::<QkvDesc>();
    // Fields an older caller does not have keep their zero defaults.
    let mut d = QkvDesc::default();
    // SAFETY: `desc` holds `size` readable bytes and `d` is `known` bytes, so both ranges are
    // valid for `min(size, known)` bytes; every field is an integer, float or raw pointer,
    // for which any initialized bytes are a valid value; they do not overlap (`d` is local).
    unsafe {
        ptr::copy_nonoverlapping(
            desc.cast::<u8>(),
            (&raw mut d).cast::<u8>(),
            size.min(known),
        )
    };
    for i in known..size {
        // SAFETY: `i < size`, and the caller guarantees `size` readable bytes.
        if unsafe { desc.cast::<u8>().add(i).read() } != 0 {
            return Err(QKV_ERR_STRUCT_SIZE);
        }
    }
    Ok(d)
}

/// `(heads-1)·head_stride + (rows-1)·row_stride + cols`, 0 if any count is 0, `None` on
/// overflow: the same extent [`Params::validate`] checks slices against.
pub(crate) fn extent(layout: QkvLayout, heads: usize, rows: usize, cols: usize) -> Option<usize> {
    if heads == 0 || rows == 0 || cols == 0 {
        return Some(0);
    }
    (heads - 1)
        .checked_mul(layout.head_stride)?
        .checked_add((rows - 1).checked_mul(layout.row_stride)?)?
        .checked_add(cols)
}

/// The most `f32`s one buffer can hold: `PTRDIFF_MAX` bytes.
pub(crate) const MAX_LEN: usize = isize::MAX as usize / size_of::<f32>();

/// One tensor argument: its pointer and the number of floats it is taken to hold.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    pub(crate) ptr: *const f32,
    pub(crate) len: usize,
}

impl Buf {
    /// `len` is `count` if nonzero, else the extent; checks it, then the pointer.
    pub(crate) fn new(
        ptr: *const f32,
        count: usize,
        extent: Option<usize>,
    ) -> Result<Buf, QkvStatus> {
        let len = match count {
            0 => extent.ok_or(QKV_ERR_OVERFLOW)?,
            n => n,
        };
        if len > MAX_LEN {
            return Err(QKV_ERR_OVERFLOW);
        }
        if len != 0 {
            if ptr.is_null() {
                return Err(QKV_ERR_NULL_POINTER);
            }
            if !ptr.is_aligned() {
                return Err(QKV_ERR_MISALIGNED);
            }
        }
        Ok(Buf { ptr, len })
    }

    /// Whether the two buffers share a byte.
    pub(crate) fn overlaps(self, other: Buf) -> bool {
        if self.len == 0 || other.len == 0 {
            return false;
        }
        // `len ≤ MAX_LEN`, so the byte counts do not overflow; a valid buffer does not wrap
        // around the address space, and saturating keeps an invalid one from looking disjoint.
        let (a, b) = (self.ptr as usize, other.ptr as usize);
        let a_end = a.saturating_add(self.len * size_of::<f32>());
        let b_end = b.saturating_add(other.len * size_of::<f32>());
        a < b_end && b < a_end
    }

    /// # Safety
    /// The pointer contract: `ptr` points to `len` initialized, readable floats that nothing
    /// writes during `'a` (checked non-NULL and aligned by [`Buf::new`]).
    pub(crate) unsafe fn slice<'a>(self) -> &'a [f32] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-NULL and aligned (checked in `new`), `len` floats readable and not
        // written while the slice lives (the caller's contract), `len·4 ≤ isize::MAX`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// # Safety
    /// The pointer contract: `ptr` points to `len` writable floats that nothing else reads or
    /// writes during `'a` (checked non-NULL, aligned and disjoint from the other buffers).
    pub(crate) unsafe fn slice_mut<'a>(self) -> &'a mut [f32] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: non-NULL and aligned (checked in `new`), writable and unaliased for `len`
        // floats (the caller's contract; the other buffers of the call were checked
        // disjoint), `len·4 ≤ isize::MAX`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.cast_mut(), self.len) }
    }
}

/// Runs `f`, turning a panic into [`QKV_ERR_INTERNAL`] where `std` can catch it.
pub(crate) fn guard(f: impl FnOnce() -> QkvStatus) -> QkvStatus {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)).unwrap_or(QKV_ERR_INTERNAL)
    }
    #[cfg(not(feature = "std"))]
    {
        f()
    }
}

/// Decodes the descriptor and pointers, checks the pointer contract, and calls `entry`: one
/// of [`attention`](crate::attention), [`Isa::attention`] or
/// [`reference::attention`](crate::reference::attention), each instantiated separately so
/// that firmware calling one links only that one.
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
unsafe fn run(
    entry: impl FnOnce(
        &Params,
        &[f32],
        &[f32],
        &[f32],
        &mut [f32],
        Option<&mut [f32]>,
    ) -> Result<(), Error>,
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the caller's contract for `desc`.
    let d = match unsafe { read_desc(desc) } {
        Ok(d) => d,
        Err(s) => return s,
    };
    if d.flags & !QKV_KNOWN_FLAGS != 0 {
        return QKV_ERR_UNKNOWN_FLAGS;
    }
    let mask = match d.decode_mask() {
        Ok(m) => m,
        Err(s) => return s,
    };
    let bufs = (|| {
        let s = d.shape();
        let q = Buf::new(q, d.q_count, extent(d.q, s.q_heads, s.q_len, s.head_dim))?;
        let k = Buf::new(k, d.k_count, extent(d.k, s.kv_heads, s.kv_len, s.head_dim))?;
        let v = Buf::new(v, d.v_count, extent(d.v, s.kv_heads, s.kv_len, s.v_dim))?;
        let out = Buf::new(out, d.out_count, extent(d.out, s.q_heads, s.q_len, s.v_dim))?;
        let bias = match d.bias.is_null() {
            true => None,
            false => Some(Buf::new(
                d.bias,
                d.bias_count,
                extent(d.bias_layout, s.q_heads, s.q_len, s.kv_len),
            )?),
        };
        let lse = match lse.is_null() {
            true => None,
            false => Some(Buf::new(lse, d.lse_count, s.q_heads.checked_mul(s.q_len))?),
        };
        let inputs = [Some(q), Some(k), Some(v), bias];
        let clash = |w: Buf| inputs.iter().flatten().any(|&r| w.overlaps(r));
        if clash(out) || lse.is_some_and(|l| clash(l) || l.overlaps(out)) {
            return Err(QKV_ERR_ALIASING);
        }
        Ok((q, k, v, out, bias, lse))
    })();
    let (q, k, v, out, bias, lse) = match bufs {
        Ok(b) => b,
        Err(s) => return s,
    };
    // The caller's pointer contract holds for the lengths `Buf::new` derived, and `out` and
    // `lse` were checked disjoint from every other buffer:
    // SAFETY: that contract.
    let (q, k, v) = unsafe { (q.slice(), k.slice(), v.slice()) };
    // SAFETY: as above.
    let bias = bias.map(|b| unsafe { b.slice() });
    // SAFETY: as above.
    let out = unsafe { out.slice_mut() };
    // SAFETY: as above.
    let lse = lse.map(|l| unsafe { l.slice_mut() });
    let mut params = Params::new(d.shape())
        .with_layouts(
            d.q.to_layout(),
            d.k.to_layout(),
            d.v.to_layout(),
            d.out.to_layout(),
        )
        .with_mask(mask);
    if d.flags & QKV_FLAG_SCALE != 0 {
        params = params.with_scale(d.scale);
    }
    if let Some(data) = bias {
        params = params.with_bias(Bias {
            data,
            head_stride: d.bias_layout.head_stride,
            row_stride: d.bias_layout.row_stride,
        });
    }
    match entry(&params, q, k, v, out, lse) {
        Ok(()) => QKV_OK,
        Err(e) => error_status(e),
    }
}

/// `qkv_attention_f32`: attention with the best [`Isa`] this CPU supports
/// ([`attention`](crate::attention)).
///
/// `lse` may be NULL; otherwise it receives `[q_heads][q_len]` log-sum-exps. Returns
/// [`QKV_OK`] or an error status, in which case nothing was written.
///
/// # Safety
/// `desc` is NULL or points to a descriptor of at least `struct_size` readable bytes. Each
/// tensor pointer follows the [pointer contract](self#the-pointer-contract): it points to as
/// many floats as its count field or extent says (or that length is 0), those of `q`, `k`,
/// `v` and `bias` are not written by anyone during the call, and those of `out` and `lse`
/// are writable and not accessed by anyone else during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_attention_f32(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { run(crate::attention, desc, q, k, v, out, lse) })
}

/// `qkv_attention_f32_isa`: [`qkv_attention_f32`] at the level `isa` (a `QKV_ISA_*` value),
/// as [`Isa::attention`] does.
///
/// Returns [`QKV_ERR_UNKNOWN_ISA`] for a value that is no `QKV_ISA_*` and
/// [`QKV_ERR_UNSUPPORTED`] for a level this CPU or build lacks (after every other check).
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_attention_f32_isa(
    isa: i32,
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    let Some(isa) = isa_from_i32(isa) else {
        return QKV_ERR_UNKNOWN_ISA;
    };
    // SAFETY: the same contract, passed on.
    guard(|| unsafe {
        run(
            |p, q, k, v, out, lse| isa.attention(p, q, k, v, out, lse),
            desc,
            q,
            k,
            v,
            out,
            lse,
        )
    })
}

/// `qkv_reference_f32`: the `f64` reference ([`reference::attention`](crate::reference::attention)),
/// with the arguments, checks and results of [`qkv_attention_f32`].
///
/// # Safety
/// The contract of [`qkv_attention_f32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qkv_reference_f32(
    desc: *const QkvDesc,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    lse: *mut f32,
) -> QkvStatus {
    // SAFETY: the same contract, passed on.
    guard(|| unsafe { run(crate::reference::attention, desc, q, k, v, out, lse) })
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
        QKV_ERR_TOO_SHORT => c"a count is smaller than the extent the shape and strides reach",
        QKV_ERR_OVERFLOW => c"an extent overflows size_t or PTRDIFF_MAX bytes",
        QKV_ERR_OVERLAP => c"the strides of out make elements overlap",
        QKV_ERR_INVALID_SCALE => c"scale is NaN or infinite",
        QKV_ERR_UNSUPPORTED => c"the instruction set is not available on this CPU or build",
        QKV_ERR_NULL_POINTER => c"a required pointer is NULL",
        QKV_ERR_MISALIGNED => c"a tensor pointer is not aligned to float",
        QKV_ERR_ALIASING => c"out or lse overlaps another buffer",
        QKV_ERR_STRUCT_SIZE => c"struct_size is not a descriptor size this library accepts",
        QKV_ERR_UNKNOWN_FLAGS => c"flags has an unknown bit",
        QKV_ERR_UNKNOWN_MASK => c"unknown mask kind",
        QKV_ERR_UNKNOWN_QUERY_POS => c"unknown query position",
        QKV_ERR_UNKNOWN_ISA => c"unknown instruction set",
        QKV_ERR_INTERNAL => c"internal error",
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;
    extern crate std;
    use std::{vec, vec::Vec};

    #[test]
    fn isa_names_match() {
        for isa in Isa::ALL {
            // SAFETY: `qkv_isa_name` returns a static C string.
            let name = unsafe { CStr::from_ptr(qkv_isa_name(isa as i32)) };
            assert_eq!(name.to_str().unwrap(), isa.name());
        }
    }

    #[test]
    fn statuses_are_dense_and_described() {
        for (i, &s) in ALL_STATUSES.iter().enumerate() {
            assert_eq!(s, i as i32);
            // SAFETY: `qkv_status_str` returns a static C string.
            let text = unsafe { CStr::from_ptr(qkv_status_str(s)) };
            assert_ne!(text.to_bytes(), b"unknown status");
        }
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The planar 2×3×5×4 shape with an explicit scale (the default's `sqrtf` is inline
    /// assembly, which Miri cannot run).
    fn desc() -> QkvDesc {
        QkvDesc {
            flags: QKV_FLAG_SCALE,
            scale: 0.5,
            ..QkvDesc::planar(2, 2, 3, 5, 4, 4)
        }
    }

    /// Calls `qkv_attention_f32` on `desc` with fresh buffers for the planar 2×3×5×4 shape.
    fn call(desc: *const QkvDesc) -> (QkvStatus, Vec<f32>) {
        let (q, k, v) = (data(24, 1), data(40, 2), data(40, 3));
        let mut out = vec![7.0; 24];
        // SAFETY: the buffers hold the extents of the planar shape every caller here uses.
        let s = unsafe {
            qkv_attention_f32(
                desc,
                q.as_ptr(),
                k.as_ptr(),
                v.as_ptr(),
                out.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        (s, out)
    }

    #[test]
    fn same_result_as_rust() {
        let d = QkvDesc {
            mask: QKV_MASK_CAUSAL,
            ..desc()
        };
        let (s, out) = call(&d);
        assert_eq!(s, QKV_OK);
        let p = Params::new(Shape::new(2, 3, 5, 4))
            .with_mask(Mask::causal())
            .with_scale(0.5);
        let mut want = vec![0.0; 24];
        crate::attention(
            &p,
            &data(24, 1),
            &data(40, 2),
            &data(40, 3),
            &mut want,
            None,
        )
        .unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn struct_sizes() {
        #[repr(C)]
        struct Newer {
            d: QkvDesc,
            extra: [u8; 8],
        }
        let mut n = Newer {
            d: desc(),
            extra: [0; 8],
        };
        n.d.struct_size = size_of::<Newer>();
        // A pointer to the whole struct: the library reads past `d`.
        assert_eq!(call(ptr::from_ref(&n).cast()).0, QKV_OK);
        n.extra[7] = 1;
        assert_eq!(call(ptr::from_ref(&n).cast()).0, QKV_ERR_STRUCT_SIZE);
        for size in [0, QKV_DESC_SIZE_V1 - 1, QKV_DESC_MAX_SIZE + 1, usize::MAX] {
            let d = QkvDesc {
                struct_size: size,
                ..desc()
            };
            let (s, out) = call(&d);
            assert_eq!(s, QKV_ERR_STRUCT_SIZE);
            assert!(out.iter().all(|&x| x == 7.0));
        }
        assert_eq!(call(ptr::null()).0, QKV_ERR_NULL_POINTER);
    }

    #[test]
    fn in_place_is_refused() {
        let d = desc();
        let mut buf = data(40, 4);
        let p = buf.as_mut_ptr();
        // SAFETY: `buf` holds the extents of every tensor; the call refuses before touching it.
        let s = unsafe { qkv_attention_f32(&d, p, p, p, p, ptr::null_mut()) };
        assert_eq!(s, QKV_ERR_ALIASING);
    }

    #[test]
    fn version_matches_cargo() {
        let v = env!("CARGO_PKG_VERSION");
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
        let (a, b, c) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(qkv_version(), (a << 16) | (b << 8) | c);
    }
}
