//! The baseline every level must beat: three-pass attention on a good SGEMM
//! (`matrixmultiply::sgemm`, single thread), shared by `examples/bench.rs` and
//! `benches/attention.rs`.
//!
//! Per kv head and per block of [`ROWS`] query positions, with the query rows of every head
//! of the GQA group stacked into one matrix (so a decode step reads each K/V row once per
//! group, as the kernel does):
//! 1. `S = scale · Q·K_bandᵀ` (sgemm), where `K_band` is the keys any row of the block may
//!    see (so causal and window shapes skip whole blocks, like the kernel);
//! 2. per row, keys outside the row's mask set to `-inf`, then softmax with max
//!    subtraction, normalised in place (vectorised with the crate's `exp`, so the baseline is
//!    not held back by a scalar `expf`);
//! 3. `O = P·V_band` (sgemm).
//!
//! The buffers are allocated once and reused, outside any timing. Bias is not supported
//! (the benchmark shapes have none).

#![allow(dead_code)]

use pulp::{Simd, WithSimd};
use qkv::Params;

use super::cases::at;

/// `matrixmultiply` picks its kernel at run time, the widest the CPU has, unless
/// `MMTEST_FEATURE` was set when it was compiled (e.g. `MMTEST_FEATURE=avx2,fma`): then
/// only the listed instruction sets. Read here at the same build, so the baseline's softmax
/// follows the same choice and the bench example names the right ceiling.
pub const MM_FEATURES: Option<&str> = option_env!("MMTEST_FEATURE");

/// Whether the baseline may use the x86 feature `name` (where the CPU has it).
pub fn allowed(name: &str) -> bool {
    MM_FEATURES.is_none_or(|f| f.is_empty() || f.split(',').any(|x| x.trim() == name))
}

/// Query positions per block: the score block `(group · ROWS) × band` then stays within a
/// few MiB, close to L2.
pub const ROWS: usize = 128;

/// Reusable working memory of the baseline.
#[derive(Default)]
pub struct Baseline {
    q: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
}

impl Baseline {
    pub fn new() -> Baseline {
        Baseline::default()
    }

    /// Computes the attention `params` describes (no bias) into `out`.
    pub fn run(&mut self, params: &Params, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        assert!(params.bias.is_none(), "the baseline has no bias support");
        params
            .validate(q, k, v, out, None)
            .expect("valid baseline inputs");
        let s = params.shape;
        let (d, dv) = (s.head_dim, s.v_dim);
        let group = s.q_heads / s.kv_heads;
        let scale = params.scale();
        let arch = pulp::Arch::new();

        for g in 0..s.kv_heads {
            for i0 in (0..s.q_len).step_by(ROWS) {
                let nb = ROWS.min(s.q_len - i0);
                let m = group * nb;
                // The union of the rows' key ranges: both ends grow with the row.
                let lo = params.key_range(i0).0;
                let hi = params.key_range(i0 + nb - 1).1.max(lo);
                let nk = hi - lo;

                // Stack the group's query rows: row r = hh · nb + (i − i0).
                self.q.resize(m * d, 0.0);
                for hh in 0..group {
                    for r in 0..nb {
                        let src = &q[at(&params.q, g * group + hh, i0 + r)..][..d];
                        self.q[(hh * nb + r) * d..][..d].copy_from_slice(src);
                    }
                }
                self.o.resize(m * dv, 0.0);
                if nk == 0 {
                    self.o.fill(0.0);
                } else {
                    self.s.resize(m * nk, 0.0);
                    let k0 = at(&params.k, g, lo);
                    let v0 = at(&params.v, g, lo);
                    // SAFETY: `validate` checked that every row `lo..hi` of kv head `g` is
                    // inside `k` and `v` at these strides; `self.q`, `self.s`, `self.o` have
                    // exactly `m·d`, `m·nk`, `m·dv` elements, addressed densely.
                    unsafe {
                        let kt = (1, params.k.row_stride);
                        gemm((m, d, nk), scale, &self.q, &k[k0..], kt, &mut self.s);
                    }
                    for hh in 0..group {
                        for r in 0..nb {
                            let (a, b) = params.key_range(i0 + r);
                            let row = &mut self.s[(hh * nb + r) * nk..][..nk];
                            row[..a.max(lo) - lo].fill(f32::NEG_INFINITY);
                            row[b.max(lo) - lo..].fill(f32::NEG_INFINITY);
                            softmax(arch, row);
                        }
                    }
                    // SAFETY: as above, for V and the output block.
                    unsafe {
                        let vs = (params.v.row_stride, 1);
                        gemm((m, nk, dv), 1.0, &self.s, &v[v0..], vs, &mut self.o);
                    }
                }
                for hh in 0..group {
                    for r in 0..nb {
                        let dst = &mut out[at(&params.out, g * group + hh, i0 + r)..][..dv];
                        dst.copy_from_slice(&self.o[(hh * nb + r) * dv..][..dv]);
                    }
                }
            }
        }
    }
}

/// [`Softmax`] on the widest level allowed (see [`MM_FEATURES`]).
/// `c = alpha · a · b` (`matrixmultiply::sgemm`) for `(m, inner, cols)`: `a` (`m × inner`)
/// and `c` (`m × cols`) dense row-major, `b` (`inner × cols`) read at
/// `b[i·b_strides.0 + j·b_strides.1]`.
///
/// # Safety
/// `a` and `c` hold at least `m·inner` and `m·cols` elements, and every element of `b` the
/// strides address is inside `b`.
unsafe fn gemm(
    (m, inner, cols): (usize, usize, usize), alpha: f32, a: &[f32], b: &[f32],
    b_strides: (usize, usize), c: &mut [f32],
) {
    let (rsb, csb) = (b_strides.0 as isize, b_strides.1 as isize);
    let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    // SAFETY: the caller's contract: the sizes and strides stay inside `a`, `b` and `c`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            inner,
            cols,
            alpha,
            a,
            inner as isize,
            1,
            b,
            rsb,
            csb,
            0.0,
            c,
            cols as isize,
            1,
        );
    }
}

fn softmax(arch: pulp::Arch, row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if !allowed("avx512f") {
        return match pulp::x86::V3::try_new().filter(|_| allowed("avx2") && allowed("fma")) {
            Some(v3) => pulp::Simd::vectorize(v3, Softmax { row }),
            None => pulp::Simd::vectorize(pulp::Scalar::new(), Softmax { row }),
        };
    }
    arch.dispatch(Softmax { row })
}

/// In-place softmax of one row: max, `exp(x − max)` and its sum, then scale by `1/sum`.
/// A row of only `-inf` becomes zeros.
struct Softmax<'a> {
    row: &'a mut [f32],
}

impl WithSimd for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.row);
        let mut vmax = simd.splat_f32s(f32::NEG_INFINITY);
        for x in head.iter() {
            vmax = simd.max_f32s(vmax, *x);
        }
        let mut max = simd.reduce_max_f32s(vmax);
        for x in tail.iter() {
            max = max.max(*x);
        }
        if max == f32::NEG_INFINITY {
            head.fill(simd.splat_f32s(0.0));
            tail.fill(0.0);
            return;
        }
        let m = simd.splat_f32s(max);
        let mut vsum = simd.splat_f32s(0.0);
        for x in head.iter_mut() {
            *x = qkv::exp::exp(simd, simd.sub_f32s(*x, m));
            vsum = simd.add_f32s(vsum, *x);
        }
        let mut sum = simd.reduce_sum_f32s(vsum);
        for x in tail.iter_mut() {
            *x = qkv::exp::exp1(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vinv = simd.splat_f32s(inv);
        for x in head.iter_mut() {
            *x = simd.mul_f32s(*x, vinv);
        }
        for x in tail.iter_mut() {
            *x *= inv;
        }
    }
}
