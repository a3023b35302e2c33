//! Ragged batches (`qkv::ragged`): every sequence of a packed batch gives, at every level and
//! emulated width, exactly what that level gives for the sequence alone (its own shape, the
//! mask aligned to its lengths, its block of the bias, the variants), bit for bit, `lse`
//! included; `parallel::ragged` within 1e-5 relative (its plans may split keys and merge);
//! a paged batch gives the in-order one; the test kit's random cases (any layout, mask, bias,
//! variant, storage type, pages) as batches match the reference sequence by sequence;
//! offsets that do not describe the tensors are refused before anything is written.

mod common;
use common::{Paging, Ragged, Rng, budget, check_all, levels, random_cases};
use qkv::ragged::{self, Batch};
use qkv::{Bias, Error, KvKind, Layout, Mask, Pages, Params, QueryPos, Shape};

/// A random batch of `n` sequences: cumulative query rows and keys (some sequences empty).
fn offsets(rng: &mut Rng, n: usize, max_q: usize, max_k: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut cu_q, mut cu_k) = (vec![0], vec![0]);
    for _ in 0..n {
        let lq = if rng.coin(1, 8) {
            0
        } else {
            rng.range(1, max_q)
        };
        let lk = if rng.coin(1, 8) {
            0
        } else {
            rng.range(1, max_k)
        };
        cu_q.push(cu_q.last().unwrap() + lq);
        cu_k.push(cu_k.last().unwrap() + lk);
    }
    (cu_q, cu_k)
}

/// The packed problem's inputs and params: interleaved `[total][heads][dim]`, with `mask`, a
/// per-head bias over the totals when `bias`, and the variants when `variants`.
struct Packed {
    shape: Shape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Option<Vec<f32>>,
    sinks: Vec<f32>,
    slopes: Vec<f32>,
}

impl Packed {
    fn new(rng: &mut Rng, shape: Shape, bias: bool) -> Packed {
        let s = shape;
        Packed {
            shape,
            q: rng.fill(s.q_len * s.q_heads * s.head_dim, 1.0),
            k: rng.fill(s.kv_len * s.kv_heads * s.head_dim, 1.0),
            v: rng.fill(s.kv_len * s.kv_heads * s.v_dim, 1.0),
            bias: bias.then(|| rng.fill(s.q_heads * s.q_len * s.kv_len, 1.0)),
            sinks: rng.fill(s.q_heads, 1.0),
            slopes: (0..s.q_heads).map(|h| 0.5f32.powi(h as i32 + 1)).collect(),
        }
    }

    fn params(&self, mask: Mask, variants: bool) -> Params<'_> {
        let s = self.shape;
        let mut p = Params::new(s).interleaved().with_mask(mask);
        if let Some(b) = &self.bias {
            p = p.with_bias(Bias {
                data: b,
                head_stride: s.q_len * s.kv_len,
                row_stride: s.kv_len,
            });
        }
        if variants {
            p = p
                .with_softcap(5.0)
                .with_sinks(&self.sinks)
                .with_alibi(&self.slopes);
        }
        p
    }
}

/// Sequence `b` alone, written independently of the crate's batch code: its shape, the
/// packed strides, slices from its first row and key, its block of the bias.
fn alone<'a>(p: &Params<'a>, cu_q: &[usize], cu_k: &[usize], b: usize) -> (Params<'a>, [usize; 4]) {
    let (q0, k0) = (cu_q[b], cu_k[b]);
    let mut sub = *p;
    sub.shape.q_len = cu_q[b + 1] - q0;
    sub.shape.kv_len = cu_k[b + 1] - k0;
    sub.bias = p.bias.map(|bias| Bias {
        data: &bias.data[q0 * bias.row_stride + k0..],
        ..bias
    });
    (
        sub,
        [
            q0 * p.q.row_stride,
            k0 * p.k.row_stride,
            k0 * p.v.row_stride,
            q0 * p.out.row_stride,
        ],
    )
}

/// Checks every sequence of the batch output against the sequence run alone at `level`.
fn check_batch(
    pk: &Packed, p: &Params, cu: (&[usize], &[usize]), got: (&[f32], &[f32]), who: &str,
    level: qkv::Level, exact: bool,
) {
    let s = pk.shape;
    for b in 0..cu.0.len() - 1 {
        let (sub, [qa, ka, va, oa]) = alone(p, cu.0, cu.1, b);
        let n = sub.shape.q_len;
        let mut out = vec![f32::NAN; got.0.len()];
        let mut lse = vec![f32::NAN; s.q_heads * n];
        level
            .attention(
                &sub,
                &pk.q[qa..],
                &pk.k[ka..],
                &pk.v[va..],
                &mut out[oa..],
                Some(&mut lse),
            )
            .unwrap();
        for h in 0..s.q_heads {
            for i in 0..n {
                let at = oa + sub.out.at(h, i);
                for c in 0..s.v_dim {
                    let (g, w) = (got.0[at + c], out[at + c]);
                    let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
                    let near = (g - w).abs() <= 1e-5 * (1.0 + w.abs());
                    assert!(
                        if exact { same } else { same || near },
                        "{who} sequence {b} out[{h}][{i}][{c}]: {g} vs {w}"
                    );
                }
                let (g, w) = (got.1[h * s.q_len + cu.0[b] + i], lse[h * n + i]);
                let ok = g.to_bits() == w.to_bits()
                    || (g - w).abs() <= if exact { 0.0 } else { 1e-5 * (1.0 + w.abs()) };
                assert!(ok, "{who} sequence {b} lse[{h}][{i}]: {g} vs {w}");
            }
        }
    }
}

#[test]
fn every_sequence_is_the_sequence_alone_at_every_level() {
    let mut rng = Rng(200);
    for n in 0..budget(24, 2) {
        let sequences = rng.range(1, 5);
        let (cu_q, cu_k) = offsets(&mut rng, sequences, budget(60, 6), budget(120, 9));
        let (q_len, kv_len) = (*cu_q.last().unwrap(), *cu_k.last().unwrap());
        let group = rng.pick(&[1, 2, 4]);
        let shape = Shape::new(2, q_len, kv_len, 16)
            .gqa(2 * group, 2)
            .with_v_dim(12);
        let pk = Packed::new(&mut rng, shape, n % 3 == 0);
        let mask = match n % 4 {
            0 => Mask::causal(),
            1 => Mask::sliding_window(7),
            2 => Mask::NONE,
            _ => Mask::causal().aligned(QueryPos::TopLeft),
        };
        let p = pk.params(mask, n % 2 == 1);
        let batch = Batch::new(&cu_q, &cu_k);
        for level in levels() {
            let mut out = vec![f32::NAN; q_len * shape.q_heads * shape.v_dim];
            let mut lse = vec![f32::NAN; shape.q_heads * q_len];
            ragged::attention_at(
                level,
                &p,
                &batch,
                &pk.q,
                &pk.k,
                &pk.v,
                &mut out,
                Some(&mut lse),
            )
            .unwrap();
            check_batch(
                &pk,
                &p,
                (&cu_q, &cu_k),
                (&out, &lse),
                &format!("{level:?} {cu_q:?} {cu_k:?}"),
                level,
                true,
            );
        }
    }
}

/// A paged batch: the packed keys in pages through one table, each sequence from its first key.
#[test]
fn a_paged_batch_is_the_in_order_batch() {
    let mut rng = Rng(201);
    let (cu_q, cu_k) = (vec![0, 3, 3, 7], vec![0, 20, 25, 61]);
    let shape = Shape::new(2, 7, 61, 8).gqa(4, 2);
    let pk = Packed::new(&mut rng, shape, false);
    let p = pk.params(Mask::causal(), false);
    let batch = Batch::new(&cu_q, &cu_k);
    // Pages of 8 keys, HND `[pages][kv_heads][8][dim]`, in reverse order.
    let pages = 61usize.div_ceil(8);
    let table: Vec<u32> = (0..pages).map(|e| (pages - 1 - e) as u32).collect();
    let stride = 2 * 8 * 8;
    let mut kp = vec![f32::NAN; pages * stride];
    let mut vp = vec![f32::NAN; pages * stride];
    for g in 0..2 {
        for j in 0..61 {
            let at = table[j / 8] as usize * stride + (g * 8 + j % 8) * 8;
            kp[at..at + 8].copy_from_slice(&pk.k[p.k.at(g, j)..][..8]);
            vp[at..at + 8].copy_from_slice(&pk.v[p.v.at(g, j)..][..8]);
        }
    }
    let paged = Params {
        k: Layout::planar(8, 8),
        v: Layout::planar(8, 8),
        ..p.with_pages(Pages::new(&table, 8, stride, stride))
    };
    for level in levels() {
        let n = 7 * 4 * 8;
        let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
        let (mut wl, mut gl) = (vec![0.0; 4 * 7], vec![0.0; 4 * 7]);
        ragged::attention_at(
            level,
            &p,
            &batch,
            &pk.q,
            &pk.k,
            &pk.v,
            &mut want,
            Some(&mut wl),
        )
        .unwrap();
        ragged::attention_at(
            level,
            &paged,
            &batch,
            &pk.q,
            &kp,
            &vp,
            &mut got,
            Some(&mut gl),
        )
        .unwrap();
        for (a, b) in want.iter().chain(&wl).zip(got.iter().chain(&gl)) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{level:?}: {a} vs {b}"
            );
        }
    }
}

#[cfg(feature = "parallel")]
#[test]
fn parallel_ragged_matches_every_sequence_alone() {
    let mut rng = Rng(202);
    for n in 0..budget(8, 1) {
        let sequences = rng.range(1, 6);
        let (cu_q, cu_k) = offsets(&mut rng, sequences, 40, 300);
        let (q_len, kv_len) = (*cu_q.last().unwrap(), *cu_k.last().unwrap());
        let shape = Shape::new(2, q_len, kv_len, 16).gqa(4, 2);
        let pk = Packed::new(&mut rng, shape, n % 2 == 0);
        let p = pk.params(Mask::causal(), n % 2 == 1);
        let batch = Batch::new(&cu_q, &cu_k);
        let mut out = vec![f32::NAN; q_len * 4 * 16];
        let mut lse = vec![f32::NAN; 4 * q_len];
        qkv::parallel::ragged(&p, &batch, &pk.q, &pk.k, &pk.v, &mut out, Some(&mut lse)).unwrap();
        check_batch(
            &pk,
            &p,
            (&cu_q, &cu_k),
            (&out, &lse),
            "parallel",
            qkv::Level::Detect,
            false,
        );
    }
}

/// Offsets that do not describe the tensors: [`Error::Batch`] with the first wrong entry,
/// and nothing written; tensors too short for the totals: `TooShort`, as for one problem.
#[test]
fn offsets_that_do_not_fit_are_refused() {
    let shape = Shape::new(1, 5, 9, 4);
    let p = Params::new(shape).interleaved();
    let (q, kv) = (vec![0.5f32; 5 * 4], vec![0.25f32; 9 * 4]);
    let cases: [(&[usize], &[usize], usize); 7] = [
        (&[0, 3, 5], &[0, 5], 2),          // lengths differ
        (&[], &[], 0),                     // empty
        (&[1, 3, 5], &[0, 5, 9], 0),       // does not start at 0
        (&[0, 4, 3, 5], &[0, 1, 2, 9], 2), // decreases
        (&[0, 3, 4], &[0, 5, 9], 2),       // ends short of q_len
        (&[0, 3, 5], &[0, 5, 10], 2),      // ends past kv_len
        (&[0, 3, 5], &[0, 0, 9], 0xff),    // fine: an empty sequence's keys
    ];
    for (cu_q, cu_k, index) in cases {
        let batch = Batch::new(cu_q, cu_k);
        let want = if index == 0xff {
            Ok(())
        } else {
            Err(Error::Batch { index })
        };
        for level in levels() {
            let mut out = vec![f32::NAN; 5 * 4];
            let got = ragged::attention_at(level, &p, &batch, &q, &kv, &kv, &mut out, None);
            assert_eq!(got, want, "{level:?} {cu_q:?} {cu_k:?}");
            if want.is_err() {
                assert!(out.iter().all(|x| x.is_nan()), "written on error");
            }
        }
    }
    let mut out = vec![f32::NAN; 5 * 4];
    let batch = Batch::new(&[0, 3, 5], &[0, 5, 9]);
    assert!(matches!(
        ragged::attention(&p, &batch, &q, &kv[..8 * 4], &kv, &mut out, None),
        Err(Error::TooShort { .. })
    ));
    assert!(out.iter().all(|x| x.is_nan()));
}

/// The test kit's random cases (layouts, masks, bias, softcap, sinks, ALiBi; K/V stored in
/// every type; a third of them paged) cut into 1 to 4 sequences: every level against the
/// reference on each sequence cut out of the case by hand (`common::ragged`).
#[test]
fn random_cases_as_batches_match_the_reference() {
    let kinds = [
        (KvKind::F32, KvKind::F32),
        (KvKind::F16, KvKind::Bf16),
        (KvKind::Q8_0, KvKind::F32),
    ];
    let mut rng = Rng(197);
    for (n, mut case) in random_cases(198, budget((60, 70, 40), (3, 6, 16))).enumerate() {
        let s = case.shape;
        let seqs = rng.range(1, 4);
        // Cuts anywhere in the totals, so some sequences are empty.
        let mut cuts = |total: usize| -> Vec<usize> {
            let mut cu: Vec<usize> = (1..seqs).map(|_| rng.range(0, total)).collect();
            cu.sort_unstable();
            [vec![0], cu, vec![total]].concat()
        };
        let (cu_q, cu_k) = (cuts(s.q_len), cuts(s.kv_len));
        case.ragged = Some(Ragged { cu_q, cu_k });
        let _ = case.store(kinds[n % kinds.len()]);
        if n % 3 == 0 {
            let page_len = rng.pick(&[1, 5, 16, 48]);
            case.paging = Some(Paging::random(&mut rng, page_len));
        }
        check_all(&case);
    }
}
