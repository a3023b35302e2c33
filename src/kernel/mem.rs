//! Memory helpers of the kernel: vector views and loads of `f32` slices, rows of a matrix
//! addressed by pointer and stride for the tiles, the strided copy, and cache hints.

use pulp::Simd;

use super::widen::{Phase, Widen};
use crate::kv::{self, KvKind, KvType};

/// Lane indices, to build masks of visible keys.
pub(super) const IOTA: [f32; 16] = [
    0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.,
];

/// `s` as whole vectors (a partial last vector is left out).
#[inline(always)]
pub(super) fn vectors_mut<S: Simd>(s: &mut [f32]) -> &mut [S::f32s] {
    S::as_mut_simd_f32s(s).0
}

/// The `lanes` floats at column `at` of each of the first `rows` rows of a tile whose rows
/// are `stride` floats apart (`tile[at + j·stride..][..lanes]`), as an iterator whose range
/// is checked once: rows past the tile's end are left out, as `chunks_exact_mut` would. The
/// softmax passes walk a vector of rows down a key block's scores with it; through
/// `chunks_exact_mut(stride).take(cols)` each step kept and checked two counts (9
/// instructions of loop a score on Cortex-M4F, 3 now).
#[inline(always)]
pub(super) fn column_mut(
    tile: &mut [f32], at: usize, stride: usize, lanes: usize, rows: usize,
) -> ColumnMut<'_> {
    // Rows that fit whole; with a stride below the lanes they would overlap: one at most.
    let fit = match tile.len().checked_sub(at + lanes) {
        None => 0,
        Some(_) if stride < lanes => 1,
        Some(room) => room / stride + 1,
    };
    ColumnMut {
        ptr: tile.as_mut_ptr().wrapping_add(at),
        stride,
        lanes,
        left: rows.min(fit),
        _tile: core::marker::PhantomData,
    }
}

/// The iterator of [`column_mut`].
pub(super) struct ColumnMut<'a> {
    ptr: *mut f32,
    stride: usize,
    lanes: usize,
    left: usize,
    _tile: core::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Iterator for ColumnMut<'a> {
    type Item = &'a mut [f32];

    #[inline(always)]
    fn next(&mut self) -> Option<&'a mut [f32]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let row = self.ptr;
        self.ptr = self.ptr.wrapping_add(self.stride);
        // SAFETY: `column_mut` counted only rows whose `lanes` floats lie inside the tile,
        // rows `stride ≥ lanes` apart (or one row), so no two items overlap, and the tile is
        // borrowed mutably for `'a`.
        Some(unsafe { core::slice::from_raw_parts_mut(row, self.lanes) })
    }
}

/// Whether an `f32`-aligned pointer is aligned for `S`'s vector: on the one-lane level, not
/// on SIMD levels (vectors are wider than a float's alignment). [`read_vector`] and
/// [`write_vector`] then access it aligned, since an unaligned `f32` access costs a
/// core-register load or store and a move to or from the FPU (Cortex-M4F: `ldr` + `vmov`
/// instead of one `vldr`; `benches/NOTES.md` 23).
#[inline(always)]
const fn float_aligned<S: Simd>() -> bool {
    core::mem::align_of::<S::f32s>() <= core::mem::align_of::<f32>()
}

/// Reads the `lanes` floats at `p` as a vector (aligned where [`float_aligned`]).
///
/// # Safety
/// `lanes` floats at `p` are readable; `p` is aligned for `f32`.
#[inline(always)]
pub(crate) unsafe fn read_vector<S: Simd>(p: *const f32) -> S::f32s {
    let p = p as *const S::f32s;
    // SAFETY: the caller's guarantee; `p` is `f32`-aligned, enough where `float_aligned`,
    // and `read_unaligned` needs no alignment.
    unsafe {
        match float_aligned::<S>() {
            true => p.read(),
            false => p.read_unaligned(),
        }
    }
}

/// Writes a vector to the `lanes` floats at `p`, aligned or not as [`read_vector`] reads.
///
/// # Safety
/// `lanes` floats at `p` are writable; `p` is aligned for `f32`.
#[inline(always)]
pub(crate) unsafe fn write_vector<S: Simd>(p: *mut f32, x: S::f32s) {
    let p = p as *mut S::f32s;
    // SAFETY: as in `read_vector`.
    unsafe {
        match float_aligned::<S>() {
            true => p.write(x),
            false => p.write_unaligned(x),
        }
    }
}

/// Loads `s[..lanes]`, or fewer with zeros after.
#[inline(always)]
pub(super) fn load<S: Simd>(simd: S, s: &[f32]) -> S::f32s {
    match S::as_simd_f32s(s).0.first() {
        Some(&x) => x,
        None => simd.partial_load_f32s(s),
    }
}

/// Rows of a matrix for the unsafe tiles: row `x` starts at `ptr + x·stride` (in elements
/// of `T`: `f32`, or a K/V storage type). What may be read from them is stated by each tile's
/// `# Safety`.
#[derive(Clone, Copy)]
pub(super) struct Rows<T = f32> {
    pub ptr: *const T,
    pub stride: usize,
}

impl<T> Rows<T> {
    /// The start of row `x` (no access: a pointer the tile may read through).
    #[inline(always)]
    pub fn row(self, x: usize) -> *const T {
        self.ptr.wrapping_add(x * self.stride)
    }
}

impl Rows {
    /// Element `col` of row `x` (no access: a pointer the tile may read through).
    #[inline(always)]
    pub fn at(self, x: usize, col: usize) -> *const f32 {
        self.ptr.wrapping_add(x * self.stride + col)
    }
}

/// Rows of K or V as a checked slice of `T`: row `j` is `data[j · stride..]`, and the slice
/// ends with the last row's columns; the columns the tiles read start at `col0` of each row.
/// They are the caller's K or V (`f32` from the panel's first column, `col0` = 0; a narrower
/// type from each row's start, since a q8_0 panel may start inside a block), or the `f32`
/// tile their values were widened into; `ahead` is how far past a row the P·V tiles may
/// prefetch (0: not at all, as for the tile and narrow rows).
#[derive(Clone, Copy)]
pub(super) struct KvRows<'a, T = f32> {
    pub data: &'a [T],
    pub stride: usize,
    pub col0: usize,
    pub ahead: usize,
}

impl<T: KvType> KvRows<'_, T> {
    /// `col0`, known to be 0 for `f32` (whose rows start at the panel) where the tiles are
    /// compiled, which keeps the offset out of their registers.
    #[inline(always)]
    pub fn first_col(&self) -> usize {
        match T::KIND {
            KvKind::F32 => 0,
            _ => self.col0,
        }
    }

    /// The elements of `T` from a row's start that hold its columns up to `col0 + width`.
    #[inline(always)]
    pub fn row_len(&self, width: usize) -> usize {
        (self.first_col() + width).div_ceil(T::KIND.values())
    }
}

/// Rows of a tile the tiles write: row `x` starts at `ptr + x·stride`.
#[derive(Clone, Copy)]
pub(super) struct RowsMut {
    pub ptr: *mut f32,
    pub stride: usize,
}

impl RowsMut {
    /// Element `col` of row `x` (no access: a pointer the tile may write through).
    #[inline(always)]
    pub fn at(self, x: usize, col: usize) -> *mut f32 {
        self.ptr.wrapping_add(x * self.stride + col)
    }
}

/// `dst[i · stride] = src[i]` for the `src` elements whose place is inside `dst`, one
/// element at a time. Left to itself LLVM vectorises this on x86-64 into scatters, which are
/// slow on AMD and which the Bochs AVX-512 emulator used in CI cannot execute (index in
/// zmm16–31): there each element is a volatile store, which LLVM leaves one store. An index
/// loop, not `step_by` and `zip`, which checked each element's place on Cortex-M4F (7
/// instructions an element; 3 now).
#[inline(always)]
pub(super) fn strided_copy(dst: &mut [f32], stride: usize, src: &[f32]) {
    // Every element fits (the callers' case), or as many as do (no division otherwise).
    let n = match src.len().checked_sub(1) {
        Some(last) if last * stride < dst.len() => src.len(),
        _ => src.len().min(dst.len().div_ceil(stride.max(1))),
    };
    let (dst, src) = (dst.as_mut_ptr(), src.as_ptr());
    for i in 0..n {
        // SAFETY: i < n ≤ src.len(); and i · stride < len for the destination's `len`:
        // i · stride ≤ last · stride < len in the first case, ≤ (⌈len / stride⌉ − 1) · stride
        // in the second (stride ≥ 1; a stride of 0 writes `dst[0]`, and then len > 0).
        unsafe {
            let (d, x) = (dst.add(i * stride), *src.add(i));
            match cfg!(target_arch = "x86_64") {
                true => d.write_volatile(x),
                false => d.write(x),
            }
        }
    }
}

// `_mm_prefetch`'s hints for `prefetch`; any value where there is no prefetch to take them.
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{_MM_HINT_NTA as NTA, _MM_HINT_T0 as T0, _MM_HINT_T1 as T1};
#[cfg(not(target_arch = "x86_64"))]
const T0: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const T1: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const NTA: i32 = 0;

/// Hints that the 64-byte line holding `p` will be read soon, into the cache levels `HINT`
/// names. Any address is allowed: a prefetch never faults; a no-op where Rust has no stable
/// prefetch.
#[inline(always)]
fn prefetch<const HINT: i32, T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing visible and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether [`prefetch`] does anything on this target: where it does not, the tiles need no
/// separate prefetching instance.
pub(super) const PREFETCHES: bool = cfg!(target_arch = "x86_64");

/// [`prefetch`] into every cache level.
#[inline(always)]
pub(super) fn prefetch_at<T>(p: *const T) {
    prefetch::<T0, T>(p);
}

/// How decode asks for the K/V lines it streams from memory, read once each
/// ([`config::stream_hint`](super::config::stream_hint) chooses per CPU vendor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamHint {
    /// `prefetchnta`: into L1, bypassing what the outer caches keep.
    NonTemporal,
    /// `prefetcht1`: into the second-level cache and outward, not L1.
    SecondLevel,
}

/// [`prefetch`] for a line read once, with the CPU's [`StreamHint`].
#[inline(always)]
pub(super) fn prefetch_once<T>(p: *const T, hint: StreamHint) {
    match hint {
        StreamHint::NonTemporal => prefetch::<NTA, T>(p),
        StreamHint::SecondLevel => prefetch::<T1, T>(p),
    }
}

/// Runs `$body` with `$n` (a run-time count) as the constant `$c`, for each count a tile is
/// instantiated for; any other count takes the last one, `$last`.
macro_rules! with_count {
    ($n:expr, [$($v:literal),*], $last:literal, $c:ident => $body:expr) => {
        match $n {
            $($v => {
                const $c: usize = $v;
                $body
            })*
            _ => {
                const $c: usize = $last;
                $body
            }
        }
    };
}
pub(super) use with_count;

/// A phase that widens a block of K or V rows stored as `T` into an `f32` tile: columns
/// `col..col + width` of `rows` rows of `src` (row `j` at `src[j · stride..]`) into
/// `dst[j · width..][..width]`.
pub(super) struct WidenRows<'a, T> {
    pub src: &'a [T],
    pub stride: usize,
    pub rows: usize,
    pub col: usize,
    pub dst: &'a mut [f32],
    pub width: usize,
}

impl<T: KvType> Phase for WidenRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Widen>(self, simd: S) {
        let rows = self.dst.chunks_exact_mut(self.width).take(self.rows);
        for (j, dst) in rows.enumerate() {
            let row = self.src.get(j * self.stride..).unwrap_or(&[]);
            kv::widen_row(simd, row, self.col, dst);
        }
    }
}

/// Widens columns `col..col + width` of the `rows` rows of `src` (row `j` at
/// `src[j · stride..]`) into `tile` as a [`WidenRows`] phase, and returns them as rows of
/// `tile`. Out of line, the phase's arguments built here: in `kernel::run`'s frame, which
/// is under every phase's, they took the stack of a firmware call over 2 KiB at opt-level
/// z (`benches/NOTES.md` 31).
#[inline(never)]
pub(super) fn widen<'t, S: Widen, T: KvType>(
    simd: S, (src, stride): (&[T], usize), rows: usize, (col, width): (usize, usize),
    tile: &'t mut [f32],
) -> KvRows<'t> {
    let len = rows * width;
    let widen = WidenRows {
        src,
        stride,
        rows,
        col,
        dst: &mut tile[..len],
        width,
    };
    simd.enter(widen);
    KvRows {
        data: &tile[..len],
        stride: width,
        col0: 0,
        ahead: 0,
    }
}

/// The keys `0..cols` as `(first, count)` steps of `n` keys, then single keys for the rest:
/// the key loop of the tiles whose `n`-key kernel leaves a remainder of fewer than `n`.
pub(super) fn key_steps(cols: usize, n: usize) -> KeySteps {
    KeySteps { j: 0, cols, n }
}

/// The iterator of [`key_steps`]; `j ≤ cols` always.
pub(super) struct KeySteps {
    j: usize,
    cols: usize,
    n: usize,
}

impl Iterator for KeySteps {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        let left = self.cols - self.j;
        if left == 0 {
            return None;
        }
        let n = if left >= self.n { self.n } else { 1 };
        let j = self.j;
        self.j += n;
        Some((j, n))
    }
}
