//! Paged K/V: K and V in pools of pages read through a block table, at every level and
//! emulated width, in every K/V type, with masks, GQA, bias and the softmax variants, through
//! split-KV, streams and plans, against the reference on the same keys in order; and the
//! errors of a table or pool that does not fit.
//!
//! The test kit's pools ([`Paging`]) hold the pages in reverse order with an unused page 0
//! and every unused row NaN, so a key read from the wrong page or row shows.

mod common;
use common::kv::{Stored, with_stored};
use common::{
    Case, Joined, Outputs, Paging, Rng, assert_same_bits, budget, check_all, compare_joined,
    levels, one_shot, random_cases, random_mask,
};
use qkv::split::{self, Level};
use qkv::stream::Stream;
use qkv::{Error, KvKind, Pages, Params, Shape, Tensor};

/// Page sizes below, at and above a block of keys (48), odd ones, and one key per page.
const PAGE_LENS: [usize; 6] = [1, 5, 16, 48, 64, 100];

#[test]
fn paged_cases_match_the_reference_at_every_level() {
    let mut rng = Rng(190);
    let (len, big) = budget((37, 130), (5, 9));
    let shapes = [
        Shape::new(1, 1, big, 64).gqa(8, 2),
        Shape::new(1, 4, len, 32).gqa(4, 1),
        Shape::new(2, len, big, 24).with_v_dim(20),
        Shape::new(1, big, len, 33),
    ];
    for shape in shapes {
        for page_len in PAGE_LENS {
            let mut case = Case::dense(&mut rng, shape, 1.0);
            case.paging = Some(Paging::random(&mut rng, page_len));
            case.mask = random_mask(&mut rng, &shape);
            check_all(&case);
        }
    }
}

#[test]
fn paged_random_cases_with_every_kv_type_and_variant() {
    let kinds = [
        (KvKind::F32, KvKind::F32),
        (KvKind::F16, KvKind::Bf16),
        (KvKind::Q8_0, KvKind::F16),
        (KvKind::Q8_0, KvKind::Q8_0),
    ];
    let mut rng = Rng(191);
    for (n, mut case) in random_cases(192, budget((60, 90, 70), (2, 6, 32))).enumerate() {
        // Random cases draw masks, GQA, strides, bias, softcap, sinks and ALiBi.
        case.paging = Some(Paging::random(&mut rng, PAGE_LENS[n % PAGE_LENS.len()]));
        let _ = case.store(kinds[n % kinds.len()]);
        check_all(&case);
    }
}

/// With pages a whole number of blocks long the kernel's blocks are the same as in order
/// (from key 0: no mask), so the results are the same bits: only the addresses differ.
#[test]
fn pages_of_whole_blocks_give_the_contiguous_bits() {
    for mut case in random_cases(193, budget((20, 200, 64), (1, 6, 16))) {
        case.mask = qkv::Mask::NONE;
        let want: Vec<Outputs> = levels()
            .into_iter()
            .map(|l| one_shot(&case, Some(l)))
            .collect();
        case.paging = Some(Paging {
            page_len: 96,
            hnd: case.shape.kv_len % 2 == 0,
            offset: 0,
        });
        for (level, want) in levels().into_iter().zip(&want) {
            assert_same_bits(want, &one_shot(&case, Some(level)), &format!("{level:?}"));
        }
    }
}

/// Split-KV partials over pages (parts starting inside a page), merged, and a stream fed
/// the pools chunk by chunk, against the reference.
#[test]
fn paged_split_and_stream_match_the_reference() {
    let mut rng = Rng(194);
    for (n, mut case) in random_cases(195, budget((30, 120, 40), (1, 6, 16))).enumerate() {
        case.paging = Some(Paging::random(&mut rng, PAGE_LENS[n % PAGE_LENS.len()]));
        let want = one_shot(&case, None);
        let call = case.call_inputs();
        let p = call.params(&case);
        let s = case.shape;
        let kv = s.kv_len;
        let cut = rng.range(0, kv);
        for level in levels() {
            let mut parts = [0..cut, cut..kv].map(|keys| {
                let mut out = vec![f32::NAN; case.out_len];
                let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
                with_stored!(&call.k, |k| with_stored!(&call.v, |v| split::partial_at(
                    level,
                    &p,
                    &case.q,
                    k,
                    v,
                    keys.clone(),
                    &mut out,
                    &mut lse
                )))
                .expect("a paged partial accepts the case");
                (out, lse)
            });
            let [a, b] = &mut parts;
            split::merge(&p, &mut a.0, &mut a.1, &b.0, &b.1).expect("merge accepts");
            split::add_sinks(&p, &mut a.0, &mut a.1).expect("add_sinks accepts");
            compare_joined(
                &case,
                &want,
                a,
                Joined::Merged(2),
                1.0,
                &format!("{level:?} split"),
            );

            let mut state = vec![0.0; Stream::state_len(&s)];
            let mut stream = Stream::new(&p, &mut state).unwrap().with_level(level);
            for keys in [0..cut, cut..kv] {
                with_stored!(&call.k, |k| with_stored!(&call.v, |v| stream.update(
                    &case.q,
                    k,
                    v,
                    keys.clone()
                )))
                .expect("a paged stream update accepts the case");
            }
            let mut got = (
                vec![f32::NAN; case.out_len],
                vec![f32::NAN; s.q_heads * s.q_len],
            );
            stream.finish(&mut got.0, Some(&mut got.1)).unwrap();
            compare_joined(
                &case,
                &want,
                &got,
                Joined::Stream(2),
                1.0,
                &format!("{level:?} stream"),
            );
        }
    }
}

/// A plan's tasks over pages equal the one-shot paged call within the merged bound.
#[test]
fn paged_plans_match_the_reference() {
    let mut rng = Rng(196);
    for (n, mut case) in random_cases(197, budget((20, 150, 40), (1, 6, 16))).enumerate() {
        case.paging = Some(Paging::random(&mut rng, PAGE_LENS[n % PAGE_LENS.len()]));
        let want = one_shot(&case, None);
        let call = case.call_inputs();
        let p = call.params(&case);
        let plan = qkv::plan::Plan::auto(&case.shape, 3);
        let mut partials = vec![f32::NAN; plan.partial_len(&case.shape)];
        let level = Level::Isa(qkv::Isa::detect());
        for task in (0..plan.tasks(&case.shape)).rev() {
            let region = plan
                .task_partial(&case.shape, task)
                .expect("a task's region");
            let part = &mut partials[region];
            with_stored!(&call.k, |k| with_stored!(&call.v, |v| qkv::plan::run_task(
                level, plan, &p, &case.q, k, v, task, part
            )))
            .expect("a paged task accepts the case");
        }
        let s = case.shape;
        let mut got = (
            vec![f32::NAN; case.out_len],
            vec![f32::NAN; s.q_heads * s.q_len],
        );
        qkv::plan::finish(plan, &p, &partials, &mut got.0, Some(&mut got.1)).unwrap();
        let depth = common::plan_depth(&s, plan);
        compare_joined(&case, &want, &got, Joined::Merged(depth), 1.0, "plan");
    }
}

/// A table or pool that does not fit is refused before anything is written, with the
/// error that names it; `page_len` 0 is [`Error::ZeroPageLen`].
#[test]
fn tables_and_pools_that_do_not_fit_are_refused() {
    // 2 kv heads, 10 keys of 4 values, pages of 4 keys (HND): 3 pages, 32 floats each.
    let shape = Shape::new(2, 1, 10, 4);
    let (lay, stride) = (qkv::Layout::planar(4, 4), 2 * 4 * 4);
    let q = vec![0.5f32; shape.q_heads * 4];
    let pool = vec![1.0f32; 4 * stride];
    let with = |pages: Pages<'static>| Params {
        k: lay,
        v: lay,
        ..Params::new(shape).with_pages(pages)
    };
    let ok = Pages::new(&[3, 0, 2], 4, stride, stride);
    let cases: [(Pages, usize, Result<(), Error>); 7] = [
        (ok, 4 * stride, Ok(())),
        (
            Pages { page_len: 0, ..ok },
            4 * stride,
            Err(Error::ZeroPageLen),
        ),
        (
            Pages {
                table: &[3, 0],
                ..ok
            },
            4 * stride,
            Err(Error::TooShort {
                tensor: Tensor::BlockTable,
                needed: 3,
                len: 2,
            }),
        ),
        (
            // With an offset of 3 the 10 keys reach a fourth page.
            Pages { offset: 3, ..ok },
            4 * stride,
            Err(Error::TooShort {
                tensor: Tensor::BlockTable,
                needed: 4,
                len: 3,
            }),
        ),
        (
            // Page 3 is the pool's last: one float short.
            ok,
            4 * stride - 1,
            Err(Error::TooShort {
                tensor: Tensor::K,
                needed: 4 * stride,
                len: 4 * stride - 1,
            }),
        ),
        (
            Pages {
                table: &[5, 0, 2],
                ..ok
            },
            4 * stride,
            Err(Error::TooShort {
                tensor: Tensor::K,
                needed: 6 * stride,
                len: 4 * stride,
            }),
        ),
        (
            Pages {
                k_page_stride: usize::MAX / 2,
                ..ok
            },
            4 * stride,
            Err(Error::Overflow(Tensor::K)),
        ),
    ];
    for (pages, k_len, want) in cases {
        let p = with(pages);
        for level in levels() {
            let mut out = vec![f32::NAN; shape.q_heads * 4];
            let got = level.attention(&p, &q, &pool[..k_len], &pool, &mut out, None);
            assert_eq!(got, want, "{level:?} {pages:?}");
            if want.is_err() {
                assert!(
                    out.iter().all(|x| x.is_nan()),
                    "{level:?}: written on error"
                );
            }
        }
        let mut out = vec![f32::NAN; shape.q_heads * 4];
        let got = qkv::reference::attention(&p, &q, &pool[..k_len], &pool, &mut out, None);
        assert_eq!(got, want, "reference {pages:?}");
    }
}

/// The last page of a pool may be partly used: a pool that ends right after the last key's
/// row is enough, and one float less is refused.
#[test]
fn a_pool_may_end_at_the_last_key() {
    // 1 kv head, 6 keys of 8 values, pages of 4 keys: page 0 holds keys 0..4, page 1 (the
    // pool's last) keys 4 and 5 only, so the pool needs 32 + 16 floats, not 64.
    let shape = Shape::new(1, 2, 6, 8);
    let mut rng = Rng(198);
    let (q, k, v) = (rng.fill(16, 1.0), rng.fill(48, 1.0), rng.fill(48, 1.0));
    let paged = Params::new(shape).with_pages(Pages::new(&[0, 1], 4, 32, 32));
    let mut want = vec![0.0f32; 16];
    qkv::reference::attention(&Params::new(shape), &q, &k, &v, &mut want, None).unwrap();
    for level in levels() {
        let mut out = vec![f32::NAN; 16];
        level.attention(&paged, &q, &k, &v, &mut out, None).unwrap();
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{level:?}: {out:?} {want:?}");
        }
        let short = Err(Error::TooShort {
            tensor: Tensor::V,
            needed: 48,
            len: 47,
        });
        assert_eq!(
            level.attention(&paged, &q, &k, &v[..47], &mut out, None),
            short
        );
    }
}
