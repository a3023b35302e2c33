//! Run-time dispatch: which instance of the kernel runs, decided in one place.
//!
//! The kernel is written once over [`pulp::Simd`]; [`Isa`] names the instances compiled for
//! real hardware, [`Emulated`] the portable instances of 4, 8 and 16 lanes that let the logic
//! of every vector width be tested on any machine, and [`Level`] is either (or "the best this
//! CPU has"). Every entry point, whatever it computes, reaches the kernel through
//! `Level::run`, the one `match` over instances.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::kernel::{self, Tiles, Widen};
use crate::kv::{BlockQ8_0, KvKind, KvType, Typed, bf16, f16};
use crate::{Error, Params};

pub(crate) mod arch;

/// An instruction set the kernel is compiled for.
///
/// [`Isa::detect`] picks the best one this CPU (and OS) can run; [`Isa::attention`] runs the
/// kernel at a level of your choice, so tests and benchmarks can force each one.
/// The discriminants are stable (the C ABI uses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Isa {
    /// Plain `f32` code, one lane: every target (Cortex-M, RISC-V, wasm, old x86).
    Scalar = 0,
    /// x86-64 AVX2 + FMA (pulp `V3`), 8 lanes.
    Avx2 = 1,
    /// x86-64 AVX-512 F/BW/CD/DQ/VL (pulp `V4`), 16 lanes; needs the `x86-v4` feature.
    Avx512 = 2,
    /// aarch64 NEON, 4 lanes.
    Neon = 3,
}

impl Isa {
    /// Every level, in order of discriminant.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The best level usable here, detected once and cached.
    ///
    /// On x86 this checks both the CPU (CPUID) and that the OS saves the wide registers
    /// (OSXSAVE and XCR0), so firmware or kernels that never enabled AVX state get `Scalar`
    /// rather than a fault.
    pub fn detect() -> Isa {
        static DETECTED: AtomicU8 = AtomicU8::new(u8::MAX);
        match DETECTED.load(Ordering::Relaxed) {
            u8::MAX => {
                let best = Isa::available().last().unwrap_or(Isa::Scalar);
                DETECTED.store(best as u8, Ordering::Relaxed);
                best
            }
            n => Isa::from_u8(n).unwrap_or(Isa::Scalar),
        }
    }

    /// Every level usable here, from the slowest (`Scalar`) to the best.
    pub fn available() -> impl Iterator<Item = Isa> {
        [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.is_available())
    }

    /// Whether this level is compiled in and this CPU and OS can run it.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => arch::v3().is_some(),
            Isa::Avx512 => arch::v4().is_some(),
            Isa::Neon => arch::neon().is_some(),
        }
    }

    /// The level with this discriminant, if any.
    pub const fn from_u8(n: u8) -> Option<Isa> {
        match n {
            0 => Some(Isa::Scalar),
            1 => Some(Isa::Avx2),
            2 => Some(Isa::Avx512),
            3 => Some(Isa::Neon),
            _ => None,
        }
    }

    /// A short lowercase name: `scalar`, `avx2`, `avx512`, `neon`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Number of `f32` lanes of this level's vectors.
    pub const fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        }
    }

    /// Runs [`attention`](crate::attention) at this level.
    ///
    /// Returns [`Error::Unsupported`] if this level is not [available](Isa::is_available),
    /// and otherwise exactly what [`attention`](crate::attention) returns.
    pub fn attention<K: KvType, V: KvType>(
        self, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        Level::Isa(self).attention(params, q, k, v, out, lse)
    }
}

impl core::fmt::Display for Isa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Portable instances of the kernel with 4, 8 or 16 lanes (pulp's `Scalar128b`, `Scalar256b`,
/// `Scalar512b`): plain Rust that runs anywhere and follows the same code paths as NEON, AVX2
/// and AVX-512. They exist so those widths are tested (and fuzzed, and run under Miri) on
/// every machine; they are slow and never chosen by [`Isa::detect`]. Compiled only with the
/// `emulated` feature (the crate's own tests turn it on), so no release build links them.
#[cfg(feature = "emulated")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Emulated {
    /// 4 lanes, the width of NEON.
    Lanes4 = 4,
    /// 8 lanes, the width of AVX2.
    Lanes8 = 8,
    /// 16 lanes, the width of AVX-512.
    Lanes16 = 16,
}

#[cfg(feature = "emulated")]
impl Emulated {
    /// All three widths.
    pub const ALL: [Emulated; 3] = [Emulated::Lanes4, Emulated::Lanes8, Emulated::Lanes16];

    /// Number of `f32` lanes (the discriminant).
    pub const fn lanes(self) -> usize {
        self as usize
    }

    /// Runs [`attention`](crate::attention) on this portable instance; same contract.
    pub fn attention<K: KvType, V: KvType>(
        self, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        Level::Emulated(self).attention(params, q, k, v, out, lse)
    }

    fn run<K: KvType, V: KvType>(self, job: kernel::Job<'_, '_, K, V>) {
        match self {
            Emulated::Lanes4 => kernel::run(pulp::Scalar128b, job),
            Emulated::Lanes8 => kernel::run(pulp::Scalar256b, job),
            Emulated::Lanes16 => kernel::run(pulp::Scalar512b, job),
        }
    }
}

/// Which instance of the kernel a call runs on: the best of this CPU, a hardware level, or a
/// portable emulated width. Every entry point (the one-shot call, split-KV, streaming,
/// threads, the C ABI) takes its instance as a `Level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Level {
    /// The best level of this CPU, [`Isa::detect`].
    #[default]
    Detect,
    /// A hardware level; [`Error::Unsupported`] if it is not available.
    Isa(Isa),
    /// A portable emulated width (for tests; feature `emulated`).
    #[cfg(feature = "emulated")]
    Emulated(Emulated),
}

impl From<Isa> for Level {
    fn from(isa: Isa) -> Level {
        Level::Isa(isa)
    }
}

#[cfg(feature = "emulated")]
impl From<Emulated> for Level {
    fn from(e: Emulated) -> Level {
        Level::Emulated(e)
    }
}

impl Level {
    /// Runs [`attention`](crate::attention) on this level; same contract and working memory.
    pub fn attention<K: KvType, V: KvType>(
        self, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        // Validated before the stack workspace exists (and again, cheaply, inside).
        params.validate(q, k, v, out, lse.as_deref())?;
        on_stack_workspace::<K, V, _>(params, |ws| {
            self.attention_in(ws, params, q, k, v, out, lse)
        })
    }

    /// Runs [`attention_in`](crate::attention_in) on this level: the same as
    /// [`Level::attention`], in the caller's working memory.
    #[allow(clippy::too_many_arguments)] // `attention`'s arguments and the workspace
    pub fn attention_in<K: KvType, V: KvType>(
        self, workspace: &mut [f32], params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        self.attention_rows(workspace, params, q, k, v, out, lse, params.shape.q_len)
    }

    /// [`Level::attention_in`] with `lse_stride` elements between the heads of `lse` (at
    /// least `q_len`): a sequence of a ragged batch writes its rows of the batch's `lse`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_rows<K: KvType, V: KvType>(
        self, workspace: &mut [f32], params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        lse: Option<&mut [f32]>, lse_stride: usize,
    ) -> Result<(), Error> {
        params.validate(q, k, v, out, lse.as_deref())?;
        let shape = params.shape;
        if let Some(l) = lse.as_deref() {
            params.check_lse_rows(l, lse_stride)?;
        }
        let kinds = (K::KIND, V::KIND);
        let Some(tiles) = Tiles::choose(&shape, kinds, workspace.len()) else {
            return Err(Error::WorkspaceTooSmall {
                needed: Tiles::least(&shape, kinds).len(),
                len: workspace.len(),
            });
        };
        self.run(kernel::Job {
            params,
            q,
            k,
            v,
            out,
            lse,
            lse_stride,
            tiles,
            workspace,
        })
    }

    /// [`Error::Unsupported`] if this is a hardware level this CPU or build lacks.
    #[cfg(feature = "parallel")]
    pub(crate) fn check(self) -> Result<(), Error> {
        match self {
            Level::Isa(isa) if !isa.is_available() => Err(Error::Unsupported(isa)),
            _ => Ok(()),
        }
    }

    /// Runs `job` on this level's instance: the one place that maps a level to a
    /// [`pulp::Simd`] type. The job's inputs must already be validated. Called only through
    /// the functions of [`typed_runs!`], one per K/V type pair.
    fn run_on<K: KvType, V: KvType>(self, job: kernel::Job<'_, '_, K, V>) -> Result<(), Error> {
        let missing = |isa| Error::Unsupported(isa);
        match self {
            Level::Detect => return Level::Isa(Isa::detect()).run_on(job),
            Level::Isa(Isa::Scalar) => kernel::run(pulp::Scalar::new(), job),
            Level::Isa(Isa::Avx2) => arch::run(arch::v3().ok_or(missing(Isa::Avx2))?, job),
            Level::Isa(Isa::Avx512) => arch::run(arch::v4().ok_or(missing(Isa::Avx512))?, job),
            Level::Isa(Isa::Neon) => arch::run(arch::neon().ok_or(missing(Isa::Neon))?, job),
            #[cfg(feature = "emulated")]
            Level::Emulated(e) => e.run(job),
        }
        Ok(())
    }
}

/// The kernel's instances for each K/V type pair as functions that are not generic, so they
/// are compiled once, here, rather than in every crate that calls a generic entry point (a
/// test binary or a user's crate would otherwise compile every level of the kernel again for
/// each pair it uses). `Level::run` picks one from the pair's types, known at compile time,
/// so a program links only the pairs it calls.
macro_rules! typed_runs {
    ($($k:ident: $kt:ty, $v:ident: $vt:ty => $name:ident;)*) => {
        impl Level {
            /// Runs `job` through the instance of its K/V pair.
            #[inline(always)]
            fn run<K: KvType, V: KvType>(self, job: kernel::Job<'_, '_, K, V>) -> Result<(), Error> {
                match (K::typed(job.k), V::typed(job.v)) {
                    $((Typed::$k(k), Typed::$v(v)) => $name(self, job.with_kv(k, v)),)*
                }
            }
        }
        $(
            #[inline(never)]
            fn $name(level: Level, job: kernel::Job<'_, '_, $kt, $vt>) -> Result<(), Error> {
                level.run_on(job)
            }
        )*
    };
}

typed_runs! {
    F32: f32, F32: f32 => run_f32_f32;
    F32: f32, F16: f16 => run_f32_f16;
    F32: f32, Bf16: bf16 => run_f32_bf16;
    F32: f32, Q8_0: BlockQ8_0 => run_f32_q8_0;
    F16: f16, F32: f32 => run_f16_f32;
    F16: f16, F16: f16 => run_f16_f16;
    F16: f16, Bf16: bf16 => run_f16_bf16;
    F16: f16, Q8_0: BlockQ8_0 => run_f16_q8_0;
    Bf16: bf16, F32: f32 => run_bf16_f32;
    Bf16: bf16, F16: f16 => run_bf16_f16;
    Bf16: bf16, Bf16: bf16 => run_bf16_bf16;
    Bf16: bf16, Q8_0: BlockQ8_0 => run_bf16_q8_0;
    Q8_0: BlockQ8_0, F32: f32 => run_q8_0_f32;
    Q8_0: BlockQ8_0, F16: f16 => run_q8_0_f16;
    Q8_0: BlockQ8_0, Bf16: bf16 => run_q8_0_bf16;
    Q8_0: BlockQ8_0, Q8_0: BlockQ8_0 => run_q8_0_q8_0;
}

/// `f32`s of the working memory that calls without a workspace keep on the stack with `f32`
/// K and V: the full-size tiles with the `stack-workspace` feature (hosted builds; about
/// 60 KiB), and otherwise the least tiles (58, 232 bytes: firmware stacks are small), one
/// row at a time (correct, slower; pass a workspace for speed).
pub(crate) const STACK_WORKSPACE: usize = if cfg!(feature = "stack-workspace") {
    Tiles::FULL.len()
} else {
    Tiles::LEAST.len()
};

/// [`STACK_WORKSPACE`] when K or V is narrower than `f32`: the full-size tiles and the tile
/// their values are widened into (about 84 KiB), or as for `f32` (the least tiles, which
/// read K and V as stored, widen nothing).
pub(crate) const STACK_WORKSPACE_NARROW: usize = if cfg!(feature = "stack-workspace") {
    Tiles::FULL_NARROW.len()
} else {
    STACK_WORKSPACE
};

/// Runs `f` on a stack workspace for K and V stored as `K` and `V` ([`STACK_WORKSPACE`] or
/// [`STACK_WORKSPACE_NARROW`] floats), of which only what `params` can use is initialised.
pub(crate) fn on_stack_workspace<K: KvType, V: KvType, R>(
    params: &Params, f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let kinds = (K::KIND, V::KIND);
    let used = kernel::workspace_len(params, kinds);
    match kinds {
        (KvKind::F32, KvKind::F32) => on_stack::<STACK_WORKSPACE, R>(used, f),
        _ => on_stack::<STACK_WORKSPACE_NARROW, R>(used, f),
    }
}

/// Runs `f` on `N` floats of stack, of which the first `used` are initialised and given.
/// Not inlined: the frame that holds the workspace exists only once the inputs are
/// validated.
#[inline(never)]
fn on_stack<const N: usize, R>(used: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = [MaybeUninit::<f32>::uninit(); N];
    let used = &mut buf[..used.min(N)];
    for x in used.iter_mut() {
        x.write(0.0);
    }
    // SAFETY: every element of `used` was just initialised, and `MaybeUninit<f32>` has the
    // layout of `f32`.
    let used = unsafe { &mut *(used as *mut [MaybeUninit<f32>] as *mut [f32]) };
    f(used)
}

/// CPUs as the kernel's tuning tells them apart (`kernel::config` decides per kind, and
/// `benches/NOTES.md` says which CPU each decision was measured on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cpu {
    /// Any CPU not named below, and every CPU that is not x86-64.
    Other = 0,
    /// Vendor `GenuineIntel`.
    Intel = 1,
    /// Vendor `AuthenticAMD`, family 0x19 (Zen 3, Zen 4) or earlier.
    AmdBeforeZen5 = 2,
    /// Vendor `AuthenticAMD`, family 0x1A (Zen 5) or later.
    AmdZen5On = 3,
}

/// This [`Cpu`], read once and cached: CPUID in a virtual machine is an exit to the
/// hypervisor.
pub(crate) fn cpu() -> Cpu {
    static CPU: AtomicU8 = AtomicU8::new(u8::MAX);
    let kinds = [Cpu::Other, Cpu::Intel, Cpu::AmdBeforeZen5, Cpu::AmdZen5On];
    match CPU.load(Ordering::Relaxed) {
        u8::MAX => {
            let found = arch::cpu();
            CPU.store(found as u8, Ordering::Relaxed);
            found
        }
        n => kinds.get(n as usize).copied().unwrap_or(Cpu::Other),
    }
}
