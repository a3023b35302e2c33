//! Decode where the kv heads' rows lie side by side (K and V interleaved, or pages that hold
//! every head's rows) reads each key block for several heads' blocks in turn, each block in
//! tiles of its own: at every level and emulated width, in every K/V type, with masks, GQA,
//! the softmax variants and values near `f32::MAX`, against the reference; and the same bits
//! as one block at a time (a workspace of one block's tiles), because each block does the
//! same arithmetic in the same order whichever way the blocks take turns.

mod common;
use common::kv::{Stored, with_stored};
use common::{
    Case, Outputs, Paging, Rng, alibi_slopes, assert_same_bits, budget, check_all, levels,
    random_mask, random_sinks,
};
use qkv::split::Level;
use qkv::{KvKind, Params, Shape};

/// Decode shapes around the ways blocks take turns: two blocks of one kv head (GQA 8), a
/// group of 5 (blocks of 4 and 1 heads), more kv heads than the blocks taken at a time (8),
/// and queries of 2–4 rows (a block per head).
fn shapes() -> Vec<Shape> {
    budget(
        vec![
            Shape::new(1, 1, 100, 64).gqa(8, 1),
            Shape::new(1, 1, 37, 33).gqa(15, 3).with_v_dim(20),
            Shape::new(1, 1, 130, 32).gqa(18, 9),
            Shape::new(1, 1, 61, 16).gqa(17, 17),
            Shape::new(1, 2, 50, 24).gqa(6, 3),
            Shape::new(1, 3, 97, 40).gqa(4, 2).with_v_dim(128),
            Shape::new(1, 4, 49, 64).gqa(12, 12),
        ],
        vec![
            Shape::new(1, 1, 20, 8).gqa(10, 5),
            Shape::new(1, 2, 9, 4).gqa(4, 2),
        ],
    )
}

/// The decode cases: each shape interleaved, and paged both ways (pages of 16 and 5 keys, the
/// first page entered at a row), with a random mask and one of the softmax variants.
fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut all = Vec::new();
    for shape in shapes() {
        for way in 0..3 {
            let mut case = Case::dense(rng, shape, 1.0);
            case.mask = random_mask(rng, &shape);
            match way {
                0 => case.interleave_kv(),
                _ => {
                    case.paging = Some(Paging {
                        page_len: if way == 1 { 16 } else { 5 },
                        hnd: way == 1,
                        offset: rng.range(0, 4),
                    })
                }
            }
            match rng.range(0, 4) {
                0 => case.sinks = Some(random_sinks(rng, shape.q_heads)),
                1 => case.alibi = Some(alibi_slopes(shape.q_heads)),
                2 => case.softcap = Some(2.0),
                _ => {}
            }
            all.push(case);
        }
    }
    all
}

/// `level` on `case` in a workspace of `floats` (NaN-filled), with `lse`.
fn run_in(case: &Case, level: Level, floats: usize) -> Outputs {
    let s = case.shape;
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    let call = case.call_inputs();
    let sp = call.params(case);
    with_stored!(&call.k, |k| with_stored!(&call.v, |v| level.attention_in(
        &mut vec![f32::NAN; floats],
        &sp,
        &case.q,
        k,
        v,
        &mut out,
        Some(&mut lse)
    )))
    .expect("the case is valid");
    (out, lse)
}

/// The working memory of one block's tiles: what the same shape takes with planar K and V
/// of a long sequence, whose heads' rows lie far apart (the tiles do not depend on `kv_len`).
fn one_block(case: &Case) -> usize {
    let far = Shape {
        kv_len: 1 << 20,
        ..case.shape
    };
    qkv::workspace_len_for(&Params::new(far), case.kinds.0, case.kinds.1)
}

#[test]
fn side_by_side_decode_matches_the_reference_in_every_kv_type() {
    let kinds = [
        (KvKind::F32, KvKind::F32),
        (KvKind::F16, KvKind::Bf16),
        (KvKind::Bf16, KvKind::Q8_0),
        (KvKind::Q8_0, KvKind::Q8_0),
    ];
    let mut rng = Rng(400);
    for (n, mut case) in cases(&mut rng).into_iter().enumerate() {
        let _ = case.store(kinds[n % kinds.len()]);
        check_all(&case);
    }
}

/// Blocks taken 8, 3, 2 or 1 at a time (the workspace holds that many blocks' tiles) give
/// the same bits.
#[test]
fn blocks_taken_together_give_the_bits_of_one_at_a_time() {
    let mut rng = Rng(401);
    for case in cases(&mut rng) {
        let one = one_block(&case);
        let full =
            qkv::workspace_len_for(&case.call_inputs().params(&case), KvKind::F32, KvKind::F32);
        assert!(full >= one, "{full} < {one}");
        for level in levels() {
            let want = run_in(&case, level, one);
            for floats in [full, 3 * one, 2 * one + one / 2] {
                let got = run_in(&case, level, floats);
                let who = format!("{level:?}, {floats} floats against {one}, {:?}", case.shape);
                assert_same_bits(&want, &got, &who);
            }
        }
    }
}

/// Where the heads' rows lie side by side, full speed takes a block's tiles for each block
/// taken together (up to 8); planar K and V of a long sequence, prefill and `v_dim` in
/// several panels take one.
#[test]
fn full_speed_working_memory_counts_the_blocks_taken_together() {
    let mut rng = Rng(402);
    let shape = Shape::new(1, 1, 64, 128).gqa(32, 8);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    let one = one_block(&case);
    let full = |case: &Case| {
        qkv::workspace_len_for(&case.call_inputs().params(case), KvKind::F32, KvKind::F32)
    };
    assert_eq!(full(&case), one, "planar");
    case.paging = Some(Paging {
        page_len: 16,
        hnd: true,
        offset: 0,
    });
    assert_eq!(full(&case), 8 * one, "pages holding every head");
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.interleave_kv();
    assert_eq!(full(&case), 8 * one, "interleaved");
    let mut small = Case::dense(&mut rng, Shape::new(1, 1, 64, 16).gqa(6, 3), 1.0);
    small.interleave_kv();
    assert_eq!(full(&small), 3 * one_block(&small), "three blocks");
    for shape in [Shape::new(1, 64, 64, 32).gqa(8, 8), shape.with_v_dim(200)] {
        let mut case = Case::dense(&mut rng, shape, 1.0);
        case.interleave_kv();
        assert_eq!(full(&case), one_block(&case), "{shape:?}");
    }
}

/// One head's values near `f32::MAX` overflow its block's accumulator, which is redone alone
/// while the blocks beside it keep their results.
#[test]
fn a_block_that_overflows_is_redone_beside_the_others() {
    let mut rng = Rng(403);
    for page_len in [None, Some(16)] {
        let shape = Shape::new(1, 1, 70, 16).gqa(12, 6);
        let mut case = Case::dense(&mut rng, shape, 1.0);
        let [_, _, lv, _] = case.layouts;
        for j in 0..shape.kv_len {
            for c in 0..shape.v_dim {
                case.v[lv.at(2, j) + c] = if j % 3 == 0 { 3.0e38 } else { -2.9e38 };
            }
        }
        match page_len {
            None => case.interleave_kv(),
            Some(page_len) => {
                case.paging = Some(Paging {
                    page_len,
                    hnd: false,
                    offset: 3,
                })
            }
        }
        check_all(&case);
    }
}
