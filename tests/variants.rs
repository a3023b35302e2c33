//! The softmax variants, softcap, sinks and ALiBi slopes: each against the reference at every
//! level and emulated width, composed with masks, GQA, bias and each other, through every
//! entry point (one-shot, split-KV with `add_sinks`, streams, plans), worked out by hand on
//! small cases, and their errors.

mod common;
use common::{
    Case, Joined, Rng, alibi_slopes, budget, check_all, compare_joined, levels, one_shot,
    random_mask, random_sinks,
};
use qkv::plan::{self, Plan};
use qkv::split::{self, Level};
use qkv::stream::Stream;
use qkv::{Bias, Error, Mask, Params, QueryPos, Shape, Tensor};

/// Shapes on both paths (decode blocks of up to 4 rows, packed prefill blocks) and across
/// the 48-key blocks.
fn shapes() -> Vec<Shape> {
    let (len, big) = budget((37, 100), (5, 9));
    vec![
        Shape::new(2, 1, big, 16).gqa(8, 2),
        Shape::new(1, 3, len, 8).gqa(4, 1),
        Shape::new(2, len, big, 24).with_v_dim(20),
        Shape::new(1, big, len, 33),
    ]
}

/// For every shape of [`shapes`] and each of `values`: a dense case (data in ±`amp`) that
/// `set` gives the variant under test, checked at every level (`check_all`).
fn check_each<T>(
    seed: u64, amp: f32, values: impl IntoIterator<Item = T> + Clone,
    mut set: impl FnMut(&mut Rng, &mut Case, T),
) {
    let mut rng = Rng(seed);
    for shape in shapes() {
        for x in values.clone() {
            let mut case = Case::dense(&mut rng, shape, amp);
            set(&mut rng, &mut case, x);
            check_all(&case);
        }
    }
}

/// A bias of `s` with an entry for every query head, row and key (planar), in ±2.
fn dense_bias(rng: &mut Rng, s: &Shape) -> (Vec<f32>, usize, usize) {
    let row_stride = s.kv_len;
    let data = rng.fill(s.q_heads * s.q_len * row_stride, 2.0);
    (data, s.q_len * row_stride, row_stride)
}

#[test]
fn softcap_at_every_level_with_masks_and_bias() {
    // Data in ±3: scores well past the cap, so it bites.
    let caps = [0.1f32, 1.0, 4.0, 50.0, 1e30];
    check_each(170, 3.0, caps, |rng, case, cap| {
        case.softcap = Some(cap);
        case.mask = random_mask(rng, &case.shape);
        if rng.coin(1, 2) {
            case.bias = Some(dense_bias(rng, &case.shape));
        }
    });
}

#[test]
fn sinks_at_every_level_with_masks_and_bias() {
    check_each(171, 1.0, 0..budget(4, 1), |rng, case, _| {
        case.sinks = Some(random_sinks(rng, case.shape.q_heads));
        case.mask = random_mask(rng, &case.shape);
        if rng.coin(1, 2) {
            case.softcap = Some(2.0);
        }
    });
}

/// Every special sink value on each path: `-inf` is no sink, NaN and `+inf` make the row NaN,
/// a huge one swamps the keys (out ≈ 0), a very negative one vanishes.
#[test]
fn special_sinks() {
    let sinks = [
        f32::NEG_INFINITY,
        f32::NAN,
        f32::INFINITY,
        1e30,
        -1e30,
        80.0,
        -80.0,
        0.0,
    ];
    check_each(172, 1.0, sinks, |_, case, sink| {
        case.sinks = Some(vec![sink; case.shape.q_heads]);
    });
}

/// One key of score `s` and value `v` beside a sink `σ`: `out = e^s·v / (e^s + e^σ)` and
/// `lse = ln(e^s + e^σ)`; with the softcap, `s` is `cap·tanh(scale·q·k / cap)` then the bias
/// is added. Worked out in `f64`, independently of the reference.
#[test]
fn worked_examples() {
    let shape = Shape::new(1, 1, 1, 1);
    let (q, k, v) = ([2.0f32], [3.0f32], [5.0f32]);
    let bias = [0.5f32];
    for level in levels() {
        for (cap, sink) in [
            (None, 1.0),
            (Some(4.0), -2.0),
            (Some(0.5), 0.25),
            (None, 6.0),
        ] {
            let mut p = Params::new(shape)
                .with_scale(1.0)
                .with_bias(Bias::broadcast(&bias, 1));
            let sinks = [sink];
            p = p.with_sinks(&sinks);
            if let Some(c) = cap {
                p = p.with_softcap(c);
            }
            let s = match cap {
                Some(c) => c as f64 * (6.0 / c as f64).tanh(),
                None => 6.0,
            } + 0.5;
            let (es, e_sink) = (s.exp(), (sink as f64).exp());
            let (want, want_lse) = (es * 5.0 / (es + e_sink), (es + e_sink).ln());
            let (mut out, mut lse) = ([0.0f32], [0.0f32]);
            level
                .attention(&p, &q, &k, &v, &mut out, Some(&mut lse))
                .unwrap();
            let who = format!("{level:?} cap {cap:?} sink {sink}");
            assert!(
                (out[0] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "{who}: {out:?} {want}"
            );
            assert!(
                (lse[0] as f64 - want_lse).abs() < 1e-5 * want_lse.abs().max(1.0),
                "{who}"
            );
        }
    }
}

/// A row that sees no key gets `out = 0` and `lse = sink` (and `-inf` without a sink), on
/// every entry point.
#[test]
fn a_row_without_keys_is_zero_with_the_sink_as_lse() {
    // Top-left causal with a band of width 0 to the left past every key: row 0 sees key 0,
    // rows beyond kv_len... instead: an empty band (left 0, right 0) at an offset past the keys.
    let shape = Shape::new(2, 3, 4, 8);
    let mask = Mask {
        left: Some(0),
        right: Some(0),
        query_pos: QueryPos::Offset(10),
    };
    let sinks = [1.5f32, -0.5];
    let p = Params::new(shape).with_mask(mask).with_sinks(&sinks);
    let q = vec![0.25f32; 2 * 3 * 8];
    let kv = vec![0.5f32; 2 * 4 * 8];
    let want_lse = [1.5f32, 1.5, 1.5, -0.5, -0.5, -0.5];
    for level in levels() {
        let (mut out, mut lse) = (vec![f32::NAN; 48], vec![f32::NAN; 6]);
        level
            .attention(&p, &q, &kv, &kv, &mut out, Some(&mut lse))
            .unwrap();
        assert!(out.iter().all(|&x| x == 0.0), "{level:?}");
        assert_eq!(lse, want_lse, "{level:?}");
    }
    let (mut out, mut lse) = (vec![f32::NAN; 48], vec![f32::NAN; 6]);
    qkv::reference::attention(&p, &q, &kv, &kv, &mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert_eq!(lse, want_lse);
    // Split: an empty partial, merged with nothing, then the sinks.
    let (mut out, mut lse) = (vec![f32::NAN; 48], vec![f32::NAN; 6]);
    split::partial(&p, &q, &kv, &kv, 0..4, &mut out, &mut lse).unwrap();
    assert!(lse.iter().all(|&l| l == f32::NEG_INFINITY));
    split::add_sinks(&p, &mut out, &mut lse).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert_eq!(lse, want_lse);
    // A stream fed nothing, and one fed every key.
    let mut state = vec![0.0f32; Stream::state_len(&shape)];
    let mut stream = Stream::new(&p, &mut state).unwrap();
    let (mut out, mut lse) = (vec![f32::NAN; 48], vec![f32::NAN; 6]);
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    assert_eq!(lse, want_lse);
    stream.update(&q, &kv, &kv, 0..4).unwrap();
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert_eq!(lse, want_lse);
    // A plan, and a problem with no keys at all.
    let plan = Plan::auto(&shape, 3);
    let mut partial = vec![0.0f32; plan.partial_len(&shape)];
    for task in 0..plan.tasks(&shape) {
        let r = plan.task_partial(&shape, task).unwrap();
        plan::run_task(Level::Detect, plan, &p, &q, &kv, &kv, task, &mut partial[r]).unwrap();
    }
    plan::finish(plan, &p, &partial, &mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert_eq!(lse, want_lse);
    let empty = Shape::new(2, 3, 0, 8);
    let pe = Params::new(empty).with_sinks(&sinks);
    for level in levels() {
        let (mut out, mut lse) = (vec![f32::NAN; 48], vec![f32::NAN; 6]);
        level
            .attention::<f32, f32>(&pe, &q, &[], &[], &mut out, Some(&mut lse))
            .unwrap();
        assert!(out.iter().all(|&x| x == 0.0), "{level:?}");
        assert_eq!(lse, want_lse, "{level:?}");
    }
    plan::finish(plan, &pe, &[], &mut out, Some(&mut lse)).unwrap();
    assert_eq!(lse, want_lse);
}

/// Split-KV: partials ignore the sinks, `add_sinks` adds them once; streams and plans add them
/// themselves. Every level, random cases with sinks and softcaps.
#[test]
fn sinks_join_once_through_split_stream_and_plan() {
    let mut rng = Rng(173);
    for n in 0..budget(24, 2) {
        let mut case = common::series_case(&mut rng, n, 3);
        case.sinks = Some(random_sinks(&mut rng, case.shape.q_heads));
        if rng.coin(1, 2) {
            case.softcap = Some(rng.pick(&[0.3, 3.0]));
        }
        let (p, s) = (case.params(), case.shape);
        let want = one_shot(&case, None);
        let rows = s.q_heads * s.q_len;
        for level in levels() {
            let cut = rng.range(0, s.kv_len);
            let part = |keys: std::ops::Range<usize>| {
                let (mut o, mut l) = (vec![f32::NAN; case.out_len], vec![f32::NAN; rows]);
                split::partial_at(level, &p, &case.q, &case.k, &case.v, keys, &mut o, &mut l)
                    .unwrap();
                (o, l)
            };
            let (mut a, b) = (part(0..cut), part(cut..s.kv_len));
            split::merge(&p, &mut a.0, &mut a.1, &b.0, &b.1).unwrap();
            split::add_sinks(&p, &mut a.0, &mut a.1).unwrap();
            compare_joined(
                &case,
                &want,
                &a,
                Joined::Merged(2),
                1.0,
                &format!("split {level:?}"),
            );

            let mut state = vec![f32::NAN; Stream::state_len(&s)];
            let mut stream = Stream::new(&p, &mut state).unwrap().with_level(level);
            for keys in [cut..s.kv_len, 0..cut] {
                let k = &case.k[p.k.at(0, keys.start).min(case.k.len())..];
                let v = &case.v[p.v.at(0, keys.start).min(case.v.len())..];
                stream.update(&case.q, k, v, keys).unwrap();
            }
            let (mut o, mut l) = (vec![f32::NAN; case.out_len], vec![f32::NAN; rows]);
            stream.finish(&mut o, Some(&mut l)).unwrap();
            let who = format!("stream {level:?}");
            compare_joined(&case, &want, &(o, l), Joined::Stream(2), 1.0, &who);

            let plan = Plan {
                q_block: rng.range(1, s.q_len.max(1)),
                kv_block: rng.range(1, s.kv_len.max(1)),
            };
            let mut partial = vec![f32::NAN; plan.partial_len(&s)];
            for task in 0..plan.tasks(&s) {
                let r = plan.task_partial(&s, task).unwrap();
                plan::run_task(
                    level,
                    plan,
                    &p,
                    &case.q,
                    &case.k,
                    &case.v,
                    task,
                    &mut partial[r],
                )
                .unwrap();
            }
            let (mut o, mut l) = (vec![f32::NAN; case.out_len], vec![f32::NAN; rows]);
            plan::finish(plan, &p, &partial, &mut o, Some(&mut l)).unwrap();
            let depth = common::plan_depth(&s, plan) + 1;
            let who = format!("plan {level:?} {plan:?}");
            compare_joined(&case, &want, &(o, l), Joined::Merged(depth), 1.0, &who);
        }
    }
}

#[test]
fn invalid_softcaps_and_short_sinks_are_refused_and_nothing_is_written() {
    let (p, q, k, out0, lse0) = common::error_fixture();
    let s = p.shape;
    for cap in [
        0.0f32,
        -0.0,
        -1.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        let bad = p.with_softcap(cap);
        let (mut out, mut lse) = (out0.clone(), lse0.clone());
        let err = qkv::attention(&bad, &q, &k, &k, &mut out, Some(&mut lse));
        assert_eq!(err, Err(Error::InvalidSoftcap), "cap {cap}");
        let err = qkv::reference::attention(&bad, &q, &k, &k, &mut out, Some(&mut lse));
        assert_eq!(err, Err(Error::InvalidSoftcap), "cap {cap}");
        let err = split::partial(&bad, &q, &k, &k, 0..s.kv_len, &mut out, &mut lse);
        assert_eq!(err, Err(Error::InvalidSoftcap), "cap {cap}");
        let mut state = vec![0.0; Stream::state_len(&s)];
        assert_eq!(
            Stream::new(&bad, &mut state).err(),
            Some(Error::InvalidSoftcap)
        );
        assert_eq!((out, lse), (out0.clone(), lse0.clone()));
    }
    let short = [0.0f32; 1];
    let bad = p.with_sinks(&short);
    let too_short = Err(Error::TooShort {
        tensor: Tensor::Sinks,
        needed: s.q_heads,
        len: 1,
    });
    let (mut out, mut lse) = (out0.clone(), lse0.clone());
    assert_eq!(
        qkv::attention(&bad, &q, &k, &k, &mut out, Some(&mut lse)),
        too_short
    );
    assert_eq!(split::add_sinks(&bad, &mut out, &mut lse), too_short);
    let plan = Plan::auto(&s, 2);
    let partial = vec![0.0; plan.partial_len(&s)];
    assert_eq!(
        plan::finish(plan, &bad, &partial, &mut out, Some(&mut lse)),
        too_short
    );
    let mut state = vec![0.0; Stream::state_len(&s)];
    assert_eq!(Stream::new(&bad, &mut state).err(), too_short.err());
    assert_eq!((out, lse), (out0, lse0));
    // Merging partials never reads the sinks, so it does not check them either.
    let (mut a, mut la) = (vec![0.0; 24], vec![f32::NEG_INFINITY; 6]);
    split::merge(&bad, &mut a, &mut la, &[0.0; 24], &[f32::NEG_INFINITY; 6]).unwrap();
}

/// Without sinks or a softcap the kernel takes none of their paths: the results are those of
/// params that never had the fields (bit for bit), and a sink of `-inf` changes nothing.
#[test]
fn absent_variants_change_nothing() {
    let mut rng = Rng(174);
    for shape in shapes() {
        let case = Case::dense(&mut rng, shape, 1.0);
        let no_sink = vec![f32::NEG_INFINITY; shape.q_heads];
        for level in levels() {
            let want = one_shot(&case, Some(level));
            let mut with = case.clone();
            with.sinks = Some(no_sink.clone());
            let got = one_shot(&with, Some(level));
            common::assert_same_bits(&want, &got, &format!("{level:?}"));
        }
    }
}

#[test]
fn alibi_at_every_level_with_masks_positions_and_bias() {
    check_each(175, 1.0, 0..budget(4, 1), |rng, case, _| {
        let shape = case.shape;
        case.alibi = Some(alibi_slopes(shape.q_heads));
        // Every query position, with and without a window (ALiBi reads it either way).
        case.mask = random_mask(rng, &shape);
        if rng.coin(1, 3) {
            case.mask.left = None;
            case.mask.right = None;
        }
        if rng.coin(1, 2) {
            case.bias = Some(dense_bias(rng, &shape));
        }
        if rng.coin(1, 3) {
            case.softcap = Some(1.5);
        }
    });
}

/// Slopes of every kind: 0 (no bias), negative, huge, and NaN or `+inf` (a NaN row where a
/// distance is 0, ±inf scores elsewhere), with `-inf` bias entries that must stay excluded.
#[test]
fn special_slopes() {
    let slopes = [0.0f32, -0.5, 1e30, f32::NAN, f32::INFINITY];
    check_each(176, 1.0, slopes, |rng, case, slope| {
        let shape = case.shape;
        case.alibi = Some(vec![slope; shape.q_heads]);
        let n = shape.q_heads * shape.q_len * shape.kv_len;
        let mut bias = vec![0.0f32; n];
        for b in bias.iter_mut() {
            if rng.coin(1, 3) {
                *b = f32::NEG_INFINITY;
            }
        }
        case.bias = Some((bias, shape.q_len * shape.kv_len, shape.kv_len));
    });
}

/// A key whose score is already `-inf` before ALiBi, from the dot product (an infinite `k`)
/// rather than a bias, stays out whatever the slope, NaN and `+inf` included; the other keys
/// of the row take the slope as usual. (The fuzz target found the reference adding a NaN
/// slope to such a key.)
#[test]
fn a_minus_infinite_score_stays_out_whatever_the_slope() {
    let slopes = [f32::NAN, f32::INFINITY, -0.5, 0.25];
    check_each(178, 1.0, slopes, |rng, case, slope| {
        case.q.iter_mut().for_each(|x| *x = x.abs() + 0.5);
        // Every third key is `-inf` in every dimension: its score is `-inf`.
        let k_len = case.k.len();
        for (i, x) in case.k.iter_mut().enumerate() {
            if (i * 3 / k_len.max(1)) == 0 || rng.coin(1, 3) {
                *x = f32::NEG_INFINITY;
            }
        }
        case.alibi = Some(vec![slope; case.shape.q_heads]);
        case.mask = random_mask(rng, &case.shape);
    });
}

/// ALiBi is the bias `slope·(j − pos(i))`: the same problem with that bias written out as a
/// matrix gives the same result within tolerance, at every level and query position.
#[test]
fn alibi_equals_its_bias_matrix() {
    let mut rng = Rng(177);
    let shape = Shape::new(2, 6, 40, 8).gqa(4, 2);
    let slopes = alibi_slopes(4);
    for pos in [
        QueryPos::BottomRight,
        QueryPos::TopLeft,
        QueryPos::Offset(-7),
        QueryPos::Offset(90),
    ] {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        case.mask = Mask::causal().aligned(pos).with_right(None);
        let p = case.params();
        let mut bias = vec![0.0f32; 4 * 6 * 40];
        for h in 0..4 {
            for i in 0..6 {
                for j in 0..40 {
                    let d = j as i128 - (p.query_offset() + i as i128);
                    bias[(h * 6 + i) * 40 + j] = slopes[h] * d as f32;
                }
            }
        }
        let mut with_matrix = case.clone();
        with_matrix.bias = Some((bias, 6 * 40, 40));
        let want = one_shot(&with_matrix, None);
        case.alibi = Some(slopes.clone());
        for level in levels() {
            let got = one_shot(&case, Some(level));
            compare_joined(
                &case,
                &want,
                &got,
                Joined::Merged(0),
                1.0,
                &format!("{level:?} {pos:?}"),
            );
        }
    }
}

/// The worked example of the README: one query at position 2 over keys 0..3, slope 0.5, equal
/// dot products: weights e^(0.5·(j − 2)), so `out` is their mean of `v`.
#[test]
fn alibi_worked_example() {
    let shape = Shape::new(1, 1, 3, 1);
    let p = Params::new(shape).with_scale(0.0).with_alibi(&[0.5]);
    let (q, k, v) = ([1.0f32], [1.0f32; 3], [1.0f32, 2.0, 4.0]);
    let w: Vec<f64> = (0..3).map(|j| (0.5 * (j as f64 - 2.0)).exp()).collect();
    let want = (w[0] + 2.0 * w[1] + 4.0 * w[2]) / w.iter().sum::<f64>();
    for level in levels() {
        let mut out = [0.0f32];
        level.attention(&p, &q, &k, &v, &mut out, None).unwrap();
        assert!(
            (out[0] as f64 - want).abs() < 1e-6,
            "{level:?}: {} {want}",
            out[0]
        );
    }
}

#[test]
fn short_slopes_and_unplaceable_positions_are_refused() {
    let (p, q, k, out0, lse0) = common::error_fixture();
    let s = p.shape;
    let one = [0.5f32];
    let bad = p.with_alibi(&one);
    let (mut out, mut lse) = (out0.clone(), lse0.clone());
    let too_short = Err(Error::TooShort {
        tensor: Tensor::Alibi,
        needed: s.q_heads,
        len: 1,
    });
    assert_eq!(
        qkv::attention(&bad, &q, &k, &k, &mut out, Some(&mut lse)),
        too_short
    );
    assert_eq!(
        qkv::reference::attention(&bad, &q, &k, &k, &mut out, Some(&mut lse)),
        too_short
    );
    assert_eq!(
        split::partial(&bad, &q, &k, &k, 0..4, &mut out, &mut lse),
        too_short
    );
    assert_eq!((out, lse), (out0.clone(), lse0.clone()));
    // A part whose shifted query position leaves i64 has no exact ALiBi distance: 2^63 keys
    // (broadcast K and V) at a position near i64::MIN, as the mask tests do.
    let huge = Shape::new(1, 1, (1 << 63) + 1, 4);
    let slopes = [0.5f32];
    let broadcast = qkv::Layout {
        head_stride: 0,
        row_stride: 0,
    };
    let p = Params::new(huge)
        .with_layouts(p.q, broadcast, broadcast, p.out)
        .with_mask(Mask::NONE.aligned(QueryPos::Offset(i64::MIN)))
        .with_alibi(&slopes);
    let (mut out, mut lse) = (vec![7.0f32; 4], vec![7.0f32; 1]);
    let err = split::partial(&p, &q, &k, &k, 1..(1 << 63) + 1, &mut out, &mut lse);
    assert_eq!(err, Err(Error::Overflow(Tensor::Q)));
    assert_eq!((out, lse), (vec![7.0; 4], vec![7.0]));
}
