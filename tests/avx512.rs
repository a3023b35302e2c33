//! The AVX-512 level forced against the reference. Every test name contains `avx512`, so
//! `avx512-emu BIN avx512` runs just these on an emulated AVX-512 CPU. Without AVX-512 they
//! skip, unless `CROSS_REQUIRE_AVX512=1`, which makes them fail instead.

mod common;
use common::{Case, Rng, Runner, check};
use qkv::Isa;

fn avx512_or_skip() -> bool {
    if Isa::Avx512.is_available() {
        return true;
    }
    assert!(
        std::env::var("CROSS_REQUIRE_AVX512").as_deref() != Ok("1"),
        "CROSS_REQUIRE_AVX512=1 but the AVX-512 level is not available (feature x86-v4: {})",
        cfg!(feature = "x86-v4")
    );
    println!("skipped: no AVX-512 here");
    false
}

#[test]
fn avx512_expected_arch() {
    if let Ok(want) = std::env::var("CROSS_EXPECT_ARCH") {
        let got = match Isa::detect() {
            Isa::Avx512 => "x86-v4",
            Isa::Avx2 => "x86-v3",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        };
        assert_eq!(got, want);
    }
}

#[test]
fn avx512_random_problems_match_reference() {
    if !avx512_or_skip() {
        return;
    }
    let mut rng = Rng(512);
    // Small: this runs under an emulator about 100x slower than native.
    for _ in 0..40 {
        let case = Case::random(&mut rng, 70, 40);
        check(&case, Runner::Isa(Isa::Avx512));
    }
}

#[test]
fn avx512_tile_edges_match_reference() {
    if !avx512_or_skip() {
        return;
    }
    let mut rng = Rng(513);
    for (q, kv, d, dv) in [
        (1, 1, 1, 1),
        (5, 17, 15, 16),
        (33, 65, 17, 31),
        (4, 129, 64, 129),
    ] {
        let mut case = Case::dense(&mut rng, qkv::Shape::new(2, q, kv, d).with_v_dim(dv), 1.0);
        case.mask = qkv::Mask::causal();
        check(&case, Runner::Isa(Isa::Avx512));
    }
}
