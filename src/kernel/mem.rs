//! Memory helpers of the kernel: vector views and loads of `f32` slices, rows of a matrix
//! addressed by pointer and stride for the tiles, the strided copy, and cache hints.

use pulp::Simd;

/// Lane indices, to build masks of visible keys.
pub(super) const IOTA: [f32; 16] = [
    0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.,
];

/// `s` as whole vectors (a partial last vector is left out).
#[inline(always)]
pub(super) fn vectors_mut<S: Simd>(s: &mut [f32]) -> &mut [S::f32s] {
    S::as_mut_simd_f32s(s).0
}

/// Loads `s[..lanes]`, or fewer with zeros after.
#[inline(always)]
pub(super) fn load<S: Simd>(simd: S, s: &[f32]) -> S::f32s {
    match S::as_simd_f32s(s).0.first() {
        Some(&x) => x,
        None => simd.partial_load_f32s(s),
    }
}

/// Rows of a matrix for the unsafe tiles: row `x` starts at `ptr + x·stride`. What may be read
/// from them is stated by each tile's `# Safety`.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub ptr: *const f32,
    pub stride: usize,
}

impl Rows {
    /// Element `col` of row `x` (no access: a pointer the tile may read through).
    #[inline(always)]
    pub fn at(self, x: usize, col: usize) -> *const f32 {
        self.ptr.wrapping_add(x * self.stride + col)
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

/// `dst[i · stride] = src[i]`, one element at a time. Left to itself LLVM vectorises this
/// into scatters, which are slow on AMD and which the Bochs AVX-512 emulator used in CI
/// cannot execute (index in zmm16–31); the Q pack is done once per block of rows.
#[inline(always)]
pub(super) fn strided_copy(dst: &mut [f32], stride: usize, src: &[f32]) {
    for (d, &x) in dst.iter_mut().step_by(stride).zip(src) {
        *d = core::hint::black_box(x);
    }
}

// `_mm_prefetch`'s hints for `prefetch`; any value where there is no prefetch to take them.
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{_MM_HINT_NTA as NTA, _MM_HINT_T0 as T0};
#[cfg(not(target_arch = "x86_64"))]
const T0: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const NTA: i32 = 0;

/// Hints that the 64-byte line holding `p` will be read soon, into the cache levels `HINT`
/// names. Any address is allowed: a prefetch never faults; a no-op where Rust has no stable
/// prefetch.
#[inline(always)]
fn prefetch<const HINT: i32>(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing visible and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] into every cache level.
#[inline(always)]
pub(super) fn prefetch_at(p: *const f32) {
    prefetch::<T0>(p);
}

/// [`prefetch`] for a line read once: into L1, bypassing what the outer caches keep
/// (`prefetchnta`), for the K/V lines decode streams from memory.
#[inline(always)]
pub(super) fn prefetch_once(p: *const f32) {
    prefetch::<NTA>(p);
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
