//! Split-KV decode (flash-decoding) as a `no_std` caller would run it on its own threads:
//! the keys are cut into [`SPLITS`] ranges, each range is a [`qkv::split::partial`], and the
//! partials are joined with [`qkv::split::merge`]. Shared by `examples/bench.rs` and
//! `benches/attention.rs`, which time it over 1 and 2 threads.

#![allow(dead_code)]

use qkv::{KvType, Params, split};

/// Key ranges per call. Fixed, so that the 1-thread entry pays the same split and merge as
/// the 2-thread one and the two differ only in the threads.
pub const SPLITS: usize = 2;

/// The per-call buffers of a split-KV decode: the partial outputs and lse of every range but
/// the first (which is computed straight into `out`). Allocated once, outside the timing.
pub struct SplitKv {
    threads: usize,
    lse: Vec<Vec<f32>>,
    outs: Vec<Vec<f32>>,
}

impl SplitKv {
    /// Buffers for `params`, run over `threads` threads (1 ..= [`SPLITS`]).
    pub fn new(params: &Params, threads: usize) -> SplitKv {
        let s = params.shape;
        let out_len = s.q_heads * s.q_len * s.v_dim;
        SplitKv {
            threads: threads.clamp(1, SPLITS),
            lse: vec![vec![0.0; s.q_heads * s.q_len]; SPLITS],
            outs: vec![vec![0.0; out_len]; SPLITS - 1],
        }
    }

    /// Threads this runner uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Attention over all keys: [`SPLITS`] partials spread over the threads (the calling
    /// thread takes the first share), then merged into `out`, in key order. K and V in any
    /// of qkv's storage types (`params`' K/V strides in their elements).
    pub fn run<K: KvType, V: KvType>(
        &mut self, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
    ) {
        let n = params.shape.kv_len;
        let range = |r: usize| r * n / SPLITS..(r + 1) * n / SPLITS;
        let (lse0, lse_rest) = self.lse.split_first_mut().expect("SPLITS > 0");
        // Partial r writes outs[r - 1] (r ≥ 1) or out (r = 0).
        let mut jobs: Vec<(usize, &mut [f32], &mut [f32])> = vec![(0, &mut *out, &mut lse0[..])];
        for (r, (o, l)) in self.outs.iter_mut().zip(lse_rest.iter_mut()).enumerate() {
            jobs.push((r + 1, &mut o[..], &mut l[..]));
        }
        let per_thread = SPLITS.div_ceil(self.threads);
        std::thread::scope(|scope| {
            let mut chunks = jobs.chunks_mut(per_thread);
            let mine = chunks.next().expect("at least one range");
            for chunk in chunks {
                scope.spawn(move || {
                    for (r, o, l) in chunk.iter_mut() {
                        split::partial(params, q, k, v, range(*r), o, l).expect("valid inputs");
                    }
                });
            }
            for (r, o, l) in mine.iter_mut() {
                split::partial(params, q, k, v, range(*r), o, l).expect("valid inputs");
            }
        });
        for (o, l) in self.outs.iter().zip(lse_rest.iter()) {
            split::merge(params, out, lse0, o, l).expect("valid inputs");
        }
    }
}
