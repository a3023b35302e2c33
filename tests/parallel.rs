//! `parallel::attention` against the single-threaded call and the reference: random
//! problems and random plans (query blocks, key splits) at every level and emulated width.
#![cfg(feature = "parallel")]

mod common;
use common::{Case, Rng, Runner};
use qkv::parallel::{self, Plan};
use qkv::split::Level;
use qkv::{Error, Isa, Mask, Params, Shape, Tensor};

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

type Outputs = (Vec<f32>, Vec<f32>);

fn one_shot(case: &Case, runner: Option<Runner>) -> Outputs {
    let s = case.shape;
    let p = case.params();
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    match runner {
        Some(r) => r.run(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
        None => qkv::reference::attention(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
    }
    .unwrap();
    (out, lse)
}

fn planned(case: &Case, lvl: Level, plan: Plan) -> Outputs {
    let s = case.shape;
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    parallel::attention_planned(
        lvl,
        plan,
        &case.params(),
        &case.q,
        &case.k,
        &case.v,
        &mut out,
        Some(&mut lse),
    )
    .unwrap();
    (out, lse)
}

#[test]
fn random_plans_match_single_threaded_and_reference() {
    let mut rng = Rng(70);
    let cases = if cfg!(miri) { 1 } else { 120 };
    for n in 0..cases {
        let (max_len, max_dim) = if cfg!(miri) {
            (6, 6)
        } else if n % 5 == 0 {
            (140, 24)
        } else {
            (40, 24)
        };
        let case = Case::random(&mut rng, max_len, max_dim);
        let s = case.shape;
        let want = one_shot(&case, None);
        for runner in Runner::all() {
            let plan = Plan {
                q_block: rng.range(0, s.q_len + 1),
                kv_block: rng.range(0, s.kv_len + 1),
            };
            let splits = s.kv_len.div_ceil(plan.kv_block.clamp(1, s.kv_len.max(1)));
            let depth = splits.saturating_sub(1);
            let got = planned(&case, level(runner), plan);
            let who = format!("{runner:?} {plan:?}");
            compare_merged(&case, &want.0, &want.1, &got.0, &got.1, depth, 1.0, &who);
            let same = one_shot(&case, Some(runner));
            compare_merged(&case, &same.0, &same.1, &got.0, &got.1, depth, 2.0, &who);
            // Nothing outside the output rows is written.
            let p = case.params();
            let mut inside = vec![false; got.0.len()];
            for h in 0..s.q_heads {
                for i in 0..s.q_len {
                    let start = p.out.at(h, i);
                    inside[start..start + s.v_dim].fill(true);
                }
            }
            assert!(got.0.iter().zip(inside).all(|(x, ins)| ins || x.is_nan()));
        }
    }
}

#[test]
fn auto_plans_for_prefill_and_decode() {
    let mut rng = Rng(71);
    let (q_len, kv_len) = if cfg!(miri) { (3, 9) } else { (300, 2100) };
    for shape in [
        Shape::new(2, q_len, q_len, 16).gqa(4, 2),
        Shape::new(1, 1, kv_len, 32).gqa(4, 1),
        Shape::new(2, 2, kv_len, 8),
    ] {
        for mask in [Mask::NONE, Mask::causal(), Mask::sliding_window(100)] {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.mask = mask;
            let want = one_shot(&case, None);
            let single = one_shot(&case, Some(Runner::Isa(Isa::detect())));
            for threads in [1, 2, 4] {
                let plan = Plan::auto(&shape, threads);
                assert!(plan.q_block >= 1 && plan.kv_block >= 1);
                let splits = shape.kv_len.div_ceil(plan.kv_block.min(shape.kv_len));
                let got = planned(&case, Level::Detect, plan);
                let who = format!("{plan:?}");
                compare_merged(
                    &case,
                    &want.0,
                    &want.1,
                    &got.0,
                    &got.1,
                    splits - 1,
                    1.0,
                    &who,
                );
                compare_merged(
                    &case,
                    &single.0,
                    &single.1,
                    &got.0,
                    &got.1,
                    splits - 1,
                    2.0,
                    &who,
                );
            }
            let mut out = vec![f32::NAN; case.out_len];
            parallel::attention(&case.params(), &case.q, &case.k, &case.v, &mut out, None).unwrap();
            let plan = Plan::auto(&shape, rayon::current_num_threads());
            let got = planned(&case, Level::Detect, plan);
            assert_eq!(
                out, got.0,
                "attention is attention_planned with the auto plan"
            );
        }
    }
}

#[test]
fn errors_are_those_of_the_single_threaded_call() {
    let shape = Shape::new(2, 3, 10, 4);
    let p = Params::new(shape);
    let q = vec![0.5f32; 2 * 3 * 4];
    let k = vec![0.5f32; 2 * 10 * 4];
    let mut out = vec![7.0f32; 24];
    let mut lse = vec![7.0f32; 6];
    let short = &k[..k.len() - 1];
    let want = qkv::attention(&p, &q, short, &k, &mut out, Some(&mut lse));
    assert!(matches!(
        want,
        Err(Error::TooShort {
            tensor: Tensor::K,
            ..
        })
    ));
    assert_eq!(
        parallel::attention(&p, &q, short, &k, &mut out, Some(&mut lse)),
        want
    );
    assert_eq!(
        parallel::attention(&p, &q, &k, &k, &mut out, Some(&mut lse[..5])),
        qkv::attention(&p, &q, &k, &k, &mut out, Some(&mut lse[..5]))
    );
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let plan = Plan::auto(&shape, 2);
        assert_eq!(
            parallel::attention_planned(Level::Isa(isa), plan, &p, &q, &k, &k, &mut out, None),
            Err(Error::Unsupported(isa))
        );
    }
    assert!(out.iter().chain(&lse).all(|&x| x == 7.0));
    // Empty problems are fine.
    let empty = Params::new(Shape::new(2, 0, 10, 4));
    parallel::attention(&empty, &[], &k, &k, &mut [], None).unwrap();
    let no_keys = Params::new(Shape::new(2, 3, 0, 4));
    parallel::attention(&no_keys, &q, &[], &[], &mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert!(lse.iter().all(|&x| x == f32::NEG_INFINITY));
}
