//! The benchmark shapes and their inputs, shared by `examples/bench.rs` and
//! `benches/attention.rs`, and the test kit for their comparison with the reference.

#![allow(dead_code)]

use qkv::{KvKind, Mask, Params, Shape};

/// The test kit (`tests/common`): the benchmark's error column is the tests' row comparison
/// with `qkv::reference`. Included by path, as in the tests and the fuzz crate.
#[path = "../../tests/common/mod.rs"]
pub mod kit;

/// What a case measures, which decides how its rate is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Many query rows: compute-bound, reported in GFLOP/s against the FMA ceiling.
    Prefill,
    /// One query row per head: memory-bound, reported in GB/s of K/V read against the
    /// measured streaming bandwidth.
    Decode,
}

/// One benchmark shape.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short name, e.g. `prefill-4k-d128-causal`.
    pub name: String,
    pub kind: Kind,
    pub shape: Shape,
    pub mask: Mask,
}

impl Case {
    fn new(name: String, kind: Kind, shape: Shape, mask: Mask) -> Case {
        Case {
            name,
            kind,
            shape,
            mask,
        }
    }

    /// Planar layouts, default scale, this case's mask.
    pub fn params(&self) -> Params<'static> {
        Params::new(self.shape).with_mask(self.mask)
    }

    /// Query·key pairs the mask lets through, over all query heads: `q_len · kv_len` per
    /// head unmasked, `q_len (q_len + 1) / 2` causal with `q_len = kv_len`, about
    /// `q_len · (window + 1)` for a sliding window.
    pub fn pairs(&self) -> f64 {
        let p = self.params();
        let per_head: u64 = (0..self.shape.q_len)
            .map(|i| {
                let (lo, hi) = p.key_range(i);
                (hi - lo) as u64
            })
            .sum();
        per_head as f64 * self.shape.q_heads as f64
    }

    /// Floating-point operations: `2·head_dim` per score plus `2·v_dim` per weighted value,
    /// for every visible pair. That is `4 · q_len · kv_len · head_dim` per head unmasked and
    /// (up to the diagonal) half of it causal.
    pub fn flops(&self) -> f64 {
        self.pairs() * 2.0 * (self.shape.head_dim + self.shape.v_dim) as f64
    }

    /// Bytes of K and V a kernel must read at least once (each kv head once, shared by its
    /// GQA group), stored as `f32`: the decode traffic.
    pub fn kv_bytes(&self) -> f64 {
        self.kv_bytes_as(KvKind::F32, KvKind::F32)
    }

    /// [`Case::kv_bytes`] with K stored as `k` and V as `v`: a `q8_0` row of 32·n values
    /// takes n blocks of 34 bytes.
    pub fn kv_bytes_as(&self, k: KvKind, v: KvKind) -> f64 {
        let s = self.shape;
        let row = |kind: KvKind, dim: usize| dim.div_ceil(kind.values()) * kind.bytes();
        (s.kv_heads * s.kv_len * (row(k, s.head_dim) + row(v, s.v_dim))) as f64
    }

    /// A one-line description of the shape.
    pub fn describe(&self) -> String {
        let s = self.shape;
        let mask = match (self.mask.left, self.mask.right) {
            (None, None) => "none".to_string(),
            (None, Some(0)) => "causal".to_string(),
            (Some(w), Some(0)) => format!("window {w}"),
            (l, r) => format!("band {l:?}..{r:?}"),
        };
        format!(
            "{}q/{}kv heads, q_len {}, kv_len {}, head_dim {}, mask {}",
            s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim, mask
        )
    }
}

fn k_name(n: usize) -> String {
    if n.is_multiple_of(1024) {
        format!("{}k", n / 1024)
    } else {
        n.to_string()
    }
}

/// The benchmark shapes, with `prefill_heads` heads for the prefill and window shapes:
/// - prefill, `q_len = kv_len` ∈ {1024, 4096}, `head_dim` ∈ {128, 64}, unmasked and causal;
/// - a causal sliding window of 256 keys at `q_len = kv_len = 16384`, `head_dim` 128;
/// - decode, `q_len = 1`, `kv_len` ∈ {4096, 32768}, 32 query heads over 8 kv heads,
///   `head_dim` 128.
pub fn cases(prefill_heads: usize) -> Vec<Case> {
    let mut v = Vec::new();
    for n in [1024, 4096] {
        for d in [128, 64] {
            for causal in [false, true] {
                let (mask, suffix) = if causal {
                    (Mask::causal(), "-causal")
                } else {
                    (Mask::NONE, "")
                };
                v.push(Case::new(
                    format!("prefill-{}-d{d}{suffix}", k_name(n)),
                    Kind::Prefill,
                    Shape::new(prefill_heads, n, n, d),
                    mask,
                ));
            }
        }
    }
    let n = 16384;
    v.push(Case::new(
        format!("window256-{}-d128", k_name(n)),
        Kind::Prefill,
        Shape::new(prefill_heads, n, n, 128),
        Mask::sliding_window(256),
    ));
    for kv in [4096, 32768] {
        v.push(Case::new(
            format!("decode-{}", k_name(kv)),
            Kind::Decode,
            Shape::new(32, 1, kv, 128).gqa(32, 8),
            Mask::NONE,
        ));
    }
    v
}

/// A small prefill shape on which the `f64` reference runs in reasonable time.
pub fn small_case() -> Case {
    Case::new(
        "prefill-256-d64-causal".to_string(),
        Kind::Prefill,
        Shape::new(1, 256, 256, 64),
        Mask::causal(),
    )
}

/// Q, K, V for a case, planar, filled with a fixed pseudo-random sequence in `[-1, 1)`.
pub struct Data {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub out: Vec<f32>,
}

impl Data {
    pub fn new(shape: Shape, seed: u64) -> Data {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut fill = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    // xorshift64*
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                    (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        let s = shape;
        Data {
            q: fill(s.q_heads * s.q_len * s.head_dim),
            k: fill(s.kv_heads * s.kv_len * s.head_dim),
            v: fill(s.kv_heads * s.kv_len * s.v_dim),
            out: vec![0.0; s.q_heads * s.q_len * s.v_dim],
        }
    }
}

/// The index of element `[head][row][0]` in a tensor with layout `l`.
pub fn at(l: &qkv::Layout, head: usize, row: usize) -> usize {
    head * l.head_stride + row * l.row_stride
}

/// K and V of a case's [`Data`] stored as other types: what the kernel reads when a KV cache
/// holds `f16`, `bf16` or `q8_0` (`f32` is a plain copy).
pub struct Typed {
    /// The types of K and V.
    pub kinds: (KvKind, KvKind),
    pub k: kit::kv::Stored,
    pub v: kit::kv::Stored,
    /// The case's parameters with the K and V strides in elements of their types (a `q8_0`
    /// row of 128 values is 4 blocks).
    pub params: Params<'static>,
}

impl Typed {
    /// `d`'s K and V (planar, as [`Data::new`] lays them out) rounded to `kinds` (nearest
    /// `f16`/`bf16`, ggml's `q8_0` quantisation); `None` when a `q8_0` row length is not a
    /// multiple of 32.
    pub fn new(case: &Case, d: &Data, kinds: (KvKind, KvKind)) -> Option<Typed> {
        let s = case.shape;
        let q8 = |kind, dim: usize| kind == KvKind::Q8_0 && !dim.is_multiple_of(32);
        if q8(kinds.0, s.head_dim) || q8(kinds.1, s.v_dim) {
            return None;
        }
        let mut params = case.params();
        params.k = kit::kv::in_units(kinds.0, params.k);
        params.v = kit::kv::in_units(kinds.1, params.v);
        // Any values: rounded to the nearest f16/bf16, quantised as ggml does.
        let store = |kind, t: &[f32]| match kind {
            KvKind::Q8_0 => kit::kv::Stored::Q8_0(kit::kv::quantized(t)),
            _ => kit::kv::store(kind, t),
        };
        Some(Typed {
            kinds,
            k: store(kinds.0, &d.k),
            v: store(kinds.1, &d.v),
            params,
        })
    }

    /// The values of K and V as the kernel sees them, as `f32` (planar, the case's
    /// [`Case::params`] layouts): the reference's inputs for this storage.
    pub fn values(&self) -> (Vec<f32>, Vec<f32>) {
        (widen(&self.k), widen(&self.v))
    }

    /// `k` or `k/v`: the types' names, once when they are the same.
    pub fn label(&self) -> String {
        kv_label(self.kinds)
    }
}

/// `k` or `k/v`: the types' names, once when they are the same.
pub fn kv_label(kinds: (KvKind, KvKind)) -> String {
    if kinds.0 == kinds.1 {
        kinds.0.name().to_string()
    } else {
        format!("{}/{}", kinds.0.name(), kinds.1.name())
    }
}

/// Every value of `t` as the `f32` it decodes to.
pub fn widen(t: &kit::kv::Stored) -> Vec<f32> {
    use kit::kv::Stored;
    match t {
        Stored::F32(x) => x.clone(),
        Stored::F16(x) => x.iter().map(|v| v.to_f32()).collect(),
        Stored::Bf16(x) => x.iter().map(|v| v.to_f32()).collect(),
        Stored::Q8_0(x) => kit::kv::decoded(x),
    }
}
