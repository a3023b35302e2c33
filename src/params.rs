//! What an attention call computes: shape, memory layout, scale, bias and the softmax
//! variants (the mask is in `mask.rs`). The checks every entry point runs on them before
//! touching `out` are in `validate.rs`.

use crate::kv::KvType;
use crate::mask::{Mask, QueryPos};
use crate::pages::Pages;

/// The sizes of one attention call.
///
/// `q` is `[q_heads][q_len][head_dim]`, `k` is `[kv_heads][kv_len][head_dim]`,
/// `v` is `[kv_heads][kv_len][v_dim]` and `out` is `[q_heads][q_len][v_dim]`, each laid out in
/// memory as its [`Layout`] says.
///
/// `q_heads`, `kv_heads`, `head_dim` and `v_dim` must be at least 1 ([`Error::ZeroDim`](crate::Error::ZeroDim)).
/// `q_len = 0` is a no-op that returns `Ok` and writes nothing. `kv_len = 0` leaves every row
/// without a key: each output row is 0 and each log-sum-exp is `-inf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Number of query (and output) heads; a multiple of `kv_heads`.
    pub q_heads: usize,
    /// Number of key/value heads. Query head `h` reads kv head `h / (q_heads / kv_heads)`
    /// (grouped-query attention; `kv_heads = 1` is multi-query attention).
    pub kv_heads: usize,
    /// Number of query rows per head.
    pub q_len: usize,
    /// Number of keys (and values) per kv head.
    pub kv_len: usize,
    /// Length of each query and key vector.
    pub head_dim: usize,
    /// Length of each value and output vector.
    pub v_dim: usize,
}

impl Shape {
    /// A shape with `q_heads = kv_heads = heads` and `v_dim = head_dim`.
    pub const fn new(heads: usize, q_len: usize, kv_len: usize, head_dim: usize) -> Shape {
        Shape {
            q_heads: heads,
            kv_heads: heads,
            q_len,
            kv_len,
            head_dim,
            v_dim: head_dim,
        }
    }

    /// Grouped-query attention: `q_heads` query heads share `kv_heads` key/value heads.
    pub const fn gqa(self, q_heads: usize, kv_heads: usize) -> Shape {
        Shape {
            q_heads,
            kv_heads,
            ..self
        }
    }

    /// Sets `v_dim`, the length of value and output vectors, when it differs from `head_dim`.
    pub const fn with_v_dim(self, v_dim: usize) -> Shape {
        Shape { v_dim, ..self }
    }

    /// The number of floating-point operations the call performs without a mask:
    /// `2·head_dim` for each score and `2·v_dim` for each weighted value, per head.
    pub fn flops(&self) -> f64 {
        let pairs = self.q_heads as f64 * self.q_len as f64 * self.kv_len as f64;
        pairs * 2.0 * (self.head_dim + self.v_dim) as f64
    }
}

/// Where a tensor's elements live in its slice, in elements (not bytes).
///
/// Element `[head][row][col]` is at `head * head_stride + row * row_stride + col`: the last
/// dimension is contiguous, the other two may be strided any way, so both the planar
/// `[heads][seq][dim]` layout and the interleaved `[seq][heads][dim]` layout of most KV caches
/// work without copying. Input strides may overlap (a stride of 0 broadcasts); output strides
/// may not ([`Error::Overlap`](crate::Error::Overlap)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Elements between the starts of consecutive heads.
    pub head_stride: usize,
    /// Elements between the starts of consecutive rows of one head.
    pub row_stride: usize,
}

impl Layout {
    /// `[heads][rows][dim]`, densely packed. Saturates instead of overflowing, so a shape too
    /// big for memory is refused by validation ([`Error::Overflow`](crate::Error::Overflow)) rather than panicking.
    pub const fn planar(rows: usize, dim: usize) -> Layout {
        Layout {
            head_stride: rows.saturating_mul(dim),
            row_stride: dim,
        }
    }

    /// `[rows][heads][dim]`, densely packed: the usual KV-cache layout. Saturates like
    /// [`Layout::planar`].
    pub const fn interleaved(heads: usize, dim: usize) -> Layout {
        Layout {
            head_stride: dim,
            row_stride: heads.saturating_mul(dim),
        }
    }

    /// The index of element `[head][row][0]`: `head · head_stride + row · row_stride`.
    ///
    /// It wraps instead of overflowing; for a head and row inside a shape that passed
    /// [`Params::validate`] it is exact and inside the slice.
    #[inline(always)]
    pub const fn at(&self, head: usize, row: usize) -> usize {
        head.wrapping_mul(self.head_stride)
            .wrapping_add(row.wrapping_mul(self.row_stride))
    }

    /// How many elements a slice must hold for every element `[h][r][c]` with `h < heads`,
    /// `r < rows` and `c < cols` to be inside it: one past the last of them,
    /// `(heads-1)·head_stride + (rows-1)·row_stride + cols`, or 0 when any of the three counts
    /// is 0 (no element is reached, so an empty slice will do). `None` when that overflows
    /// `usize`.
    ///
    /// This is the length [`Params::validate`] checks each tensor's slice against and the
    /// *extent* of the C ABI's pointer contract.
    ///
    /// ```
    /// use qkv::Layout;
    ///
    /// let planar = Layout::planar(5, 4); // [heads][5 rows][4]
    /// assert_eq!(planar.extent(2, 5, 4), Some(2 * 5 * 4));
    /// assert_eq!(planar.extent(2, 0, 4), Some(0));
    /// let huge = Layout { head_stride: usize::MAX, row_stride: 1 };
    /// assert_eq!(huge.extent(2, 1, 1), None);
    /// ```
    pub fn extent(&self, heads: usize, rows: usize, cols: usize) -> Option<usize> {
        if heads == 0 || rows == 0 || cols == 0 {
            return Some(0);
        }
        (heads - 1)
            .checked_mul(self.head_stride)?
            .checked_add((rows - 1).checked_mul(self.row_stride)?)?
            .checked_add(cols)
    }
}

/// An additive bias `[q_len][kv_len]` added to the scaled scores (after `scale`), per head.
///
/// Element `[head][i][j]` is at `head * head_stride + i * row_stride + j`, that is
/// [`layout()`](Bias::layout)`.at(head, i) + j`. A `head_stride` of 0
/// broadcasts one matrix over all heads (padding masks); a per-head bias expresses ALiBi.
/// An entry of `-inf` masks that key for that row: it is skipped exactly like a key outside
/// the [`Mask`] band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bias<'a> {
    /// The bias values.
    pub data: &'a [f32],
    /// Elements between heads; 0 to share one matrix across heads.
    pub head_stride: usize,
    /// Elements between rows.
    pub row_stride: usize,
}

impl<'a> Bias<'a> {
    /// One dense `[q_len][kv_len]` matrix shared by every head.
    pub const fn broadcast(data: &'a [f32], kv_len: usize) -> Bias<'a> {
        Bias {
            data,
            head_stride: 0,
            row_stride: kv_len,
        }
    }

    /// The strides as a [`Layout`] of `[q_heads][q_len][kv_len]`: element `[h][i][j]` is at
    /// `self.layout().at(h, i) + j`, and the slice must hold
    /// `self.layout().extent(q_heads, q_len, kv_len)` elements.
    pub const fn layout(&self) -> Layout {
        Layout {
            head_stride: self.head_stride,
            row_stride: self.row_stride,
        }
    }
}

/// Whether this build has the softmax variants (feature `softmax-variants`).
pub(crate) const VARIANTS: bool = cfg!(feature = "softmax-variants");

/// Everything an attention call needs besides the data: [`Shape`], one [`Layout`] per tensor,
/// `scale`, [`Mask`], an optional [`Bias`], and the variants of the softmax: a softcap and
/// sinks.
///
/// `Params::new(shape)` gives the planar layouts, `scale = 1/√head_dim`, no mask, no bias, no
/// softcap and no sinks; the `with_*` methods change one thing each.
///
/// The score of query row `i` and key `j` of head `h` is, in this order:
/// 1. `s = scale · q[h][i] · k[g][j]`;
/// 2. with a softcap `cap`: `s = cap · tanh(s / cap)` (Gemma 2 and ggml apply it here, to
///    the scaled score, before the bias and the mask);
/// 3. with a bias: `s = s + bias[h][i][j]`;
/// 4. with ALiBi slopes, unless `s` is already `-inf` (that key is out whatever the slope):
///    `s = s + alibi[h] · (j − pos(i))`, where `pos(i)` is the query's
///    position as the mask's [`QueryPos`] says (also without a mask: by default the queries
///    are the last `q_len` positions), so keys behind the query get a negative bias;
/// 5. the [`Mask`] (and a `-inf` bias or score) leaves the key out.
///
/// A sink `sinks[h]` is a logit that joins the softmax of every row of head `h` with no value:
/// it behaves as one more key, always visible, with score `sinks[h]` and a value row of
/// zeros. So `out = Σ_j e^(s_j) v_j / (e^(sink) + Σ_j e^(s_j))`, `lse` counts it, a row that
/// sees no key gets `out = 0` and `lse = sink`, and a sink of `-inf` is no sink.
///
/// The log-sum-exp output, when asked for, is `[q_heads][q_len]`, dense.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params<'a> {
    /// The sizes.
    pub shape: Shape,
    /// Layout of `q`.
    pub q: Layout,
    /// Layout of `k`.
    pub k: Layout,
    /// Layout of `v`.
    pub v: Layout,
    /// Layout of `out`.
    pub out: Layout,
    /// Factor applied to every `q·k`; `None` means `1/√head_dim`.
    pub scale: Option<f32>,
    /// Which keys each row sees.
    pub mask: Mask,
    /// Added to the scaled (and softcapped) scores.
    pub bias: Option<Bias<'a>>,
    /// `cap` of the softcap `s → cap · tanh(s / cap)` of the scaled scores; finite and
    /// positive ([`Error::InvalidSoftcap`](crate::Error::InvalidSoftcap) otherwise).
    pub softcap: Option<f32>,
    /// One sink logit per query head, `sinks[h]` (at least `q_heads` values).
    pub sinks: Option<&'a [f32]>,
    /// One ALiBi slope per query head, `alibi[h]` (at least `q_heads` values): the bias
    /// `alibi[h] · (j − pos(i))`, computed in the kernel.
    pub alibi: Option<&'a [f32]>,
    /// K and V in pages through a block table ([`Pages`]); `None`: `k` and `v` hold the
    /// keys in order, as `self.k` and `self.v` lay them out.
    pub pages: Option<Pages<'a>>,
}

impl<'a> Params<'a> {
    /// Planar layouts, default scale, no mask, no bias.
    pub const fn new(shape: Shape) -> Params<'a> {
        Params {
            shape,
            q: Layout::planar(shape.q_len, shape.head_dim),
            k: Layout::planar(shape.kv_len, shape.head_dim),
            v: Layout::planar(shape.kv_len, shape.v_dim),
            out: Layout::planar(shape.q_len, shape.v_dim),
            scale: None,
            mask: Mask::NONE,
            bias: None,
            softcap: None,
            sinks: None,
            alibi: None,
            pages: None,
        }
    }

    /// The interleaved `[seq][heads][dim]` layout for every tensor.
    pub const fn interleaved(self) -> Params<'a> {
        let s = self.shape;
        Params {
            q: Layout::interleaved(s.q_heads, s.head_dim),
            k: Layout::interleaved(s.kv_heads, s.head_dim),
            v: Layout::interleaved(s.kv_heads, s.v_dim),
            out: Layout::interleaved(s.q_heads, s.v_dim),
            ..self
        }
    }

    /// Sets the layouts of `q`, `k`, `v` and `out`.
    pub const fn with_layouts(self, q: Layout, k: Layout, v: Layout, out: Layout) -> Params<'a> {
        Params {
            q,
            k,
            v,
            out,
            ..self
        }
    }

    /// Re-expresses the K and V layouts (and page strides), given in values, in the elements
    /// of the types they are stored in: their strides divided by the values per element (32 for
    /// [`BlockQ8_0`](crate::BlockQ8_0), 1 for the others, for which this changes nothing).
    /// Call it once, after the layouts are set.
    ///
    /// ```
    /// use qkv::{BlockQ8_0, Params, Shape};
    ///
    /// let params = Params::new(Shape::new(2, 1, 64, 128)).with_kv_units::<BlockQ8_0, BlockQ8_0>();
    /// assert_eq!(params.k.row_stride, 4); // 128 values: 4 blocks
    /// ```
    pub const fn with_kv_units<K: KvType, V: KvType>(self) -> Params<'a> {
        let (kv, vv) = (K::KIND.values(), V::KIND.values());
        Params {
            k: Layout {
                head_stride: self.k.head_stride / kv,
                row_stride: self.k.row_stride / kv,
            },
            v: Layout {
                head_stride: self.v.head_stride / vv,
                row_stride: self.v.row_stride / vv,
            },
            pages: match self.pages {
                Some(p) => Some(Pages {
                    k_page_stride: p.k_page_stride / kv,
                    v_page_stride: p.v_page_stride / vv,
                    ..p
                }),
                None => None,
            },
            ..self
        }
    }

    /// Overrides the default scale `1/√head_dim`.
    pub const fn with_scale(self, scale: f32) -> Params<'a> {
        Params {
            scale: Some(scale),
            ..self
        }
    }

    /// Sets the mask.
    pub const fn with_mask(self, mask: Mask) -> Params<'a> {
        Params { mask, ..self }
    }

    /// Adds a bias.
    pub const fn with_bias(self, bias: Bias<'a>) -> Params<'a> {
        Params {
            bias: Some(bias),
            ..self
        }
    }

    /// Reads K and V through `pages` ([`Pages`]); `self.k` and `self.v` then lay out one page.
    pub const fn with_pages(self, pages: Pages<'a>) -> Params<'a> {
        Params {
            pages: Some(pages),
            ..self
        }
    }

    /// Softcaps the scaled scores at `cap`: `s → cap · tanh(s / cap)`.
    pub const fn with_softcap(self, cap: f32) -> Params<'a> {
        Params {
            softcap: Some(cap),
            ..self
        }
    }

    /// Adds one sink logit per query head (`sinks[h]`, at least `q_heads` values).
    pub const fn with_sinks(self, sinks: &'a [f32]) -> Params<'a> {
        Params {
            sinks: Some(sinks),
            ..self
        }
    }

    /// Adds ALiBi: the bias `slopes[h] · (j − pos(i))` (at least `q_heads` slopes), computed
    /// in the kernel instead of read from a `[q_len][kv_len]` matrix.
    pub const fn with_alibi(self, slopes: &'a [f32]) -> Params<'a> {
        Params {
            alibi: Some(slopes),
            ..self
        }
    }

    /// The ALiBi slope of query head `h` (0 without ALiBi).
    pub(crate) fn slope(&self, h: usize) -> f32 {
        self.alibi.and_then(|s| s.get(h).copied()).unwrap_or(0.0)
    }

    /// `j − pos(i)` for key `j` and query row `i`, exactly, as the ALiBi bias multiplies it.
    pub(crate) fn distance(&self, i: usize, j: usize) -> i128 {
        j as i128 - (self.query_offset() + i as i128)
    }

    /// The softcap the kernel applies: none in a build without the variants, whose
    /// validation refuses params that set one (so the kernel's code for it is left out).
    pub(crate) fn cap(&self) -> Option<f32> {
        if VARIANTS { self.softcap } else { None }
    }

    /// The ALiBi slopes the kernel applies, as [`Params::cap`].
    pub(crate) fn slopes(&self) -> Option<&'a [f32]> {
        if VARIANTS { self.alibi } else { None }
    }

    /// The sink of query head `h`, `-inf` (no sink) when there are none (or, as
    /// [`Params::cap`], in a build without the variants).
    pub(crate) fn sink(&self, h: usize) -> f32 {
        match (self.sinks, VARIANTS) {
            (Some(s), true) => s.get(h).copied().unwrap_or(f32::NEG_INFINITY),
            _ => f32::NEG_INFINITY,
        }
    }

    /// The online softmax's running `(max, sum)` of a row of head `h` before any key: the
    /// sink as a key of weight `e^0 = 1` (`(sink, 1)`); `(-inf, 0)` without one; `(NaN, NaN)`
    /// for a NaN or `+inf` sink, whose weight `e^(inf − inf)` is NaN as an infinite score's is.
    pub(crate) fn start_state(&self, h: usize) -> (f32, f32) {
        match self.sink(h) {
            f32::NEG_INFINITY => (f32::NEG_INFINITY, 0.0),
            s if s.is_finite() => (s, 1.0),
            _ => (f32::NAN, f32::NAN),
        }
    }

    /// The scale in use: the override, or `1/√head_dim`.
    pub fn scale(&self) -> f32 {
        match self.scale {
            Some(s) => s,
            None => 1.0 / libm::sqrtf(self.shape.head_dim as f32),
        }
    }

    /// The absolute position of query row 0 (see [`QueryPos`]).
    pub fn query_offset(&self) -> i128 {
        match self.mask.query_pos {
            QueryPos::BottomRight => self.shape.kv_len as i128 - self.shape.q_len as i128,
            QueryPos::TopLeft => 0,
            QueryPos::Offset(o) => o as i128,
        }
    }

    /// Whether the [`Mask`] lets query row `i` see key `j`. The kernel uses [`Params::key_range`];
    /// the reference uses this, so the two are checked against each other.
    pub fn is_visible(&self, i: usize, j: usize) -> bool {
        let pos = self.query_offset() + i as i128;
        let j = j as i128;
        let after_left = self.mask.left.is_none_or(|l| j >= pos - l as i128);
        let before_right = self.mask.right.is_none_or(|r| j <= pos + r as i128);
        after_left && before_right
    }

    /// The keys query row `i` may see, as a range `lo..hi` within `0..kv_len` (possibly empty).
    ///
    /// Both ends are non-decreasing in `i`, which is what lets the kernel skip whole blocks.
    pub fn key_range(&self, i: usize) -> (usize, usize) {
        self.key_range_inline(i)
    }

    /// [`Params::key_range`], always inlined: the online-softmax step's per-row window takes
    /// it so (as a call it was the deepest frame of a firmware call at opt-level z,
    /// `benches/NOTES.md` 31); other callers keep the call, and the code.
    #[inline(always)]
    pub(crate) fn key_range_inline(&self, i: usize) -> (usize, usize) {
        let kv_len = self.shape.kv_len as i128;
        let pos = self.query_offset() + i as i128;
        let lo = match self.mask.left {
            Some(l) => (pos - l as i128).clamp(0, kv_len),
            None => 0,
        };
        let hi = match self.mask.right {
            Some(r) => (pos + r as i128 + 1).clamp(0, kv_len),
            None => kv_len,
        };
        (lo as usize, hi.max(lo) as usize)
    }
}
