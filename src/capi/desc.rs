//! The descriptor: `qkv_desc` and `qkv_layout` as Rust types and the values of their enum
//! and flag fields. `decode.rs` reads them into buffers and a [`Params`](crate::Params).

use core::mem::size_of;
use core::ptr;

use super::types::QKV_TYPE_F32;
use crate::Layout;
#[cfg(doc)]
use crate::{Bias, Mask, Pages, Params, QueryPos, Shape};

/// [`QkvDesc::mask`]: every key is visible to every query ([`Mask::NONE`]); the window
/// fields are ignored, and the query position only places the queries for ALiBi.
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

/// The size of the first version of [`QkvDesc`]: 26 `size_t`-sized fields, then 24 bytes
/// (`int64_t`, `float`, `uint32_t`, two `int32_t`), with no padding on any target. A
/// descriptor of this size has `f32` K and V.
pub const QKV_DESC_SIZE_V1: usize = 26 * size_of::<usize>() + 24;
/// The size of the second version: [`QKV_DESC_SIZE_V1`] and the two `uint32_t`
/// [`QkvDesc::k_type`] and [`QkvDesc::v_type`], with no padding on any target (the `int64_t`
/// sits at a multiple of 8 in both, and 8 more bytes keep the size a multiple of 8).
pub const QKV_DESC_SIZE_V2: usize = QKV_DESC_SIZE_V1 + 8;
/// The size of the third version: [`QKV_DESC_SIZE_V2`] and the softmax variants,
/// [`QkvDesc::sinks`], [`QkvDesc::sinks_count`], [`QkvDesc::alibi`],
/// [`QkvDesc::alibi_count`] (`size_t`-sized) and [`QkvDesc::softcap`] with a reserved
/// `uint32_t` (8 bytes), with no padding on any target.
pub const QKV_DESC_SIZE_V3: usize = QKV_DESC_SIZE_V2 + 4 * size_of::<usize>() + 8;
/// The size of the fourth version, this one: [`QKV_DESC_SIZE_V3`] and paged K/V,
/// [`QkvDesc::block_table`], [`QkvDesc::block_table_count`], [`QkvDesc::page_len`],
/// [`QkvDesc::k_page_stride`], [`QkvDesc::v_page_stride`] and [`QkvDesc::page_offset`]
/// (`size_t`-sized), with no padding on any target.
pub const QKV_DESC_SIZE_V4: usize = QKV_DESC_SIZE_V3 + 6 * size_of::<usize>();
/// The largest `struct_size` accepted; a larger one is taken for garbage and nothing past
/// `struct_size` is read.
pub const QKV_DESC_MAX_SIZE: usize = 4096;

/// `qkv_layout`: where a tensor's elements live, in elements of its type (floats, and for K
/// and V the elements of `k_type` and `v_type`: `q8_0` blocks for [`QKV_TYPE_Q8_0`](super::QKV_TYPE_Q8_0)); see
/// [`Layout`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QkvLayout {
    /// Elements between the starts of consecutive heads.
    pub head_stride: usize,
    /// Elements between the starts of consecutive rows of one head.
    pub row_stride: usize,
}

impl From<Layout> for QkvLayout {
    fn from(l: Layout) -> QkvLayout {
        QkvLayout {
            head_stride: l.head_stride,
            row_stride: l.row_stride,
        }
    }
}

impl From<QkvLayout> for Layout {
    fn from(l: QkvLayout) -> Layout {
        Layout {
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
/// a caller built against an older header keeps working
/// ([`QKV_ERR_STRUCT_SIZE`](super::QKV_ERR_STRUCT_SIZE) documents what sizes are accepted).
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
    /// Elements of `k_type` that `k` points to, or 0 to use its extent.
    pub k_count: usize,
    /// Elements of `v_type` that `v` points to, or 0 to use its extent.
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
    /// `QKV_FLAG_*` bits; an unknown bit is
    /// [`QKV_ERR_UNKNOWN_FLAGS`](super::QKV_ERR_UNKNOWN_FLAGS).
    pub flags: u32,
    /// `QKV_MASK_*`: which keys each query sees.
    pub mask: i32,
    /// `QKV_QUERY_POS_*`: where the query rows sit (for causal and band masks, and ALiBi).
    pub query_pos: i32,
    /// `QKV_TYPE_*`: how `k` is stored ([`QKV_TYPE_F32`], the zero value, for a descriptor of
    /// [`QKV_DESC_SIZE_V1`] bytes); another value, or a type this build leaves out, is
    /// [`QKV_ERR_TYPE`](super::QKV_ERR_TYPE). Since version 2.
    pub k_type: u32,
    /// `QKV_TYPE_*`: how `v` is stored, as [`QkvDesc::k_type`]. Since version 2.
    pub v_type: u32,
    /// One sink logit per query head ([`Params::sinks`]), or NULL for none. Since version 3.
    pub sinks: *const f32,
    /// Floats `sinks` points to, or 0 for `q_heads`; ignored when `sinks` is NULL.
    pub sinks_count: usize,
    /// One ALiBi slope per query head ([`Params::alibi`]), or NULL for none. Since version 3.
    pub alibi: *const f32,
    /// Floats `alibi` points to, or 0 for `q_heads`; ignored when `alibi` is NULL.
    pub alibi_count: usize,
    /// The softcap `cap` of the scaled scores ([`Params::softcap`]), or 0 for none; anything
    /// else not finite and positive is
    /// [`QKV_ERR_INVALID_SOFTCAP`](super::QKV_ERR_INVALID_SOFTCAP). Since version 3.
    pub softcap: f32,
    /// Zero. (A later version may give it a meaning, its zero keeping today's.)
    pub reserved: u32,
    /// The block table of paged K/V ([`Pages::table`]): `k` and `v` are then pools of pages
    /// of `page_len` keys, and `desc.k` and `desc.v` lay out one page; NULL: `k` and `v`
    /// hold the keys in order. Since version 4.
    pub block_table: *const u32,
    /// Entries `block_table` points to, or 0 for `(page_offset + kv_len) / page_len` rounded
    /// up; ignored when `block_table` is NULL.
    pub block_table_count: usize,
    /// Keys per page ([`Pages::page_len`]); 0 with a table is
    /// [`QKV_ERR_ZERO_DIM`](super::QKV_ERR_ZERO_DIM).
    pub page_len: usize,
    /// Elements of `k_type` from one page of `k` to the next ([`Pages::k_page_stride`]).
    pub k_page_stride: usize,
    /// Elements of `v_type` from one page of `v` to the next ([`Pages::v_page_stride`]).
    pub v_page_stride: usize,
    /// The row of key 0 in the table's first page ([`Pages::offset`]); usually 0.
    pub page_offset: usize,
}

const _: () = assert!(size_of::<QkvDesc>() == QKV_DESC_SIZE_V4);
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
        q_heads: usize, kv_heads: usize, q_len: usize, kv_len: usize, head_dim: usize, v_dim: usize,
    ) -> QkvDesc {
        // Wrapping, as the header's `size_t` arithmetic does: a product that overflows
        // gives strides that validation then refuses.
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
            k_type: QKV_TYPE_F32,
            v_type: QKV_TYPE_F32,
            sinks: ptr::null(),
            sinks_count: 0,
            alibi: ptr::null(),
            alibi_count: 0,
            softcap: 0.0,
            reserved: 0,
            block_table: ptr::null(),
            block_table_count: 0,
            page_len: 0,
            k_page_stride: 0,
            v_page_stride: 0,
            page_offset: 0,
        }
    }
}
