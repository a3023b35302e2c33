//! Streaming: random chunkings (single tokens, pages, empty and fully masked chunks, any
//! order) at every level and emulated width, against the one-shot call and the reference
//! under `tolerance::stream_*_bound`.

mod common;
use common::{
    Case, Joined, Outputs, Rng, assert_same_bits, budget, compare_joined, joined_series, laid_out,
    levels, one_shot, random_cases,
};
use qkv::split::Level;
use qkv::stream::Stream;
use qkv::{Error, Layout, Mask, Params, Shape, Tensor};
use std::ops::Range;

/// The rows `keys` of a K or V tensor copied into a fresh buffer with the same strides,
/// row 0 being key `keys.start`; everything else NaN, so reading outside the chunk shows.
fn chunk(data: &[f32], l: Layout, heads: usize, dim: usize, keys: &Range<usize>) -> Vec<f32> {
    laid_out(l, (heads, keys.len(), dim), 0, |h, r, c| {
        data[l.at(h, keys.start + r) + c]
    })
}

/// A random chunking of `0..n`: runs of single tokens, pages of a random size, empty chunks.
fn chunking(rng: &mut Rng, n: usize) -> Vec<Range<usize>> {
    let mut out = vec![];
    let mut start = 0;
    let page = rng.range(1, 20);
    while start < n {
        let len = match rng.range(0, 4) {
            0 => 1,
            1 => 0,
            2 => page,
            _ => rng.range(1, n - start),
        };
        let end = (start + len).min(n);
        out.push(start..end);
        start = end;
    }
    if rng.coin(1, 4) {
        // Any order.
        for i in (1..out.len()).rev() {
            let j = rng.range(0, i);
            out.swap(i, j);
        }
    }
    out
}

fn run_stream(case: &Case, lvl: Level, chunks: &[Range<usize>]) -> Outputs {
    let p = case.params();
    let s = case.shape;
    let mut state = vec![f32::NAN; Stream::state_len(&s)];
    let mut stream = Stream::new(&p, &mut state).unwrap().with_level(lvl);
    for keys in chunks {
        let k = chunk(&case.k, p.k, s.kv_heads, s.head_dim, keys);
        let v = chunk(&case.v, p.v, s.kv_heads, s.v_dim, keys);
        stream
            .update(&case.q, &k, &v, keys.clone())
            .expect("update accepts the chunk");
    }
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    (out, lse)
}

#[test]
fn random_chunkings_match_one_shot_and_reference() {
    joined_series(60, 120, 6, |rng, case, level| {
        let chunks = chunking(rng, case.shape.kv_len);
        let got = run_stream(case, level, &chunks);
        let who = format!("{level:?} {chunks:?}");
        (got, Joined::Stream(chunks.len()), who)
    });
}

#[test]
fn token_by_token_decode_with_sliding_window() {
    // GQA decode of 4 tokens at the end of the cache, fed one key at a time, interleaved
    // layouts; many single-token chunks are entirely outside the window.
    let mut rng = Rng(61);
    let (kv, dim, q_len, q_heads) = budget((300, 32, 4, 8), (6, 4, 2, 4));
    let shape = Shape::new(1, q_len, kv, dim).gqa(q_heads, 2);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::sliding_window(budget(17, 2));
    case.relayout(&mut rng);
    let chunks: Vec<_> = (0..kv).map(|t| t..t + 1).collect();
    let want = one_shot(&case, None);
    for level in levels() {
        let got = run_stream(&case, level, &chunks);
        compare_joined(
            &case,
            &want,
            &got,
            Joined::Stream(chunks.len()),
            1.0,
            &format!("{level:?}"),
        );
    }
}

#[test]
fn one_chunk_is_the_one_shot_call_exactly() {
    for mut case in random_cases(62, budget((40, 60, 20), (1, 6, 20))) {
        // Without sinks: a stream adds them to its state in f64, the one-shot call takes each
        // as its first key in f32 (both within tolerance, in tests of their own).
        case.sinks = None;
        for level in levels() {
            let all = 0..case.shape.kv_len;
            let got = run_stream(&case, level, std::slice::from_ref(&all));
            let want = one_shot(&case, Some(level));
            assert_same_bits(&want, &got, &format!("{level:?}"));
        }
    }
}

#[test]
fn finish_can_be_called_at_any_time_and_streaming_goes_on() {
    let mut rng = Rng(63);
    let shape = Shape::new(2, 3, 20, 8);
    let case = Case::dense(&mut rng, shape, 1.0);
    let p = case.params();
    let mut state = vec![0.0f32; Stream::state_len(&shape)];
    let mut stream = Stream::new(&p, &mut state).unwrap();
    let (mut out, mut lse) = (vec![9.0f32; case.out_len], vec![9.0f32; 6]);
    // No key yet: zeros and -inf.
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0) && lse.iter().all(|&x| x == f32::NEG_INFINITY));
    // K and V from the chunk's first row (head_dim = v_dim = 8): the head stride stays
    // kv_len·8, so the layout is kept.
    let feed = |stream: &mut Stream, keys: Range<usize>| {
        let at = keys.start * 8;
        stream.update(&case.q, &case.k[at..], &case.v[at..], keys)
    };
    feed(&mut stream, 0..12).unwrap();
    stream.finish(&mut out, None).unwrap();
    feed(&mut stream, 12..20).unwrap();
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    let want = one_shot(&case, None);
    compare_joined(
        &case,
        &want,
        &(out.clone(), lse.clone()),
        Joined::Stream(2),
        1.0,
        "two",
    );
    // reset forgets.
    stream.reset();
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
}

#[test]
fn nan_rules_match_the_one_shot_call() {
    let mut rng = Rng(64);
    let shape = Shape::new(1, 3, 16, 4);
    let mut case = Case::dense(&mut rng, shape, 1.0);
    case.mask = Mask::causal();
    case.v[5 * 4 + 2] = f32::NAN; // key 5, column 2: visible to every row
    case.q[2 * 4 + 1] = f32::NAN; // row 2: NaN scores
    let want = one_shot(&case, None);
    for level in levels() {
        let chunks = [0..3, 3..4, 4..10, 10..16];
        let got = run_stream(&case, level, &chunks);
        for (idx, (w, g)) in want.0.iter().zip(&got.0).enumerate() {
            assert_eq!(w.is_nan(), g.is_nan(), "{level:?} out[{idx}]: {w} vs {g}");
        }
        for (w, g) in want.1.iter().zip(&got.1) {
            assert_eq!(w.is_nan(), g.is_nan());
        }
    }
}

#[test]
fn errors_leave_the_state_unchanged() {
    let shape = Shape::new(2, 3, 10, 4);
    let p = Params::new(shape);
    let need = Stream::state_len(&shape);
    assert_eq!(need, 2 * 3 * (3 + 2 * 4));
    let mut small = vec![0.0f32; need - 1];
    assert!(matches!(
        Stream::new(&p, &mut small),
        Err(Error::TooShort {
            tensor: Tensor::Out,
            ..
        })
    ));
    let mut zero = Params::new(Shape::new(2, 3, 10, 4).with_v_dim(0));
    let mut st = vec![0.0f32; 100];
    assert_eq!(
        Stream::new(&zero, &mut st).unwrap_err(),
        Error::ZeroDim(qkv::Dim::VDim)
    );
    zero = p.with_scale(f32::NAN);
    assert_eq!(
        Stream::new(&zero, &mut st).unwrap_err(),
        Error::InvalidScale
    );
    assert_eq!(
        Stream::state_len(&Shape::new(usize::MAX, 2, 1, 1)),
        usize::MAX
    );

    let q = vec![0.5f32; 2 * 3 * 4];
    let k = vec![0.25f32; 2 * 10 * 4];
    let mut state = vec![0.0f32; need];
    let mut stream = Stream::new(&p, &mut state).unwrap();
    stream.update(&q, &k, &k, 0..10).unwrap();
    let (mut out, mut lse) = (vec![0.0f32; 24], vec![0.0f32; 6]);
    stream.finish(&mut out, Some(&mut lse)).unwrap();
    assert_eq!(
        stream.update(&q, &k, &k, 8..11),
        Err(Error::KeyRange {
            start: 8,
            end: 11,
            kv_len: 10
        })
    );
    assert!(matches!(
        stream.update(&q, &k[..10], &k, 0..3),
        Err(Error::TooShort {
            tensor: Tensor::K,
            ..
        })
    ));
    assert!(matches!(
        stream.update(&q[..3], &k, &k, 0..3),
        Err(Error::TooShort {
            tensor: Tensor::Q,
            ..
        })
    ));
    assert!(matches!(
        stream.finish(&mut out[..23], None),
        Err(Error::TooShort {
            tensor: Tensor::Out,
            ..
        })
    ));
    let (mut out2, mut lse2) = (vec![0.0f32; 24], vec![0.0f32; 6]);
    stream.finish(&mut out2, Some(&mut lse2)).unwrap();
    assert_eq!((out, lse), (out2, lse2));
}
