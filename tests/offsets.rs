//! Split-KV partials, stream chunks and `parallel`'s tasks accept every query position the
//! one-shot call accepts, `QueryPos::Offset` near `i64::MAX` and `i64::MIN` included: a part
//! whose shifted position leaves `i64` moves its window with it, and sees exactly the keys
//! the whole problem gives its rows.

mod common;
use common::{Case, Outputs, Rng, budget, one_shot};
use qkv::split::{merge, partial};
use qkv::stream::Stream;
use qkv::{Mask, Params, QueryPos, Shape};

/// Positions at both ends of `i64`, and masks whose windows reach across them or not.
fn cases() -> Vec<Case> {
    let shapes = budget(
        vec![
            Shape::new(1, 49, 49, 3),
            Shape::new(2, 60, 100, 8).gqa(4, 2),
        ],
        vec![Shape::new(1, 5, 9, 2)],
    );
    let offsets = [i64::MAX, i64::MAX - 3, i64::MIN, i64::MIN + 2];
    let masks = [
        Mask::causal(),
        Mask::sliding_window(7),
        Mask::sliding_window(usize::MAX),
        Mask::causal().with_right(Some(usize::MAX - 5)),
        Mask::sliding_window(3).with_right(Some(40)),
    ];
    let mut rng = Rng(71);
    let mut all = Vec::new();
    for shape in shapes {
        for off in offsets {
            for mask in masks {
                let mut case = Case::dense(&mut rng, shape, 1.0);
                case.mask = mask.aligned(QueryPos::Offset(off));
                all.push(case);
            }
        }
    }
    all
}

/// `got` (output, log-sum-exp) matches `want`, the one-shot pair.
fn close(got: (&[f32], &[f32]), want: &Outputs, who: &str) {
    for (got, want) in [(got.0, &want.0), (got.1, &want.1)] {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok =
                (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-5 * (1.0 + w.abs());
            assert!(ok, "{who}: [{i}] = {g}, one-shot {w}");
        }
    }
}

/// Runs `check` on each case with its parameters, zeroed outputs and the one-shot result.
fn each_case(mut check: impl FnMut(&Case, &Params, Outputs, &Outputs)) {
    for case in cases() {
        let want = one_shot(&case, None);
        let rows = case.shape.q_heads * case.shape.q_len;
        let zeroed = (vec![0.0; case.out_len], vec![0.0; rows]);
        check(&case, &case.params(), zeroed, &want);
    }
}

#[test]
fn partials_over_any_range_merge_to_the_one_shot_result() {
    each_case(|case, p, zeroed, want| {
        let s = case.shape;
        for cut in [1, s.kv_len / 2, s.kv_len - 1] {
            let ((mut a, mut la), (mut b, mut lb)) = (zeroed.clone(), zeroed.clone());
            let who = format!("{:?} cut {cut}", case.mask);
            let (q, k, v) = (&case.q, &case.k, &case.v);
            partial(p, q, k, v, 0..cut, &mut a, &mut la).expect(&who);
            partial(p, q, k, v, cut..s.kv_len, &mut b, &mut lb).expect(&who);
            merge(p, &mut a, &mut la, &b, &lb).unwrap();
            qkv::split::add_sinks(p, &mut a, &mut la).unwrap();
            close((&a, &la), want, &who);
        }
    });
}

#[test]
fn streams_in_chunks_give_the_one_shot_result() {
    each_case(|case, p, (mut out, mut lse), want| {
        let s = case.shape;
        let mut state = vec![0.0; Stream::state_len(&s)];
        let mut stream = Stream::new(p, &mut state).unwrap();
        for start in (0..s.kv_len).step_by(13) {
            let end = (start + 13).min(s.kv_len);
            let (k, v) = (
                &case.k[start * p.k.row_stride..],
                &case.v[start * p.v.row_stride..],
            );
            stream.update(&case.q, k, v, start..end).expect("chunk");
        }
        stream.finish(&mut out, Some(&mut lse)).unwrap();
        close((&out, &lse), want, &format!("{:?}", case.mask));
    });
}

#[cfg(feature = "parallel")]
#[test]
fn parallel_plans_give_the_one_shot_result() {
    use qkv::Level;
    use qkv::parallel::{Plan, attention_planned};
    each_case(|case, p, zeroed, want| {
        for plan in [
            Plan {
                q_block: 16,
                kv_block: usize::MAX,
            },
            Plan {
                q_block: 7,
                kv_block: 20,
            },
        ] {
            let (mut out, mut lse) = zeroed.clone();
            let who = format!("{:?} {plan:?}", case.mask);
            let (q, k, v) = (&case.q, &case.k, &case.v);
            attention_planned(Level::Detect, plan, p, q, k, v, &mut out, Some(&mut lse))
                .expect(&who);
            close((&out, &lse), want, &who);
        }
    });
}
