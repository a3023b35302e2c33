//! The checks every entry point (the reference, every kernel level, split-KV, streaming and
//! the C ABI) runs on a [`Params`] and its slices before anything is read or written.

use crate::error::{Dim, Error, Tensor};
use crate::kv::KvType;
use crate::{Layout, Params};

impl Params<'_> {
    /// Checks every input against the shape and strides; nothing is read or written.
    ///
    /// This is the single validation all entry points share: the reference, every kernel
    /// level and the C ABI. K and V are checked in their own elements ([`KvType`]): a
    /// `q8_0` K needs a `head_dim`, and a `q8_0` V a `v_dim`, that is a multiple of 32.
    pub fn validate<K: KvType, V: KvType>(
        &self, q: &[f32], k: &[K], v: &[V], out: &[f32], lse: Option<&[f32]>,
    ) -> Result<(), Error> {
        self.check_shape()?;
        self.check_qkv(q, k, v)?;
        self.check_out(out)?;
        self.check_bias()?;
        self.check_lse(lse)
    }

    /// [`validate`](Params::validate) without the outputs: the shape, `q`, `k`, `v` and the
    /// bias (the tasks of a [`Plan`](crate::plan::Plan), which write partials).
    pub(crate) fn validate_inputs<K: KvType, V: KvType>(
        &self, q: &[f32], k: &[K], v: &[V],
    ) -> Result<(), Error> {
        self.check_shape()?;
        self.check_qkv(q, k, v)?;
        self.check_bias()
    }

    /// [`validate`](Params::validate) of the shape and the outputs only (the merge of a
    /// [`Plan`](crate::plan::Plan)'s partials).
    pub(crate) fn validate_outputs(&self, out: &[f32], lse: Option<&[f32]>) -> Result<(), Error> {
        self.check_shape()?;
        self.check_out(out)?;
        self.check_lse(lse)
    }

    /// [`validate`](Params::validate) of the shape and scale only (the C ABI's plans).
    #[cfg(feature = "capi")]
    pub(crate) fn validate_shape(&self) -> Result<(), Error> {
        self.check_shape()
    }

    /// Dimensions, heads and scale.
    fn check_shape(&self) -> Result<(), Error> {
        let s = &self.shape;
        for (n, d) in [
            (s.q_heads, Dim::QHeads),
            (s.kv_heads, Dim::KvHeads),
            (s.head_dim, Dim::HeadDim),
            (s.v_dim, Dim::VDim),
        ] {
            if n == 0 {
                return Err(Error::ZeroDim(d));
            }
        }
        if !s.q_heads.is_multiple_of(s.kv_heads) {
            return Err(Error::HeadsNotDivisible {
                q_heads: s.q_heads,
                kv_heads: s.kv_heads,
            });
        }
        let scale = self.scale();
        if !scale.is_finite() {
            return Err(Error::InvalidScale);
        }
        Ok(())
    }

    /// The extents of `q`, `k` and `v` (in their own elements).
    fn check_qkv<K: KvType, V: KvType>(&self, q: &[f32], k: &[K], v: &[V]) -> Result<(), Error> {
        let s = &self.shape;
        let k_cols = units(Tensor::K, s.head_dim, K::KIND.values())?;
        let v_cols = units(Tensor::V, s.v_dim, V::KIND.values())?;
        check_extent(Tensor::Q, q.len(), self.q, s.q_heads, s.q_len, s.head_dim)?;
        check_extent(Tensor::K, k.len(), self.k, s.kv_heads, s.kv_len, k_cols)?;
        check_extent(Tensor::V, v.len(), self.v, s.kv_heads, s.kv_len, v_cols)
    }

    /// The extent of `out`, and that its rows are disjoint.
    fn check_out(&self, out: &[f32]) -> Result<(), Error> {
        let s = &self.shape;
        check_extent(
            Tensor::Out,
            out.len(),
            self.out,
            s.q_heads,
            s.q_len,
            s.v_dim,
        )?;
        check_disjoint(Tensor::Out, self.out, s.q_heads, s.q_len, s.v_dim)
    }

    /// The extent of the bias, if any.
    fn check_bias(&self) -> Result<(), Error> {
        let s = &self.shape;
        if let Some(b) = &self.bias {
            check_extent(
                Tensor::Bias,
                b.data.len(),
                b.layout(),
                s.q_heads,
                s.q_len,
                s.kv_len,
            )?;
        }
        Ok(())
    }

    /// The length of `lse`, if any: `[q_heads][q_len]`.
    fn check_lse(&self, lse: Option<&[f32]>) -> Result<(), Error> {
        let s = &self.shape;
        if let Some(lse) = lse {
            let needed = s
                .q_heads
                .checked_mul(s.q_len)
                .ok_or(Error::Overflow(Tensor::Lse))?;
            if lse.len() < needed {
                return Err(Error::TooShort {
                    tensor: Tensor::Lse,
                    needed,
                    len: lse.len(),
                });
            }
        }
        Ok(())
    }
}

/// The elements of a row of `dim` values stored `values` to an element: `dim` must be a
/// multiple of `values`.
fn units(tensor: Tensor, dim: usize, values: usize) -> Result<usize, Error> {
    match dim.is_multiple_of(values) {
        true => Ok(dim / values),
        false => Err(Error::BlockSize {
            tensor,
            dim,
            block: values,
        }),
    }
}

/// Every element `[h][r][c]` for `h < heads, r < rows, c < cols` must be inside a slice of
/// `len` elements ([`Layout::extent`]).
fn check_extent(
    tensor: Tensor, len: usize, layout: Layout, heads: usize, rows: usize, cols: usize,
) -> Result<(), Error> {
    let needed = layout
        .extent(heads, rows, cols)
        .ok_or(Error::Overflow(tensor))?;
    if len < needed {
        return Err(Error::TooShort {
            tensor,
            needed,
            len,
        });
    }
    Ok(())
}

/// The rows of an output must not share memory: with the smaller stride `a` (count `na`) and
/// the larger `b` (count `nb`), rows of `cols` elements are disjoint when `a ≥ cols` and
/// `b ≥ (na - 1)·a + cols`; a dimension of count 1 imposes nothing. Called after
/// [`check_extent`], whose sum bounds this one, so nothing here overflows.
fn check_disjoint(
    tensor: Tensor, layout: Layout, heads: usize, rows: usize, cols: usize,
) -> Result<(), Error> {
    if heads == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let (mut a, mut b) = ((layout.head_stride, heads), (layout.row_stride, rows));
    if a.0 > b.0 {
        core::mem::swap(&mut a, &mut b);
    }
    let ok = match (a.1 > 1, b.1 > 1) {
        (false, false) => true,
        (true, false) => a.0 >= cols,
        (false, true) => b.0 >= cols,
        (true, true) => a.0 >= cols && b.0 >= (a.1 - 1) * a.0 + cols,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Overlap(tensor))
    }
}
