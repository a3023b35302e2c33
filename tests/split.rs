//! Split-KV: partials over key ranges and their merge, at every level and emulated width,
//! against the one-shot call and the reference under `tolerance::merged_*_bound`.

mod common;
use common::{
    Case, Joined, Rng, assert_same_bits, budget, compare_joined, error_fixture, joined_series,
    levels, one_shot, random_cases, short_k_error,
};
use qkv::split::{self, Level};
use qkv::{Error, Mask, Shape, Tensor};

/// Random split points of `0..n` into `parts` ranges (some possibly empty).
fn split_points(rng: &mut Rng, n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut cuts: Vec<usize> = (0..parts - 1).map(|_| rng.range(0, n)).collect();
    cuts.sort();
    let mut ranges = vec![];
    let mut start = 0;
    for c in cuts.into_iter().chain([n]) {
        ranges.push(start..c);
        start = c;
    }
    ranges
}

type Partial = common::Outputs;

fn partial(case: &Case, lvl: Level, keys: std::ops::Range<usize>) -> Partial {
    let s = case.shape;
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    split::partial_at(
        lvl,
        &case.params(),
        &case.q,
        &case.k,
        &case.v,
        keys,
        &mut out,
        &mut lse,
    )
    .expect("partial accepts the case");
    (out, lse)
}

fn merge(case: &Case, a: &mut Partial, b: &Partial) {
    split::merge(&case.params(), &mut a.0, &mut a.1, &b.0, &b.1).expect("merge accepts");
}

#[test]
fn random_splits_merge_to_one_shot_and_reference() {
    joined_series(50, 150, 5, |rng, case, level| {
        let parts = rng.range(1, 5);
        let ranges = split_points(rng, case.shape.kv_len, parts);
        let mut acc = partial(case, level, ranges[0].clone());
        for r in &ranges[1..] {
            let b = partial(case, level, r.clone());
            merge(case, &mut acc, &b);
        }
        // The sinks join once, after the merges: one more level.
        split::add_sinks(&case.params(), &mut acc.0, &mut acc.1).expect("add_sinks accepts");
        let who = format!("{level:?} {ranges:?}");
        (acc, Joined::Merged(parts), who)
    });
}

#[test]
fn one_partial_over_everything_is_the_one_shot_call_exactly() {
    for mut case in random_cases(51, budget((60, 70, 20), (1, 6, 20))) {
        // A partial has no sinks (`split::add_sinks` adds them).
        case.sinks = None;
        for level in levels() {
            let got = partial(&case, level, 0..case.shape.kv_len);
            let want = one_shot(&case, Some(level));
            assert_same_bits(&want, &got, &format!("{level:?}"));
        }
    }
}

#[test]
fn merge_is_commutative_exactly_and_associative_within_tolerance() {
    let mut rng = Rng(52);
    for _ in 0..budget(80, 1) {
        let mut case = Case::random(&mut rng, budget(50, 6), 16);
        // The algebra of partials, which have no sinks (`add_sinks` is tested elsewhere).
        case.sinks = None;
        let lvl = rng.pick(&levels());
        let r = split_points(&mut rng, case.shape.kv_len, 3);
        let (a, b, c) = (
            partial(&case, lvl, r[0].clone()),
            partial(&case, lvl, r[1].clone()),
            partial(&case, lvl, r[2].clone()),
        );
        // a ⊕ b == b ⊕ a, bit for bit.
        let mut ab = a.clone();
        merge(&case, &mut ab, &b);
        let mut ba = b.clone();
        merge(&case, &mut ba, &a);
        assert_same_bits(&ab, &ba, "a ⊕ b against b ⊕ a");
        // (a ⊕ b) ⊕ c ≈ a ⊕ (b ⊕ c).
        let mut left = ab;
        merge(&case, &mut left, &c);
        let mut bc = b.clone();
        merge(&case, &mut bc, &c);
        let mut right = a.clone();
        merge(&case, &mut right, &bc);
        compare_joined(&case, &left, &right, Joined::Merged(2), 2.0, "assoc");
        // Both against the reference.
        let want = one_shot(&case, None);
        compare_joined(&case, &want, &right, Joined::Merged(2), 1.0, "a(bc)");
    }
}

#[test]
fn fully_masked_partials_merge_as_identity() {
    // Causal, queries at positions 0..ql (top-left) over kv keys: keys ql..kv are masked for
    // every row, so that partial is all (0, -inf).
    let mut rng = Rng(53);
    let (ql, kv) = budget((8, 32), (4, 12));
    let shape = Shape::new(2, ql, kv, budget(8, 4));
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal().aligned(qkv::QueryPos::TopLeft);
    for level in levels() {
        let empty = partial(&case, level, ql..kv);
        assert!(empty.0.iter().all(|&x| x == 0.0));
        assert!(empty.1.iter().all(|&x| x == f32::NEG_INFINITY));
        let mut a = partial(&case, level, 0..ql);
        let before = a.clone();
        merge(&case, &mut a, &empty);
        assert_eq!(a, before);
        let mut e = empty.clone();
        merge(&case, &mut e, &before);
        assert_eq!(e, before);
        let mut ee = empty.clone();
        merge(&case, &mut ee, &empty);
        assert_eq!(ee, empty);
        // An empty range behaves the same.
        let none = partial(&case, level, 3..3);
        assert_eq!(none, empty);
    }
}

#[test]
fn merge_rows_edge_cases() {
    let mut a = [1.0f32, 2.0];
    let mut la = f32::NEG_INFINITY;
    split::merge_rows(&mut a, &mut la, &[3.0, 4.0], f32::NEG_INFINITY).unwrap();
    assert_eq!((a, la), ([0.0, 0.0], f32::NEG_INFINITY));

    let mut a = [1.0f32, 2.0];
    let mut la = 0.5;
    split::merge_rows(&mut a, &mut la, &[3.0, 4.0], f32::NAN).unwrap();
    assert!(la.is_nan() && a.iter().all(|x| x.is_nan()));

    // Equal weights: the mean, lse + ln 2.
    let mut a = [1.0f32, 2.0];
    let mut la = 3.0;
    split::merge_rows(&mut a, &mut la, &[3.0, 4.0], 3.0).unwrap();
    assert_eq!(a, [2.0, 3.0]);
    assert!((la - (3.0 + std::f32::consts::LN_2)).abs() < 1e-6);

    // A NaN in a contributing row survives even a weight that underflows.
    let mut a = [1.0f32, 2.0];
    let mut la = 0.0;
    split::merge_rows(&mut a, &mut la, &[f32::NAN, 4.0], -1000.0).unwrap();
    assert!(a[0].is_nan() && a[1] == 2.0 && la == 0.0);

    // Huge lse differences: the larger one wins, no overflow.
    let mut a = [1.0f32];
    let mut la = 3.0e38;
    split::merge_rows(&mut a, &mut la, &[5.0], -3.0e38).unwrap();
    assert_eq!((a, la), ([1.0], 3.0e38));

    // +inf lse (a sum that overflowed f32) dominates.
    let mut a = [1.0f32];
    let mut la = f32::INFINITY;
    split::merge_rows(&mut a, &mut la, &[5.0], 2.0).unwrap();
    assert_eq!((a, la), ([1.0], f32::INFINITY));

    let mut a = [1.0f32, 2.0];
    let mut la = 0.0;
    assert!(matches!(
        split::merge_rows(&mut a, &mut la, &[1.0], 0.0),
        Err(Error::TooShort {
            tensor: Tensor::Out,
            ..
        })
    ));
    assert_eq!((a, la), ([1.0, 2.0], 0.0));
}

#[test]
fn errors_leave_outputs_untouched() {
    let (p, q, k, mut out, mut lse) = error_fixture();

    #[allow(clippy::reversed_empty_ranges)]
    let bad = [(0..11), (4..3), (11..11)];
    for keys in bad {
        let e = split::partial(&p, &q, &k, &k, keys.clone(), &mut out, &mut lse);
        assert_eq!(
            e,
            Err(Error::KeyRange {
                start: keys.start,
                end: keys.end,
                kv_len: 10
            })
        );
        assert!(!e.unwrap_err().to_string().is_empty());
    }
    // The full problem's validation comes first, with the one-shot call's errors.
    let short_k = &k[..k.len() - 1];
    let want = short_k_error(&p, &q, &k, &mut out, &mut lse);
    let got = split::partial(&p, &q, short_k, &k, 0..2, &mut out, &mut lse);
    assert_eq!(got, want);
    let got = split::partial(&p, &q, &k, &k, 0..2, &mut out, &mut lse[..5]);
    assert!(matches!(
        got,
        Err(Error::TooShort {
            tensor: Tensor::Lse,
            ..
        })
    ));
    // merge checks both sides.
    let (o2, l2) = (out.clone(), lse.clone());
    let got = split::merge(&p, &mut out, &mut lse, &o2[..5], &l2);
    assert!(matches!(
        got,
        Err(Error::TooShort {
            tensor: Tensor::Out,
            ..
        })
    ));
    let got = split::merge(&p, &mut out, &mut lse, &o2, &l2[..1]);
    assert!(matches!(
        got,
        Err(Error::TooShort {
            tensor: Tensor::Lse,
            ..
        })
    ));
    let overlap = p.with_layouts(
        p.q,
        p.k,
        p.v,
        qkv::Layout {
            head_stride: 1,
            row_stride: 1,
        },
    );
    let got = split::merge(&overlap, &mut out, &mut lse, &o2, &l2);
    assert_eq!(got, Err(Error::Overlap(Tensor::Out)));
    assert!(out.iter().chain(&lse).all(|&x| x == 7.0));
}

#[test]
fn bias_and_windows_keep_absolute_positions() {
    // A sliding window with a right margin, bottom-right and offset alignments, per-head
    // bias with -inf holes, split at every point.
    let mut rng = Rng(54);
    // Under Miri (~1000x slower): fewer keys, rows and heads, and three cuts.
    let (kv, ql, heads) = budget((45, 7, 4), (6, 3, 2));
    let shape = Shape::new(2, ql, kv, budget(8, 4)).gqa(heads, 2);
    let cuts: Vec<usize> = if cfg!(miri) {
        vec![0, 2, kv]
    } else {
        (0..=kv).collect()
    };
    for pos in [
        qkv::QueryPos::BottomRight,
        qkv::QueryPos::TopLeft,
        qkv::QueryPos::Offset(9),
    ] {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        case.mask = Mask::sliding_window(5).with_right(Some(2)).aligned(pos);
        let rs = kv + 3;
        let mut data = rng.fill(heads * ql * rs, 2.0);
        for (n, x) in data.iter_mut().enumerate() {
            if n % 5 == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
        case.bias = Some((data, ql * rs, rs));
        case.relayout(&mut rng);
        let want = one_shot(&case, None);
        for level in levels() {
            for &cut in &cuts {
                let mut a = partial(&case, level, 0..cut);
                let b = partial(&case, level, cut..kv);
                merge(&case, &mut a, &b);
                compare_joined(&case, &want, &a, Joined::Merged(1), 1.0, "cut");
            }
        }
    }
}
