//! Caller-owned working memory: every level and emulated width, with the least workspace a
//! shape runs in, sizes between, and the full one, against the reference; and the errors and
//! guarantees of the workspace calls.

mod common;
use common::{Case, Expected, Rng, budget, check_in, levels, one_shot};
use qkv::{Error, Mask, Params, Shape};

/// Workspace sizes to try for `params`: the least, a few between (each a tile size of the
/// table or just above one), and the full one.
fn sizes(params: &Params) -> Vec<usize> {
    let (least, best) = (qkv::min_workspace_len(params), qkv::workspace_len(params));
    let mut s = vec![
        least,
        least + 7,
        (least + best) / 3,
        (least + best) / 2,
        best - 1,
        best,
    ];
    s.retain(|&n| n >= least && n <= best);
    s.dedup();
    s
}

#[test]
fn every_level_and_width_matches_the_reference_in_every_workspace_size() {
    let (n, len, dim) = budget((40, 70, 40), (2, 7, 6));
    let mut rng = Rng(31);
    for _ in 0..n {
        let mut case = Case::random(&mut rng, len, dim);
        case.relayout(&mut rng);
        let want = Expected::new(&case);
        for level in levels() {
            for ws in sizes(&case.params()) {
                check_in(&case, &want, level, Some(ws));
            }
        }
    }
}

#[test]
fn prefill_and_decode_shapes_run_in_the_least_workspace() {
    // A prefill past every full-size tile (rows, keys, head and value panels) and a GQA
    // decode, both causal: the least workspace takes one row, 16 keys and 16 columns at a time.
    let shapes = budget(
        vec![
            Shape::new(2, 60, 70, 130).with_v_dim(140),
            Shape::new(1, 1, 300, 64).gqa(8, 2),
        ],
        vec![Shape::new(1, 5, 9, 3), Shape::new(1, 1, 20, 5).gqa(4, 1)],
    );
    let mut rng = Rng(32);
    for shape in shapes {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        case.mask = Mask::causal();
        let want = Expected::new(&case);
        let p = case.params();
        for level in levels() {
            check_in(&case, &want, level, Some(qkv::min_workspace_len(&p)));
            check_in(&case, &want, level, Some(qkv::workspace_len(&p)));
        }
    }
}

#[test]
fn a_workspace_below_the_least_is_refused_and_nothing_is_written() {
    let shape = Shape::new(2, 3, 5, 4);
    let p = Params::new(shape).with_scale(0.5);
    let least = qkv::min_workspace_len(&p);
    let (q, k, v) = (vec![0.5; 24], vec![0.25; 40], vec![1.0; 40]);
    for level in levels() {
        let mut out = vec![7.0; 24];
        let mut lse = vec![7.0; 6];
        let mut ws = vec![7.0; least - 1];
        let r = level.attention_in(&mut ws, &p, &q, &k, &v, &mut out, Some(&mut lse));
        assert_eq!(
            r,
            Err(Error::WorkspaceTooSmall {
                needed: least,
                len: least - 1
            })
        );
        assert!(out.iter().chain(&lse).chain(&ws).all(|&x| x == 7.0));
    }
    // Bad inputs are reported before the workspace is looked at.
    let mut out = vec![0.0; 23];
    let r = qkv::attention_in(&mut [], &p, &q, &k, &v, &mut out, None);
    assert!(matches!(r, Err(Error::TooShort { .. })), "{r:?}");
}

#[test]
fn workspace_sizes_are_what_the_docs_say() {
    // The least is a few dozen floats whatever the shape; the full size at most the stack
    // workspace of the `stack-workspace` feature.
    for shape in [
        Shape::new(1, 1, 1, 1),
        Shape::new(32, 1, 32768, 128).gqa(32, 8),
        Shape::new(8, 4096, 4096, 256),
        Shape::new(1, 100_000, 100_000, 100_000),
    ] {
        let p = Params::new(shape);
        assert!(qkv::min_workspace_len(&p) <= 64, "{shape:?}");
        assert!(
            qkv::workspace_len(&p) <= qkv::kernel::STACK_BYTES / 4,
            "{shape:?}"
        );
        assert!(qkv::min_workspace_len(&p) <= qkv::workspace_len(&p));
    }
    // A one-row decode needs little more than its value row and a block of scores.
    let p = Params::new(Shape::new(1, 1, 4096, 64));
    assert!(qkv::workspace_len(&p) < 256, "{}", qkv::workspace_len(&p));
}

#[test]
fn split_and_stream_run_in_the_least_workspace() {
    let shape = budget(
        Shape::new(1, 3, 100, 20).gqa(4, 2),
        Shape::new(1, 2, 9, 3).gqa(2, 1),
    );
    let mut rng = Rng(33);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal();
    let p = case.params();
    let s = case.shape;
    let least = qkv::min_workspace_len(&p);
    let rows = s.q_heads * s.q_len;
    for level in levels() {
        let (want, _) = one_shot(&case, Some(level));
        // Two partials in the least workspace, merged.
        let cut = s.kv_len / 3;
        let (mut a, mut la) = (vec![0.0; case.out_len], vec![0.0; rows]);
        let (mut b, mut lb) = (vec![0.0; case.out_len], vec![0.0; rows]);
        let mut ws = vec![f32::NAN; least];
        let (q, k, v) = (&case.q, &case.k, &case.v);
        qkv::split::partial_in(level, &mut ws, &p, q, k, v, 0..cut, &mut a, &mut la).unwrap();
        qkv::split::partial_in(level, &mut ws, &p, q, k, v, cut..s.kv_len, &mut b, &mut lb)
            .unwrap();
        qkv::split::merge(&p, &mut a, &mut la, &b, &lb).unwrap();
        // A stream fed in chunks of 7 keys, in the least workspace.
        let mut state = vec![0.0; qkv::stream::Stream::state_len(&s)];
        let mut stream = qkv::stream::Stream::new(&p, &mut state)
            .unwrap()
            .with_level(level);
        let kv_row = |j: usize| j * p.k.row_stride;
        for start in (0..s.kv_len).step_by(7) {
            let end = (start + 7).min(s.kv_len);
            let (kc, vc) = (&k[kv_row(start)..], &v[start * p.v.row_stride..]);
            stream.update_in(&mut ws, q, kc, vc, start..end).unwrap();
        }
        let (mut c, mut lc) = (vec![0.0; case.out_len], vec![0.0; rows]);
        stream.finish(&mut c, Some(&mut lc)).unwrap();
        for (got, name) in [(&a, "split"), (&c, "stream")] {
            for (x, y) in got.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{level:?} {name}: {x} vs {y}"
                );
            }
        }
        // Too small: refused, nothing written.
        let mut small = vec![f32::NAN; least - 1];
        let before = (a.clone(), la.clone());
        let r = qkv::split::partial_in(level, &mut small, &p, q, k, v, 0..cut, &mut a, &mut la);
        assert!(matches!(r, Err(Error::WorkspaceTooSmall { .. })));
        assert_eq!((a, la), before);
    }
}
