//! `parallel::attention` against the single-threaded call and the reference: random
//! problems and random plans (query blocks, key splits) at every level and emulated width.
#![cfg(feature = "parallel")]

mod common;
use common::kv::{Stored, with_stored};
use common::{
    Case, Joined, Outputs, Paging, Rng, budget, compare_joined, error_fixture, one_shot,
    random_sinks, short_k_error,
};
use qkv::parallel::{self, Plan};
use qkv::split::Level;
use qkv::{Error, Isa, Mask, Params, Shape};

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
    // Each comparison also checks that nothing outside the output rows is written.
    common::plan_series(70, 120, 5, |_, case, level, plan| {
        (planned(case, level, plan), format!("{level:?} {plan:?}"))
    });
}

#[test]
fn auto_plans_for_prefill_and_decode() {
    let mut rng = Rng(71);
    let (q_len, kv_len) = budget((300, 2100), (3, 9));
    for shape in [
        Shape::new(2, q_len, q_len, 16).gqa(4, 2),
        Shape::new(1, 1, kv_len, 32).gqa(4, 1),
        Shape::new(2, 2, kv_len, 8),
    ] {
        for mask in [Mask::NONE, Mask::causal(), Mask::sliding_window(100)] {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.mask = mask;
            let want = one_shot(&case, None);
            let single = one_shot(&case, Some(Level::Isa(Isa::detect())));
            for threads in [1, 2, 4] {
                let plan = Plan::auto(&shape, threads);
                assert!(plan.q_block >= 1 && plan.kv_block >= 1);
                let splits = shape.kv_len.div_ceil(plan.kv_block.min(shape.kv_len));
                let got = planned(&case, Level::Detect, plan);
                let who = format!("{plan:?}");
                compare_joined(&case, &want, &got, Joined::Merged(splits - 1), 1.0, &who);
                compare_joined(&case, &single, &got, Joined::Merged(splits - 1), 2.0, &who);
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

/// Decode whose kv heads' rows lie side by side (interleaved K and V, NHD pages) splits its
/// keys over every head, which the kernel then reads in turn, rather than taking a plan's
/// one-head tasks: the reference's results within the merge's bound for its splits, on
/// pools of 2 and 3 threads, with masks, sinks and `lse`; nothing outside the rows written.
#[test]
fn side_by_side_decode_splits_its_keys_over_every_head() {
    let mut rng = Rng(75);
    let kv_len = budget(2100, 1030);
    let shapes = [
        Shape::new(1, 1, kv_len, 32).gqa(8, 4),
        Shape::new(1, 2, kv_len, 16).gqa(6, 3),
    ];
    for (n, shape) in shapes.into_iter().enumerate() {
        for paged in [false, true] {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.mask = [Mask::causal(), Mask::sliding_window(700)][n];
            case.sinks = paged.then(|| random_sinks(&mut rng, shape.q_heads));
            match paged {
                false => case.interleave_kv(),
                true => {
                    case.paging = Some(Paging {
                        page_len: 16,
                        hnd: false,
                        offset: 5,
                    })
                }
            }
            let want = one_shot(&case, None);
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let s = case.shape;
                let mut out = vec![f32::NAN; case.out_len];
                let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
                let call = case.call_inputs();
                let sp = call.params(&case);
                pool.install(|| {
                    with_stored!(&call.k, |k| with_stored!(&call.v, |v| {
                        parallel::attention(&sp, &case.q, k, v, &mut out, Some(&mut lse))
                    }))
                })
                .unwrap();
                let splits = (2 * threads).min(s.kv_len / 512);
                let who = format!("{threads} threads, paged {paged}, {shape:?}");
                compare_joined(
                    &case,
                    &want,
                    &(out, lse),
                    Joined::Merged(splits - 1),
                    1.0,
                    &who,
                );
            }
        }
    }
}

/// The tasks run in any order on any thread, the caller's included: many small calls in a
/// row (whose late helpers find nothing to take), from inside pools and from outside any,
/// give exactly what the same plan's tasks give one after another.
#[test]
fn many_small_calls_match_the_tasks_run_in_order() {
    let mut rng = Rng(73);
    let shape = Shape::new(2, 5, 70, 8).gqa(4, 2);
    let case = Case::dense(&mut rng, shape, 1.0);
    let p = case.params().with_mask(Mask::causal());
    for plan in [
        Plan {
            q_block: 1,
            kv_block: 16,
        },
        Plan::auto(&shape, 3),
    ] {
        let mut partial = vec![0.0f32; plan.partial_len(&shape)];
        for task in 0..plan.tasks(&shape) {
            let region = plan.task_partial(&shape, task).unwrap();
            let (q, k, v) = (&case.q, &case.k, &case.v);
            qkv::plan::run_task(Level::Detect, plan, &p, q, k, v, task, &mut partial[region])
                .unwrap();
        }
        let mut want = vec![f32::NAN; case.out_len];
        qkv::plan::finish(plan, &p, &partial, &mut want, None).unwrap();
        let pools: Vec<_> = (1..=4)
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap()
            })
            .collect();
        for round in 0..100 {
            let mut got = vec![f32::NAN; case.out_len];
            let call = |out: &mut [f32]| {
                parallel::attention_planned(
                    Level::Detect,
                    plan,
                    &p,
                    &case.q,
                    &case.k,
                    &case.v,
                    out,
                    None,
                )
            };
            match round % 5 {
                4 => call(&mut got),
                n => pools[n].install(|| call(&mut got)),
            }
            .unwrap();
            assert_eq!(got, want, "{plan:?}, round {round}");
        }
    }
}

#[test]
fn errors_are_those_of_the_single_threaded_call() {
    let (p, q, k, mut out, mut lse) = error_fixture();
    let shape = p.shape;
    let short = &k[..k.len() - 1];
    let want = short_k_error(&p, &q, &k, &mut out, &mut lse);
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
    parallel::attention::<f32, f32>(&no_keys, &q, &[], &[], &mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    assert!(lse.iter().all(|&x| x == f32::NEG_INFINITY));
}

/// `qkv_attention_parallel_f32`, the C ABI's call on the pool, is `parallel::attention`: the
/// same results as the one-shot C call within the merge's tolerance, and its statuses.
#[cfg(feature = "capi")]
#[test]
fn c_attention_parallel_matches_the_one_shot_call() {
    use qkv::capi::{
        QKV_ERR_NULL_POINTER, QKV_ERR_TOO_SHORT, QKV_OK, QkvDesc, qkv_attention_f32,
        qkv_attention_parallel_f32,
    };
    let mut rng = Rng(72);
    for (q_heads, kv_heads, q_len, kv_len) in [(8, 2, 1, 3000), (4, 2, 130, 130)] {
        let shape = Shape::new(1, q_len, kv_len, 32).gqa(q_heads, kv_heads);
        let case = Case::dense(&mut rng, shape, 1.0);
        let mut d = QkvDesc::planar(q_heads, kv_heads, q_len, kv_len, 32, 32);
        d.mask = qkv::capi::QKV_MASK_CAUSAL;
        let n = q_heads * q_len;
        let (mut want, mut got) = (vec![0.0f32; n * 32], vec![f32::NAN; n * 32]);
        let (mut want_lse, mut got_lse) = (vec![0.0f32; n], vec![f32::NAN; n]);
        let (q, k, v) = (
            case.q.as_ptr(),
            case.k.as_ptr().cast(),
            case.v.as_ptr().cast(),
        );
        // SAFETY: every buffer holds the extent `d` gives it (planar, dense) and nothing else
        // touches them during the calls.
        unsafe {
            let s = qkv_attention_f32(&d, q, k, v, want.as_mut_ptr(), want_lse.as_mut_ptr());
            assert_eq!(s, QKV_OK);
            let s = qkv_attention_parallel_f32(&d, q, k, v, got.as_mut_ptr(), got_lse.as_mut_ptr());
            assert_eq!(s, QKV_OK);
            let null = core::ptr::null();
            let s =
                qkv_attention_parallel_f32(null, q, k, v, got.as_mut_ptr(), null.cast_mut().cast());
            assert_eq!(s, QKV_ERR_NULL_POINTER);
            let mut short = d;
            short.k_count = kv_heads * kv_len * 32 - 1;
            let s = qkv_attention_parallel_f32(
                &short,
                q,
                k,
                v,
                got.as_mut_ptr(),
                core::ptr::null_mut(),
            );
            assert_eq!(s, QKV_ERR_TOO_SHORT);
        }
        for (g, w) in got.iter().chain(&got_lse).zip(want.iter().chain(&want_lse)) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }
}
