//! Shared test helpers: a seeded generator of attention problems, every runner, and the
//! comparison against `qkv::reference` under `qkv::tolerance`.
#![allow(dead_code)]

pub mod exp;

use qkv::split::Level;
use qkv::{Bias, Emulated, Error, Isa, Layout, Mask, Params, QueryPos, Shape};

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn coin(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
    pub fn fill(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * amp).collect()
    }
}

/// True when CI runs this test binary under an instruction-set emulator (qemu-aarch64 for
/// NEON, `qemu-x86_64 -cpu Nehalem` for the scalar fallback), which sets `QKV_UNDER_EMULATOR`.
/// The tests then check only the levels of the emulated CPU ([`Runner::all`]) and sweep
/// `exp` more sparsely: pulp's portable 4/8/16-lane instances are plain Rust whose results do
/// not depend on the CPU, and the native `cargo test` runs them in full.
pub fn under_emulator() -> bool {
    std::env::var_os("QKV_UNDER_EMULATOR").is_some()
}

/// Something that computes attention: a level, an emulated width, or the reference.
#[derive(Clone, Copy, Debug)]
pub enum Runner {
    Isa(Isa),
    Emulated(Emulated),
}

impl Runner {
    /// Every level this CPU has, then pulp's 4/8/16-lane instances (not under an emulator:
    /// see [`under_emulator`]; under Miri only 4 and 16).
    pub fn all() -> Vec<Runner> {
        let mut r: Vec<Runner> = Isa::available().map(Runner::Isa).collect();
        if !under_emulator() {
            r.extend(Emulated::ALL.map(Runner::Emulated));
        }
        // Miri runs the narrowest and widest instances; the 8-lane one is the same generic
        // code at a width between them (natively all three run).
        if cfg!(miri) {
            r.retain(|x| !matches!(x, Runner::Emulated(Emulated::Lanes8)));
        }
        r
    }
    pub fn run(
        self,
        p: &Params,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        lse: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        match self {
            Runner::Isa(i) => i.attention(p, q, k, v, out, lse),
            Runner::Emulated(e) => e.attention(p, q, k, v, out, lse),
        }
    }

    /// The same instance as a split/stream/parallel [`Level`].
    pub fn level(self) -> Level {
        match self {
            Runner::Isa(i) => Level::Isa(i),
            Runner::Emulated(e) => Level::Emulated(e),
        }
    }
}

/// Owned data of one problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub shape: Shape,
    pub layouts: [Layout; 4],
    pub scale: Option<f32>,
    pub mask: Mask,
    pub bias: Option<(Vec<f32>, usize, usize)>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub out_len: usize,
}

impl Case {
    pub fn params(&self) -> Params<'_> {
        let [q, k, v, out] = self.layouts;
        let mut p = Params::new(self.shape)
            .with_layouts(q, k, v, out)
            .with_mask(self.mask);
        p.scale = self.scale;
        if let Some((data, hs, rs)) = &self.bias {
            p = p.with_bias(Bias {
                data,
                head_stride: *hs,
                row_stride: *rs,
            });
        }
        p
    }

    /// Planar, unmasked, data uniform in ±amp.
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
        case
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
        let new = [
            make(s.q_heads, s.q_len, s.head_dim),
            make(s.kv_heads, s.kv_len, s.head_dim),
            make(s.kv_heads, s.kv_len, s.v_dim),
            make(s.q_heads, s.q_len, s.v_dim),
        ];
        let copy = |src: &[f32], from: Layout, to: Layout, heads, rows, dim| {
            let mut dst = vec![f32::NAN; extent(to, heads, rows, dim)];
            for h in 0..heads {
                for r in 0..rows {
                    for c in 0..dim {
                        dst[h * to.head_stride + r * to.row_stride + c] =
                            src[h * from.head_stride + r * from.row_stride + c];
                    }
                }
            }
            dst
        };
        self.q = copy(
            &self.q,
            self.layouts[0],
            new[0],
            s.q_heads,
            s.q_len,
            s.head_dim,
        );
        self.k = copy(
            &self.k,
            self.layouts[1],
            new[1],
            s.kv_heads,
            s.kv_len,
            s.head_dim,
        );
        self.v = copy(
            &self.v,
            self.layouts[2],
            new[2],
            s.kv_heads,
            s.kv_len,
            s.v_dim,
        );
        self.out_len = extent(new[3], s.q_heads, s.q_len, s.v_dim);
        self.layouts = new;
    }
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

pub fn extent(l: Layout, heads: usize, rows: usize, dim: usize) -> usize {
    if heads == 0 || rows == 0 || dim == 0 {
        return 0;
    }
    (heads - 1) * l.head_stride + (rows - 1) * l.row_stride + dim
}

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

/// Runs `runner` and the reference on `case` and checks every output and lse element.
pub fn check(case: &Case, runner: Runner) {
    let p = case.params();
    let s = case.shape;
    let mut want = vec![f32::NAN; case.out_len];
    let mut want_lse = vec![f32::NAN; s.q_heads * s.q_len];
    qkv::reference::attention(
        &p,
        &case.q,
        &case.k,
        &case.v,
        &mut want,
        Some(&mut want_lse),
    )
    .expect("reference accepts the case");
    let mut got = vec![f32::NAN; case.out_len];
    let mut got_lse = vec![f32::NAN; s.q_heads * s.q_len];
    runner
        .run(&p, &case.q, &case.k, &case.v, &mut got, Some(&mut got_lse))
        .expect("runner accepts the case");
    compare(
        case,
        &want,
        &want_lse,
        &got,
        &got_lse,
        &format!("{runner:?}"),
    );
}

/// Element-wise comparison under the documented tolerance, row by row.
pub fn compare(
    case: &Case,
    want: &[f32],
    want_lse: &[f32],
    got: &[f32],
    got_lse: &[f32],
    who: &str,
) {
    let p = case.params();
    let s = case.shape;
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let RowAbs {
                score: score_abs,
                v: v_abs,
                ..
            } = row_abs(case, h, i);
            let bound = qkv::tolerance::output_bound(score_abs, v_abs, s.head_dim, s.kv_len);
            let row = p.out.at(h, i);
            for c in 0..s.v_dim {
                let (w, g) = (want[row + c], got[row + c]);
                let ok = if w.is_nan() {
                    g.is_nan()
                } else {
                    (w - g).abs() <= bound || w == g
                };
                assert!(
                    ok,
                    "{who}: out[{h}][{i}][{c}] = {g}, reference {w}, bound {bound}\n{shape:?} mask {mask:?} bias {b} layouts {l:?}",
                    shape = s,
                    mask = case.mask,
                    b = case.bias.is_some(),
                    l = case.layouts,
                );
            }
            let (w, g) = (want_lse[h * s.q_len + i], got_lse[h * s.q_len + i]);
            let lb = qkv::tolerance::lse_bound(score_abs, s.head_dim, s.kv_len, w.abs());
            let ok = if w.is_nan() {
                g.is_nan()
            } else {
                w == g || (w - g).abs() <= lb
            };
            assert!(
                ok,
                "{who}: lse[{h}][{i}] = {g}, reference {w}, bound {lb}\n{s:?} {:?}",
                case.mask
            );
        }
    }
    untouched_outside_rows(case, got, who);
}

/// Elements of `got` (filled with NaN before the call) outside the output rows are untouched.
pub fn untouched_outside_rows(case: &Case, got: &[f32], who: &str) {
    let p = case.params();
    let s = case.shape;
    let mut inside = vec![false; got.len()];
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let start = p.out.at(h, i);
            inside[start..start + s.v_dim].fill(true);
        }
    }
    for (idx, x) in got.iter().enumerate() {
        assert!(
            inside[idx] || x.is_nan(),
            "{who}: wrote outside the output rows at {idx}"
        );
    }
}

/// The magnitudes one output row's bounds are computed from, over the keys its mask lets
/// through.
pub struct RowAbs {
    /// The largest `|scale|·Σ_d |q_d k_d| + |bias_j|`: `score_abs` as
    /// `qkv::tolerance::output_bound` documents it.
    pub score: f32,
    /// The same without the bias: what the split, stream and parallel tests have always
    /// passed as `score_abs` (a tighter bound where there is a bias).
    pub dot: f32,
    /// The largest `|v|`.
    pub v: f32,
}

/// [`RowAbs`] of query row `i` of head `h`.
pub fn row_abs(case: &Case, h: usize, i: usize) -> RowAbs {
    let p = case.params();
    let s = case.shape;
    let g = h / (s.q_heads / s.kv_heads);
    let scale = p.scale().abs();
    let mut r = RowAbs {
        score: 0.0,
        dot: 0.0,
        v: 0.0,
    };
    for j in (0..s.kv_len).filter(|&j| p.is_visible(i, j)) {
        let qr = &case.q[p.q.at(h, i)..][..s.head_dim];
        let kr = &case.k[p.k.at(g, j)..][..s.head_dim];
        let a: f32 = qr.iter().zip(kr).map(|(a, b)| (a * b).abs()).sum();
        let bias = p
            .bias
            .map_or(0.0, |b| b.data[h * b.head_stride + i * b.row_stride + j]);
        let bias = if bias == f32::NEG_INFINITY {
            0.0
        } else {
            bias.abs()
        };
        r.score = r.score.max(scale * a + bias);
        r.dot = r.dot.max(scale * a);
        let vr = &case.v[p.v.at(g, j)..][..s.v_dim];
        r.v = vr.iter().fold(r.v, |m, x| m.max(x.abs()));
    }
    r
}

/// `out` and `lse` of one call.
pub type Outputs = (Vec<f32>, Vec<f32>);

/// `runner` (or, for `None`, the reference) on the whole of `case`, into NaN-filled outputs.
pub fn one_shot(case: &Case, runner: Option<Runner>) -> Outputs {
    let s = case.shape;
    let p = case.params();
    let mut out = vec![f32::NAN; case.out_len];
    let mut lse = vec![f32::NAN; s.q_heads * s.q_len];
    match runner {
        Some(r) => r.run(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
        None => qkv::reference::attention(&p, &case.q, &case.k, &case.v, &mut out, Some(&mut lse)),
    }
    .expect("one-shot accepts the case");
    (out, lse)
}

/// How a result was joined from pieces, which picks its bound.
#[derive(Clone, Copy, Debug)]
pub enum Joined {
    /// Partials merged by `split::merge`, the merge tree this deep:
    /// `tolerance::merged_*_bound`.
    Merged(usize),
    /// A `stream::Stream` fed in this many updates: `tolerance::stream_*_bound`.
    Stream(usize),
}

/// Compares a joined result `got` with `want` (the reference, or a one-shot call with
/// `slack` 2 for the one-shot's own error) under the bound of `how`; elements outside the
/// output rows of `got` must still be NaN.
pub fn compare_joined(
    case: &Case,
    want: &Outputs,
    got: &Outputs,
    how: Joined,
    slack: f32,
    who: &str,
) {
    let p = case.params();
    let s = case.shape;
    let (hd, kv) = (s.head_dim, s.kv_len);
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let RowAbs {
                dot: score_abs,
                v: v_abs,
                ..
            } = row_abs(case, h, i);
            let w_lse = want.1[h * s.q_len + i];
            let lse_abs = if w_lse.is_finite() {
                w_lse.abs() + 20.0
            } else {
                0.0
            };
            let (bound, lb) = match how {
                Joined::Merged(depth) => (
                    qkv::tolerance::merged_output_bound(score_abs, v_abs, hd, kv, lse_abs, depth),
                    qkv::tolerance::merged_lse_bound(score_abs, hd, kv, lse_abs, depth),
                ),
                Joined::Stream(chunks) => (
                    qkv::tolerance::stream_output_bound(score_abs, v_abs, hd, kv, lse_abs, chunks),
                    qkv::tolerance::stream_lse_bound(score_abs, hd, kv, lse_abs, chunks),
                ),
            };
            let (bound, lb) = (slack * bound, slack * lb);
            let row = p.out.at(h, i);
            for c in 0..s.v_dim {
                let (w, g) = (want.0[row + c], got.0[row + c]);
                let ok = if w.is_nan() {
                    g.is_nan()
                } else {
                    w == g || (w - g).abs() <= bound
                };
                assert!(
                    ok,
                    "{who}: out[{h}][{i}][{c}] = {g}, want {w}, bound {bound}\n{s:?} {:?}",
                    case.mask
                );
            }
            let g_lse = got.1[h * s.q_len + i];
            let ok = if w_lse.is_nan() {
                g_lse.is_nan()
            } else {
                w_lse == g_lse || (w_lse - g_lse).abs() <= lb
            };
            assert!(
                ok,
                "{who}: lse[{h}][{i}] = {g_lse}, want {w_lse}, bound {lb}\n{s:?} {:?}",
                case.mask
            );
        }
    }
    untouched_outside_rows(case, &got.0, who);
}
