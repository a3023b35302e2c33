//! The C-ABI check: `qkv_attention_f32`, `qkv_attention_f32_isa` and `qkv_reference_f32`
//! called the way C would, with arbitrary descriptors (any `struct_size`, unaligned, with
//! unknown flags, mask, query position, K/V type or ISA values, huge sizes and strides,
//! counts or extents), K and V stored as `f32`, `f16`, `bf16` or `q8_0` blocks, NULL,
//! misaligned and aliasing pointers; plus the small query functions.
//!
//! The K/V types are drawn last, after every other byte of the case, so that inputs recorded
//! before they existed still decode to the same case (with types from the bytes after it,
//! or from the generator once the input runs out).
//!
//! Every buffer handed over is at least as long as the length the documented pointer
//! contract derives (count if nonzero, else extent), so the library may read all of it;
//! a count beyond `PTRDIFF_MAX` bytes, a NULL or misaligned pointer is only ever passed where
//! the contract says the call is refused before anything is read.
//!
//! Checked, for every call:
//! - the status is exactly the one the contract in `docs/c-api.md` and `include/qkv.h`
//!   implies: first the C-level checks in their documented order (NULL descriptor,
//!   `struct_size` range and zero tail, unknown flags, query position, mask, the K/V types,
//!   then each tensor's length, NULL and alignment (its type's), then aliasing of
//!   `out`/`lse`, in bytes), and after them the status of the same call through the
//!   generic Rust API on slices of those lengths and types;
//! - never `QKV_ERR_INTERNAL` (a caught panic);
//! - on an error nothing in `out` or `lse` is written; on `QKV_OK` the results are bit for
//!   bit those of the Rust call, and nothing outside the output rows is written.

use core::mem::size_of;
use core::ptr;
use std::cell::Cell;

use crate::bytes::Bytes;
use qkv::capi::*;
use qkv::{
    Bias, BlockQ8_0, Error, Isa, KvKind, KvType, Layout, Mask, Params, QueryPos, Shape, bf16, f16,
};

pub(crate) const SENTINEL: u32 = 0xffc0_5a5a;
pub(crate) const MAX_BUF: usize = 2048;
/// Calls whose estimated work exceeds this are made only when they are refused anyway.
pub(crate) const MAX_WORK: u128 = 1_000_000;

thread_local! {
    /// Set while this thread is inside a C-ABI call.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// Set when a panic happened inside a C-ABI call.
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// libFuzzer's panic hook aborts, which would hide a panic the C ABI catches (and turns into
/// `QKV_ERR_INTERNAL`); inside a C call, record it instead (and print it only with
/// `QKV_FUZZ_SHOW_PANICS` set). Every other panic goes to the previous hook as before.
pub(crate) fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let show = std::env::var_os("QKV_FUZZ_SHOW_PANICS").is_some();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CALL.with(|c| c.get()) {
                PANICKED.with(|p| p.set(true));
                if show {
                    previous(info);
                }
            } else {
                previous(info);
            }
        }));
    });
}

pub(crate) fn size(b: &mut Bytes) -> usize {
    match b.below(16) {
        0..=9 => b.range(0, 8),
        10 | 11 => b.range(0, 200),
        12 => b.pick(&[
            usize::MAX,
            usize::MAX / 2,
            1 << 32,
            1 << 62,
            isize::MAX as usize / 4 + 1,
        ]),
        13 => b.u64() as usize,
        _ => b.range(0, 40),
    }
}

pub(crate) fn layout(b: &mut Bytes) -> Layout {
    Layout {
        head_stride: size(b),
        row_stride: size(b),
    }
}

/// A [`Layout`] as the descriptor's `qkv_layout`, field by field.
fn c_layout(l: Layout) -> QkvLayout {
    QkvLayout {
        head_stride: l.head_stride,
        row_stride: l.row_stride,
    }
}

/// How a tensor pointer is passed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PtrKind {
    Normal,
    Null,
    /// 1–3 bytes past an aligned address.
    Misaligned(usize),
    /// `out` at the start of `q`'s buffer.
    AliasQ,
}

/// One tensor: the count field to put in the descriptor, the length the library derives
/// (in elements of `elem`), and the buffer (floats, or the bytes of K or V's elements).
pub(crate) struct Tensor {
    pub(crate) count: usize,
    /// `Err(())`: the length overflows (extent) or exceeds `PTRDIFF_MAX` bytes.
    pub(crate) len: Result<usize, ()>,
    pub(crate) kind: PtrKind,
    pub(crate) buf: Vec<f32>,
    /// The type of the elements (`F32` but for K and V).
    pub(crate) elem: KvKind,
}

pub(crate) const MAX_LEN: usize = isize::MAX as usize / size_of::<f32>();

/// What a tensor draws from the input before its length is known: its count field and how
/// its pointer is passed.
pub(crate) struct TensorDraw {
    count: usize,
    kind: PtrKind,
}

pub(crate) fn draw_tensor(b: &mut Bytes, allow_alias: bool) -> TensorDraw {
    // The count field: 0 (use the extent) or explicit, sometimes beyond PTRDIFF_MAX.
    let count = match b.below(8) {
        0..=3 => 0,
        4 => MAX_LEN + 1 + b.below(4),
        5 => usize::MAX - b.below(2),
        _ => b.range(1, 300),
    };
    let kind = match b.below(16) {
        0 => PtrKind::Null,
        1 => PtrKind::Misaligned(b.range(1, 3)),
        2 if allow_alias => PtrKind::AliasQ,
        _ => PtrKind::Normal,
    };
    TensorDraw { count, kind }
}

/// One element of `elem` whose value is `fill`'s (for `q8_0`, 32 values of about `fill`),
/// as bytes.
fn element_bytes(elem: KvKind, fill: f32) -> Vec<u8> {
    match elem {
        KvKind::F32 => fill.to_le_bytes().to_vec(),
        KvKind::F16 => f16::from_f32(fill).to_le_bytes().to_vec(),
        KvKind::Bf16 => bf16::from_f32(fill).to_le_bytes().to_vec(),
        KvKind::Q8_0 => {
            let block =
                BlockQ8_0::quantize(&core::array::from_fn(|i| fill * (1.0 + i as f32 / 64.0)));
            bytemuck::bytes_of(&block).to_vec()
        }
    }
}

impl TensorDraw {
    /// The tensor of `extent` elements of `elem` (used when the count is 0), each `fill`.
    pub(crate) fn build(self, extent: Option<usize>, fill: f32, elem: KvKind) -> Tensor {
        let TensorDraw { count, mut kind } = self;
        let max_len = isize::MAX as usize / elem.bytes();
        let len = match count {
            0 => extent.ok_or(()),
            n => Ok(n),
        }
        .and_then(|n| if n > max_len { Err(()) } else { Ok(n) });
        // A length the buffer cannot hold is only passed where nothing is read: too long for
        // `PTRDIFF_MAX` (refused first) or NULL (refused next).
        let alloc = match len {
            Ok(n) if n <= MAX_BUF => n,
            Ok(_) => {
                kind = PtrKind::Null;
                0
            }
            Err(()) => 0,
        };
        let bytes = alloc * elem.bytes();
        // Floats, so that the buffer is aligned for every type; one float of slack for a
        // misaligned pointer.
        let mut buf = vec![fill; bytes.div_ceil(4) + 1];
        if elem != KvKind::F32 {
            let one = element_bytes(elem, fill);
            let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
            for (b, x) in raw[..bytes].iter_mut().zip(one.iter().cycle()) {
                *b = *x;
            }
        }
        Tensor {
            count,
            len,
            kind,
            buf,
            elem,
        }
    }
}

pub(crate) fn tensor(b: &mut Bytes, extent: Option<usize>, fill: f32, allow_alias: bool) -> Tensor {
    draw_tensor(b, allow_alias).build(extent, fill, KvKind::F32)
}

/// The alignment the C ABI asks of a pointer to `elem`s.
fn align(elem: KvKind) -> usize {
    match elem {
        KvKind::F32 => 4,
        _ => 2,
    }
}

impl Tensor {
    pub(crate) fn ptr(&self) -> *const f32 {
        match self.kind {
            PtrKind::Null => ptr::null(),
            PtrKind::Misaligned(n) => self.buf.as_ptr().cast::<u8>().wrapping_add(n).cast(),
            _ => self.buf.as_ptr(),
        }
    }

    /// The C-level status of this tensor's pointer and length, if it is refused.
    pub(crate) fn refusal(&self) -> Option<QkvStatus> {
        match self.len {
            Err(()) => Some(QKV_ERR_OVERFLOW),
            Ok(0) => None,
            Ok(_) => match self.kind {
                PtrKind::Null => Some(QKV_ERR_NULL_POINTER),
                PtrKind::Misaligned(n) if n % align(self.elem) != 0 => Some(QKV_ERR_MISALIGNED),
                _ => None,
            },
        }
    }

    /// The slice the library sees (only meaningful when it is not refused).
    pub(crate) fn slice(&self) -> &[f32] {
        &self.buf[..*self.len.as_ref().unwrap_or(&0)]
    }

    /// The elements the library sees as `T` (`elem` must be `T::KIND`; only meaningful when
    /// the tensor is not refused), from the pointer it is passed (which may be 2 bytes past
    /// the buffer's start).
    pub(crate) fn typed<T: KvType>(&self) -> &[T] {
        assert_eq!(T::KIND, self.elem);
        let n = *self.len.as_ref().unwrap_or(&0);
        if n == 0 {
            return &[]; // the pointer is not looked at (it may be NULL or misaligned)
        }
        let skip = match self.kind {
            PtrKind::Misaligned(k) => k,
            _ => 0,
        };
        let raw: &[u8] = bytemuck::cast_slice(&self.buf);
        bytemuck::cast_slice(&raw[skip..skip + n * size_of::<T>()])
    }

    /// The bytes the tensor's pointer and length cover: `(address, bytes)`.
    pub(crate) fn byte_span(&self) -> (usize, usize) {
        (
            self.ptr() as usize,
            self.len.as_ref().map_or(0, |n| n * self.elem.bytes()),
        )
    }
}

/// Which function is called.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Best,
    Isa(i32),
    Reference,
}

pub(crate) fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.1 != 0 && b.1 != 0 && a.0 < b.0 + b.1 * 4 && b.0 < a.0 + a.1 * 4
}

/// [`overlaps`] of two `(address, bytes)` spans.
fn overlaps_bytes(a: (usize, usize), b: (usize, usize)) -> bool {
    a.1 != 0 && b.1 != 0 && a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

/// What [`random_desc`] chose, as the Rust values the library must decode the descriptor
/// into: the oracle's expectations come from these, not from decoding the descriptor again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Drawn {
    pub(crate) shape: Shape,
    pub(crate) q: Layout,
    pub(crate) k: Layout,
    pub(crate) v: Layout,
    pub(crate) out: Layout,
    pub(crate) bias_layout: Layout,
    pub(crate) scale: Option<f32>,
    /// The mask, or the status of the first unknown value in the documented order: flags,
    /// query position, mask kind.
    pub(crate) mask: Result<Mask, QkvStatus>,
}

impl Drawn {
    /// The [`Params`] of the drawn problem with `mask` and `bias` as the bias's data.
    pub(crate) fn params<'a>(&self, mask: Mask, bias: Option<&'a [f32]>) -> Params<'a> {
        Params {
            shape: self.shape,
            q: self.q,
            k: self.k,
            v: self.v,
            out: self.out,
            scale: self.scale,
            mask,
            bias: bias.map(|data| Bias {
                data,
                head_stride: self.bias_layout.head_stride,
                row_stride: self.bias_layout.row_stride,
            }),
            // The descriptors drawn here set none of the variants (version-3 fields zero).
            softcap: None,
            sinks: None,
            alibi: None,
            pages: None,
        }
    }

    /// The extent of `tensor` for the drawn shape and layouts, `None` when it overflows
    /// (K and V as `f32`).
    pub(crate) fn extent(&self, tensor: qkv::Tensor) -> Option<usize> {
        self.extent_of(tensor, KvKind::F32)
    }

    /// [`Drawn::extent`] with K or V stored as `elem`: in its elements, a row being
    /// `dim / values` of them, rounded up.
    pub(crate) fn extent_of(&self, tensor: qkv::Tensor, elem: KvKind) -> Option<usize> {
        let s = self.shape;
        let units = |dim: usize| dim.div_ceil(elem.values());
        match tensor {
            qkv::Tensor::Q => self.q.extent(s.q_heads, s.q_len, s.head_dim),
            qkv::Tensor::K => self.k.extent(s.kv_heads, s.kv_len, units(s.head_dim)),
            qkv::Tensor::V => self.v.extent(s.kv_heads, s.kv_len, units(s.v_dim)),
            qkv::Tensor::Out => self.out.extent(s.q_heads, s.q_len, s.v_dim),
            qkv::Tensor::Bias => self.bias_layout.extent(s.q_heads, s.q_len, s.kv_len),
            qkv::Tensor::Lse => s.q_heads.checked_mul(s.q_len),
            _ => Some(s.q_heads), // the sinks and ALiBi slopes: one per query head
        }
    }
}

/// The `QKV_QUERY_POS_*` values and what each means, as `include/qkv.h` documents them.
fn query_pos_of(value: i32, offset: i64) -> Option<QueryPos> {
    [
        (QKV_QUERY_POS_BOTTOM_RIGHT, QueryPos::BottomRight),
        (QKV_QUERY_POS_TOP_LEFT, QueryPos::TopLeft),
        (QKV_QUERY_POS_OFFSET, QueryPos::Offset(offset)),
    ]
    .into_iter()
    .find_map(|(v, p)| (v == value).then_some(p))
}

/// A descriptor with arbitrary shape, layouts, mask, query position, window, flags, scale
/// and bias layout, and what it means; counts, pointers and `struct_size` are left for the
/// caller to set.
pub(crate) fn random_desc(b: &mut Bytes) -> (QkvDesc, Drawn) {
    let shape = b.shape(size);
    // `qkv_desc_planar`'s strides, in `size_t` arithmetic.
    let planar = |rows: usize, dim: usize| Layout {
        head_stride: rows.wrapping_mul(dim),
        row_stride: dim,
    };
    let s = shape;
    let (mut q, mut k, mut v, mut out) = (
        planar(s.q_len, s.head_dim),
        planar(s.kv_len, s.head_dim),
        planar(s.kv_len, s.v_dim),
        planar(s.q_len, s.v_dim),
    );
    if b.chance(128) {
        (q, k, v, out) = (layout(b), layout(b), layout(b), layout(b));
    }
    // A `QKV_MASK_*` value, or an arbitrary one (which may happen to be one of them).
    let mask_value = match b.below(10) {
        0..=2 => QKV_MASK_NONE,
        3..=5 => QKV_MASK_CAUSAL,
        6..=8 => QKV_MASK_BAND,
        _ => b.u32() as i32,
    };
    let query_pos_value = match b.below(10) {
        0..=3 => QKV_QUERY_POS_BOTTOM_RIGHT,
        4..=5 => QKV_QUERY_POS_TOP_LEFT,
        6..=8 => QKV_QUERY_POS_OFFSET,
        _ => b.u32() as i32,
    };
    let query_offset = match b.below(4) {
        0 => b.u64() as i64,
        _ => b.range(0, 40) as i64 - 20,
    };
    let mut side = || if b.chance(64) { QKV_UNBOUNDED } else { size(b) };
    let (window_left, window_right) = (side(), side());
    let flags = match b.below(8) {
        0..=2 => 0,
        3..=6 => QKV_FLAG_SCALE,
        _ => b.u32(),
    };
    let scale = match b.below(4) {
        0 => f32::from_bits(b.u32()),
        _ => b.pick(&[0.5, 1.0, -2.0, 0.0, f32::NAN, f32::INFINITY]),
    };
    let bias_layout = layout(b);

    // What the header says these values mean.
    let bound = |w: usize| (w != QKV_UNBOUNDED).then_some(w);
    let mask = if flags & !QKV_FLAG_SCALE != 0 {
        Err(QKV_ERR_UNKNOWN_FLAGS)
    } else if let Some(pos) = query_pos_of(query_pos_value, query_offset) {
        match mask_value {
            QKV_MASK_NONE => Ok(Mask::NONE),
            QKV_MASK_CAUSAL => Ok(Mask {
                left: None,
                right: Some(0),
                query_pos: pos,
            }),
            QKV_MASK_BAND => Ok(Mask {
                left: bound(window_left),
                right: bound(window_right),
                query_pos: pos,
            }),
            _ => Err(QKV_ERR_UNKNOWN_MASK),
        }
    } else {
        Err(QKV_ERR_UNKNOWN_QUERY_POS)
    };
    let drawn = Drawn {
        shape,
        q,
        k,
        v,
        out,
        bias_layout,
        scale: (flags & QKV_FLAG_SCALE != 0).then_some(scale),
        mask,
    };
    let d = QkvDesc {
        q: c_layout(q),
        k: c_layout(k),
        v: c_layout(v),
        out: c_layout(out),
        mask: mask_value,
        query_pos: query_pos_value,
        query_offset,
        window_left,
        window_right,
        flags,
        scale,
        bias_layout: c_layout(bias_layout),
        ..QkvDesc::planar(
            s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim, s.v_dim,
        )
    };
    (d, drawn)
}

/// The descriptor as C passes it: `struct_size` bytes at an arbitrary offset, with a tail
/// that may be nonzero, or a NULL pointer.
pub(crate) struct DescArg {
    bytes: Vec<u8>,
    offset: usize,
    /// `struct_size`.
    size: usize,
    null: bool,
    /// `struct_size` outside the accepted range, or a nonzero byte past this version's size.
    bad_size: bool,
}

impl DescArg {
    /// Sets `d.struct_size` and lays the descriptor out; `d` is final when this is called.
    pub(crate) fn new(b: &mut Bytes, d: &mut QkvDesc) -> DescArg {
        let size_kind = b.below(8);
        d.struct_size = match size_kind {
            0 => b.pick(&[
                0,
                1,
                QKV_DESC_SIZE_V1 - 1,
                QKV_DESC_MAX_SIZE + 1,
                usize::MAX,
            ]),
            1 | 2 => QKV_DESC_SIZE_V1 + b.range(1, 64),
            3 => b.range(QKV_DESC_SIZE_V1, QKV_DESC_MAX_SIZE),
            _ => size_of::<QkvDesc>(),
        };
        let tail_nonzero = b.chance(64);
        let offset = b.below(8);
        let readable = d.struct_size.clamp(size_of::<QkvDesc>(), QKV_DESC_MAX_SIZE);
        let mut bytes = vec![0u8; offset + readable];
        // SAFETY: `bytes` holds `offset + size_of::<QkvDesc>()` bytes or more; the
        // descriptor is plain data.
        unsafe {
            ptr::copy_nonoverlapping(
                ptr::from_ref(d).cast::<u8>(),
                bytes.as_mut_ptr().add(offset),
                size_of::<QkvDesc>(),
            )
        };
        let has_tail = readable > size_of::<QkvDesc>();
        if tail_nonzero && has_tail {
            let at = b.range(offset + size_of::<QkvDesc>(), offset + readable - 1);
            bytes[at] = b.u8() | 1;
        }
        let null = b.chance(4);
        let bad_size = !(QKV_DESC_SIZE_V1..=QKV_DESC_MAX_SIZE).contains(&d.struct_size)
            || (tail_nonzero && has_tail);
        DescArg {
            bytes,
            offset,
            size: d.struct_size,
            null,
            bad_size,
        }
    }

    /// Writes `k_type` and `v_type` into the descriptor's bytes (drawn after it was laid
    /// out), and returns the types the library reads: the fields within `struct_size`, 0
    /// for the bytes past it (a version-1 descriptor means `f32`).
    pub(crate) fn set_types(&mut self, k_type: u32, v_type: u32) -> (u32, u32) {
        let at = |f: usize| self.offset + f;
        let (k_at, v_at) = (
            at(core::mem::offset_of!(QkvDesc, k_type)),
            at(core::mem::offset_of!(QkvDesc, v_type)),
        );
        self.bytes[k_at..k_at + 4].copy_from_slice(&k_type.to_le_bytes());
        self.bytes[v_at..v_at + 4].copy_from_slice(&v_type.to_le_bytes());
        let end = self.offset + self.size.min(size_of::<QkvDesc>());
        let read = |from: usize| {
            let b: [u8; 4] = core::array::from_fn(|i| {
                if from + i < end {
                    self.bytes[from + i]
                } else {
                    0
                }
            });
            u32::from_le_bytes(b)
        };
        (read(k_at), read(v_at))
    }

    /// The pointer C passes: `readable ≥ min(struct_size, ...)` bytes, or NULL.
    pub(crate) fn ptr(&self) -> *const QkvDesc {
        if self.null {
            ptr::null()
        } else {
            self.bytes.as_ptr().wrapping_add(self.offset).cast()
        }
    }

    /// The status of reading the descriptor, if it is refused.
    pub(crate) fn refusal(&self) -> Option<QkvStatus> {
        if self.null {
            Some(QKV_ERR_NULL_POINTER)
        } else if self.bad_size {
            Some(QKV_ERR_STRUCT_SIZE)
        } else {
            None
        }
    }
}

/// Runs one C-ABI call; also returns whether it panicked inside (caught by the library).
pub(crate) fn c_call<R>(f: impl FnOnce() -> R) -> (R, bool) {
    PANICKED.with(|p| p.set(false));
    IN_CALL.with(|c| c.set(true));
    let r = f();
    IN_CALL.with(|c| c.set(false));
    (r, PANICKED.with(|p| p.get()))
}

/// Decodes one C call and checks it.
pub fn run(data: &[u8]) {
    quiet_panics();
    let b = &mut Bytes::new(data);

    // The small functions, on any value.
    let any = b.u32() as i32;
    for x in [
        any,
        any.wrapping_neg(),
        -1,
        0,
        1,
        2,
        3,
        4,
        16,
        17,
        i32::MIN,
        i32::MAX,
    ] {
        // SAFETY: both return static NUL-terminated strings, never NULL.
        unsafe {
            assert!(!qkv_isa_name(x).is_null() && !qkv_status_str(x).is_null());
            let _ = std::ffi::CStr::from_ptr(qkv_isa_name(x));
            let _ = std::ffi::CStr::from_ptr(qkv_status_str(x));
        }
        assert!(matches!(qkv_isa_available(x), 0 | 1));
    }
    assert_eq!(qkv_isa_available(qkv_detected_isa()), 1);

    let (mut d, drawn) = random_desc(b);
    let with_bias = b.chance(80);
    let with_lse = b.chance(128);
    let entry = match b.below(4) {
        0 | 1 => Entry::Best,
        2 => Entry::Isa(if b.chance(200) {
            b.below(4) as i32
        } else {
            b.u32() as i32
        }),
        _ => Entry::Reference,
    };

    let s = drawn.shape;
    let q = tensor(b, drawn.extent(qkv::Tensor::Q), 0.5, false);
    // K and V are built once their types are drawn, last.
    let k_draw = draw_tensor(b, false);
    let v_draw = draw_tensor(b, false);
    let sentinel = f32::from_bits(SENTINEL);
    let mut out = tensor(b, drawn.extent(qkv::Tensor::Out), sentinel, true);
    let bias = with_bias.then(|| tensor(b, drawn.extent(qkv::Tensor::Bias), 0.125, false));
    let lse = with_lse.then(|| {
        tensor(
            b,
            s.q_heads.checked_mul(s.q_len),
            f32::from_bits(SENTINEL),
            false,
        )
    });
    if out.kind == PtrKind::AliasQ && q.buf.len() < out.buf.len() {
        out.kind = PtrKind::Normal;
    }
    (d.q_count, d.k_count, d.v_count, d.out_count) =
        (q.count, k_draw.count, v_draw.count, out.count);
    d.bias = bias.as_ref().map_or(ptr::null(), |t| t.ptr());
    d.bias_count = bias.as_ref().map_or(0, |t| t.count);
    d.lse_count = lse.as_ref().map_or(0, |t| t.count);
    // A NULL bias or lse pointer means none, whatever its length.
    let bias = bias.filter(|t| !t.ptr().is_null());
    let mut lse = lse.filter(|t| !t.ptr().is_null());

    let mut desc = DescArg::new(b, &mut d);

    // The types: `f32` half of the time, else each a `QKV_TYPE_*` or any value.
    let mut kv_type = || match b.below(12) {
        0..=5 => QKV_TYPE_F32,
        6..=10 => b.below(4) as u32,
        _ => b.u32(),
    };
    let (k_type, v_type) = (kv_type(), kv_type());
    (d.k_type, d.v_type) = (k_type, v_type);
    let read_types = desc.set_types(k_type, v_type);
    // The kinds the library decodes (every `kv-*` feature is on here), or `QKV_ERR_TYPE`.
    let kinds = match (
        KvKind::from_u32(read_types.0),
        KvKind::from_u32(read_types.1),
    ) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(QKV_ERR_TYPE),
    };
    let (k_kind, v_kind) = kinds.unwrap_or((KvKind::F32, KvKind::F32));
    let k = k_draw.build(drawn.extent_of(qkv::Tensor::K, k_kind), -0.25, k_kind);
    let v = v_draw.build(drawn.extent_of(qkv::Tensor::V, v_kind), 2.0, v_kind);

    // The status the contract implies, check by check.
    let pre = (|| {
        if let Entry::Isa(i) = entry
            && u8::try_from(i).ok().and_then(Isa::from_u8).is_none()
        {
            return Err(QKV_ERR_UNKNOWN_ISA);
        }
        if let Some(s) = desc.refusal() {
            return Err(s);
        }
        let mask = drawn.mask?;
        kinds?;
        for t in [
            Some(&q),
            Some(&k),
            Some(&v),
            Some(&out),
            bias.as_ref(),
            lse.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(s) = t.refusal() {
                return Err(s);
            }
        }
        let span = |t: &Tensor| t.byte_span();
        let inputs: Vec<_> = [Some(&q), Some(&k), Some(&v), bias.as_ref()]
            .into_iter()
            .flatten()
            .map(span)
            .collect();
        let clash = |w: (usize, usize)| inputs.iter().any(|&r| overlaps_bytes(w, r));
        let o = if out.kind == PtrKind::AliasQ {
            (q.buf.as_ptr() as usize, 4 * *out.len.as_ref().unwrap())
        } else {
            span(&out)
        };
        if clash(o)
            || lse
                .as_ref()
                .is_some_and(|l| clash(span(l)) || overlaps_bytes(span(l), o))
        {
            return Err(QKV_ERR_ALIASING);
        }
        Ok(mask)
    })();

    // The Rust call on the same data, when the C checks pass.
    let rust_params = pre.map(|mask| drawn.params(mask, bias.as_ref().map(|t| t.slice())));
    let out_len = *out.len.as_ref().unwrap_or(&0);
    let (want_status, want) = match &rust_params {
        Err(s) => (*s, None),
        Ok(p) => {
            let lse_len = lse.as_ref().map(|l| l.slice().len());
            let r = dispatch(
                (k_kind, v_kind),
                Oracle {
                    entry,
                    p,
                    q: q.slice(),
                    k: &k,
                    v: &v,
                    out_len,
                    lse_len,
                },
            );
            match r {
                None => return, // correct, but too slow to run here
                Some(Ok((o, l))) => (QKV_OK, Some((o, l))),
                Some(Err(e)) => (error_status(e), None),
            }
        }
    };

    // The C call.
    let out_ptr = match out.kind {
        PtrKind::AliasQ => q.buf.as_ptr().cast_mut(),
        _ => out.ptr().cast_mut(),
    };
    let lse_ptr = lse.as_ref().map_or(ptr::null_mut(), |l| l.ptr().cast_mut());
    let (qp, kp, vp) = (q.ptr(), k.ptr().cast(), v.ptr().cast());
    let q_before: Vec<u32> = q.buf.iter().map(|x| x.to_bits()).collect();
    let desc_ptr = desc.ptr();
    // SAFETY: every buffer holds at least the length the pointer contract derives for it,
    // except where the contract refuses the call before reading (see `tensor`); `desc_ptr`
    // points to `readable ≥ min(struct_size, ...)` bytes or is NULL.
    let (got, panicked) = c_call(|| unsafe {
        match entry {
            Entry::Best => qkv_attention_f32(desc_ptr, qp, kp, vp, out_ptr, lse_ptr),
            Entry::Isa(i) => qkv_attention_f32_isa(i, desc_ptr, qp, kp, vp, out_ptr, lse_ptr),
            Entry::Reference => qkv_reference_f32(desc_ptr, qp, kp, vp, out_ptr, lse_ptr),
        }
    });
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *SHOW.get_or_init(|| std::env::var_os("QKV_FUZZ_SHOW_STATUS").is_some()) {
        eprintln!("capi status {got}");
    }
    assert!(
        !panicked && got != QKV_ERR_INTERNAL,
        "{entry:?}: QKV_ERR_INTERNAL (a panic inside the C ABI; rerun with \
         QKV_FUZZ_SHOW_PANICS=1)\n{d:?}"
    );
    assert_eq!(
        got, want_status,
        "{entry:?}: status {got}, the contract says {want_status}\n{d:?}\nlens q {:?} k {:?} v {:?} out {:?} kinds {:?} {:?}",
        q.len, k.len, v.len, out.len, out.kind, q.kind
    );
    let q_after: Vec<u32> = q.buf.iter().map(|x| x.to_bits()).collect();
    if out.kind == PtrKind::AliasQ {
        assert_eq!(
            q_before, q_after,
            "{entry:?}: wrote into q through an aliasing out"
        );
        return;
    }
    match want {
        None => {
            assert!(
                out.buf.iter().all(|x| x.to_bits() == SENTINEL)
                    && lse
                        .iter_mut()
                        .all(|l| l.buf.iter().all(|x| x.to_bits() == SENTINEL)),
                "{entry:?}: wrote before returning {got}\n{d:?}"
            );
        }
        Some((o, l)) => {
            let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&out.buf[..out_len]),
                bits(&o),
                "{entry:?}: out differs from Rust\n{d:?}"
            );
            if let (Some(lse), Some(l)) = (&mut lse, l) {
                assert_eq!(
                    bits(&lse.buf[..l.len()]),
                    bits(&l),
                    "{entry:?}: lse differs from Rust\n{d:?}"
                );
            }
        }
    }
}

/// The Rust call on the C call's data: what the status and results must be.
struct Oracle<'a> {
    entry: Entry,
    p: &'a Params<'a>,
    q: &'a [f32],
    k: &'a Tensor,
    v: &'a Tensor,
    out_len: usize,
    lse_len: Option<usize>,
}

/// `out` and `lse` of a successful call.
type Results = (Vec<f32>, Option<Vec<f32>>);

impl Oracle<'_> {
    /// The generic Rust call with K and V as `K` and `V` (their tensors' types): `None` when
    /// the call is valid but too slow to run here.
    fn run<K: KvType, V: KvType>(self) -> Option<Result<Results, Error>> {
        let (p, q, k, v) = (self.p, self.q, self.k.typed::<K>(), self.v.typed::<V>());
        let sentinel = f32::from_bits(SENTINEL);
        let lse_probe = self.lse_len.map(|n| vec![0.0f32; n]);
        let valid = p.validate(q, k, v, &vec![0.0; self.out_len], lse_probe.as_deref());
        if valid.is_ok() && work(p) > MAX_WORK {
            return None;
        }
        let mut o = vec![sentinel; self.out_len];
        let mut l = self.lse_len.map(|n| vec![sentinel; n]);
        let r = match self.entry {
            Entry::Best => qkv::attention(p, q, k, v, &mut o, l.as_deref_mut()),
            Entry::Isa(i) => {
                let isa = Isa::from_u8(i as u8).unwrap();
                isa.attention(p, q, k, v, &mut o, l.as_deref_mut())
            }
            Entry::Reference => qkv::reference::attention(p, q, k, v, &mut o, l.as_deref_mut()),
        };
        Some(r.map(|()| (o, l)))
    }
}

/// [`Oracle::run`] on the pair of types `kinds` names: the test's own dispatch, a plain
/// `match` (not the library's).
fn dispatch(kinds: (KvKind, KvKind), o: Oracle) -> Option<Result<Results, Error>> {
    macro_rules! v {
        ($k:ty, $v:expr) => {
            match $v {
                KvKind::F32 => o.run::<$k, f32>(),
                KvKind::F16 => o.run::<$k, f16>(),
                KvKind::Bf16 => o.run::<$k, bf16>(),
                KvKind::Q8_0 => o.run::<$k, BlockQ8_0>(),
            }
        };
    }
    match kinds.0 {
        KvKind::F32 => v!(f32, kinds.1),
        KvKind::F16 => v!(f16, kinds.1),
        KvKind::Bf16 => v!(bf16, kinds.1),
        KvKind::Q8_0 => v!(BlockQ8_0, kinds.1),
    }
}

/// Work estimate, as in the api target: at least the loop over heads.
pub(crate) fn work(p: &Params) -> u128 {
    let s = p.shape;
    let per = (s.head_dim as u128)
        .saturating_mul(s.v_dim.div_ceil(32) as u128 + 2)
        .saturating_add(s.v_dim as u128 + 1);
    (s.q_heads as u128)
        .saturating_mul((s.q_len as u128).max(1))
        .saturating_mul((s.kv_len as u128).max(1))
        .saturating_mul(per)
}
