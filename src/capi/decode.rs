//! [`Desc`], the one decoder every C entry point reads a descriptor with: struct size, flags,
//! mask and query position, K/V types, shape, layouts, bias, sinks, ALiBi slopes, softcap and
//! counts, to buffers and a [`Params`].

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use super::buf::{Buf, Inputs};
use super::desc::{
    QKV_DESC_MAX_SIZE, QKV_DESC_SIZE_V1, QKV_FLAG_SCALE, QKV_KNOWN_FLAGS, QKV_MASK_BAND,
    QKV_MASK_CAUSAL, QKV_MASK_NONE, QKV_QUERY_POS_BOTTOM_RIGHT, QKV_QUERY_POS_OFFSET,
    QKV_QUERY_POS_TOP_LEFT, QKV_UNBOUNDED, QkvDesc, QkvLayout,
};
use super::types;
use super::{
    QKV_ERR_NULL_POINTER, QKV_ERR_STRUCT_SIZE, QKV_ERR_UNKNOWN_FLAGS, QKV_ERR_UNKNOWN_MASK,
    QKV_ERR_UNKNOWN_QUERY_POS, QKV_ERR_VARIANT, QkvStatus,
};
use crate::pages::PAGED;
use crate::{Bias, KvKind, Layout, Mask, Pages, Params, QueryPos, Shape, Tensor};

/// The float inputs a descriptor points to besides `q`, `k` and `v`, as slices.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// The bias's data (its strides are `bias_layout`).
    pub(crate) bias: Option<&'a [f32]>,
    /// The sinks.
    pub(crate) sinks: Option<&'a [f32]>,
    /// The ALiBi slopes.
    pub(crate) alibi: Option<&'a [f32]>,
    /// The block table of paged K/V.
    pub(crate) table: Option<&'a [u32]>,
}

/// [`Extras`] as buffers, checked against the pointer contract.
#[derive(Clone, Copy)]
pub(crate) struct ExtraBufs {
    pub(crate) bias: Option<Buf>,
    pub(crate) sinks: Option<Buf>,
    pub(crate) alibi: Option<Buf>,
    pub(crate) table: Option<Buf>,
}

impl ExtraBufs {
    /// The four buffers, for the aliasing checks of the outputs.
    pub(crate) fn all(&self) -> [Option<Buf>; 4] {
        [self.bias, self.sinks, self.alibi, self.table]
    }

    /// As slices.
    ///
    /// # Safety
    /// The pointer contract for the lengths the buffers were given, and nothing writes them
    /// during `'a`.
    pub(crate) unsafe fn slices<'a>(self) -> Extras<'a> {
        // SAFETY: the caller's contract, for each buffer.
        unsafe {
            Extras {
                bias: self.bias.map(|b| b.slice()),
                sinks: self.sinks.map(|b| b.slice()),
                alibi: self.alibi.map(|b| b.slice()),
                table: self.table.map(|b| b.slice_u32()),
            }
        }
    }
}

/// A caller's descriptor, copied out of its memory with its `struct_size` checked: what
/// every entry point decodes its arguments with, so that each field means the same in all
/// of them.
#[derive(Clone, Copy)]
pub(crate) struct Desc(QkvDesc);

/// How many rows of K and V the `k` and `v` pointers hold.
#[derive(Clone, Copy)]
pub(crate) enum KeyRows {
    /// All `kv_len`, with `k_count` and `v_count` as the caller set them.
    All,
    /// Only the given number (a stream chunk); `k_count` and `v_count` are ignored.
    Chunk(usize),
}

/// The arguments of a call over the whole problem (one-shot or split-KV partial) up to its
/// `lse`: the descriptor, its mask, the inputs and `out`, decoded and checked in that order.
pub(crate) struct Problem {
    pub(crate) desc: Desc,
    pub(crate) mask: Mask,
    pub(crate) inputs: Inputs,
    pub(crate) out: Buf,
}

impl Problem {
    /// # Safety
    /// `desc` as [`Desc::read`] requires.
    #[inline(always)]
    pub(crate) unsafe fn decode(
        desc: *const QkvDesc, q: *const f32, k: *const c_void, v: *const c_void, out: *mut f32,
    ) -> Result<Problem, QkvStatus> {
        // SAFETY: the caller's contract.
        let desc = unsafe { Desc::read(desc) }?;
        let mask = desc.mask()?;
        let kinds = desc.kv_kinds()?;
        // SAFETY: the caller's contract, for the block table.
        let qkv = unsafe { desc.qkv(q, [k, v], kinds, KeyRows::All) }?;
        let out = desc.out(out)?;
        let extras = desc.extras()?;
        Ok(Problem {
            desc,
            mask,
            inputs: Inputs { qkv, extras },
            out,
        })
    }
}

impl Desc {
    /// Copies the caller's descriptor, whatever version it is, into this version's layout:
    /// [`QKV_ERR_NULL_POINTER`] for NULL, [`QKV_ERR_STRUCT_SIZE`] for a size out of range or
    /// a nonzero byte past this version's fields.
    ///
    /// # Safety
    /// `desc` is NULL or points to at least `struct_size` readable bytes (any alignment),
    /// `struct_size` being its first `size_t`.
    pub(crate) unsafe fn read(desc: *const QkvDesc) -> Result<Desc, QkvStatus> {
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
        // SAFETY: `desc` holds `size` readable bytes and `d` is `known` bytes, so both ranges
        // are valid for `min(size, known)` bytes; every field is an integer, float or raw
        // pointer, for which any initialized bytes are a valid value; they do not overlap
        // (`d` is local).
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
        Ok(Desc(d))
    }

    /// The shape fields.
    pub(crate) fn shape(&self) -> Shape {
        let d = &self.0;
        Shape {
            q_heads: d.q_heads,
            kv_heads: d.kv_heads,
            q_len: d.q_len,
            kv_len: d.kv_len,
            head_dim: d.head_dim,
            v_dim: d.v_dim,
        }
    }

    /// The [`Mask`] of the `mask`, `query_pos`, `query_offset` and window fields, after
    /// checking, in this order, `flags` ([`QKV_ERR_UNKNOWN_FLAGS`]), `query_pos`
    /// ([`QKV_ERR_UNKNOWN_QUERY_POS`]) and `mask` ([`QKV_ERR_UNKNOWN_MASK`]).
    pub(crate) fn mask(&self) -> Result<Mask, QkvStatus> {
        let d = &self.0;
        if d.flags & !QKV_KNOWN_FLAGS != 0 {
            return Err(QKV_ERR_UNKNOWN_FLAGS);
        }
        let query_pos = match d.query_pos {
            QKV_QUERY_POS_BOTTOM_RIGHT => QueryPos::BottomRight,
            QKV_QUERY_POS_TOP_LEFT => QueryPos::TopLeft,
            QKV_QUERY_POS_OFFSET => QueryPos::Offset(d.query_offset),
            _ => return Err(QKV_ERR_UNKNOWN_QUERY_POS),
        };
        let side = |w: usize| (w != QKV_UNBOUNDED).then_some(w);
        match d.mask {
            // No window; the position still places the queries for ALiBi.
            QKV_MASK_NONE => Ok(Mask {
                query_pos,
                ..Mask::NONE
            }),
            QKV_MASK_CAUSAL => Ok(Mask::causal().aligned(query_pos)),
            QKV_MASK_BAND => Ok(Mask {
                left: side(d.window_left),
                right: side(d.window_right),
                query_pos,
            }),
            _ => Err(QKV_ERR_UNKNOWN_MASK),
        }
    }

    /// The types of K and V ([`QkvDesc::k_type`], then [`QkvDesc::v_type`]):
    /// [`QKV_ERR_TYPE`](super::QKV_ERR_TYPE) for a value that is no `QKV_TYPE_*` or a type
    /// this build leaves out.
    pub(crate) fn kv_kinds(&self) -> Result<[KvKind; 2], QkvStatus> {
        Ok([types::kind(self.0.k_type)?, types::kind(self.0.v_type)?])
    }

    /// The [`Params`] the descriptor describes, with `mask` (from [`Desc::mask`]) and the
    /// `extras` it points to (from [`Desc::extras`] or [`Desc::sinks`]; those absent are
    /// none). The K and V layouts are taken as they are: in elements of their types.
    pub(crate) fn params<'a>(&self, mask: Mask, extras: Extras<'a>) -> Params<'a> {
        let d = &self.0;
        let mut params = Params::new(self.shape())
            .with_layouts(d.q.into(), d.k.into(), d.v.into(), d.out.into())
            .with_mask(mask);
        if d.flags & QKV_FLAG_SCALE != 0 {
            params = params.with_scale(d.scale);
        }
        // 0 (either sign) is none; anything else is the softcap, validated by the call.
        if d.softcap != 0.0 {
            params = params.with_softcap(d.softcap);
        }
        params.sinks = extras.sinks;
        params.alibi = extras.alibi;
        if PAGED {
            params.pages = extras.table.map(|table| self.pages(table));
        }
        if let Some(data) = extras.bias {
            params = params.with_bias(Bias {
                data,
                head_stride: d.bias_layout.head_stride,
                row_stride: d.bias_layout.row_stride,
            });
        }
        params
    }

    /// The buffer of `tensor` at `ptr`: its count field if nonzero, otherwise its extent
    /// (over `keys` rows for K and V, in elements of their types `kinds`), checked as
    /// [`Buf::of`] says. A K or V row of a
    /// block type spans `dim / values` blocks rounded up: a `dim` that is no multiple of the
    /// block is refused later, by the Rust call
    /// ([`QKV_ERR_BLOCK_SIZE`](super::QKV_ERR_BLOCK_SIZE)), and meanwhile no extent is
    /// shorter than the row.
    fn tensor(
        &self, tensor: Tensor, ptr: *const u8, [k_kind, v_kind]: [KvKind; 2], keys: KeyRows,
    ) -> Result<Buf, QkvStatus> {
        let (d, s) = (&self.0, self.shape());
        let (kv_count, kv_rows) = match keys {
            KeyRows::All => (None, s.kv_len),
            KeyRows::Chunk(n) => (Some(0), n),
        };
        let extent = |l: QkvLayout, heads, rows, cols| Layout::from(l).extent(heads, rows, cols);
        let mut kind = KvKind::F32;
        let (count, extent) = match tensor {
            Tensor::Q => (d.q_count, extent(d.q, s.q_heads, s.q_len, s.head_dim)),
            Tensor::K => {
                kind = k_kind;
                let cols = s.head_dim.div_ceil(k_kind.values());
                let count = kv_count.unwrap_or(d.k_count);
                (count, extent(d.k, s.kv_heads, kv_rows, cols))
            }
            Tensor::V => {
                kind = v_kind;
                let cols = s.v_dim.div_ceil(v_kind.values());
                let count = kv_count.unwrap_or(d.v_count);
                (count, extent(d.v, s.kv_heads, kv_rows, cols))
            }
            Tensor::Out => (d.out_count, extent(d.out, s.q_heads, s.q_len, s.v_dim)),
            Tensor::Lse => (d.lse_count, s.q_heads.checked_mul(s.q_len)),
            Tensor::Bias => (
                d.bias_count,
                extent(d.bias_layout, s.q_heads, s.q_len, s.kv_len),
            ),
            Tensor::Sinks => (d.sinks_count, Some(s.q_heads)),
            Tensor::Alibi => (d.alibi_count, Some(s.q_heads)),
            // The entries the keys reach (none for a `page_len` of 0, which the call refuses).
            Tensor::BlockTable => (
                d.block_table_count,
                match d.page_len {
                    0 => Some(0),
                    len => d.page_offset.checked_add(s.kv_len).map(|e| e.div_ceil(len)),
                },
            ),
        };
        Buf::of(kind, ptr, count, extent)
    }

    /// A `float` tensor (not K or V).
    fn floats(&self, tensor: Tensor, ptr: *const f32) -> Result<Buf, QkvStatus> {
        self.tensor(tensor, ptr.cast(), [KvKind::F32; 2], KeyRows::All)
    }

    /// The buffer of `out`, or of a partial output laid out like it.
    pub(crate) fn out(&self, ptr: *const f32) -> Result<Buf, QkvStatus> {
        self.floats(Tensor::Out, ptr)
    }

    /// The buffer of a required `lse`, `[q_heads][q_len]`.
    pub(crate) fn lse(&self, ptr: *const f32) -> Result<Buf, QkvStatus> {
        self.floats(Tensor::Lse, ptr)
    }

    /// The buffer of an optional `lse`: none when `ptr` is NULL.
    pub(crate) fn lse_opt(&self, ptr: *const f32) -> Result<Option<Buf>, QkvStatus> {
        (!ptr.is_null()).then(|| self.lse(ptr)).transpose()
    }

    /// The buffers of `q`, `k` and `v` (holding `keys` rows of K and V, stored as `kinds`
    /// from [`Desc::kv_kinds`]), checked in that order. With a block table, `k` and `v` are
    /// pools whose extents are what the table's pages reach (`keys` is then ignored): the
    /// table's buffer is checked after `q`, and read.
    ///
    /// # Safety
    /// The pointer contract for the block table, if any (it is read).
    pub(crate) unsafe fn qkv(
        &self, q: *const f32, [k, v]: [*const c_void; 2], kinds: [KvKind; 2], keys: KeyRows,
    ) -> Result<[Buf; 3], QkvStatus> {
        let q = self.floats(Tensor::Q, q)?;
        // (`table` is none in a build without paged K/V: `pool` is then left out.)
        if let Some(table) = self.table()? {
            // SAFETY: the caller's contract for the table's buffer.
            let pages = self.pages(unsafe { table.slice_u32() });
            return Ok([
                q,
                self.pool(Tensor::K, k.cast(), kinds[0], pages)?,
                self.pool(Tensor::V, v.cast(), kinds[1], pages)?,
            ]);
        }
        Ok([
            q,
            self.tensor(Tensor::K, k.cast(), kinds, keys)?,
            self.tensor(Tensor::V, v.cast(), kinds, keys)?,
        ])
    }

    /// The buffer of the pool of pages `k` or `v` (`tensor`) at `ptr`, of `kind`: its count
    /// field if nonzero, otherwise what the pages of all `kv_len` keys reach in it.
    fn pool(
        &self, tensor: Tensor, ptr: *const u8, kind: KvKind, pages: Pages,
    ) -> Result<Buf, QkvStatus> {
        let (d, s) = (&self.0, self.shape());
        let (count, l, dim, stride) = match tensor {
            Tensor::K => (d.k_count, d.k, s.head_dim, d.k_page_stride),
            _ => (d.v_count, d.v, s.v_dim, d.v_page_stride),
        };
        let cols = dim.div_ceil(kind.values());
        let reach = pages.reach(s.kv_heads, s.kv_len, l.into(), cols, stride);
        Buf::of(kind, ptr, count, reach)
    }

    /// The buffer of a float tensor at `ptr`, or none when `ptr` is NULL.
    fn optional(&self, tensor: Tensor, ptr: *const f32) -> Result<Option<Buf>, QkvStatus> {
        (!ptr.is_null())
            .then(|| self.floats(tensor, ptr))
            .transpose()
    }

    /// The buffer of the sinks, or none when the descriptor's `sinks` is NULL.
    pub(crate) fn sinks(&self) -> Result<Option<Buf>, QkvStatus> {
        self.optional(Tensor::Sinks, self.0.sinks)
    }

    /// The buffers of the bias, the sinks, the ALiBi slopes and the block table, in that
    /// order, each none where its pointer is NULL.
    pub(crate) fn extras(&self) -> Result<ExtraBufs, QkvStatus> {
        Ok(ExtraBufs {
            bias: self.optional(Tensor::Bias, self.0.bias)?,
            sinks: self.sinks()?,
            alibi: self.optional(Tensor::Alibi, self.0.alibi)?,
            table: self.table()?,
        })
    }

    /// The buffer of the block table (`uint32_t`s: checked as the 4-byte, 4-aligned
    /// `float`), or none when the descriptor's `block_table` is NULL;
    /// [`QKV_ERR_VARIANT`] for a table in a build without paged K/V (whose decoding is
    /// then left out).
    fn table(&self) -> Result<Option<Buf>, QkvStatus> {
        match (PAGED, self.0.block_table.is_null()) {
            (_, true) => Ok(None),
            (false, false) => Err(QKV_ERR_VARIANT),
            (true, false) => self.optional(Tensor::BlockTable, self.0.block_table.cast()),
        }
    }

    /// The [`Pages`] of the descriptor's page fields over `table`.
    fn pages<'a>(&self, table: &'a [u32]) -> Pages<'a> {
        let d = &self.0;
        Pages {
            table,
            page_len: d.page_len,
            k_page_stride: d.k_page_stride,
            v_page_stride: d.v_page_stride,
            offset: d.page_offset,
        }
    }
}
