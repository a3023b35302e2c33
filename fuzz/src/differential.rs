//! The differential check: every level against `qkv::reference`, on one decoded case.
//!
//! # What a case is
//! [`decode`] turns any byte string into a valid problem: 1–3 kv heads with GQA ratios 1–4;
//! `q_len`, `kv_len` in `0..=40` and `head_dim`, `v_dim` in `1..=40`, except that one of them
//! may reach 140 so that the kernel's 48-row and 48-key blocks, its 128-column Q panel (wider
//! heads are packed panel by panel) and its 128-column V panel are crossed; planar,
//! interleaved, padded or broadcast (stride 0) layouts with padding filled with NaN (so any
//! read of it shows); every mask kind (none, causal, sliding window, arbitrary band with huge
//! sides) with every [`QueryPos`], small or extreme offsets; no bias, a broadcast bias (also
//! with row stride 0) or a per-head one, with `-inf` entries at a chosen rate; default or
//! explicit scale (0, negative, tiny, huge); with or without `lse`. Each tensor draws its
//! values from `±amp` or, at a chosen rate, from [`SPECIALS`]: 0, −0, ±subnormal, ±tiny,
//! ±huge (1e30, 3e38, `f32::MAX`), ±inf and NaN.
//!
//! Last, K and V each get a storage type, `f32`, `f16`, `bf16` or `q8_0`, drawn
//! independently ([`kv_kinds`]), and the case is stored as them with the test kit's
//! `Case::store`: the values become those the types hold (an `f16` past 65504 is infinite, a
//! `q8_0` block of 32 values shares one `f16` scale) and the kernel reads the typed slices.
//! `q8_0` needs a row length that is a multiple of 32; where it is not, that side is `f32`.
//! Drawn after everything else, so an input decodes to the same shape, layouts, mask, bias
//! and values as before the types existed; only the types are new.
//!
//! After the types, the softmax variants, each in about one case of five: a softcap (tiny,
//! around the scores, or huge up to `f32::MAX`), one sink per query head (around the
//! scores, far above or below them, `±inf` or NaN) and one ALiBi slope per query head (the
//! paper's powers of two, 0, negative, huge, tiny, `+inf` or NaN).
//!
//! Last, in about one case of four, paged K/V: the test kit's pools (`tests/common/pages.rs`:
//! pages in reverse order, unused rows NaN) with pages of 1 to 100 keys, either layout, key 0
//! at any row of the first page. The reference still reads the keys in order.
//!
//! After the pages, in about one case of five, a ragged batch: the case's rows and keys cut
//! into 1 to 4 sequences (some empty) that `qkv::ragged` runs as one call; each sequence is
//! checked against the reference on that sequence cut out of the case by hand
//! (`tests/common/ragged.rs`).
//!
//! # What is compared
//! Every level of the test kit (`tests/common`: each available [`Isa`](qkv::Isa) and every
//! [`Emulated`](qkv::Emulated) width) runs on the case and is checked by its
//! `compare::check_all`: `Ok`, exactly the output rows and `lse[..q_heads·q_len]` written,
//! and every row within the contract that module's docs state (bounds of `qkv::tolerance`,
//! with the rules for values past `f32`'s range, infinite `v` and the bias's rounding).

use crate::bytes::{Bytes, huge};
use crate::common::{Case, Paging, Ragged, check_all, extent, laid_out};
use qkv::{KvKind, Layout, Mask, QueryPos, Shape};

/// The special values the data is drawn from at a chosen rate.
pub const SPECIALS: [f32; 24] = [
    0.0,
    -0.0,
    1e-40,
    -1e-40,
    1e-30,
    -1e-30,
    f32::MIN_POSITIVE,
    1e10,
    -1e10,
    1e30,
    -1e30,
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1.0,
    -1.0,
    100.0,
    -100.0,
    88.0,
    -104.0,
];

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
struct Draw {
    /// Probability (of 256) of a value from [`SPECIALS`].
    spice: u8,
    /// Amplitude of the ordinary values.
    amp: f32,
}

impl Draw {
    fn decode(b: &mut Bytes) -> Draw {
        Draw {
            spice: b.pick(&[0, 0, 0, 2, 8, 32, 128, 255]),
            amp: b.pick(&[1.0, 1.0, 1.0, 4.0, 30.0, 1e3, 1e6, 1e-3]),
        }
    }

    fn value(self, b: &mut Bytes) -> f32 {
        if self.spice > 0 && b.u8() < self.spice {
            b.pick(&SPECIALS)
        } else {
            (b.u16() as f32 / 32767.5 - 1.0) * self.amp
        }
    }
}

/// A length: often one on either side of a lane width or tile, else anything in `lo..=hi`.
fn length(b: &mut Bytes, lo: usize, hi: usize) -> usize {
    const EDGES: [usize; 19] = [
        0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129,
    ];
    let n = if b.chance(128) {
        b.pick(&EDGES)
    } else {
        b.range(lo, hi)
    };
    n.clamp(lo, hi)
}

/// A layout for `heads × rows × dim`; inputs may also broadcast (a stride of 0).
fn layout(b: &mut Bytes, heads: usize, rows: usize, dim: usize, input: bool) -> Layout {
    let kind = b.below(if input { 6 } else { 4 });
    let mut pad = || if b.chance(96) { b.range(1, 3) } else { 0 };
    let (pr, ph) = (pad(), pad());
    match kind {
        0 => Layout::planar(rows, dim),
        1 => Layout::interleaved(heads, dim),
        2 => Layout {
            head_stride: rows * (dim + pr) + ph,
            row_stride: dim + pr,
        },
        3 => Layout {
            head_stride: dim + pr,
            row_stride: heads * (dim + pr) + ph,
        },
        4 => Layout {
            head_stride: 0,
            row_stride: dim + pr,
        },
        _ => Layout {
            head_stride: dim + pr,
            row_stride: 0,
        },
    }
}

/// A tensor in layout `l`, its values drawn with `draw`, NaN in the padding and up to 2
/// elements past the end.
fn tensor(b: &mut Bytes, l: Layout, dims: (usize, usize, usize), draw: Draw) -> Vec<f32> {
    let extra = b.below(3);
    laid_out(l, dims, extra, |_, _, _| draw.value(b))
}

fn side(b: &mut Bytes, kv_len: usize) -> Option<usize> {
    match b.below(8) {
        0..=2 => None,
        3 => Some(b.pick(&[usize::MAX, usize::MAX / 2, huge(1 << 40), u32::MAX as usize])),
        _ => Some(b.range(0, kv_len + 3)),
    }
}

fn mask(b: &mut Bytes, q_len: usize, kv_len: usize) -> Mask {
    let pos = match b.below(8) {
        0..=2 => QueryPos::BottomRight,
        3 | 4 => QueryPos::TopLeft,
        5 | 6 => QueryPos::Offset(b.range(0, q_len + kv_len + 6) as i64 - (q_len as i64 + 3)),
        _ => QueryPos::Offset(b.pick(&[i64::MIN, i64::MIN + 1, i64::MAX, -(1 << 40), 1 << 40])),
    };
    match b.below(5) {
        0 => Mask::NONE.aligned(pos),
        1 => Mask::causal().aligned(pos),
        2 => Mask::sliding_window(b.range(0, kv_len + 2)).aligned(pos),
        3 => Mask::sliding_window(b.range(0, kv_len + 2))
            .with_right(side(b, kv_len))
            .aligned(pos),
        _ => Mask {
            left: side(b, kv_len),
            right: side(b, kv_len),
            query_pos: pos,
        },
    }
}

/// Upper bound on the multiply-adds of one call, to keep executions fast.
const MAX_WORK: usize = 400_000;

/// Decodes any bytes into a valid case (see the module docs).
pub fn decode(data: &[u8]) -> Case {
    decode_as(data, true)
}

/// [`decode`], with the K/V storage types drawn and applied when `typed`, else `f32`.
pub fn decode_as(data: &[u8], typed: bool) -> Case {
    let b = &mut Bytes::new(data);
    let mut kv_heads = b.range(1, 3);
    let mut group = b.pick(&[1, 1, 2, 3, 4]);
    // At most one dimension beyond 40, to cross the kernel's blocks.
    let big = b.below(8);
    let hi = |which: usize, normal: usize, big_hi: usize| {
        if big == which { big_hi } else { normal }
    };
    let mut q_len = length(b, 0, hi(0, 40, 140));
    let kv_len = length(b, 0, hi(1, 40, 140));
    let head_dim = length(b, 1, hi(2, 40, 140));
    let v_dim = if b.chance(128) {
        head_dim
    } else {
        length(b, 1, hi(3, 40, 140))
    };
    let work = |qh: usize, q: usize| qh * q * kv_len * (head_dim + v_dim);
    if work(kv_heads * group, q_len) > MAX_WORK {
        kv_heads = 1;
        group = group.min(2);
    }
    while q_len > 1 && work(kv_heads * group, q_len) > MAX_WORK {
        q_len /= 2;
    }
    let q_heads = kv_heads * group;
    let shape = Shape::new(kv_heads, q_len, kv_len, head_dim)
        .gqa(q_heads, kv_heads)
        .with_v_dim(v_dim);
    let layouts = [
        layout(b, q_heads, q_len, head_dim, true),
        layout(b, kv_heads, kv_len, head_dim, true),
        layout(b, kv_heads, kv_len, v_dim, true),
        layout(b, q_heads, q_len, v_dim, false),
    ];
    let scale = match b.below(4) {
        0 | 1 => None,
        2 => Some(b.pick(&[
            0.0,
            -1.0,
            1.0,
            0.5,
            1e-20,
            1e20,
            1e-40,
            -3.0,
            1e-3,
            f32::MAX,
        ])),
        _ => Some((b.u16() as f32 / 32767.5 - 1.0) * 4.0),
    };
    let mask = mask(b, q_len, kv_len);
    let lse = b.chance(192);
    let out_len = extent(layouts[3], q_heads, q_len, v_dim).expect("small") + b.below(3);
    let bias_kind = b.below(5);
    let (dq, dk, dv, db) = (
        Draw::decode(b),
        Draw::decode(b),
        Draw::decode(b),
        Draw::decode(b),
    );
    let neg_inf = b.pick(&[0, 0, 16, 64, 160, 240, 255]);
    let q = tensor(b, layouts[0], (q_heads, q_len, head_dim), dq);
    let k = tensor(b, layouts[1], (kv_heads, kv_len, head_dim), dk);
    let v = tensor(b, layouts[2], (kv_heads, kv_len, v_dim), dv);
    let bias = match bias_kind {
        0 | 1 => None,
        kind => {
            let pad = b.range(0, 2);
            let (hs, rs) = match kind {
                2 => (0, kv_len + pad),
                3 => (0, 0),
                _ => ((kv_len + pad) * q_len + b.range(0, 2), kv_len + pad),
            };
            let l = Layout {
                head_stride: hs,
                row_stride: rs,
            };
            let extra = b.below(2);
            let data = laid_out(l, (q_heads, q_len, kv_len), extra, |_, _, _| {
                if b.u8() < neg_inf {
                    f32::NEG_INFINITY
                } else {
                    db.value(b)
                }
            });
            Some((data, hs, rs))
        }
    };
    let mut case = Case {
        shape,
        layouts,
        scale,
        mask,
        bias,
        q,
        k,
        v,
        out_len,
        lse,
        kinds: (KvKind::F32, KvKind::F32),
        softcap: None,
        sinks: None,
        alibi: None,
        paging: None,
        ragged: None,
    };
    if typed {
        let kinds = kv_kinds(b, head_dim, v_dim);
        assert!(
            case.store(kinds),
            "kv_kinds gives q8_0 only to rows of 32·n"
        );
    }
    // The softmax variants, drawn last so that inputs from before them decode to the same
    // problem up to here.
    if b.chance(48) {
        case.softcap = Some(b.pick(&[1e-3, 0.05, 1.0, 3.0, 30.0, 1e20, f32::MAX]));
    }
    if b.chance(48) {
        case.sinks = Some(
            (0..q_heads)
                .map(|_| match b.below(10) {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    2 => f32::INFINITY,
                    3 => b.pick(&[-1e30, 1e30, 100.0, -100.0]),
                    _ => (b.u16() as f32 / 32767.5 - 1.0) * 8.0,
                })
                .collect(),
        );
    }
    if b.chance(48) {
        case.alibi = Some(
            (0..q_heads)
                .map(|_| match b.below(10) {
                    0 => 0.0,
                    1 => f32::NAN,
                    2 => f32::INFINITY,
                    3 => b.pick(&[-1.0, 1e30, -1e-30, 8.0]),
                    _ => (-(b.below(16) as f32) / 2.0).exp2(),
                })
                .collect(),
        );
    }
    // Paged K/V, last of all: pages of 1 to 100 keys (below, at and above a block), either
    // layout, from a row inside the first page.
    if b.chance(64) {
        let page_len = b.pick(&[1, 2, 3, 7, 16, 48, 64, 100]);
        case.paging = Some(Paging {
            page_len,
            hnd: b.chance(128),
            offset: b.below(page_len),
        });
    }
    // A ragged batch, after the pages: the rows and keys cut into 1 to 4 sequences (some
    // empty), each with its own mask alignment, bias block and first page row.
    if b.chance(48) {
        let n = b.range(1, 4);
        let mut cut = |total: usize| {
            let mut cu: Vec<usize> = (0..n - 1).map(|_| b.below(total + 1)).collect();
            cu.sort_unstable();
            cu.insert(0, 0);
            cu.push(total);
            cu
        };
        let cu_q = cut(q_len);
        let cu_k = cut(kv_len);
        case.ragged = Some(Ragged { cu_q, cu_k });
    }
    case
}

/// The storage types of K and V: each any of the four, except that a `q8_0` side whose row
/// length (`head_dim` for K, `v_dim` for V) is not a multiple of 32 falls back to `f32`.
pub fn kv_kinds(b: &mut Bytes, head_dim: usize, v_dim: usize) -> (KvKind, KvKind) {
    let mut kind = |dim: usize| match b.pick(&KvKind::ALL) {
        KvKind::Q8_0 if !dim.is_multiple_of(32) => KvKind::F32,
        kind => kind,
    };
    (kind(head_dim), kind(v_dim))
}

/// The fuzz entry point: decode, run every level, check each against the reference.
pub fn run(data: &[u8]) {
    check_all(&decode(data));
}

/// [`run`] on the case with K and V left in `f32` (the storage types not drawn): how every
/// input decoded before the types existed, so that `tests/regressions.rs` replays the
/// failures recorded before them as they were found, besides their typed variants.
pub fn run_f32(data: &[u8]) {
    check_all(&decode_as(data, false));
}
