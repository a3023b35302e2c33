//! Per-architecture detection. Each function returns the SIMD token only when the level is
//! compiled in and usable; the `run_*` functions exist so the other architectures compile.

#[allow(unused_imports)]
use super::{Cpu, KvType, Widen, kernel};

/// Runs `job` on a hardware instance (`kernel::run` for the levels compiled here).
#[allow(dead_code)]
pub fn run<S: Widen, K: KvType, V: KvType>(simd: S, job: kernel::Job<'_, '_, K, V>) {
    kernel::run(simd, job)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__cpuid, _xgetbv};

    /// XCR0 bits 1 (SSE) and 2 (AVX): the OS saves the YMM registers.
    pub const YMM_STATE: u64 = 0b0000_0110;
    /// Also bits 5 (opmask), 6 (ZMM_Hi256) and 7 (Hi16_ZMM): the OS saves the ZMM state.
    #[cfg_attr(not(feature = "x86-v4"), allow(dead_code))]
    pub const ZMM_STATE: u64 = 0b1110_0110;

    /// Whether the OS has enabled saving of every state component in `bits`.
    ///
    /// pulp without `std` reads CPUID only; CPUID says what the CPU can do, XCR0 what the
    /// OS lets it do. An AVX instruction with the state disabled faults.
    pub fn os_saves(bits: u64) -> bool {
        if cfg!(miri) {
            return false;
        }
        #[allow(unused_unsafe)]
        // SAFETY: CPUID leaf 1 exists on every x86-64 CPU.
        let leaf1 = unsafe { __cpuid(1) };
        const OSXSAVE: u32 = 1 << 27;
        if leaf1.ecx & OSXSAVE == 0 {
            return false;
        }
        // SAFETY: OSXSAVE set means the OS enabled XGETBV (and the CPU has XSAVE).
        let xcr0 = unsafe { read_xcr0() };
        xcr0 & bits == bits
    }

    /// CPUID leaf 1, ECX bit 29: the half-precision conversions (`vcvtph2ps`).
    pub fn has_f16c() -> bool {
        #[allow(unused_unsafe)]
        // SAFETY: CPUID leaf 1 exists on every x86-64 CPU.
        let leaf1 = unsafe { __cpuid(1) };
        leaf1.ecx & (1 << 29) != 0
    }

    #[target_feature(enable = "xsave")]
    unsafe fn read_xcr0() -> u64 {
        // SAFETY: the caller checked OSXSAVE, so XGETBV with ECX = 0 is valid.
        unsafe { _xgetbv(0) }
    }
}

/// `detect()`, run once and then read from `cell` (`u8::MAX`: not yet run). Every call
/// asks which level it may run: CPUID and XGETBV in a virtual machine are exits to the
/// hypervisor, microseconds each (4% of a 0.2 ms decode call on a KVM guest, AMD Zen 4),
/// and pulp without `std` runs CPUID on every `try_new`.
#[cfg(target_arch = "x86_64")]
pub fn once(cell: &super::AtomicU8, detect: impl FnOnce() -> bool) -> bool {
    use super::Ordering::Relaxed;
    match cell.load(Relaxed) {
        u8::MAX => {
            let found = detect();
            cell.store(found as u8, Relaxed);
            found
        }
        n => n == 1,
    }
}

#[cfg(target_arch = "x86_64")]
pub fn v3() -> Option<pulp::x86::V3> {
    static USABLE: super::AtomicU8 = super::AtomicU8::new(u8::MAX);
    // The kernel's widening loads of f16 use F16C, which every AVX2 CPU has; checked all
    // the same, since the V3 token does not promise it.
    let usable = || {
        !cfg!(miri)
            && pulp::x86::V3::try_new().is_some()
            && x86::os_saves(x86::YMM_STATE)
            && x86::has_f16c()
    };
    // SAFETY: `try_new` found V3's features on this CPU (and the OS saves their state):
    // the same CPU, since a process does not change CPUs' instruction sets.
    once(&USABLE, usable).then(|| unsafe { pulp::x86::V3::new_unchecked() })
}

#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
pub fn v4() -> Option<pulp::x86::V4> {
    static USABLE: super::AtomicU8 = super::AtomicU8::new(u8::MAX);
    let usable =
        || !cfg!(miri) && pulp::x86::V4::try_new().is_some() && x86::os_saves(x86::ZMM_STATE);
    // SAFETY: as in `v3`, for V4's features.
    once(&USABLE, usable).then(|| unsafe { pulp::x86::V4::new_unchecked() })
}

#[cfg(target_arch = "aarch64")]
pub fn neon() -> Option<pulp::aarch64::Neon> {
    if cfg!(target_feature = "neon") {
        // SAFETY: NEON is enabled at compile time, so every CPU this binary runs on has it.
        Some(unsafe { pulp::aarch64::Neon::new_unchecked() })
    } else {
        None
    }
}
/// The CPU as the kernel's tuning tells CPUs apart, from CPUID leaf 0's vendor string and
/// leaf 1's family (`Other` under Miri, which has no CPUID).
#[cfg(target_arch = "x86_64")]
pub fn cpu() -> Cpu {
    if cfg!(miri) {
        return Cpu::Other;
    }
    const INTEL: (u32, u32, u32) = (0x756e_6547, 0x4965_6e69, 0x6c65_746e); // "Genu" "ineI" "ntel"
    const AMD: (u32, u32, u32) = (0x6874_7541, 0x6974_6e65, 0x444d_4163); // "Auth" "enti" "cAMD"
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaves 0 and 1 exist on every x86-64 CPU.
    let (leaf0, leaf1) = unsafe {
        (
            core::arch::x86_64::__cpuid(0),
            core::arch::x86_64::__cpuid(1),
        )
    };
    // The family: the base field, plus the extended field where the base is 0xF.
    let base = (leaf1.eax >> 8) & 0xf;
    let family = match base {
        0xf => base + ((leaf1.eax >> 20) & 0xff),
        _ => base,
    };
    match (leaf0.ebx, leaf0.edx, leaf0.ecx) {
        INTEL => Cpu::Intel,
        AMD if family >= 0x1a => Cpu::AmdZen5On,
        AMD => Cpu::AmdBeforeZen5,
        _ => Cpu::Other,
    }
}
#[cfg(not(target_arch = "x86_64"))]
pub fn cpu() -> Cpu {
    Cpu::Other
}

#[cfg(not(target_arch = "x86_64"))]
pub use self::v_absent as v3;
#[cfg(not(all(target_arch = "x86_64", feature = "x86-v4")))]
pub use self::v_absent as v4;
#[cfg(not(target_arch = "aarch64"))]
pub use self::v_absent as neon;

/// A level that is not compiled for this target: never available, never run.
#[allow(dead_code)]
pub fn v_absent() -> Option<pulp::Scalar> {
    None
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64", not(miri)))]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::Cpu;

    /// The CPU the kernel tunes for is the one the OS reports. Not under a user-mode
    /// emulator (CI's `qemu-x86_64 -cpu Nehalem` step), whose CPUID is its CPU model's
    /// (GenuineIntel) while /proc/cpuinfo is the host's.
    #[test]
    fn cpu_matches_proc_cpuinfo() {
        if std::env::var_os("QKV_UNDER_EMULATOR").is_some() {
            return;
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            let line = info.lines().find(|l| l.starts_with(name))?;
            Some(line.split(':').nth(1)?.trim().to_string())
        };
        let (Some(vendor), Some(family)) = (field("vendor_id"), field("cpu family")) else {
            return; // no vendor or family line (an emulator): nothing to compare
        };
        let family: u32 = family.parse().expect("a decimal family");
        let want = match vendor.as_str() {
            "GenuineIntel" => Cpu::Intel,
            "AuthenticAMD" if family >= 26 => Cpu::AmdZen5On,
            "AuthenticAMD" => Cpu::AmdBeforeZen5,
            _ => Cpu::Other,
        };
        assert_eq!(crate::dispatch::cpu(), want, "{vendor}, family {family}");
    }
}
