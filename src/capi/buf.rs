//! [`Buf`]: one pointer argument of a C call with the length the pointer contract gives
//! it, and the checks on it (length, NULL, alignment, aliasing) that run before any is read;
//! [`Inputs`], the read-only ones of a call.

use core::mem::size_of;

use super::{
    QKV_ERR_ALIASING, QKV_ERR_MISALIGNED, QKV_ERR_NULL_POINTER, QKV_ERR_OVERFLOW, QkvStatus,
};

/// The most `f32`s one buffer can hold: `PTRDIFF_MAX` bytes.
pub(crate) const MAX_LEN: usize = isize::MAX as usize / size_of::<f32>();

/// One tensor argument: its pointer and the number of floats it is taken to hold.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    ptr: *const f32,
    len: usize,
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
    /// `q`, `k` and `v`, from [`Desc::qkv`](super::desc::Desc::qkv).
    pub(crate) qkv: [Buf; 3],
    /// The bias, from [`Desc::bias`](super::desc::Desc::bias).
    pub(crate) bias: Option<Buf>,
}

impl Inputs {
    /// The four buffers, for the aliasing check of the outputs.
    pub(crate) fn all(&self) -> [Option<Buf>; 4] {
        let [q, k, v] = self.qkv;
        [Some(q), Some(k), Some(v), self.bias]
    }

    /// `q`, `k`, `v` and the bias as slices.
    ///
    /// # Safety
    /// The pointer contract for the lengths the buffers were given, and nothing writes them
    /// during `'a`.
    pub(crate) unsafe fn slices<'a>(self) -> ([&'a [f32]; 3], Option<&'a [f32]>) {
        // SAFETY: the caller's contract, for each buffer.
        let qkv = self.qkv.map(|b| unsafe { b.slice() });
        // SAFETY: as above.
        (qkv, self.bias.map(|b| unsafe { b.slice() }))
    }
}
