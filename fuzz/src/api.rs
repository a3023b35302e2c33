//! The API-robustness check: arbitrary shapes, strides, masks, biases and slice lengths,
//! including values whose products overflow `usize`.
//!
//! For every entry point (`Params::validate`, the reference, every [`Isa`] whether available
//! or not, every [`Emulated`] width):
//! - the call returns `Ok` or a typed [`qkv::Error`], never panics (the fuzz build has
//!   overflow checks and debug assertions on, and runs under AddressSanitizer);
//! - every entry point returns what `Params::validate` returns (an unavailable level returns
//!   `Error::Unsupported` instead of `Ok`);
//! - on `Err`, `out` and `lse` are bit-for-bit unchanged;
//! - on `Ok`, nothing in `out` outside the output rows and nothing in `lse` past
//!   `q_heads · q_len` is written.
//!
//! A valid call is only *run* when its work is small (the kernel's keys per 48-row block,
//! and the reference's `q_len · kv_len`, times the dimensions, and at least `q_heads`): a
//! stride of 0 makes `kv_len = usize::MAX` valid, and `q_len = 0` makes any `q_heads` valid
//! (the loops over heads still run, empty), and such calls are correct but would not finish.

use crate::bytes::{Bytes, huge};
use crate::common::compare::SENTINEL;
use crate::common::extent;
use qkv::{Bias, Emulated, Error, Isa, Layout, Mask, Params, QueryPos};
/// Calls whose estimated multiply-adds exceed this are validated but not run.
const MAX_WORK: u128 = 2_000_000;
/// The longest slice the target allocates.
const MAX_LEN: usize = 4096;

/// A size: mostly small, sometimes anything up to `usize::MAX`.
fn size(b: &mut Bytes) -> usize {
    match b.below(16) {
        0..=8 => b.range(0, 9),
        9..=11 => b.range(0, 300),
        12 => b.pick(&[
            usize::MAX,
            usize::MAX - 1,
            usize::MAX / 2,
            usize::MAX / 2 + 1,
            huge(1 << 32),
            huge((1 << 32) + 1),
            huge(1 << 62),
            isize::MAX as usize,
        ]),
        13 => b.u64() as usize,
        14 => 1usize.checked_shl(b.below(64) as u32).unwrap_or(0),
        _ => b.range(0, 70),
    }
}

fn layout(b: &mut Bytes) -> Layout {
    Layout {
        head_stride: size(b),
        row_stride: size(b),
    }
}

/// `Layout::planar`, saturating instead of overflowing.
fn planar(rows: usize, dim: usize) -> Layout {
    Layout {
        head_stride: rows.saturating_mul(dim),
        row_stride: dim,
    }
}

/// The extent of a tensor if it fits and is allocatable.
fn needed(l: Layout, heads: usize, rows: usize, cols: usize) -> Option<usize> {
    extent(l, heads, rows, cols).filter(|&n| n <= MAX_LEN)
}

/// A slice length: the exact extent (when computable), one less, or anything.
fn len(b: &mut Bytes, exact: Option<usize>) -> usize {
    match (b.below(4), exact) {
        (0 | 1, Some(n)) => n,
        (2, Some(n)) => n.saturating_sub(1).max(n.min(b.range(0, 2))),
        _ => b.range(0, 600),
    }
}

fn query_pos(b: &mut Bytes) -> QueryPos {
    match b.below(4) {
        0 => QueryPos::BottomRight,
        1 => QueryPos::TopLeft,
        2 => QueryPos::Offset(b.range(0, 40) as i64 - 20),
        _ => QueryPos::Offset(b.u64() as i64),
    }
}

fn side(b: &mut Bytes) -> Option<usize> {
    if b.chance(100) { None } else { Some(size(b)) }
}

/// Multiply-adds of the kernel: per head and 48-row block (`BLOCK_Q`), the block's rows times the union
/// of their key ranges, times the dimensions (scores are recomputed per 128 columns of `v`).
fn kernel_work(p: &Params) -> u128 {
    let s = p.shape;
    let mut pairs = 0u128;
    let mut q0 = 0usize;
    while q0 < s.q_len {
        let rows = 48.min(s.q_len - q0);
        let (lo, hi) = (p.key_range(q0).0, p.key_range(q0 + rows - 1).1);
        pairs += rows as u128 * (hi.saturating_sub(lo) as u128).max(1);
        q0 += rows;
    }
    let panels = s.v_dim.div_ceil(128).max(1) as u128;
    let per_pair = (s.head_dim as u128)
        .saturating_mul(panels)
        .saturating_add(s.v_dim as u128 + 1);
    // `max(1)`: with `q_len = 0` both still loop over the heads (a no-op per head).
    (s.q_heads as u128)
        .saturating_mul(pairs.max(1))
        .saturating_mul(per_pair)
}

/// Multiply-adds of the reference: it visits every key of every row.
fn reference_work(p: &Params) -> u128 {
    let s = p.shape;
    let passes = s.v_dim.div_ceil(32) as u128 + 2;
    let per_pair = (s.head_dim as u128)
        .saturating_mul(passes)
        .saturating_add(s.v_dim as u128 + 1);
    (s.q_heads as u128)
        .saturating_mul((s.q_len as u128).max(1))
        .saturating_mul((s.kv_len as u128).max(1))
        .saturating_mul(per_pair)
}

/// Decodes one call and checks every entry point on it.
pub fn run(data: &[u8]) {
    let b = &mut Bytes::new(data);
    let shape = b.shape(size);
    let s = shape;
    // Mostly layouts that fit the shape, so that validation often passes.
    let (lq, lk, lv, lo) = if b.chance(96) {
        (layout(b), layout(b), layout(b), layout(b))
    } else {
        (
            planar(s.q_len, s.head_dim),
            planar(s.kv_len, s.head_dim),
            planar(s.kv_len, s.v_dim),
            planar(s.q_len, s.v_dim),
        )
    };
    let q_len = len(b, needed(lq, s.q_heads, s.q_len, s.head_dim));
    let k_len = len(b, needed(lk, s.kv_heads, s.kv_len, s.head_dim));
    let v_len = len(b, needed(lv, s.kv_heads, s.kv_len, s.v_dim));
    let out_len = len(b, needed(lo, s.q_heads, s.q_len, s.v_dim));
    let scale = match b.below(6) {
        0..=2 => None,
        3 => Some(b.pick(&[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            1e-45,
        ])),
        _ => Some(f32::from_bits(b.u32())),
    };
    let mask = Mask {
        left: side(b),
        right: side(b),
        query_pos: query_pos(b),
    };
    let bias_layout = layout(b);
    let bias_len = len(b, needed(bias_layout, s.q_heads, s.q_len, s.kv_len));
    let with_bias = b.chance(80);
    let lse_len = match b.below(3) {
        0 => None,
        1 => Some(
            s.q_heads
                .checked_mul(s.q_len)
                .filter(|&n| n <= MAX_LEN)
                .unwrap_or(0),
        ),
        _ => Some(b.range(0, 300)),
    };

    let fill = |n: usize, x: f32| vec![x; n.min(MAX_LEN)];
    let (q, k, v) = (fill(q_len, 0.5), fill(k_len, -0.25), fill(v_len, 2.0));
    let (q, k, v) = (&q[..], &k[..], &v[..]);
    let bias_data = fill(bias_len, 0.125);
    // A struct literal: `Params::new` computes planar strides, which overflow for huge
    // shapes (regression test `params_new_with_huge_shape_does_not_panic`).
    let params = Params {
        shape,
        q: lq,
        k: lk,
        v: lv,
        out: lo,
        scale,
        mask,
        bias: with_bias.then_some(Bias {
            data: &bias_data,
            head_stride: bias_layout.head_stride,
            row_stride: bias_layout.row_stride,
        }),
        softcap: None,
        sinks: None,
        alibi: None,
        pages: None,
    };
    let p = &params;
    let sentinel = f32::from_bits(SENTINEL);
    let out0 = fill(out_len, sentinel);
    let lse0 = lse_len.map(|n| fill(n, sentinel));

    let expected = p.validate(q, k, v, &out0, lse0.as_deref());
    if let Err(e) = expected {
        // Display and Debug never panic.
        let _ = format!("{e} {e:?}");
    }
    let runnable_kernel = expected.is_err() || kernel_work(p) <= MAX_WORK;
    let runnable_reference = expected.is_err() || reference_work(p) <= MAX_WORK;

    type Call<'c> = Box<dyn Fn(&mut [f32], Option<&mut [f32]>) -> Result<(), Error> + 'c>;
    let mut calls: Vec<(String, Result<(), Error>, Call)> = vec![];
    if runnable_reference {
        calls.push((
            "reference".into(),
            expected,
            Box::new(|o, l| qkv::reference::attention(p, q, k, v, o, l)),
        ));
    }
    if runnable_kernel {
        for isa in Isa::ALL {
            let want = match expected {
                Ok(()) if !isa.is_available() => Err(Error::Unsupported(isa)),
                r => r,
            };
            calls.push((
                format!("{isa:?}"),
                want,
                Box::new(move |o, l| isa.attention(p, q, k, v, o, l)),
            ));
        }
        for e in Emulated::ALL {
            calls.push((
                format!("{e:?}"),
                expected,
                Box::new(move |o, l| e.attention(p, q, k, v, o, l)),
            ));
        }
        if expected.is_ok() && kernel_work(p) <= MAX_WORK {
            calls.push((
                "qkv::attention".into(),
                expected,
                Box::new(|o, l| qkv::attention(p, q, k, v, o, l)),
            ));
        }
    }

    for (who, want, call) in &calls {
        let mut out = out0.clone();
        let mut lse = lse0.clone();
        let got = call(&mut out, lse.as_deref_mut());
        assert_eq!(
            got,
            *want,
            "{who}: result differs from Params::validate\n{p:?}\nlens q {} k {} v {} out {} lse {:?}",
            q.len(),
            k.len(),
            v.len(),
            out.len(),
            lse_len
        );
        if got.is_err() {
            assert!(
                out.iter().all(|x| x.to_bits() == SENTINEL)
                    && lse.iter().flatten().all(|x| x.to_bits() == SENTINEL),
                "{who}: wrote before returning {got:?}\n{p:?}"
            );
            continue;
        }
        let mut inside = vec![false; out.len()];
        for h in 0..s.q_heads {
            for i in 0..s.q_len {
                inside[lo.at(h, i)..][..s.v_dim].fill(true);
            }
        }
        for (idx, (x, ins)) in out.iter().zip(&inside).enumerate() {
            assert!(
                *ins || x.to_bits() == SENTINEL,
                "{who}: wrote out[{idx}] outside the output rows\n{p:?}"
            );
        }
        if let Some(lse) = &lse {
            let rows = s.q_heads * s.q_len;
            assert!(
                lse[rows..].iter().all(|x| x.to_bits() == SENTINEL),
                "{who}: wrote lse past q_heads·q_len = {rows}\n{p:?}"
            );
        }
    }
}
