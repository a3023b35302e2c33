//! Run-time dispatch: what `detect` picks, what `available` lists, and forcing a level.

use qkv::Isa;

/// The name `../shared/tools/cross-check` uses for a level.
fn cross_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "scalar",
        Isa::Avx2 => "x86-v3",
        Isa::Avx512 => "x86-v4",
        Isa::Neon => "neon",
    }
}

/// Under cross-check (and CI), `CROSS_EXPECT_ARCH` names the level dispatch must pick, so a
/// step cannot pass by silently falling back to scalar.
#[test]
fn detected_level_is_the_expected_one() {
    let got = cross_name(Isa::detect());
    println!("detected: {got} ({})", Isa::detect());
    if let Ok(want) = std::env::var("CROSS_EXPECT_ARCH") {
        assert_eq!(
            got, want,
            "CROSS_EXPECT_ARCH={want} but dispatch picked {got}"
        );
    }
}

#[test]
fn detect_is_the_best_available_and_cached() {
    let all: Vec<Isa> = Isa::available().collect();
    assert_eq!(all.first(), Some(&Isa::Scalar));
    assert_eq!(Some(&Isa::detect()), all.last());
    assert_eq!(Isa::detect(), Isa::detect());
    for isa in Isa::ALL {
        assert_eq!(isa.is_available(), all.contains(&isa));
    }
}

#[test]
fn levels_match_the_target() {
    assert!(Isa::Scalar.is_available());
    if cfg!(target_arch = "aarch64") {
        assert!(Isa::Neon.is_available());
    } else {
        assert!(!Isa::Neon.is_available());
    }
    if !cfg!(target_arch = "x86_64") {
        assert!(!Isa::Avx2.is_available() && !Isa::Avx512.is_available());
    }
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        assert_eq!(
            Isa::Avx2.is_available(),
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        );
        if cfg!(feature = "x86-v4") {
            assert_eq!(
                Isa::Avx512.is_available(),
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
            );
        }
    }
}

#[test]
fn names_and_codes_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_u8(isa as u8), Some(isa));
        assert_eq!(isa.to_string(), isa.name());
        assert!(isa.lanes().is_power_of_two());
    }
    assert_eq!(Isa::from_u8(4), None);
}

/// The kernel's stack tiles stay within a firmware-friendly budget.
#[test]
fn stack_use_is_under_64_kib() {
    println!("kernel stack tiles: {} bytes", qkv::kernel::STACK_BYTES);
    const { assert!(qkv::kernel::STACK_BYTES < 64 * 1024) };
}
