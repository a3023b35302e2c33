//! The thin per-level part of the kernel: how each instance widens 16- and 8-bit K/V values
//! to `f32` lanes, and how it enters a phase with its target features. Everything else is
//! written once over [`pulp::Simd`].
//!
//! The x86 levels use F16C (`vcvtph2ps`) and sign extension (`vpmovsxbd`), NEON `fcvtl`,
//! shifts and `sxtl`; the scalar level and the emulated widths decode lane by lane with
//! [`half`].

use half::{bf16, f16};
use pulp::Simd;

/// A phase of the kernel: a unit of work entered with the level's target features, and the
/// unit the stack holds one frame of at a time.
pub(crate) trait Phase {
    /// What the phase returns.
    type Output;
    /// Runs the phase on `simd`.
    fn run<S: Widen>(self, simd: S) -> Self::Output;
}

/// An instance of the kernel: [`Simd`] and the widening loads of the K/V types.
///
/// # Safety
/// `enter` runs the phase with target features that the token proves the CPU has, and that
/// include those the widening loads use.
pub(crate) unsafe trait Widen: Simd {
    /// The `F32_LANES` `f16` values at `p`, as `f32`.
    ///
    /// # Safety
    /// `F32_LANES` `u16`s at `p` are readable.
    unsafe fn widen_f16(self, p: *const u16) -> Self::f32s;
    /// The `F32_LANES` `bf16` values at `p`, as `f32`.
    ///
    /// # Safety
    /// As [`Widen::widen_f16`].
    unsafe fn widen_bf16(self, p: *const u16) -> Self::f32s;
    /// The `F32_LANES` `i8` values at `p`, as `f32`.
    ///
    /// # Safety
    /// `F32_LANES` bytes at `p` are readable.
    unsafe fn widen_i8(self, p: *const i8) -> Self::f32s;
    /// The `f16` with these bits, as `f32` in every lane (a q8_0 block's scale).
    fn splat_f16(self, bits: u16) -> Self::f32s;
    /// The sums of the lanes of four vectors, reduced together: the decode dot tile's
    /// scores, where one reduction per score cost a sixth of an in-cache decode (Zen 4).
    fn sum4(self, v: [Self::f32s; 4]) -> [f32; 4];
    /// Runs `phase` with this level's target features.
    fn enter<P: Phase>(self, phase: P) -> P::Output;
}

/// Builds a vector lane by lane (the levels without widening instructions of their own).
#[inline(always)]
fn lanes<S: Simd>(f: impl Fn(usize) -> f32) -> S::f32s {
    let mut v: S::f32s = bytemuck::Zeroable::zeroed();
    let flat: &mut [f32] = bytemuck::cast_slice_mut(core::slice::from_mut(&mut v));
    for (i, x) in flat.iter_mut().enumerate() {
        *x = f(i);
    }
    v
}

/// [`Widen`] for a level that decodes lane by lane and has no target features to enable
/// (scalar, emulated).
macro_rules! widen_by_lanes {
    ($ty:ty) => {
        // SAFETY: `enter` enables nothing; the loads read exactly the lanes they are given.
        unsafe impl Widen for $ty {
            #[inline(always)]
            unsafe fn widen_f16(self, p: *const u16) -> Self::f32s {
                // SAFETY: lane i < F32_LANES, readable by the caller's guarantee.
                lanes::<Self>(|i| f16::from_bits(unsafe { p.add(i).read_unaligned() }).to_f32())
            }
            #[inline(always)]
            unsafe fn widen_bf16(self, p: *const u16) -> Self::f32s {
                // SAFETY: as above.
                lanes::<Self>(|i| bf16::from_bits(unsafe { p.add(i).read_unaligned() }).to_f32())
            }
            #[inline(always)]
            unsafe fn widen_i8(self, p: *const i8) -> Self::f32s {
                // SAFETY: as above.
                lanes::<Self>(|i| unsafe { *p.add(i) } as f32)
            }
            #[inline(always)]
            fn splat_f16(self, bits: u16) -> Self::f32s {
                self.splat_f32s(f16::from_bits(bits).to_f32())
            }
            #[inline(always)]
            fn sum4(self, v: [Self::f32s; 4]) -> [f32; 4] {
                v.map(|x| self.reduce_sum_f32s(x))
            }
            #[inline(always)]
            fn enter<P: Phase>(self, phase: P) -> P::Output {
                phase.run(self)
            }
        }
    };
}

widen_by_lanes!(pulp::Scalar);
#[cfg(feature = "emulated")]
widen_by_lanes!(pulp::Scalar128b);
#[cfg(feature = "emulated")]
widen_by_lanes!(pulp::Scalar256b);
#[cfg(feature = "emulated")]
widen_by_lanes!(pulp::Scalar512b);

/// [`Widen`] for NEON: `fcvtl` for f16 (through `asm!`: the `float16x4_t` intrinsics are
/// not stable), `ushll #16` for bf16, `sxtl` twice and `scvtf` for i8.
#[cfg(target_arch = "aarch64")]
mod neon {
    use core::arch::aarch64::*;

    use super::*;
    use pulp::aarch64::Neon;

    // SAFETY: `enter` enables NEON, which the token proves; the loads read exactly 4 lanes.
    unsafe impl Widen for Neon {
        #[inline(always)]
        unsafe fn widen_f16(self, p: *const u16) -> Self::f32s {
            // SAFETY: 4 u16 readable (the caller's guarantee); NEON is enabled (`enter`).
            let half = unsafe { vld1_u16(p) };
            let wide: float32x4_t;
            // SAFETY: `fcvtl` widens the 4 halves of a register; it touches nothing else.
            unsafe {
                core::arch::asm!(
                    "fcvtl {wide:v}.4s, {half:v}.4h",
                    wide = lateout(vreg) wide,
                    half = in(vreg) half,
                    options(pure, nomem, nostack, preserves_flags)
                )
            };
            pulp::cast(wide)
        }
        #[inline(always)]
        unsafe fn widen_bf16(self, p: *const u16) -> Self::f32s {
            // SAFETY: 4 u16 readable; NEON is enabled.
            pulp::cast(unsafe { vshll_n_u16::<16>(vld1_u16(p)) })
        }
        #[inline(always)]
        unsafe fn widen_i8(self, p: *const i8) -> Self::f32s {
            // SAFETY: 4 bytes readable, read as one unaligned u32; NEON is enabled.
            pulp::cast(unsafe {
                let bytes = vreinterpret_s8_u32(vdup_n_u32((p as *const u32).read_unaligned()));
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(bytes))))
            })
        }
        #[inline(always)]
        fn splat_f16(self, bits: u16) -> Self::f32s {
            self.splat_f32s(f16::from_bits(bits).to_f32())
        }
        #[inline(always)]
        fn sum4(self, v: [Self::f32s; 4]) -> [f32; 4] {
            let v: [float32x4_t; 4] = v.map(pulp::cast);
            // SAFETY: NEON is enabled (`enter`); pairwise adds touch no memory.
            pulp::cast(unsafe { vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3])) })
        }
        #[inline(always)]
        fn enter<P: Phase>(self, phase: P) -> P::Output {
            #[target_feature(enable = "neon")]
            #[inline]
            unsafe fn imp<P: Phase>(simd: Neon, phase: P) -> P::Output {
                phase.run(simd)
            }
            // SAFETY: the token proves NEON.
            unsafe { imp(self, phase) }
        }
    }
}

/// [`Widen`] for an x86 level: F16C's `vcvtph2ps` for f16, a zero extension shifted left 16
/// for bf16, a sign extension and `vcvtdq2ps` for i8, at the level's width (`$load_half`
/// loads the 16-bit lanes, `$load_bytes` the 8-bit ones).
#[cfg(target_arch = "x86_64")]
macro_rules! widen_x86 {
    (
        $ty:ty, $features:literal,
        $load_half:ident, $load_bytes:ident, $cvtph:ident, $cvtepu16:ident, $slli:ident,
        $cvtepi8:ident, $cvtepi32:ident, $set1_16:ident, $sum4:ident
    ) => {
        // SAFETY: `enter` enables the level's features and F16C, which `dispatch` checks
        // before it makes the token for the kernel (AVX-512F has F16C's conversions); the
        // loads read exactly the lanes of the level.
        unsafe impl Widen for $ty {
            #[inline(always)]
            unsafe fn widen_f16(self, p: *const u16) -> Self::f32s {
                // SAFETY: the lanes are readable; F16C is enabled in every phase (`enter`).
                pulp::cast(unsafe { $cvtph($load_half(p as *const _)) })
            }
            #[inline(always)]
            unsafe fn widen_bf16(self, p: *const u16) -> Self::f32s {
                // SAFETY: the lanes are readable; the level's features are enabled.
                pulp::cast(unsafe { $slli::<16>($cvtepu16($load_half(p as *const _))) })
            }
            #[inline(always)]
            unsafe fn widen_i8(self, p: *const i8) -> Self::f32s {
                // SAFETY: the lanes are readable; the level's features are enabled.
                pulp::cast(unsafe { $cvtepi32($cvtepi8($load_bytes(p as *const _))) })
            }
            #[inline(always)]
            fn splat_f16(self, bits: u16) -> Self::f32s {
                // SAFETY: F16C is enabled in every phase (`enter`); no memory is read.
                pulp::cast(unsafe { $cvtph($set1_16(bits as i16)) })
            }
            #[inline(always)]
            fn sum4(self, v: [Self::f32s; 4]) -> [f32; 4] {
                // SAFETY: the level's features are enabled in every phase (`enter`).
                unsafe { $sum4(v.map(pulp::cast)) }
            }
            #[inline(always)]
            fn enter<P: Phase>(self, phase: P) -> P::Output {
                #[target_feature(enable = $features)]
                #[inline]
                unsafe fn imp<P: Phase>(simd: $ty, phase: P) -> P::Output {
                    phase.run(simd)
                }
                // SAFETY: the token proves the level's features; F16C is checked with it.
                unsafe { imp(self, phase) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::*;

    widen_x86!(
        pulp::x86::V3,
        "sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c",
        _mm_loadu_si128,
        _mm_loadl_epi64,
        _mm256_cvtph_ps,
        _mm256_cvtepu16_epi32,
        _mm256_slli_epi32,
        _mm256_cvtepi8_epi32,
        _mm256_cvtepi32_ps,
        _mm_set1_epi16,
        sum4_avx2
    );
    #[cfg(feature = "x86-v4")]
    widen_x86!(
        pulp::x86::V4,
        "sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c,avx512f,avx512bw,avx512cd,avx512dq,avx512vl",
        _mm256_loadu_si256,
        _mm_loadu_si128,
        _mm512_cvtph_ps,
        _mm512_cvtepu16_epi32,
        _mm512_slli_epi32,
        _mm512_cvtepi8_epi32,
        _mm512_cvtepi32_ps,
        _mm256_set1_epi16,
        sum4_avx512
    );

    /// [`Widen::sum4`] on AVX2: three horizontal adds leave each vector's halves side by
    /// side, one add of the halves finishes them.
    ///
    /// # Safety
    /// AVX is enabled.
    #[inline(always)]
    unsafe fn sum4_avx2(v: [__m256; 4]) -> [f32; 4] {
        // SAFETY: AVX is enabled (the caller's guarantee); no memory is touched.
        unsafe {
            let pairs = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
            // Lanes 0..4 and 4..8: the four sums of the low and the high halves.
            let sums = _mm_add_ps(
                _mm256_castps256_ps128(pairs),
                _mm256_extractf128_ps::<1>(pairs),
            );
            pulp::cast(sums)
        }
    }

    /// [`Widen::sum4`] on AVX-512: two rounds of 128-bit block shuffles leave vector `i`'s
    /// four partial sums in block `i`, two in-block rounds finish them, and one permute
    /// gathers the blocks' first lanes.
    ///
    /// # Safety
    /// AVX-512F is enabled.
    #[cfg(feature = "x86-v4")]
    #[inline(always)]
    unsafe fn sum4_avx512(v: [__m512; 4]) -> [f32; 4] {
        // SAFETY: AVX-512F is enabled (the caller's guarantee); no memory is touched.
        unsafe {
            // Blocks (0 + 2, 1 + 3) of v[0], then of v[1]; the same of v[2] and v[3]. (Written
            // out: a closure would not inherit the level's target features.)
            let ab = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(v[0], v[1]),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(v[0], v[1]),
            );
            let cd = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(v[2], v[3]),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(v[2], v[3]),
            );
            // Block i: vector i's four partial sums.
            let blocks = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd),
            );
            let x = _mm512_add_ps(blocks, _mm512_permute_ps::<0b01_00_11_10>(blocks));
            let x = _mm512_add_ps(x, _mm512_permute_ps::<0b10_11_00_01>(x));
            let firsts = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
            pulp::cast(_mm512_castps512_ps128(_mm512_permutexvar_ps(firsts, x)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Widen::sum4`] on a level: vector `i` holds `100·i + lane`, whose sums are exact.
    struct Sum4Exact;

    impl Phase for Sum4Exact {
        type Output = bool;

        fn run<S: Widen>(self, simd: S) -> bool {
            let value = |i: usize, lane: usize| (100 * i + lane) as f32;
            let v = core::array::from_fn(|i| lanes::<S>(|lane| value(i, lane)));
            let want: [f32; 4] =
                core::array::from_fn(|i| (0..S::F32_LANES).map(|lane| value(i, lane)).sum());
            simd.sum4(v) == want
        }
    }

    #[test]
    fn sum4_sums_each_vectors_lanes_on_every_level() {
        assert!(pulp::Scalar::new().enter(Sum4Exact));
        #[cfg(feature = "emulated")]
        {
            assert!(pulp::Scalar128b.enter(Sum4Exact));
            assert!(pulp::Scalar256b.enter(Sum4Exact));
            assert!(pulp::Scalar512b.enter(Sum4Exact));
        }
        if let Some(simd) = crate::dispatch::arch::v3() {
            assert!(simd.enter(Sum4Exact));
        }
        if let Some(simd) = crate::dispatch::arch::v4() {
            assert!(simd.enter(Sum4Exact));
        }
        if let Some(simd) = crate::dispatch::arch::neon() {
            assert!(simd.enter(Sum4Exact));
        }
    }
}
