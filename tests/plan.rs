//! `qkv::plan`: tasks run in any order (here backwards, with and without a workspace) and
//! merged by `finish` match the reference and the one-shot call on random problems and random
//! plans at every level and width, with K/V of every type; the task regions tile the partial
//! buffer; errors write nothing; no rows or no keys mean no tasks; the auto plan shares
//! prefill evenly between threads.

mod common;
use common::kv::{Stored, with_stored};
use common::{Case, Joined, Outputs, Rng, compare_joined, one_shot};
use qkv::plan::{self, Plan};
use qkv::split::Level;
use qkv::{Error, KvKind, Params, Shape, Tensor};

/// `case` through `plan`'s tasks, run from the last to the first, then `finish`.
fn planned(case: &Case, level: Level, plan: Plan, with_workspace: bool) -> Outputs {
    let s = case.shape;
    let p = case.stored_params();
    let mut partial = vec![f32::NAN; plan.partial_len(&s)];
    let (sk, sv) = case.stored();
    let mut ws = vec![0.0f32; qkv::workspace_len_for(&p, case.kinds.0, case.kinds.1)];
    for task in (0..plan.tasks(&s)).rev() {
        let region = plan.task_partial(&s, task).expect("a task's region");
        let part = &mut partial[region];
        with_stored!(&sk, |k| with_stored!(&sv, |v| match with_workspace {
            true => plan::run_task_in(level, &mut ws, plan, &p, &case.q, k, v, task, part),
            false => plan::run_task(level, plan, &p, &case.q, k, v, task, part),
        }))
        .expect("the task runs");
    }
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    plan::finish(plan, &p, &partial, &mut out, Some(&mut lse)).expect("finish");
    (out, lse)
}

#[test]
fn tasks_in_any_order_match_the_reference_and_the_one_shot_call() {
    // Each comparison also checks that nothing outside the output rows is written.
    common::plan_series(90, 100, 5, |rng, case, level, plan| {
        let with_ws = rng.coin(1, 2);
        let got = planned(case, level, plan, with_ws);
        (got, format!("{level:?} {plan:?} workspace {with_ws}"))
    });
}

#[test]
fn every_kv_type_pair_through_tasks() {
    let mut rng = Rng(94);
    for n in 0..common::budget(40, 1) {
        let mut case = common::series_case(&mut rng, n, 4);
        if !case.store((rng.pick(&KvKind::ALL), rng.pick(&KvKind::ALL))) {
            continue;
        }
        let s = case.shape;
        let want = one_shot(&case, None);
        for level in common::levels() {
            let plan = common::random_plan(&mut rng, &s);
            let got = planned(&case, level, plan, rng.coin(1, 2));
            let who = format!("{level:?} {plan:?} {:?}", case.kinds);
            compare_joined(
                &case,
                &want,
                &got,
                Joined::Merged(common::plan_depth(&s, plan)),
                1.0,
                &who,
            );
        }
    }
}

#[test]
fn one_task_per_kv_head_is_the_one_shot_call_bit_for_bit() {
    let mut rng = Rng(91);
    for n in 0..common::budget(20, 1) {
        let mut case = common::series_case(&mut rng, n, 4);
        // Without sinks: `finish` merges them in f64, the one-shot call takes each as its
        // first key in f32 (both within tolerance, in tests of their own).
        case.sinks = None;
        for level in common::levels() {
            // One block of rows per kv head and no key split: the one-shot call's blocks.
            let plan = Plan {
                q_block: usize::MAX,
                kv_block: usize::MAX,
            };
            let got = planned(&case, level, plan, false);
            let want = one_shot(&case, Some(level));
            common::assert_same_bits(&want, &got, &format!("{level:?} {plan:?}"));
        }
    }
}

#[test]
fn task_regions_tile_the_partial_buffer_in_task_order() {
    let mut rng = Rng(92);
    for _ in 0..common::budget(200, 5) {
        let kv_heads = rng.range(1, 4);
        let shape = Shape::new(1, rng.range(1, 90), rng.range(1, 900), 8)
            .gqa(rng.range(1, 4) * kv_heads, kv_heads)
            .with_v_dim(rng.range(1, 40));
        for plan in [
            Plan::auto(&shape, rng.range(1, 9)),
            Plan {
                q_block: rng.range(0, 100),
                kv_block: rng.range(0, 1000),
            },
        ] {
            let mut next = 0;
            for task in 0..plan.tasks(&shape) {
                let r = plan.task_partial(&shape, task).expect("a region");
                assert_eq!(r.start, next, "{shape:?} {plan:?} task {task}");
                assert!(!r.is_empty());
                next = r.end;
            }
            assert_eq!(next, plan.partial_len(&shape), "{shape:?} {plan:?}");
            assert_eq!(plan.task_partial(&shape, plan.tasks(&shape)), None);
            let expected = shape.q_heads
                * shape.q_len
                * (shape.v_dim + 1)
                * (common::plan_depth(&shape, plan) + 1);
            assert_eq!(plan.partial_len(&shape), expected, "{shape:?} {plan:?}");
        }
    }
}

#[test]
fn errors_write_nothing() {
    let mut rng = Rng(93);
    let shape = Shape::new(2, 5, 70, 8).gqa(4, 2);
    let case = Case::dense(&mut rng, shape, 1.0);
    let p = case.params();
    let plan = Plan {
        q_block: 2,
        kv_block: 30,
    };
    let tasks = plan.tasks(&shape);
    assert_eq!(tasks, 2 * 3 * 3);
    let mut partial = vec![f32::NAN; plan.partial_len(&shape)];
    let region = plan.task_partial(&shape, 0).expect("task 0");
    let run = |task: usize, part: &mut [f32], k: &[f32]| {
        plan::run_task(Level::Detect, plan, &p, &case.q, k, &case.v, task, part)
    };

    let err = run(tasks, &mut partial[region.clone()], &case.k);
    assert_eq!(err, Err(Error::TaskIndex { task: tasks, tasks }));
    let short = region.start..region.end - 1;
    let err = run(0, &mut partial[short], &case.k);
    assert_too_short(err, Tensor::Out);
    let err = run(0, &mut partial[region.clone()], &case.k[1..]);
    assert_too_short(err, Tensor::K);
    assert!(
        partial.iter().all(|x| x.is_nan()),
        "a refused task wrote its partial"
    );

    for task in 0..tasks {
        let r = plan.task_partial(&shape, task).expect("a region");
        run(task, &mut partial[r], &case.k).expect("the task runs");
    }
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; shape.q_heads * shape.q_len];
    let err = plan::finish(plan, &p, &partial[1..], &mut out, Some(&mut lse));
    assert_too_short(err, Tensor::Out);
    let err = plan::finish(plan, &p, &partial, &mut out[1..], Some(&mut lse));
    assert_too_short(err, Tensor::Out);
    let err = plan::finish(plan, &p, &partial, &mut out, Some(&mut lse[1..]));
    assert_too_short(err, Tensor::Lse);
    assert!(
        out.iter().chain(&lse).all(|x| x.is_nan()),
        "a refused finish wrote"
    );
    plan::finish(plan, &p, &partial, &mut out, Some(&mut lse)).expect("finish");
    assert!(out.iter().chain(&lse).all(|x| x.is_finite()));
}

#[test]
fn no_rows_or_no_keys_mean_no_tasks() {
    for (q_len, kv_len) in [(0, 5), (3, 0), (0, 0)] {
        let shape = Shape::new(2, q_len, kv_len, 4);
        let p = Params::new(shape);
        let plan = Plan::auto(&shape, 4);
        assert_eq!((plan.tasks(&shape), plan.partial_len(&shape)), (0, 0));
        assert_eq!(plan.task_partial(&shape, 0), None);
        let (q, k) = (vec![0.5f32; 2 * q_len * 4], vec![0.5f32; 2 * kv_len * 4]);
        let err = plan::run_task(Level::Detect, plan, &p, &q, &k, &k, 0, &mut []);
        assert_eq!(err, Err(Error::TaskIndex { task: 0, tasks: 0 }));
        let mut out = vec![f32::NAN; 2 * q_len * 4];
        let mut lse = vec![f32::NAN; 2 * q_len];
        plan::finish(plan, &p, &[], &mut out, Some(&mut lse)).expect("finish");
        assert!(out.iter().all(|&x| x == 0.0), "{out:?}");
        assert!(lse.iter().all(|&x| x == f32::NEG_INFINITY), "{lse:?}");
    }
}

/// Asserts that `err` is [`Error::TooShort`] for `tensor`.
fn assert_too_short(err: Result<(), Error>, tensor: Tensor) {
    assert!(
        matches!(err, Err(Error::TooShort { tensor: t, .. }) if t == tensor),
        "{err:?}"
    );
}

/// The auto plan shares the kernel blocks of a prefill evenly between the threads: no thread
/// has more than its share of kernel blocks rounded up (4096 rows over 2 threads once gave 15
/// tasks, 8 of them to one thread), and it still makes enough tasks for stealing.
#[test]
fn auto_plans_share_prefill_evenly() {
    const ROWS: usize = 48; // the kernel's query block
    for (heads, q_len) in [
        (1, 4096),
        (1, 1024),
        (2, 4096),
        (3, 1000),
        (1, 100),
        (8, 4096),
    ] {
        for threads in [1, 2, 3, 4, 8] {
            let shape = Shape::new(heads, q_len, 64, 8);
            let plan = Plan::auto(&shape, threads);
            assert!(plan.q_block.is_multiple_of(ROWS), "{plan:?}");
            let blocks = q_len.div_ceil(ROWS);
            let per_task = plan.q_block / ROWS;
            let tasks = heads * blocks.div_ceil(per_task);
            assert_eq!(
                plan.tasks(&shape),
                tasks * 64usize.div_ceil(plan.kv_block.min(64))
            );
            let busiest = tasks.div_ceil(threads) * per_task;
            let share = (heads * blocks).div_ceil(threads);
            // At most one task's blocks over the share, and the share itself when a kernel
            // block per task gives the target.
            assert!(
                busiest < share + per_task,
                "{heads}x{q_len}, {threads}: {plan:?}"
            );
            if heads * blocks >= 8 * threads {
                assert!(tasks >= 8 * threads, "{heads}x{q_len}, {threads}: {plan:?}");
                assert_eq!(busiest, share, "{heads}x{q_len}, {threads}: {plan:?}");
            }
        }
    }
    // Any shape may be asked about: this one returns at once, without overflow.
    let huge = Shape::new(1, usize::MAX, 1, 1);
    let plan = Plan::auto(&huge, usize::MAX);
    assert!(plan.q_block >= 1 && plan.kv_block >= 1);
}
