//! The reference: the same function as [`attention`](crate::attention), written to be obviously
//! correct rather than fast. Every kernel level is tested and fuzzed against it.
//!
//! Per query head `h` and row `i`, with `g = h / (q_heads / kv_heads)`:
//! 1. the visible keys are those the [`Mask`](crate::Mask) allows ([`Params::is_visible`]),
//!    minus those whose bias is `-inf`;
//! 2. each visible key gets the score
//!    `s_j = c(scale · (q[h][i] · k[g][j])) + bias[h][i][j] + alibi[h] · (j − pos(i))`,
//!    with the dot product accumulated in `f64`, `c(x) = cap · tanh(x / cap)` with a softcap
//!    (`c(x) = x` without) and the ALiBi term only with slopes, added only to a score that
//!    is not already `-inf`; keys whose score is `-inf` are dropped too;
//! 3. a sink `sinks[h]` (unless `-inf`) joins as one more score with a value row of zeros;
//! 4. two passes: `m = max s_j`, then `p_j = exp(s_j − m)`, `l = Σ p_j`, all in `f64`;
//! 5. `out[h][i] = Σ p_j · v[g][j] / l` and `lse[h][i] = m + ln l`.
//!
//! A row with no key left (and no sink) writes `out = 0` and `lse = −inf`. A NaN score (or
//! sink) makes the whole row (and its lse) NaN; a NaN in `v` makes the output columns it
//! touches NaN.

use crate::kv::{self, KvType};
use crate::{Error, Params};

/// Output columns accumulated per pass over the keys.
const COLS: usize = 32;

/// Computes attention exactly as the crate documents it, in `f64`, two-pass.
///
/// Takes the same arguments and runs the same validation as [`attention`](crate::attention).
/// It allocates nothing: it recomputes each score once per pass instead of storing the row.
/// K and V values of any [`KvType`] are decoded exactly, then used in `f64`.
// Not inlined: its frame (the `f64` accumulators of a pass) must not sit under the C
// decoder's, which the caller (`qkv_reference_f32`) runs first.
#[inline(never)]
pub fn attention<K: KvType, V: KvType>(
    params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32], mut lse: Option<&mut [f32]>,
) -> Result<(), Error> {
    params.validate(q, k, v, out, lse.as_deref())?;
    let s = params.shape;
    if s.q_len == 0 {
        return Ok(()); // nothing to write, however many heads
    }
    let scale = params.scale() as f64;
    let group = s.q_heads / s.kv_heads;

    for h in 0..s.q_heads {
        let g = h / group;
        for i in 0..s.q_len {
            let q_row = &q[params.q.at(h, i)..][..s.head_dim];
            // The score of key j, or None if the key is not visible to this row.
            let score = |j: usize| -> Option<f64> {
                if !params.is_visible(i, j) {
                    return None;
                }
                let bias = match &params.bias {
                    Some(b) => b.data[h * b.head_stride + i * b.row_stride + j] as f64,
                    None => 0.0,
                };
                if bias == f64::NEG_INFINITY {
                    return None;
                }
                let k_row = &k[params.k_at(g, j)..];
                let dot: f64 = q_row
                    .iter()
                    .enumerate()
                    .map(|(d, &a)| a as f64 * kv::value(k_row, d).unwrap_or(f32::NAN) as f64)
                    .sum();
                let s = match params.softcap {
                    Some(cap) => cap as f64 * libm::tanh(scale * dot / cap as f64),
                    None => scale * dot,
                } + bias;
                if s == f64::NEG_INFINITY {
                    return None;
                }
                // ALiBi, on a key still in (so a NaN slope cannot bring back a `-inf` score).
                let alibi = match params.alibi {
                    Some(_) => params.slope(h) as f64 * params.distance(i, j) as f64,
                    None => 0.0,
                };
                let s = s + alibi;
                (s != f64::NEG_INFINITY).then_some(s)
            };
            // The sink, a score with a zero value row (none: `-inf`).
            let sink = params.sink(h) as f64;

            let mut max = sink;
            let mut nan = sink.is_nan();
            for j in 0..s.kv_len {
                if let Some(sj) = score(j) {
                    nan |= sj.is_nan();
                    max = max.max(sj);
                }
            }

            let out_row = &mut out[params.out.at(h, i)..][..s.v_dim];
            let row_lse = if nan {
                out_row.fill(f32::NAN);
                f64::NAN
            } else if max == f64::NEG_INFINITY {
                out_row.fill(0.0);
                f64::NEG_INFINITY
            } else {
                let mut sum = match sink == f64::NEG_INFINITY {
                    true => 0.0,
                    false => libm::exp(sink - max),
                };
                for j in 0..s.kv_len {
                    if let Some(sj) = score(j) {
                        sum += libm::exp(sj - max);
                    }
                }
                // f64 accumulators for a few columns at a time; scores are recomputed per chunk.
                for (chunk, o) in out_row.chunks_mut(COLS).enumerate() {
                    let mut acc = [0.0f64; COLS];
                    for j in 0..s.kv_len {
                        if let Some(sj) = score(j) {
                            let p = libm::exp(sj - max);
                            let v_row = &v[params.v_at(g, j)..];
                            for (c, a) in acc.iter_mut().take(o.len()).enumerate() {
                                let x = kv::value(v_row, chunk * COLS + c).unwrap_or(f32::NAN);
                                *a += p * x as f64;
                            }
                        }
                    }
                    for (o, a) in o.iter_mut().zip(acc) {
                        *o = (a / sum) as f32;
                    }
                }
                max + libm::log(sum)
            };
            if let Some(lse) = lse.as_deref_mut() {
                lse[h * s.q_len + i] = row_lse as f32;
            }
        }
    }
    Ok(())
}
