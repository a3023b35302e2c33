//! K and V stored as `f16`, `bf16` and `q8_0`: every level and emulated width, every
//! (K type, V type) pair, against the reference on the same values; the edge values of each
//! type; the errors the types add; and split, stream and threads with typed K/V.

mod common;

use common::kv::{Stored, store};
use common::{Case, Expected, Rng, budget, check_in, levels};
use qkv::{BlockQ8_0, Error, KvKind, Layout, Mask, Params, Shape, Tensor, bf16, f16, split::Level};

/// Every (K, V) pair of kinds; under Miri three that give each type to K and to V.
fn pairs() -> Vec<(KvKind, KvKind)> {
    use KvKind::*;
    match cfg!(miri) {
        true => vec![(F16, Q8_0), (Q8_0, Bf16), (Bf16, F16)],
        false => KvKind::ALL
            .into_iter()
            .flat_map(|k| KvKind::ALL.into_iter().map(move |v| (k, v)))
            .collect(),
    }
}

/// Random problems (masks, bias, GQA, layouts), each stored as every pair the sizes allow,
/// on every level and width, in the call's own working memory and in the least one.
#[test]
fn every_level_and_type_pair_matches_the_reference() {
    let mut rng = Rng(0x6b76_7479);
    let n = budget(40, 2);
    let mut q8_cases = 0;
    for c in 0..n {
        let mut case = Case::random(&mut rng, budget(70, 5), budget(40, 8));
        if c % 2 == 0 {
            // Rows of whole q8_0 blocks, so that type is run too.
            let shape = Shape {
                head_dim: 32 * rng.range(1, 3),
                v_dim: 32 * rng.range(1, 3),
                ..case.shape
            };
            let mask = case.mask;
            case = Case::dense(&mut rng, shape, 1.0);
            case.mask = mask;
        }
        for kinds in pairs() {
            let mut typed = case.clone();
            if !typed.store(kinds) {
                continue;
            }
            q8_cases += (kinds.0 == KvKind::Q8_0 || kinds.1 == KvKind::Q8_0) as usize;
            let want = Expected::new(&typed);
            let least = qkv::min_workspace_len_for(&typed.params(), kinds.0, kinds.1);
            for level in levels() {
                check_in(&typed, &want, level, None);
            }
            check_in(&typed, &want, Level::Detect, Some(least));
        }
    }
    assert!(q8_cases > 0);
}

/// Prefill and decode shapes past the full-size tiles (several key blocks, a head wider than
/// a Q panel, v_dim over one V panel), f16 and q8_0, on every level.
#[test]
fn typed_blocks_past_the_full_tiles() {
    let mut rng = Rng(7);
    let shapes = if cfg!(miri) {
        vec![Shape::new(1, 6, 20, 32)]
    } else {
        vec![
            Shape::new(2, 100, 130, 160).with_v_dim(192),
            Shape::new(8, 1, 300, 128).gqa(8, 2),
            Shape::new(1, 60, 97, 64),
        ]
    };
    for shape in shapes {
        let masks = [Mask::causal(), Mask::NONE, Mask::sliding_window(20)];
        for &mask in &masks[..budget(3, 1)] {
            for kinds in [
                (KvKind::F16, KvKind::F16),
                (KvKind::Q8_0, KvKind::Bf16),
                (KvKind::Bf16, KvKind::Q8_0),
            ] {
                let mut case = Case::dense(&mut rng, shape, 1.0);
                case.mask = mask;
                assert!(case.store(kinds));
                let want = Expected::new(&case);
                for level in levels() {
                    check_in(&case, &want, level, None);
                }
            }
        }
    }
}

/// Decode blocks (up to 4 rows) whose rows a mask edge or a −∞ bias cuts, and every block of
/// the least tiles and of the one-lane level, read narrow V as stored through the register
/// tiles: every level and width, in the least, a mid-size and the full working memory; V
/// panels that start inside a q8_0 block (the least tiles' 16 columns) and f16/bf16 rows
/// whose length is not a multiple of the lanes.
#[test]
fn decode_blocks_read_narrow_values_as_stored() {
    let mut rng = Rng(0x7076);
    // (The smallest first, the one Miri would run; K of each shape in another type.)
    let shapes = [
        (Shape::new(1, 2, 19, 16).with_v_dim(33), KvKind::F32),
        (
            Shape::new(4, 3, 70, 32).gqa(4, 1).with_v_dim(40),
            KvKind::Q8_0,
        ),
        (
            Shape::new(8, 5, 37, 64).gqa(8, 2).with_v_dim(96),
            KvKind::F16,
        ),
    ];
    let masks = [Mask::causal(), Mask::sliding_window(9), Mask::NONE];
    for (shape, k) in shapes.into_iter().take(budget(3, 1)) {
        for (m, &mask) in masks.iter().enumerate().take(budget(3, 1)) {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.mask = mask;
            if m == 2 {
                // Scattered exclusions: a −∞ bias on one score in five.
                let len = shape.q_heads * shape.q_len * shape.kv_len;
                let mut data = rng.fill(len, 1.0);
                for x in data.iter_mut().step_by(5) {
                    *x = f32::NEG_INFINITY;
                }
                case.bias = Some((data, shape.q_len * shape.kv_len, shape.kv_len));
            }
            for v in [KvKind::F16, KvKind::Bf16, KvKind::Q8_0] {
                let kinds = (k, v);
                let mut typed = case.clone();
                if !typed.store(kinds) {
                    continue;
                }
                let p = typed.params();
                let least = qkv::min_workspace_len_for(&p, kinds.0, kinds.1);
                let full = qkv::workspace_len_for(&p, kinds.0, kinds.1);
                assert_eq!(least, qkv::min_workspace_len(&p), "{shape:?} {kinds:?}");
                let want = Expected::new(&typed);
                for level in levels() {
                    for ws in [least, (least + full) / 2, full] {
                        check_in(&typed, &want, level, Some(ws));
                    }
                }
            }
        }
    }
}

/// A case whose key 1 has `k1` and `v1` at column 0 (stored as `kinds`), the other values
/// ordinary; query row 0 masks key 1 out, row 1 includes it.
fn edge_case(kinds: (KvKind, KvKind), k1: f32, v1: f32) -> Case {
    let mut rng = Rng(11);
    let shape = Shape::new(1, 2, 3, 32);
    let mut case = Case::dense(&mut rng, shape, 0.5);
    assert!(case.store(kinds));
    case.k[32] = k1;
    case.v[32] = v1;
    // Causal from the top: row 0 sees key 0 (key 1 is masked), row 1 keys 0 and 1.
    case.mask = Mask::causal().aligned(qkv::QueryPos::TopLeft);
    case
}

/// Edge values of every type in an included key and in a masked one: ±0, the smallest f16
/// subnormal, f16 max, ±inf, NaN, bf16 of 1e38, through every level.
#[test]
fn edge_values_of_each_type() {
    let tiny = f16::from_bits(1).to_f32();
    let values = [
        0.0,
        -0.0,
        tiny,
        -tiny,
        f16::MAX.to_f32(),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let bf_big = bf16::from_f32(1e38).to_f32();
    let values = &values[..budget(values.len(), 3)];
    for (kind, extra) in [(KvKind::F16, None), (KvKind::Bf16, Some(bf_big))] {
        for &x in values.iter().chain(extra.iter()) {
            let x = common::kv::round(kind, x);
            for (k1, v1) in [(x, 0.25), (0.25, x), (x, x)] {
                let case = edge_case((kind, kind), k1, v1);
                // The value round-trips the type exactly (NaN stays NaN).
                let (sk, _) = case.stored();
                let back = match sk {
                    Stored::F16(t) => t[32].to_f32(),
                    Stored::Bf16(t) => t[32].to_f32(),
                    _ => unreachable!(),
                };
                assert!(back.to_bits() == k1.to_bits() || (back.is_nan() && k1.is_nan()));
                let want = Expected::new(&case);
                for level in levels() {
                    check_in(&case, &want, level, None);
                }
            }
        }
    }
}

/// q8_0 blocks whose scale is 0, NaN or ±inf, in a masked and an included key: the values
/// are `d · q` exactly as the reference decodes them (NaN where `d` is, and `0 · inf`), and
/// every level gives the reference's NaNs, infinities and values.
#[test]
fn q8_0_scales_zero_nan_and_infinite() {
    let mut rng = Rng(13);
    let shape = Shape::new(1, 2, 3, 32);
    let p = Params::new(shape)
        .with_mask(Mask::causal().aligned(qkv::QueryPos::TopLeft))
        .with_kv_units::<BlockQ8_0, BlockQ8_0>();
    let q = rng.fill(2 * 32, 0.5);
    let blocks = |rng: &mut Rng| -> Vec<BlockQ8_0> {
        let x = rng.fill(3 * 32, 1.0);
        common::kv::quantized(&x)
    };
    for d in [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65504.0,
    ] {
        for which in [0, 1] {
            let (mut k, mut v) = (blocks(&mut rng), blocks(&mut rng));
            // Key 1 (masked for row 0, included by row 1) gets scale d in K or V.
            let t = if which == 0 { &mut k } else { &mut v };
            t[1].d = f16::from_f32(d);
            t[1].qs[0] = 0;
            let mut want = vec![0.0f32; 64];
            let mut want_lse = vec![0.0f32; 2];
            qkv::reference::attention(&p, &q, &k, &v, &mut want, Some(&mut want_lse)).unwrap();
            for level in levels() {
                let mut got = vec![0.0f32; 64];
                let mut lse = vec![0.0f32; 2];
                level
                    .attention(&p, &q, &k, &v, &mut got, Some(&mut lse))
                    .unwrap();
                for (i, (g, w)) in got
                    .iter()
                    .chain(&lse)
                    .zip(want.iter().chain(&want_lse))
                    .enumerate()
                {
                    let same = (g.is_nan() && w.is_nan())
                        || g == w
                        || (g - w).abs() <= 1e-5 * (1.0 + w.abs());
                    assert!(same, "{level:?} d {d} in {which}: [{i}] {g} vs {w}");
                }
            }
        }
    }
}

/// The errors the types add, before anything is written: a q8_0 K or V whose rows are not
/// whole blocks; slices too short in their own elements; and a workspace too small for the
/// widened tile.
#[test]
fn errors_of_the_types() {
    let shape = Shape::new(1, 1, 4, 48);
    let p = Params::new(shape).with_kv_units::<BlockQ8_0, f32>();
    let q = vec![0.0f32; 48];
    let k = vec![BlockQ8_0::default(); 8];
    let v = vec![0.0f32; 4 * 48];
    let mut out = vec![7.0f32; 48];
    let e = qkv::attention(&p, &q, &k, &v, &mut out, None);
    assert_eq!(
        e,
        Err(Error::BlockSize {
            tensor: Tensor::K,
            dim: 48,
            block: 32
        })
    );
    let p = Params::new(shape.with_v_dim(40)).with_kv_units::<f32, BlockQ8_0>();
    let e = qkv::attention(&p, &q, &v, &k, &mut out, None);
    assert!(matches!(
        e,
        Err(Error::BlockSize {
            tensor: Tensor::V,
            dim: 40,
            ..
        })
    ));
    assert!(out.iter().all(|&x| x == 7.0));

    // Extents count elements of the type: 4 keys of 64 values are 8 blocks.
    let shape = Shape::new(1, 1, 4, 64);
    let p = Params::new(shape).with_kv_units::<BlockQ8_0, f16>();
    let q = vec![0.0f32; 64];
    let k = vec![BlockQ8_0::default(); 7];
    let v = vec![f16::ZERO; 4 * 64];
    let e = qkv::attention(&p, &q, &k, &v, &mut out, None);
    assert_eq!(
        e,
        Err(Error::TooShort {
            tensor: Tensor::K,
            needed: 8,
            len: 7
        })
    );
    let k = vec![BlockQ8_0::default(); 8];
    let mut out = vec![7.0f32; 64];
    // Narrow types need no more working memory than `f32` at the least.
    let least = qkv::min_workspace_len_for(&p, KvKind::Q8_0, KvKind::F16);
    assert_eq!(least, qkv::min_workspace_len(&p));
    let e = qkv::attention_in(&mut vec![0.0; least - 1], &p, &q, &k, &v, &mut out, None);
    assert_eq!(
        e,
        Err(Error::WorkspaceTooSmall {
            needed: least,
            len: least - 1
        })
    );
    assert!(out.iter().all(|&x| x == 7.0));
    qkv::attention_in(&mut vec![0.0; least], &p, &q, &k, &v, &mut out, None).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
}

/// `with_kv_units` turns planar and interleaved layouts in values into blocks, and leaves the
/// 16-bit types as they are.
#[test]
fn kv_units_of_planar_and_interleaved_layouts() {
    let shape = Shape::new(4, 1, 10, 64).gqa(4, 2);
    let p = Params::new(shape).interleaved();
    let q8 = p.with_kv_units::<BlockQ8_0, BlockQ8_0>();
    assert_eq!(
        q8.k,
        Layout {
            head_stride: 2,
            row_stride: 4
        }
    );
    assert_eq!(q8.v, q8.k);
    assert_eq!(p.with_kv_units::<f16, bf16>(), p);
    let planar = Params::new(shape).with_kv_units::<f32, BlockQ8_0>();
    assert_eq!(planar.k, Params::new(shape).k);
    assert_eq!(planar.v, Layout::planar(10, 2));
}

/// Split-KV partials merged, a stream fed in chunks, and threads, with f16 K and q8_0 V:
/// each equal (within the kit's bounds) to the one-shot typed call.
#[test]
fn split_stream_and_threads_take_the_types() {
    let mut rng = Rng(17);
    let shape = Shape::new(4, 3, budget(150, 12), 64).gqa(4, 2);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal();
    assert!(case.store((KvKind::F16, KvKind::Q8_0)));
    let p = case.stored_params();
    let (k, v) = match case.stored() {
        (Stored::F16(k), Stored::Q8_0(v)) => (k, v),
        _ => unreachable!(),
    };
    let s = shape;
    let rows = s.q_heads * s.q_len;
    let mut want = vec![0.0f32; rows * s.v_dim];
    let mut want_lse = vec![0.0f32; rows];
    qkv::attention(&p, &case.q, &k, &v, &mut want, Some(&mut want_lse)).unwrap();
    let close = |got: &[f32]| {
        got.iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() <= 1e-5 * (1.0 + w.abs()))
    };

    // Split in three and merged.
    let mut acc = vec![0.0f32; rows * s.v_dim];
    let mut acc_lse = vec![f32::NEG_INFINITY; rows];
    let n = shape.kv_len;
    for keys in [0..n / 3, n / 3..n / 3 + 1, n / 3 + 1..n] {
        let mut o = vec![0.0f32; rows * s.v_dim];
        let mut l = vec![0.0f32; rows];
        qkv::split::partial(&p, &case.q, &k, &v, keys, &mut o, &mut l).unwrap();
        qkv::split::merge(&p, &mut acc, &mut acc_lse, &o, &l).unwrap();
    }
    qkv::split::add_sinks(&p, &mut acc, &mut acc_lse).unwrap();
    assert!(close(&acc), "split");

    // A stream fed the same chunks, each its own slices.
    let mut state = vec![0.0f32; qkv::stream::Stream::state_len(&s)];
    let mut stream = qkv::stream::Stream::new(&p, &mut state).unwrap();
    for keys in [0..n / 2, n / 2..n] {
        let kc = &k[p.k.at(0, keys.start)..];
        let vc = &v[p.v.at(0, keys.start)..];
        stream.update(&case.q, kc, vc, keys).unwrap();
    }
    let mut got = vec![0.0f32; rows * s.v_dim];
    stream.finish(&mut got, None).unwrap();
    assert!(close(&got), "stream");

    #[cfg(feature = "parallel")]
    {
        let mut got = vec![0.0f32; rows * s.v_dim];
        qkv::parallel::attention(&p, &case.q, &k, &v, &mut got, None).unwrap();
        assert!(close(&got), "parallel");
    }
    let _ = store;
}

/// The least working memory of any shape is the same with narrow K or V as with `f32` (58
/// floats: nothing is widened there), and the best never exceeds the full-size tiles with
/// their widening tile.
#[test]
fn workspace_of_the_types_is_bounded() {
    // The full tiles and the widened tile, plus the floats skipped to align the tiles to 64
    // bytes where the kernel does (x86-64, aarch64; none on 32-bit Arm).
    let slack = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        15
    } else {
        0
    };
    let full_narrow = 15_264 + 6_144 + slack;
    let mut rng = Rng(19);
    for _ in 0..budget(300, 10) {
        let shape = Shape::new(rng.range(1, 4), rng.range(0, 200), rng.range(0, 200), 32)
            .with_v_dim(32 * rng.range(1, 9));
        let shape = Shape {
            head_dim: 32 * rng.range(1, 9),
            ..shape
        };
        let p = Params::new(shape);
        for (k, v) in pairs() {
            assert_eq!(
                qkv::min_workspace_len_for(&p, k, v),
                58,
                "{shape:?} {k} {v}"
            );
            assert!(
                qkv::workspace_len_for(&p, k, v) <= full_narrow,
                "{shape:?} {k} {v}"
            );
            assert!(qkv::workspace_len_for(&p, k, v) >= qkv::workspace_len(&p));
        }
    }
    assert_eq!(
        qkv::kernel::STACK_BYTES_NARROW,
        if cfg!(feature = "stack-workspace") {
            full_narrow * 4
        } else {
            58 * 4
        }
    );
}
