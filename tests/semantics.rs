//! The documented semantics, case by case, at every level and emulated width:
//! masks and alignments, GQA, strides, extreme scores, empty rows, NaN rules.

mod common;
use common::{Case, Outputs, Rng, budget, check_all, levels, one_shot};
use qkv::{Bias, Layout, Mask, Params, QueryPos, Shape};

/// Shapes on either side of lane widths (4, 8, 16) and the kernel's tiles: `MR` 4 (the
/// unpacked decode path below it), `BLOCK_Q` 48 and `BLOCK_K` 48 (and the 6- and 8-key
/// Q·Kᵀ tiles inside them), `Q_DIM` 128 (wider heads go in panels), `V_PANEL` 128.
fn edge_shapes() -> Vec<Shape> {
    let lens: &[(usize, usize)] = if cfg!(miri) {
        &[(1, 5), (5, 1)]
    } else {
        &[
            (1, 5),
            (3, 97),
            (4, 48),
            (5, 129),
            (47, 49),
            (48, 48),
            (49, 47),
            (63, 65),
            (64, 1),
            (97, 95),
            (129, 33),
        ]
    };
    let dims: &[(usize, usize)] = if cfg!(miri) {
        &[(3, 5)]
    } else {
        &[
            (1, 1),
            (3, 5),
            (8, 8),
            (16, 17),
            (63, 64),
            (65, 129),
            (127, 130),
            (128, 128),
            (129, 7),
            (200, 16),
        ]
    };
    let mut v = vec![];
    for &(q_len, kv_len) in lens {
        for &(d, dv) in dims {
            v.push(Shape::new(1, q_len, kv_len, d).with_v_dim(dv));
        }
    }
    v
}

fn masks(s: &Shape) -> Vec<Mask> {
    let kv = s.kv_len;
    let mut m = vec![Mask::NONE];
    for pos in [
        QueryPos::BottomRight,
        QueryPos::TopLeft,
        QueryPos::Offset(3),
        QueryPos::Offset(-2),
    ] {
        m.push(Mask::causal().aligned(pos));
        m.push(Mask::sliding_window(kv / 3).aligned(pos));
        m.push(Mask::sliding_window(2).with_right(Some(1)).aligned(pos));
        m.push(Mask {
            left: None,
            right: Some(kv / 2),
            query_pos: pos,
        });
    }
    m
}

#[test]
fn every_mask_and_alignment_matches_reference() {
    let mut rng = Rng(10);
    for shape in edge_shapes() {
        for mask in masks(&shape) {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.mask = mask;
            check_all(&case);
        }
    }
}

#[test]
fn gqa_ratios_and_layouts_match_reference() {
    let mut rng = Rng(11);
    // Under Miri (~1000x slower): one ratio with two groups, planar and re-laid out.
    let (len, dim, v_dim) = budget((37, 12, 9), (3, 5, 3));
    let ratios: &[(usize, usize)] = if cfg!(miri) {
        &[(4, 2)]
    } else {
        &[(1, 1), (2, 1), (4, 2), (6, 3), (8, 1), (8, 8)]
    };
    let layouts: &[bool] = if cfg!(miri) {
        &[false, true]
    } else {
        &[false, true, true]
    };
    for &(q_heads, kv_heads) in ratios {
        let shape = Shape::new(1, len, len + 5, dim)
            .gqa(q_heads, kv_heads)
            .with_v_dim(v_dim);
        for &relayout in layouts {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            if relayout {
                case.relayout(&mut rng);
            }
            case.mask = Mask::causal();
            check_all(&case);
        }
    }
}

#[test]
fn bias_per_head_and_broadcast_match_reference() {
    let mut rng = Rng(12);
    let shape = if cfg!(miri) {
        Shape::new(2, 3, 5, 4)
    } else {
        Shape::new(2, 19, 70, 8)
    };
    for per_head in [false, true] {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        let row_stride = shape.kv_len + 3;
        let heads = if per_head { 2 } else { 1 };
        let mut data = rng.fill(heads * shape.q_len * row_stride, 3.0);
        for (n, x) in data.iter_mut().enumerate() {
            if n % 7 == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
        let head_stride = if per_head {
            shape.q_len * row_stride
        } else {
            0
        };
        case.bias = Some((data, head_stride, row_stride));
        check_all(&case);
    }
}

/// Every level and the reference on `case`: (who, out, lse), for exact assertions.
fn outputs(case: &Case) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let mut all: Vec<(String, Outputs)> = levels()
        .into_iter()
        .map(|l| (format!("{l:?}"), one_shot(case, Some(l))))
        .collect();
    all.push(("reference".into(), one_shot(case, None)));
    all.into_iter()
        .map(|(who, (out, lse))| (who, out, lse))
        .collect()
}

#[test]
fn scores_of_any_magnitude_do_not_overflow() {
    // q = (1e15, 0), k_j = (c_j·1e15, 0), scale 1: scores c_j · 1e30.
    let shape = Shape::new(1, 1, 3, 2).with_v_dim(3);
    let v = vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 100.0, 200.0, 300.0];
    for (c, want, lse) in [
        ([-1.0, 1.0, -1.0], [10.0, 20.0, 30.0], 1e30),
        ([1.0, 1.0, 1.0], [37.0, 74.0, 111.0], 1e30),
        ([-1.0, -1.0, -1.0], [37.0, 74.0, 111.0], -1e30),
    ] {
        let mut case = Case::dense(&mut Rng(0), shape, 1.0);
        case.scale = Some(1.0);
        case.q = vec![1e15, 0.0];
        case.k = c.iter().flat_map(|&c| [c * 1e15, 0.0]).collect();
        case.v = v.clone();
        for (level, out, l) in outputs(&case) {
            for (o, w) in out.iter().zip(want) {
                assert!((o - w).abs() <= 1e-4 * w, "{level:?}: {out:?} != {want:?}");
            }
            assert!(
                (l[0] - lse).abs() <= 1e-6 * 1e30,
                "{level:?}: lse {} != {lse}",
                l[0]
            );
        }
    }
}

#[test]
fn rows_without_keys_give_zero_and_neg_inf_lse() {
    let mut rng = Rng(13);
    // Bottom-right with q_len > kv_len: the first q_len - kv_len rows see no key.
    let (ql, kv, d) = budget((40, 5, 8), (6, 3, 4));
    let mut case = Case::dense(&mut rng, Shape::new(2, ql, kv, d), 1.0);
    case.mask = Mask::causal();
    for (level, out, lse) in outputs(&case) {
        for h in 0..2 {
            for i in 0..ql {
                let row = &out[(h * ql + i) * d..][..d];
                if i < ql - kv {
                    assert!(row.iter().all(|&x| x == 0.0), "{level:?} row {i}: {row:?}");
                    assert_eq!(lse[h * ql + i], f32::NEG_INFINITY, "{level:?} row {i}");
                } else {
                    assert!(row.iter().all(|x| x.is_finite()) && lse[h * ql + i].is_finite());
                }
            }
        }
    }
    // A bias row of -inf, and a window entirely past the keys.
    let kv = budget(70, 6);
    let mut case = Case::dense(&mut rng, Shape::new(1, 3, kv, d), 1.0);
    let mut bias = vec![0.0; 3 * kv];
    bias[kv..2 * kv].fill(f32::NEG_INFINITY);
    case.bias = Some((bias, 0, kv));
    for (level, out, lse) in outputs(&case) {
        assert!(out[d..2 * d].iter().all(|&x| x == 0.0), "{level:?}");
        assert_eq!(lse[1], f32::NEG_INFINITY, "{level:?}");
        assert!(lse[0].is_finite() && lse[2].is_finite(), "{level:?}");
    }
    let mut case = Case::dense(&mut rng, Shape::new(1, 3, 10, 4), 1.0);
    case.mask = Mask::sliding_window(0).aligned(QueryPos::Offset(100));
    for (level, out, lse) in outputs(&case) {
        assert!(out.iter().all(|&x| x == 0.0), "{level:?}");
        assert!(lse.iter().all(|&x| x == f32::NEG_INFINITY), "{level:?}");
    }
}

#[test]
fn empty_lengths_are_defined() {
    let p = Params::new(Shape::new(2, 0, 4, 8));
    let (q, k, v) = ([0.0f32; 0], [1.0f32; 64], [1.0f32; 64]);
    let mut out = [7.0f32; 3];
    for level in levels() {
        level
            .attention(&p, &q, &k, &v, &mut out, Some(&mut []))
            .unwrap();
        assert_eq!(out, [7.0; 3], "q_len = 0 writes nothing");
    }
    let p = Params::new(Shape::new(2, 3, 0, 4));
    let q = [1.0f32; 24];
    for level in levels() {
        let mut out = [7.0f32; 24];
        let mut lse = [7.0f32; 6];
        level
            .attention(
                &p,
                &q,
                &[] as &[f32],
                &[] as &[f32],
                &mut out,
                Some(&mut lse),
            )
            .unwrap();
        assert_eq!(out, [0.0; 24], "{level:?}: kv_len = 0 gives zero rows");
        assert_eq!(lse, [f32::NEG_INFINITY; 6], "{level:?}");
    }
    // No rows but 2^40 heads (2^30 on 32-bit targets): returns at once instead of walking
    // the heads doing nothing.
    let heads = usize::try_from(1u64 << 40).unwrap_or(1 << 30);
    let p = Params::new(Shape::new(1, 0, 4, 8).gqa(heads, 1));
    let (k, v) = ([1.0f32; 32], [1.0f32; 32]);
    for level in levels() {
        level
            .attention(&p, &[], &k, &v, &mut [], Some(&mut []))
            .unwrap();
    }
    qkv::reference::attention(&p, &[], &k, &v, &mut [], Some(&mut [])).unwrap();
    qkv::split::partial(&p, &[], &k, &v, 1..3, &mut [], &mut []).unwrap();
    qkv::split::merge(&p, &mut [], &mut [], &[], &[]).unwrap();
    let mut state = vec![0.0; qkv::stream::Stream::state_len(&p.shape)];
    let mut stream = qkv::stream::Stream::new(&p, &mut state).unwrap();
    stream.update(&[], &k, &v, 0..4).unwrap();
    stream.finish(&mut [], Some(&mut [])).unwrap();
}

#[test]
fn nan_propagates_where_included_and_never_leaks_where_excluded() {
    let mut rng = Rng(14);
    // kv keys past a 48-key block natively; under Miri a short row with the same structure.
    // Bottom-right causal: row i sees keys ≤ kv - 6 + i, so key kv - 4 is seen by rows 2...
    let (kv, window, out_of_window, biased) = budget((70, 40, 3, 50), (10, 3, 0, 5));
    let nan_key = kv - 4;
    let shape = Shape::new(1, 6, kv, 5).with_v_dim(3);
    // NaN in q row 2: that row (and its lse) is NaN, no other.
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.q[2 * 5 + 1] = f32::NAN;
    for (level, out, lse) in outputs(&case) {
        for i in 0..6 {
            let nan = i == 2;
            assert!(
                out[i * 3..][..3].iter().all(|x| x.is_nan() == nan),
                "{level:?} row {i}"
            );
            assert_eq!(lse[i].is_nan(), nan, "{level:?} row {i}");
        }
    }
    // NaN in k of key kv - 4 with a causal mask (bottom-right: row i sees keys ≤ kv - 6 + i):
    // rows 2.. include it and are NaN; rows 0 and 1 exclude it and stay finite.
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal();
    case.k[nan_key * 5] = f32::NAN;
    for (level, out, _) in outputs(&case) {
        for i in 0..6 {
            let nan = i >= 2;
            assert!(
                out[i * 3..][..3].iter().all(|x| x.is_nan() == nan),
                "{level:?} row {i}"
            );
        }
    }
    // NaN in v[kv - 4][1]: only column 1 of rows that include key kv - 4.
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal();
    case.v[nan_key * 3 + 1] = f32::NAN;
    for (level, out, lse) in outputs(&case) {
        for i in 0..6 {
            for c in 0..3 {
                let nan = i >= 2 && c == 1;
                assert_eq!(out[i * 3 + c].is_nan(), nan, "{level:?} row {i} col {c}");
            }
            assert!(lse[i].is_finite(), "{level:?}");
        }
    }
    // NaN and inf in k and v of keys excluded by a -inf bias (and outside a window).
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::sliding_window(window);
    let mut bias = vec![0.0; 6 * kv];
    for i in 0..6 {
        bias[i * kv + biased] = f32::NEG_INFINITY;
    }
    case.bias = Some((bias, 0, kv));
    for j in [biased, out_of_window] {
        case.k[j * 5..][..5].fill(f32::NAN);
        case.v[j * 3..][..3].copy_from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    }
    for (level, out, lse) in outputs(&case) {
        assert!(
            out.iter().chain(&lse).all(|x| x.is_finite()),
            "{level:?}: {out:?}"
        );
    }
}

#[test]
fn strided_views_into_bigger_buffers() {
    // q/k/v as views into a fused [seq][3][heads][dim] QKV buffer, out interleaved.
    let (heads, len, dim) = budget((3, 21, 16), (2, 3, 5));
    let mut rng = Rng(15);
    let qkv = rng.fill(len * 3 * heads * dim, 1.0);
    let layout = Layout {
        head_stride: dim,
        row_stride: 3 * heads * dim,
    };
    let shape = Shape::new(heads, len, len, dim);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.q = qkv.clone();
    case.k = qkv[heads * dim..].to_vec();
    case.v = qkv[2 * heads * dim..].to_vec();
    let out = Layout::interleaved(heads, dim);
    case.layouts = [layout, layout, layout, out];
    case.mask = Mask::causal();
    check_all(&case);
    // A stride-0 head broadcast of K and V is a legal input layout.
    let shape = if cfg!(miri) {
        Shape::new(1, 3, 4, 5)
    } else {
        Shape::new(1, 9, 13, 8)
    };
    let mut case = Case::dense(&mut rng, shape.gqa(2, 2), 1.0);
    case.layouts[1].head_stride = 0;
    case.layouts[2].head_stride = 0;
    check_all(&case);
}

#[test]
fn bias_struct_broadcast_helper() {
    let b = Bias::broadcast(&[0.0; 6], 3);
    assert_eq!((b.head_stride, b.row_stride), (0, 3));
}
