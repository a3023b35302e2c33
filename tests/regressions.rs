//! Every input the fuzz targets (`fuzz/`) failed on, replayed through the same checks, plus
//! each of those failures written out as a plain test that says what input it replays.
//!
//! The checks are the fuzz crate's own modules, included by path (they use the test kit,
//! `mod common`, as the fuzz crate does): `fuzz/src/differential.rs`
//! (every level against the reference), `fuzz/src/api.rs` (arbitrary shapes, strides and
//! lengths give `Ok` or a typed error and write nothing outside the output rows),
//! `fuzz/src/exp_check.rs` (`exp` within its documented bound), and with the `capi` feature
//! `fuzz/src/capi_check.rs` and `fuzz/src/capi_split_check.rs` (the C ABI's statuses and
//! results). The replayed inputs are the seed corpus `fuzz/corpus/<target>/seed-*` and
//! `fuzz/regressions/<target>/*`.

mod common;

#[allow(dead_code)]
#[path = "../fuzz/src/bytes.rs"]
mod bytes;

#[allow(dead_code)]
#[path = "../fuzz/src/differential.rs"]
mod differential;

#[allow(dead_code)]
#[path = "../fuzz/src/api.rs"]
mod api;

#[allow(dead_code)]
#[path = "../fuzz/src/exp_check.rs"]
mod exp_check;

#[cfg(feature = "capi")]
#[allow(dead_code)]
#[path = "../fuzz/src/capi_check.rs"]
mod capi_check;

#[cfg(feature = "capi")]
#[allow(dead_code)]
#[path = "../fuzz/src/capi_split_check.rs"]
mod capi_split_check;

use std::path::Path;

use common::levels;
use qkv::{Bias, Params, Shape};

/// Runs `check` on every seed and every recorded failure of `target`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for (dir, prefix) in [("corpus", "seed-"), ("regressions", "")] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("readable directory").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(prefix) && !f.starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("readable input");
            println!("{}", path.display());
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
#[cfg_attr(miri, ignore = "reads files; the cases are too big for Miri")]
fn differential_seeds_and_regressions() {
    // Each input with K and V in f32 (as inputs decoded before the storage types were drawn,
    // the failures recorded then included), then in the types the input draws.
    assert!(
        replay("differential", |data| {
            differential::run_f32(data);
            differential::run(data);
        }) > 0
    );
}

#[test]
#[cfg_attr(miri, ignore = "reads files; the cases are too big for Miri")]
fn api_seeds_and_regressions() {
    assert!(replay("api", api::run) > 0);
}

#[test]
#[cfg_attr(miri, ignore = "reads files; the cases are too big for Miri")]
fn exp_seeds_and_regressions() {
    assert!(replay("exp", exp_check::run) > 0);
}

#[test]
#[cfg(feature = "capi")]
#[cfg_attr(miri, ignore = "reads files; the cases are too big for Miri")]
fn capi_seeds_and_regressions() {
    assert!(replay("capi", capi_check::run) > 0);
}

#[test]
#[cfg(feature = "capi")]
#[cfg_attr(miri, ignore = "reads files; the cases are too big for Miri")]
fn capi_split_seeds_and_regressions() {
    assert!(replay("capi_split", capi_split_check::run) > 0);
}

/// The output of every level on `p`, with `lse`.
fn outputs(p: &Params, q: &[f32], k: &[f32], v: &[f32], out_len: usize) -> Vec<(String, Vec<f32>)> {
    let lse_len = p.shape.q_heads * p.shape.q_len;
    levels()
        .into_iter()
        .map(|level| {
            let (mut out, mut lse) = (vec![0.0; out_len], vec![0.0; lse_len]);
            level
                .attention(p, q, k, v, &mut out, Some(&mut lse))
                .unwrap();
            (format!("{level:?}"), out)
        })
        .collect()
}

/// Replays `fuzz/regressions/differential/bias-1e10`: two keys whose scores differ by 1 on a
/// bias of `1e10`.
///
/// The kernel's `f32` score `scale·q·k + bias` rounds against `|bias|`: both scores are `1e10`
/// in `f32` (its ulp is 1024), so every `f32` kernel gives the two keys equal weights (0.5)
/// where the reference gives `e/(1 + e)` = 0.731. Scores of 1e10 are well inside
/// "representable in f32", so `tolerance::output_bound` must count `|bias|` in `score_abs`,
/// which this checks on every level.
#[test]
fn bias_magnitude_counts_in_the_documented_bound() {
    let q = [1.0f32];
    let k = [0.0f32, 1.0];
    let v = [0.0f32, 1.0];
    let bias = [1e10f32, 1e10];
    let p = Params::new(Shape::new(1, 1, 2, 1))
        .with_scale(1.0)
        .with_bias(Bias::broadcast(&bias, 2));
    let mut want = [0.0f32];
    qkv::reference::attention(&p, &q, &k, &v, &mut want, None).unwrap();
    // score_abs = |scale|·|q·k_j| + |bias_j| ≤ 1 + 1e10, v_abs = 1: the documented bound is
    // loose enough for the rounding of 1e10 + 1 in f32.
    let bound = qkv::tolerance::output_bound(1.0 + 1e10, 1.0, 1, 2);
    for (who, got) in outputs(&p, &q, &k, &v, 1) {
        assert!(
            (got[0] - want[0]).abs() <= bound,
            "{who}: {} vs reference {}, documented bound {bound}",
            got[0],
            want[0]
        );
    }
}

/// Replays `fuzz/regressions/api/params-new-overflow`: a shape whose planar and interleaved
/// strides overflow `usize`.
///
/// `Params::new` (through `Layout::planar`) and `Params::interleaved` (through
/// `Layout::interleaved`) must not panic with overflow checks on (debug builds, `cargo
/// test`), and `validate` must refuse the result: the crate promises no panics on any input.
#[test]
fn params_new_with_huge_shape_does_not_panic() {
    let shape = Shape::new(1, usize::MAX, 2, 2);
    let p = Params::new(shape);
    assert!(p.validate::<f32, f32>(&[], &[], &[], &[], None).is_err());
    let shape = Shape::new(usize::MAX / 2, 3, 3, 4);
    let p = Params::new(Shape::new(1, 1, 1, 1)).interleaved();
    let p = Params { shape, ..p }.interleaved();
    assert!(p.validate::<f32, f32>(&[], &[], &[], &[], None).is_err());
}

/// Replays `fuzz/regressions/capi/huge-q-len`: the same overflow through the C ABI, a
/// descriptor with `q_len · head_dim` beyond `usize::MAX` and caller-given layouts.
///
/// Building the planar defaults before the caller's layouts replace them must not panic: a
/// caught panic would come back as `QKV_ERR_INTERNAL` ("never returned by a correct build"),
/// and without `std` (firmware) reach the panic handler. The call must give the status of
/// the real problem in the descriptor.
#[test]
#[cfg(feature = "capi")]
fn capi_huge_shape_is_not_an_internal_error() {
    use qkv::capi::*;
    // Zero strides: every head and row at the start, which the 4-float buffers hold.
    let zero = QkvLayout::default();
    let d = QkvDesc {
        q: zero,
        k: zero,
        v: zero,
        out: zero,
        q_count: 4,
        k_count: 4,
        v_count: 4,
        out_count: 4,
        ..QkvDesc::planar(1, 1, usize::MAX, 1, 2, 2)
    };
    let (q, k, v) = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
    let mut out = [0.0f32; 4];
    // SAFETY: every buffer holds the 4 floats its count field says.
    let status = unsafe {
        qkv_attention_f32(
            &d,
            q.as_ptr(),
            k.as_ptr().cast(),
            v.as_ptr().cast(),
            out.as_mut_ptr(),
            core::ptr::null_mut(),
        )
    };
    // `out` rows of 2 floats at a row stride of 0 overlap.
    assert_eq!(status, QKV_ERR_OVERLAP);
}

/// Replays `fuzz/regressions/capi_split/stream-zero-head-dim`: a stream over a problem with
/// `head_dim = 0`.
///
/// `Stream::new` documents the one-shot call's `ZeroDim` errors, so `Stream::new`,
/// `Stream::resume`, `qkv_stream_init` and `qkv_stream_finish` must refuse it as the one-shot
/// call does (`Error::ZeroDim(Dim::HeadDim)`), in the same order of checks, and write
/// nothing: a stream that accepted it would finish with zero rows and `lse = -inf`.
#[test]
fn stream_with_zero_head_dim_is_refused() {
    use qkv::stream::Stream;
    use qkv::{Dim, Error};
    for q_len in [0, 3] {
        let p = Params::new(Shape::new(2, q_len, 5, 0).with_v_dim(3));
        let mut out = vec![0.0f32; 2 * q_len * 3];
        let want = qkv::attention::<f32, f32>(&p, &[], &[], &[], &mut out, None);
        assert_eq!(want, Err(Error::ZeroDim(Dim::HeadDim)));
        let mut state = vec![0.0f32; Stream::state_len(&p.shape)];
        assert_eq!(
            Stream::new(&p, &mut state).unwrap_err(),
            Error::ZeroDim(Dim::HeadDim)
        );
        assert_eq!(
            Stream::resume(&p, &mut state).unwrap_err(),
            Error::ZeroDim(Dim::HeadDim)
        );
    }
    // The order of the one-shot call: zero heads first, then head_dim, then v_dim.
    let mut state = vec![0.0f32; 64];
    let p = Params::new(Shape::new(0, 3, 5, 0));
    assert_eq!(
        Stream::new(&p, &mut state).unwrap_err(),
        Error::ZeroDim(Dim::QHeads)
    );
    let p = Params::new(Shape::new(2, 3, 5, 0));
    assert_eq!(
        Stream::new(&p, &mut state).unwrap_err(),
        Error::ZeroDim(Dim::HeadDim)
    );
    #[cfg(feature = "capi")]
    {
        use qkv::capi::*;
        use qkv::capi_split::*;
        let d = QkvDesc::planar(2, 2, 0, 0, 0, 3);
        let mut state = [7.0f32; 8];
        let (mut out, mut lse) = ([7.0f32; 4], [7.0f32; 4]);
        // SAFETY: `state` holds 8 floats; out and lse hold more than the empty problem needs.
        unsafe {
            assert_eq!(qkv_stream_init(&d, state.as_mut_ptr(), 8), QKV_ERR_ZERO_DIM);
            assert_eq!(
                qkv_stream_finish(
                    &d,
                    state.as_mut_ptr(),
                    8,
                    out.as_mut_ptr(),
                    lse.as_mut_ptr()
                ),
                QKV_ERR_ZERO_DIM
            );
        }
        assert!(state.iter().chain(&out).chain(&lse).all(|&x| x == 7.0));
    }
}

/// Replays `fuzz/regressions/*/decode-prefetch-huge-k-stride`: decode rows over a K row
/// stride near `usize::MAX`.
///
/// With few keys, validation accepts any K row stride (only rows below `kv_len` must fit),
/// so the decode path's prefetch distance, a multiple of the row stride, can pass `usize`;
/// it must then not panic (overflow checks are on in `cargo test`). On every level: one key
/// gives exactly its `v`, more keys give an error.
#[test]
fn decode_with_a_huge_k_row_stride_does_not_panic() {
    for (kv_len, stride) in [
        (1, usize::MAX / 2),
        (3, usize::MAX / 64),
        (2, usize::MAX / 40),
    ] {
        let shape = Shape::new(4, 1, kv_len, 3).gqa(4, 1);
        let mut p = Params::new(shape);
        p.k.row_stride = stride;
        // K holds exactly the rows validation asks for: row j at j·stride, so a stride that
        // big can only go with one key; the other cases give an error, not a panic.
        let k = vec![0.5f32; if kv_len == 1 { 3 } else { 0 }];
        let q = vec![0.25f32; 4 * 3];
        let v = vec![1.0f32; kv_len * 3];
        let mut out = vec![f32::NAN; 4 * 3];
        for level in levels() {
            let got = level.attention(&p, &q, &k, &v, &mut out, None);
            match kv_len {
                1 => {
                    got.unwrap();
                    assert!(out.iter().all(|&o| o == 1.0), "{level:?}: {out:?}");
                }
                _ => assert!(got.is_err(), "{level:?}"),
            }
        }
    }
}

/// Replays `fuzz/regressions/api/pv-prefetch-bound-near-usize-max`: `usize::MAX` keys.
///
/// With zero row strides a K/V of `usize::MAX` keys fits in a few floats, and a sliding
/// window puts the visible keys at the very end, where the P·V prefetch's test for a next
/// key block, `k0 + 2·BLOCK_K <= end`, must not overflow. On every level: the keys are all
/// equal, so each row is exactly their `v`.
#[test]
fn keys_near_usize_max_do_not_overflow_the_prefetch_bound() {
    // Under Miri one decode row (the bound is shared by every path): each call there costs
    // seconds.
    let rows: &[usize] = if cfg!(miri) { &[1] } else { &[1, 4, 8] };
    for &rows in rows {
        let shape = Shape::new(rows, 1, usize::MAX, 2);
        let zero = qkv::Layout {
            head_stride: 0,
            row_stride: 0,
        };
        let p = Params::new(shape)
            .with_layouts(Params::new(shape).q, zero, zero, Params::new(shape).out)
            .with_mask(qkv::Mask::sliding_window(100));
        let q = vec![0.5f32; rows * 2];
        let (k, v) = ([1.0f32, -1.0], [3.0f32, 4.0]);
        for level in levels() {
            let mut out = vec![f32::NAN; rows * 2];
            level.attention(&p, &q, &k, &v, &mut out, None).unwrap();
            assert!(out.chunks(2).all(|o| o == [3.0, 4.0]), "{level:?}: {out:?}");
        }
    }
}
