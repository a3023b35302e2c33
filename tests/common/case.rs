//! [`Case`]: one attention problem with owned data, random or hand-made, and the layout
//! arithmetic around it.

use super::Rng;
use qkv::{Bias, Error, KvKind, Layout, Mask, Params, QueryPos, Shape, Tensor};

/// Owned data of one problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub shape: Shape,
    /// Layouts of q, k, v and out.
    pub layouts: [Layout; 4],
    pub scale: Option<f32>,
    pub mask: Mask,
    /// Bias data, head stride, row stride.
    pub bias: Option<(Vec<f32>, usize, usize)>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Length of the `out` slice.
    pub out_len: usize,
    /// Whether the call asks for `lse`.
    pub lse: bool,
    /// How K and V are stored ([`Case::store`]); `k` and `v` hold their values as `f32`.
    pub kinds: (KvKind, KvKind),
    /// The softcap, if any.
    pub softcap: Option<f32>,
    /// One sink per query head, if any.
    pub sinks: Option<Vec<f32>>,
    /// One ALiBi slope per query head, if any.
    pub alibi: Option<Vec<f32>>,
    /// Whether the call reads K and V through pages ([`Case::call_inputs`]); `k` and `v`
    /// hold them in order either way.
    pub paging: Option<super::pages::Paging>,
    /// Whether the case is a packed ragged batch of these sequences: [`check_all`] then runs
    /// it as one (`qkv::ragged`); the other checks ignore it.
    ///
    /// [`check_all`]: super::compare::check_all
    pub ragged: Option<super::ragged::Ragged>,
}

/// Elements a tensor of `heads × rows × cols` in layout `l` reaches: 0 when any size is 0,
/// `None` when the count overflows `usize`.
pub fn extent(l: Layout, heads: usize, rows: usize, cols: usize) -> Option<usize> {
    l.extent(heads, rows, cols)
}

/// A tensor of `heads × rows × cols` in layout `l`, `extra` elements longer than its
/// extent: `value(h, r, c)` at each element the layout reaches, NaN in the padding (so a read
/// of it shows). The visiting order is fixed (heads, rows, columns), so a generator drawing
/// the values gives the same tensor every time.
pub fn laid_out(
    l: Layout, (heads, rows, cols): (usize, usize, usize), extra: usize,
    mut value: impl FnMut(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let len = extent(l, heads, rows, cols).expect("a test tensor fits in memory");
    let mut t = vec![f32::NAN; len + extra];
    for h in 0..heads {
        for r in 0..rows {
            for c in 0..cols {
                t[l.at(h, r) + c] = value(h, r, c);
            }
        }
    }
    t
}

impl Case {
    /// The parameters the case describes, borrowing its bias.
    pub fn params(&self) -> Params<'_> {
        let [q, k, v, out] = self.layouts;
        let mut p = Params::new(self.shape)
            .with_layouts(q, k, v, out)
            .with_mask(self.mask);
        p.scale = self.scale;
        p.softcap = self.softcap;
        p.sinks = self.sinks.as_deref();
        p.alibi = self.alibi.as_deref();
        if let Some((data, hs, rs)) = &self.bias {
            p = p.with_bias(Bias {
                data,
                head_stride: *hs,
                row_stride: *rs,
            });
        }
        p
    }

    /// Planar, unmasked, with `lse`, data uniform in ±amp.
    pub fn dense(rng: &mut Rng, shape: Shape, amp: f32) -> Case {
        let p = Params::new(shape);
        let s = shape;
        Case {
            shape,
            layouts: [p.q, p.k, p.v, p.out],
            scale: None,
            mask: Mask::NONE,
            bias: None,
            q: rng.fill(s.q_heads * s.q_len * s.head_dim, amp),
            k: rng.fill(s.kv_heads * s.kv_len * s.head_dim, amp),
            v: rng.fill(s.kv_heads * s.kv_len * s.v_dim, 1.0),
            out_len: s.q_heads * s.q_len * s.v_dim,
            lse: true,
            kinds: (KvKind::F32, KvKind::F32),
            softcap: None,
            sinks: None,
            alibi: None,
            paging: None,
            ragged: None,
        }
    }

    /// A random problem up to the given sizes, with random layout, mask, bias and scale.
    pub fn random(rng: &mut Rng, max_len: usize, max_dim: usize) -> Case {
        let kv_heads = rng.range(1, 3);
        let q_heads = kv_heads * rng.pick(&[1, 1, 2, 4]);
        let edge = |rng: &mut Rng, max: usize| {
            // Sizes on either side of lane widths and tile sizes, or anything.
            let near = [
                1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
            ];
            let n = if rng.coin(1, 2) {
                rng.pick(&near)
            } else {
                rng.range(1, max)
            };
            n.min(max)
        };
        let shape = Shape {
            q_heads,
            kv_heads,
            q_len: edge(rng, max_len),
            kv_len: edge(rng, max_len),
            head_dim: edge(rng, max_dim),
            v_dim: if rng.coin(1, 2) {
                edge(rng, max_dim)
            } else {
                0
            },
        };
        let shape = if shape.v_dim == 0 {
            shape.with_v_dim(shape.head_dim)
        } else {
            shape
        };
        let mut case = Case::dense(rng, shape, 1.0);
        case.mask = random_mask(rng, &shape);
        if rng.coin(1, 3) {
            case.scale = Some(rng.f32() * 2.0);
        }
        if rng.coin(1, 3) {
            case.relayout(rng);
        }
        if rng.coin(1, 3) {
            let per_head = rng.coin(1, 2);
            let row_stride = shape.kv_len + rng.range(0, 3);
            let head_stride = if per_head {
                row_stride * shape.q_len
            } else {
                0
            };
            let heads = if per_head { q_heads } else { 1 };
            let mut data = rng.fill(heads * row_stride * shape.q_len.max(1), 2.0);
            for x in data.iter_mut() {
                if rng.coin(1, 8) {
                    *x = f32::NEG_INFINITY;
                }
            }
            case.bias = Some((data, head_stride, row_stride));
        }
        if rng.coin(1, 4) {
            // Caps around the scores' size, and far above and below it.
            case.softcap = Some(rng.pick(&[0.05, 0.5, 1.0, 2.0, 5.0, 30.0, 1e4]));
        }
        if rng.coin(1, 4) {
            case.sinks = Some(random_sinks(rng, q_heads));
        }
        if rng.coin(1, 4) {
            case.alibi = Some(alibi_slopes(q_heads));
        }
        case
    }

    /// Re-lays K and V interleaved, `[kv_len][kv_heads][dim]`, copying the data.
    pub fn interleave_kv(&mut self) {
        let s = self.shape;
        let [q, k, v, out] = self.layouts;
        let (lk, lv) = (
            Layout::interleaved(s.kv_heads, s.head_dim),
            Layout::interleaved(s.kv_heads, s.v_dim),
        );
        self.k = laid_out(lk, (s.kv_heads, s.kv_len, s.head_dim), 0, |h, r, c| {
            self.k[k.at(h, r) + c]
        });
        self.v = laid_out(lv, (s.kv_heads, s.kv_len, s.v_dim), 0, |h, r, c| {
            self.v[v.at(h, r) + c]
        });
        self.layouts = [q, lk, lv, out];
    }

    /// Re-lays q, k, v and out interleaved or with padded strides, copying the data.
    pub fn relayout(&mut self, rng: &mut Rng) {
        let s = self.shape;
        let interleaved = rng.coin(1, 2);
        let pad = rng.range(0, 3);
        let make = |heads: usize, rows: usize, dim: usize| {
            if interleaved {
                Layout {
                    head_stride: dim + pad,
                    row_stride: heads * (dim + pad),
                }
            } else {
                Layout {
                    head_stride: rows * (dim + pad) + pad,
                    row_stride: dim + pad,
                }
            }
        };
        let dims = [
            (s.q_heads, s.q_len, s.head_dim),
            (s.kv_heads, s.kv_len, s.head_dim),
            (s.kv_heads, s.kv_len, s.v_dim),
        ];
        let new = dims.map(|(heads, rows, dim)| make(heads, rows, dim));
        for (((t, from), to), dims) in [&mut self.q, &mut self.k, &mut self.v]
            .into_iter()
            .zip(self.layouts)
            .zip(new)
            .zip(dims)
        {
            *t = laid_out(to, dims, 0, |h, r, c| t[from.at(h, r) + c]);
        }
        let out = make(s.q_heads, s.q_len, s.v_dim);
        self.out_len = extent(out, s.q_heads, s.q_len, s.v_dim).expect("fits");
        self.layouts = [new[0], new[1], new[2], out];
    }
}

/// `n` random problems ([`Case::random`]) of up to `len` rows and keys and `dim` columns,
/// from the generator seeded with `seed`.
pub fn random_cases(seed: u64, (n, len, dim): (usize, usize, usize)) -> impl Iterator<Item = Case> {
    let mut rng = Rng(seed);
    (0..n).map(move |_| Case::random(&mut rng, len, dim))
}

/// Case `n` of a random series (the split, stream and parallel tests): up to 40 rows and keys,
/// every `big_every`-th up to 140 (past the kernel's 48-row and 48-key blocks), dims up to
/// 24; under Miri (~1000x slower) up to 6 of each.
pub fn series_case(rng: &mut Rng, n: usize, big_every: usize) -> Case {
    let (max_len, max_dim) = if cfg!(miri) {
        (6, 6)
    } else if n.is_multiple_of(big_every) {
        (140, 24)
    } else {
        (40, 24)
    };
    Case::random(rng, max_len, max_dim)
}

/// One sink per head: mostly around the scores (±3), sometimes far above or below them,
/// `-inf` (no sink), and rarely NaN or `+inf` (a NaN row).
pub fn random_sinks(rng: &mut Rng, q_heads: usize) -> Vec<f32> {
    (0..q_heads)
        .map(|_| match rng.range(0, 19) {
            0 => f32::NEG_INFINITY,
            1 => 40.0,
            2 => -40.0,
            3 if rng.coin(1, 2) => f32::NAN,
            3 => f32::INFINITY,
            _ => rng.f32() * 3.0,
        })
        .collect()
}

/// The ALiBi slopes of `q_heads` heads as the ALiBi paper sets them: `2^(−8(h+1)/n)`, with
/// `n` the power of two at or above `q_heads` (the extra heads of a non-power-of-two count
/// interleaved as the paper does are left out: any slopes serve a test).
pub fn alibi_slopes(q_heads: usize) -> Vec<f32> {
    let n = q_heads.next_power_of_two() as f32;
    (0..q_heads)
        .map(|h| (-8.0 * (h + 1) as f32 / n).exp2())
        .collect()
}

/// No mask, causal or a random band, at a random query position (offsets around `kv_len`).
pub fn random_mask(rng: &mut Rng, s: &Shape) -> Mask {
    let pos = match rng.range(0, 3) {
        0 => QueryPos::BottomRight,
        1 => QueryPos::TopLeft,
        _ => QueryPos::Offset(rng.range(0, s.kv_len + 4) as i64 - 2),
    };
    let side = |rng: &mut Rng| {
        if rng.coin(1, 2) {
            None
        } else {
            Some(rng.range(0, s.kv_len + 2))
        }
    };
    match rng.range(0, 3) {
        0 => Mask::NONE,
        1 => Mask::causal().aligned(pos),
        _ => Mask {
            left: side(rng),
            right: side(rng),
            query_pos: pos,
        },
    }
}

/// A small valid problem (2 heads, 3 queries, 10 keys, dimension 4) for the tests that an
/// error leaves the outputs untouched: its parameters, q, k (also fit as v), and `out` and
/// `lse` filled with 7.0.
pub fn error_fixture() -> (Params<'static>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = Params::new(Shape::new(2, 3, 10, 4));
    let (q, k) = (vec![0.5; 2 * 3 * 4], vec![0.5; 2 * 10 * 4]);
    (p, q, k, vec![7.0; 2 * 3 * 4], vec![7.0; 2 * 3])
}

/// The one-shot call's error for a `k` one element short, checked to be `TooShort` for K.
pub fn short_k_error(
    p: &Params, q: &[f32], k: &[f32], out: &mut [f32], lse: &mut [f32],
) -> Result<(), Error> {
    let want = qkv::attention(p, q, &k[..k.len() - 1], k, out, Some(lse));
    assert!(matches!(
        want,
        Err(Error::TooShort {
            tensor: Tensor::K,
            ..
        })
    ));
    want
}
