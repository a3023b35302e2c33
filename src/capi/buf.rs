//! [`Buf`]: one pointer argument of a C call with the length the pointer contract gives
//! it, and the checks on it (length, NULL, alignment, aliasing) that run before any is read;
//! [`Inputs`], the read-only ones of a call.

use super::decode::{ExtraBufs, Extras};
use super::types::{self, KvSlice};
use super::{
    QKV_ERR_ALIASING, QKV_ERR_MISALIGNED, QKV_ERR_NULL_POINTER, QKV_ERR_OVERFLOW, QKV_ERR_TYPE,
    QkvStatus,
};
use crate::KvKind;

/// One tensor argument: its pointer, the type of its elements (`f32` but for K and V) and
/// the number of elements it is taken to hold.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    ptr: *const u8,
    len: usize,
    kind: KvKind,
}

impl Buf {
    /// A buffer of `float`s: `len` is `count` if nonzero, else the extent; checks it, then
    /// the pointer.
    pub(crate) fn new(
        ptr: *const f32, count: usize, extent: Option<usize>,
    ) -> Result<Buf, QkvStatus> {
        Buf::of(KvKind::F32, ptr.cast(), count, extent)
    }

    /// A buffer of elements of `kind` (`count` and `extent` in those elements), checked as
    /// [`Buf::new`]: its length against `PTRDIFF_MAX` bytes, then NULL, then the alignment
    /// of the type.
    pub(crate) fn of(
        kind: KvKind, ptr: *const u8, count: usize, extent: Option<usize>,
    ) -> Result<Buf, QkvStatus> {
        let len = match count {
            0 => extent.ok_or(QKV_ERR_OVERFLOW)?,
            n => n,
        };
        if len > isize::MAX as usize / kind.bytes() {
            return Err(QKV_ERR_OVERFLOW);
        }
        if len != 0 {
            if ptr.is_null() {
                return Err(QKV_ERR_NULL_POINTER);
            }
            if !(ptr as usize).is_multiple_of(types::align(kind)) {
                return Err(QKV_ERR_MISALIGNED);
            }
        }
        Ok(Buf { ptr, len, kind })
    }

    /// A buffer of `len` `size_t`s (the offsets of a ragged batch), checked as [`Buf::of`]
    /// checks a `float` one (its length, then NULL, then alignment), the alignment being
    /// `size_t`'s. It is held as the floats it spans, so that its bytes take part in the
    /// aliasing checks; [`Buf::slice_usize`] reads it.
    #[cfg(feature = "capi-ragged")]
    pub(crate) fn sizes(ptr: *const usize, len: usize) -> Result<Buf, QkvStatus> {
        let floats = len.checked_mul(FLOATS_PER_SIZE).ok_or(QKV_ERR_OVERFLOW)?;
        let buf = Buf::of(KvKind::F32, ptr.cast(), floats, Some(0))?;
        if len != 0 && !(ptr as usize).is_multiple_of(align_of::<usize>()) {
            return Err(QKV_ERR_MISALIGNED);
        }
        Ok(buf)
    }

    /// Whether the two buffers share a byte.
    pub(crate) fn overlaps(self, other: Buf) -> bool {
        if self.len == 0 || other.len == 0 {
            return false;
        }
        // `len · bytes ≤ PTRDIFF_MAX` (checked in `of`), so the byte counts do not overflow; a
        // valid buffer does not wrap around the address space, and saturating keeps an
        // invalid one from looking disjoint.
        let (a, b) = (self.ptr as usize, other.ptr as usize);
        let a_end = a.saturating_add(self.len * self.kind.bytes());
        let b_end = b.saturating_add(other.len * other.kind.bytes());
        a < b_end && b < a_end
    }

    /// The elements as a slice of `T`, empty if `T` is not the buffer's type.
    ///
    /// # Safety
    /// The pointer contract: `ptr` points to `len` initialized, readable elements that
    /// nothing writes during `'a` (checked non-NULL and aligned by [`Buf::of`]).
    unsafe fn typed<'a, T: crate::KvType>(self) -> &'a [T] {
        if self.len == 0 || T::KIND != self.kind {
            return &[];
        }
        // SAFETY: non-NULL and aligned to `T` (checked in `of`; `align` is `T`'s), `len`
        // elements of `T` readable and not written while the slice lives (the caller's
        // contract), `len · size_of::<T>() ≤ isize::MAX` (checked in `of`); every bit
        // pattern is a valid `T` (`Pod`).
        unsafe { core::slice::from_raw_parts(self.ptr.cast::<T>(), self.len) }
    }

    /// # Safety
    /// As [`Buf::typed`], for a buffer of `float`s (empty otherwise).
    pub(crate) unsafe fn slice<'a>(self) -> &'a [f32] {
        // SAFETY: the caller's contract.
        unsafe { self.typed() }
    }

    /// The buffer as `u32`s (a block table, whose buffer was made as the 4-byte, 4-aligned
    /// `float`).
    ///
    /// # Safety
    /// As [`Buf::typed`].
    pub(crate) unsafe fn slice_u32<'a>(self) -> &'a [u32] {
        // SAFETY: the caller's contract; `f32` and `u32` are both `Pod` of one size and
        // alignment, so the cast keeps every element.
        bytemuck::cast_slice(unsafe { self.slice() })
    }

    /// The buffer as the `size_t`s it was made of by [`Buf::sizes`].
    ///
    /// # Safety
    /// As [`Buf::typed`], for a buffer made by [`Buf::sizes`]: `ptr` points to `len`
    /// initialized, readable `size_t`s that nothing writes during `'a`.
    #[cfg(feature = "capi-ragged")]
    pub(crate) unsafe fn slice_usize<'a>(self) -> &'a [usize] {
        if self.len == 0 || self.kind != KvKind::F32 {
            return &[];
        }
        // SAFETY: non-NULL and aligned to `usize` (checked in `sizes`), `len` floats, that is
        // `len / FLOATS_PER_SIZE` `usize`s, readable and not written while the slice lives
        // (the caller's contract), at most `isize::MAX` bytes (checked in `of`); every bit
        // pattern is a valid `usize`.
        unsafe { core::slice::from_raw_parts(self.ptr.cast::<usize>(), self.len / FLOATS_PER_SIZE) }
    }

    /// K or V as a slice of its type; [`QKV_ERR_TYPE`] for a type this build leaves out
    /// (which [`types::kind`] refused before the buffer was made).
    ///
    /// # Safety
    /// As [`Buf::typed`].
    pub(crate) unsafe fn kv<'a>(self) -> Result<KvSlice<'a>, QkvStatus> {
        // SAFETY: in every arm, the caller's contract, for the buffer's own type.
        unsafe {
            match self.kind {
                KvKind::F32 => Ok(KvSlice::F32(self.typed())),
                #[cfg(feature = "kv-f16")]
                KvKind::F16 => Ok(KvSlice::F16(self.typed())),
                #[cfg(feature = "kv-bf16")]
                KvKind::Bf16 => Ok(KvSlice::Bf16(self.typed())),
                #[cfg(feature = "kv-q8_0")]
                KvKind::Q8_0 => Ok(KvSlice::Q8_0(self.typed())),
                #[allow(unreachable_patterns)]
                _ => Err(QKV_ERR_TYPE),
            }
        }
    }

    /// # Safety
    /// The pointer contract: `ptr` points to `len` writable floats that nothing else reads or
    /// writes during `'a` (checked non-NULL, aligned and disjoint from the other buffers).
    pub(crate) unsafe fn slice_mut<'a>(self) -> &'a mut [f32] {
        if self.len == 0 || self.kind != KvKind::F32 {
            return &mut [];
        }
        // SAFETY: non-NULL and aligned to `f32` (checked in `of`), writable and unaliased for
        // `len` floats (the caller's contract; the other buffers of the call were checked
        // disjoint), `len·4 ≤ isize::MAX`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.cast::<f32>().cast_mut(), self.len) }
    }

    /// Floats `range` of the buffer (empty if the range is not inside it): the part of a
    /// buffer that one of several concurrent calls writes.
    ///
    /// # Safety
    /// As [`Buf::slice_mut`], for the floats of `range` only: nothing else reads or writes
    /// them during `'a` (other calls may use the rest of the buffer).
    pub(crate) unsafe fn part_mut<'a>(self, range: core::ops::Range<usize>) -> &'a mut [f32] {
        if self.kind != KvKind::F32 || range.start > range.end || range.end > self.len {
            return &mut [];
        }
        // SAFETY: as in `slice_mut`, for `range`, which is inside the buffer's `len` floats.
        unsafe {
            let start = self.ptr.cast::<f32>().cast_mut().add(range.start);
            core::slice::from_raw_parts_mut(start, range.len())
        }
    }
}

/// The floats one `size_t` spans: a whole number of them on every target the crate builds
/// for (32- and 64-bit), which [`Buf::sizes`] relies on.
#[cfg(feature = "capi-ragged")]
const FLOATS_PER_SIZE: usize = size_of::<usize>() / size_of::<f32>();
#[cfg(feature = "capi-ragged")]
const _: () = assert!(size_of::<usize>() == FLOATS_PER_SIZE * size_of::<f32>());

/// [`QKV_ERR_ALIASING`] if any of `writes` overlaps another of them or any of `reads`.
pub(crate) fn check_aliasing(writes: &[Buf], reads: &[Option<Buf>]) -> Result<(), QkvStatus> {
    let aliased = writes.iter().enumerate().any(|(n, &w)| {
        writes[n + 1..].iter().any(|&x| w.overlaps(x))
            || reads.iter().flatten().any(|&r| w.overlaps(r))
    });
    match aliased {
        true => Err(QKV_ERR_ALIASING),
        false => Ok(()),
    }
}

/// The read-only tensors of a call, checked against the pointer contract.
#[derive(Clone, Copy)]
pub(crate) struct Inputs {
    /// `q`, `k` and `v`, from [`Desc::qkv`](super::decode::Desc::qkv).
    pub(crate) qkv: [Buf; 3],
    /// The bias, sinks, ALiBi slopes and block table, from [`Desc::extras`](super::decode::Desc::extras).
    pub(crate) extras: ExtraBufs,
}

impl Inputs {
    /// The seven buffers, for the aliasing check of the outputs.
    pub(crate) fn all(&self) -> [Option<Buf>; 7] {
        let [q, k, v] = self.qkv;
        let [bias, sinks, alibi, table] = self.extras.all();
        [Some(q), Some(k), Some(v), bias, sinks, alibi, table]
    }

    /// `q`, `k`, `v` and the extras as slices, K and V of their types.
    ///
    /// # Safety
    /// The pointer contract for the lengths the buffers were given, and nothing writes them
    /// during `'a`.
    pub(crate) unsafe fn slices<'a>(self) -> Result<Slices<'a>, QkvStatus> {
        let [q, k, v] = self.qkv;
        // SAFETY: the caller's contract, for each buffer.
        unsafe {
            Ok(Slices {
                q: q.slice(),
                kv: [k.kv()?, v.kv()?],
                extras: self.extras.slices(),
            })
        }
    }
}

/// The inputs of a call as slices: what the Rust entry points take.
pub(crate) struct Slices<'a> {
    /// `q`.
    pub(crate) q: &'a [f32],
    /// `k` and `v`, for [`with_kv!`](super::types::with_kv).
    pub(crate) kv: [KvSlice<'a>; 2],
    /// The bias, sinks and ALiBi slopes.
    pub(crate) extras: Extras<'a>,
}
