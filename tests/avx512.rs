//! The AVX-512 level forced against the reference: random problems, tile edges with every
//! mask kind, GQA and strided layouts, bias, NaN and extreme scores, split-KV and streaming,
//! and `exp` on pulp's V4. Every test name contains `avx512`, so `avx512-emu BIN avx512` runs
//! just these on an emulated AVX-512 CPU (`.ci/matrix.sh`, step `avx512-exec`); the sizes keep
//! that under two minutes there (the emulator is about 100× slower than a native run).
//!
//! Without AVX-512 they skip, unless `CROSS_REQUIRE_AVX512=1`, which makes them fail instead.

mod common;
use common::{Case, Joined, Rng, check, compare_joined, one_shot};
use qkv::split::{self, Level};
use qkv::stream::Stream;
use qkv::{Isa, Mask, QueryPos, Shape};

const AVX512: Level = Level::Isa(Isa::Avx512);

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

/// Runs `test` with a generator seeded with `seed`, unless the test skips ([`avx512_or_skip`]).
fn on_avx512(seed: u64, test: impl FnOnce(Rng)) {
    if avx512_or_skip() {
        test(Rng(seed));
    }
}

/// A dense case of `shape` under `mask`.
fn masked(rng: &mut Rng, shape: Shape, mask: Mask) -> Case {
    let mut case = Case::dense(rng, shape, 1.0);
    case.mask = mask;
    case
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
    on_avx512(512, |mut rng| {
        for _ in 0..60 {
            let case = Case::random(&mut rng, 70, 40);
            check(&case, AVX512);
        }
        // Past the kernel's 48-row and 48-key blocks and its 128-column Q and V panels.
        for _ in 0..8 {
            let case = Case::random(&mut rng, 140, 140);
            check(&case, AVX512);
        }
    });
}

#[test]
fn avx512_tile_edges_match_reference() {
    on_avx512(513, |mut rng| {
        for (q, kv, d, dv) in [
            (1, 1, 1, 1),
            (5, 17, 15, 16),
            (33, 65, 17, 31),
            (4, 129, 64, 129),
            (65, 3, 33, 8),
            (16, 64, 32, 128),
            (2, 200, 65, 200),
        ] {
            let shape = Shape::new(2, q, kv, d).with_v_dim(dv);
            for mask in [
                Mask::NONE,
                Mask::causal(),
                Mask::causal().aligned(QueryPos::TopLeft),
                Mask::sliding_window(kv / 3).with_right(Some(2)),
                Mask::sliding_window(5).aligned(QueryPos::Offset(-3)),
            ] {
                check(&masked(&mut rng, shape, mask), AVX512);
            }
        }
    });
}

#[test]
fn avx512_gqa_layouts_and_bias_match_reference() {
    on_avx512(514, |mut rng| {
        for (q_heads, kv_heads) in [(2, 1), (6, 3), (8, 1)] {
            let shape = Shape::new(1, 37, 42, 12)
                .gqa(q_heads, kv_heads)
                .with_v_dim(9);
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.relayout(&mut rng);
            case.mask = Mask::causal();
            let rs = shape.kv_len + 3;
            let mut data = rng.fill(q_heads * shape.q_len * rs, 3.0);
            for (n, x) in data.iter_mut().enumerate() {
                if n % 7 == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
            case.bias = Some((data, shape.q_len * rs, rs));
            check(&case, AVX512);
        }
    });
}

#[test]
fn avx512_nan_extreme_scores_and_empty_rows_match_reference() {
    on_avx512(515, |mut rng| {
        // `check` holds NaN where the reference has NaN, and a finite value within the bound
        // everywhere else: NaN in q, in an included k and v, and in keys a mask or a -inf bias
        // excludes (which must not leak).
        let shape = Shape::new(1, 6, 70, 5).with_v_dim(3);
        for (what, at) in [("q", 2 * 5 + 1), ("k", 66 * 5), ("v", 66 * 3 + 1)] {
            let mut case = masked(&mut rng, shape, Mask::causal());
            match what {
                "q" => case.q[at] = f32::NAN,
                "k" => case.k[at] = f32::NAN,
                _ => case.v[at] = f32::NAN,
            }
            check(&case, AVX512);
        }
        let mut case = masked(&mut rng, shape, Mask::sliding_window(40));
        let mut bias = vec![0.0; 6 * 70];
        for i in 0..6 {
            bias[i * 70 + 50] = f32::NEG_INFINITY;
        }
        case.bias = Some((bias, 0, 70));
        for j in [50, 3] {
            case.k[j * 5..][..5].fill(f32::NAN);
            case.v[j * 3..][..3].copy_from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        }
        check(&case, AVX512);
        // Scores of ±1e30, and rows that see no key (q_len > kv_len, bottom-right causal).
        let mut case = Case::dense(&mut rng, Shape::new(1, 1, 3, 2).with_v_dim(3), 1.0);
        case.scale = Some(1.0);
        case.q = vec![1e15, 0.0];
        case.k = [-1.0f32, 1.0, -1.0]
            .iter()
            .flat_map(|&c| [c * 1e15, 0.0])
            .collect();
        check(&case, AVX512);
        check(
            &masked(&mut rng, Shape::new(2, 40, 5, 8), Mask::causal()),
            AVX512,
        );
    });
}

#[test]
fn avx512_split_and_stream_match_reference() {
    on_avx512(516, |mut rng| {
        for _ in 0..12 {
            let case = Case::random(&mut rng, 90, 24);
            let s = case.shape;
            let p = case.params();
            let want = one_shot(&case, None);
            // Three partials over random cuts, merged in a chain.
            let mut cuts = [rng.range(0, s.kv_len), rng.range(0, s.kv_len)];
            cuts.sort();
            let mut parts = vec![];
            for keys in [0..cuts[0], cuts[0]..cuts[1], cuts[1]..s.kv_len] {
                let mut out = vec![f32::NAN; case.out_len];
                let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
                split::partial_at(
                    AVX512, &p, &case.q, &case.k, &case.v, keys, &mut out, &mut lse,
                )
                .unwrap();
                parts.push((out, lse));
            }
            let mut acc = parts[0].clone();
            for b in &parts[1..] {
                split::merge(&p, &mut acc.0, &mut acc.1, &b.0, &b.1).unwrap();
            }
            split::add_sinks(&p, &mut acc.0, &mut acc.1).unwrap();
            compare_joined(&case, &want, &acc, Joined::Merged(3), 1.0, "avx512 split");
            // A stream fed in pages of 7 keys.
            let mut state = vec![f32::NAN; Stream::state_len(&s)];
            let mut stream = Stream::new(&p, &mut state).unwrap().with_level(AVX512);
            let mut chunks = 0;
            for start in (0..s.kv_len).step_by(7) {
                let keys = start..(start + 7).min(s.kv_len);
                let k = &case.k[p.k.at(0, start)..];
                let v = &case.v[p.v.at(0, start)..];
                stream.update(&case.q, k, v, keys).unwrap();
                chunks += 1;
            }
            let mut got = (
                vec![f32::NAN; case.out_len],
                vec![f32::NAN; s.q_heads * s.q_len],
            );
            stream.finish(&mut got.0, Some(&mut got.1)).unwrap();
            compare_joined(
                &case,
                &want,
                &got,
                Joined::Stream(chunks),
                1.0,
                "avx512 stream",
            );
        }
    });
}

#[test]
fn avx512_exp_is_within_two_ulp() {
    // (The level exists only on x86-64 with `x86-v4`; elsewhere this checks the skip.)
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    if avx512_or_skip() {
        use common::exp::{ExpAll, ulps};
        use pulp::Simd;
        let simd = pulp::x86::V4::try_new().expect("available");
        // Every 4099th float from -104 (below which exp is 0) to 88.72 (above which it
        // overflows), and the special values.
        let neg = (0x8000_0000u32..=(-104.0f32).to_bits()).step_by(4099);
        let pos = (0u32..=88.72f32.to_bits()).step_by(4099);
        let xs: Vec<f32> = neg.chain(pos).map(f32::from_bits).collect();
        let ys = Simd::vectorize(simd, ExpAll(&xs));
        for (&x, &y) in xs.iter().zip(&ys) {
            assert!(ulps(y, x) <= 2.0, "exp({x:e}) = {y:e}: {} ulp", ulps(y, x));
        }
        let special = [
            f32::NEG_INFINITY,
            -1e30,
            -104.0,
            0.0,
            88.73,
            f32::INFINITY,
            f32::NAN,
        ];
        let ys = Simd::vectorize(simd, ExpAll(&special));
        assert_eq!(
            &ys[..6],
            &[0.0, 0.0, 0.0, 1.0, f32::INFINITY, f32::INFINITY]
        );
        assert!(ys[6].is_nan());
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "x86-v4")))]
    assert!(!avx512_or_skip());
}

/// K and V stored as f16, bf16 and q8_0 (the V4 widening loads: `vcvtph2ps`, the bf16 shift,
/// `vpmovsxbd`), decode and prefill blocks, against the reference.
#[test]
fn avx512_kv_types_match_reference() {
    use qkv::KvKind::{Bf16, F16, Q8_0};
    on_avx512(514, |mut rng| {
        for (shape, mask) in [
            (Shape::new(4, 1, 70, 64).gqa(4, 2), Mask::NONE),
            (Shape::new(1, 20, 50, 32).with_v_dim(64), Mask::causal()),
        ] {
            for kinds in [(F16, Q8_0), (Q8_0, Bf16), (Bf16, F16)] {
                let mut case = masked(&mut rng, shape, mask);
                assert!(case.store(kinds));
                check(&case, AVX512);
            }
        }
    });
}
