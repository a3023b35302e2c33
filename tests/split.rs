//! Split-KV: partials over key ranges and their merge, at every level and emulated width,
//! against the one-shot call and the reference under `tolerance::merged_*_bound`.

mod common;
use common::{Case, Rng, Runner};
use qkv::split::{self, Level};
use qkv::{Error, Mask, Params, Shape, Tensor};

fn level(r: Runner) -> Level {
    match r {
        Runner::Isa(i) => Level::Isa(i),
        Runner::Emulated(e) => Level::Emulated(e),
    }
}

/// Per-row magnitudes for the bound, as `common::compare` computes them.
fn row_abs(case: &Case, h: usize, i: usize) -> (f32, f32) {
    let p = case.params();
    let s = case.shape;
    let g = h / (s.q_heads / s.kv_heads);
    let (mut score_abs, mut v_abs) = (0.0f32, 0.0f32);
    for j in (0..s.kv_len).filter(|&j| p.is_visible(i, j)) {
        let qr = &case.q[p.q.at(h, i)..][..s.head_dim];
        let kr = &case.k[p.k.at(g, j)..][..s.head_dim];
        let a: f32 = qr.iter().zip(kr).map(|(a, b)| (a * b).abs()).sum();
        score_abs = score_abs.max(p.scale().abs() * a);
        let vr = &case.v[p.v.at(g, j)..][..s.v_dim];
        v_abs = vr.iter().fold(v_abs, |m, x| m.max(x.abs()));
    }
    (score_abs, v_abs)
}

/// Compares a merged result with `want` (the reference, or a one-shot call with `slack` 2 for
/// the one-shot's own error) under the merged bound of `depth`.
#[allow(clippy::too_many_arguments)]
fn compare_merged(
    case: &Case,
    want: &[f32],
    want_lse: &[f32],
    got: &[f32],
    got_lse: &[f32],
    depth: usize,
    slack: f32,
    who: &str,
) {
    let p = case.params();
    let s = case.shape;
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let (score_abs, v_abs) = row_abs(case, h, i);
            let w_lse = want_lse[h * s.q_len + i];
            let lse_abs = if w_lse.is_finite() {
                w_lse.abs() + 20.0
            } else {
                0.0
            };
            let bound = slack
                * qkv::tolerance::merged_output_bound(
                    score_abs, v_abs, s.head_dim, s.kv_len, lse_abs, depth,
                );
            let row = p.out.at(h, i);
            for c in 0..s.v_dim {
                let (w, g) = (want[row + c], got[row + c]);
                let ok = if w.is_nan() {
                    g.is_nan()
                } else {
                    w == g || (w - g).abs() <= bound
                };
                assert!(
                    ok,
                    "{who}: out[{h}][{i}][{c}] = {g}, want {w}, bound {bound}\n{s:?} {:?}",
                    case.mask
                );
            }
            let g_lse = got_lse[h * s.q_len + i];
            let lb = slack
                * qkv::tolerance::merged_lse_bound(score_abs, s.head_dim, s.kv_len, lse_abs, depth);
            let ok = if w_lse.is_nan() {
                g_lse.is_nan()
            } else {
                w_lse == g_lse || (w_lse - g_lse).abs() <= lb
            };
            assert!(
                ok,
                "{who}: lse[{h}][{i}] = {g_lse}, want {w_lse}, bound {lb}\n{s:?} {:?}",
                case.mask
            );
        }
    }
}

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

type Partial = (Vec<f32>, Vec<f32>);

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

fn one_shot(case: &Case, runner: Option<Runner>) -> Partial {
    let s = case.shape;
    let p = case.params();
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    match runner {
        Some(r) => r.run(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
        None => qkv::reference::attention(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
    }
    .expect("one-shot accepts the case");
    (out, lse)
}

#[test]
fn random_splits_merge_to_one_shot_and_reference() {
    let mut rng = Rng(50);
    let cases = if cfg!(miri) { 2 } else { 150 };
    for n in 0..cases {
        let (max_len, max_dim) = if cfg!(miri) {
            (6, 6)
        } else if n % 5 == 0 {
            (140, 24)
        } else {
            (40, 24)
        };
        let case = Case::random(&mut rng, max_len, max_dim);
        let want = one_shot(&case, None);
        for runner in Runner::all() {
            let parts = rng.range(1, 5);
            let ranges = split_points(&mut rng, case.shape.kv_len, parts);
            let lvl = level(runner);
            let mut acc = partial(&case, lvl, ranges[0].clone());
            for r in &ranges[1..] {
                let b = partial(&case, lvl, r.clone());
                merge(&case, &mut acc, &b);
            }
            let who = format!("{runner:?} {ranges:?}");
            compare_merged(
                &case,
                &want.0,
                &want.1,
                &acc.0,
                &acc.1,
                parts - 1,
                1.0,
                &who,
            );
            let same = one_shot(&case, Some(runner));
            compare_merged(
                &case,
                &same.0,
                &same.1,
                &acc.0,
                &acc.1,
                parts - 1,
                2.0,
                &who,
            );
        }
    }
}

#[test]
fn one_partial_over_everything_is_the_one_shot_call_exactly() {
    let mut rng = Rng(51);
    let cases = if cfg!(miri) { 2 } else { 60 };
    for _ in 0..cases {
        let case = Case::random(&mut rng, if cfg!(miri) { 6 } else { 70 }, 20);
        for runner in Runner::all() {
            let got = partial(&case, level(runner), 0..case.shape.kv_len);
            let want = one_shot(&case, Some(runner));
            let same = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
            };
            assert!(same(&got.0, &want.0), "{runner:?} out");
            assert!(same(&got.1, &want.1), "{runner:?} lse");
        }
    }
}

#[test]
fn merge_is_commutative_exactly_and_associative_within_tolerance() {
    let mut rng = Rng(52);
    let cases = if cfg!(miri) { 2 } else { 80 };
    for _ in 0..cases {
        let case = Case::random(&mut rng, if cfg!(miri) { 6 } else { 50 }, 16);
        let lvl = level(rng.pick(&Runner::all()));
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
        for (x, y) in ab.0.iter().zip(&ba.0).chain(ab.1.iter().zip(&ba.1)) {
            assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
        }
        // (a ⊕ b) ⊕ c ≈ a ⊕ (b ⊕ c).
        let mut left = ab;
        merge(&case, &mut left, &c);
        let mut bc = b.clone();
        merge(&case, &mut bc, &c);
        let mut right = a.clone();
        merge(&case, &mut right, &bc);
        compare_merged(&case, &left.0, &left.1, &right.0, &right.1, 2, 2.0, "assoc");
        // Both against the reference.
        let want = one_shot(&case, None);
        compare_merged(&case, &want.0, &want.1, &right.0, &right.1, 2, 1.0, "a(bc)");
    }
}

#[test]
fn fully_masked_partials_merge_as_identity() {
    // Causal, queries at positions 0..ql (top-left) over kv keys: keys ql..kv are masked for
    // every row, so that partial is all (0, -inf).
    let mut rng = Rng(53);
    let (ql, kv) = if cfg!(miri) { (4, 12) } else { (8, 32) };
    let shape = Shape::new(2, ql, kv, if cfg!(miri) { 4 } else { 8 });
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal().aligned(qkv::QueryPos::TopLeft);
    for runner in Runner::all() {
        let lvl = level(runner);
        let empty = partial(&case, lvl, ql..kv);
        assert!(empty.0.iter().all(|&x| x == 0.0));
        assert!(empty.1.iter().all(|&x| x == f32::NEG_INFINITY));
        let mut a = partial(&case, lvl, 0..ql);
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
        let none = partial(&case, lvl, 3..3);
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
    let shape = Shape::new(2, 3, 10, 4);
    let p = Params::new(shape);
    let q = vec![0.5f32; 2 * 3 * 4];
    let k = vec![0.5f32; 2 * 10 * 4];
    let mut out = vec![7.0f32; 2 * 3 * 4];
    let mut lse = vec![7.0f32; 6];

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
    let want = qkv::attention(&p, &q, short_k, &k, &mut out, Some(&mut lse));
    assert!(matches!(
        want,
        Err(Error::TooShort {
            tensor: Tensor::K,
            ..
        })
    ));
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
    let kv = if cfg!(miri) { 6 } else { 45 };
    let shape = Shape::new(2, 7, kv, 8).gqa(4, 2);
    for pos in [
        qkv::QueryPos::BottomRight,
        qkv::QueryPos::TopLeft,
        qkv::QueryPos::Offset(9),
    ] {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        case.mask = Mask::sliding_window(5).with_right(Some(2)).aligned(pos);
        let rs = kv + 3;
        let mut data = rng.fill(4 * 7 * rs, 2.0);
        for (n, x) in data.iter_mut().enumerate() {
            if n % 5 == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
        case.bias = Some((data, 7 * rs, rs));
        case.relayout(&mut rng);
        let want = one_shot(&case, None);
        for runner in Runner::all() {
            for cut in 0..=kv {
                let mut a = partial(&case, level(runner), 0..cut);
                let b = partial(&case, level(runner), cut..kv);
                merge(&case, &mut a, &b);
                compare_merged(&case, &want.0, &want.1, &a.0, &a.1, 1, 1.0, "cut");
            }
        }
    }
}
