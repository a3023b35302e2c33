//! The checks every entry point (the reference, every kernel level, split-KV, streaming and
//! the C ABI) runs on a [`Params`] and its slices before anything is read or written.

use crate::error::{Dim, Error, Tensor};
use crate::kv::KvType;
use crate::params::VARIANTS;
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

    /// [`validate`](Params::validate) of the shape, scale, softcap and sinks only (the C
    /// ABI's plans).
    #[cfg(feature = "capi")]
    pub(crate) fn validate_shape(&self) -> Result<(), Error> {
        self.check_shape()
    }

    /// Dimensions, heads, scale, and the variants ([`Params::check_variants`]).
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
        self.check_variants()
    }

    /// The softcap, and the lengths of the sinks and the ALiBi slopes; none of them in a build
    /// without the variants.
    pub(crate) fn check_variants(&self) -> Result<(), Error> {
        self.check_variants_in(VARIANTS)
    }

    /// [`Params::check_variants`] in a build with the variants (`built`) or without.
    fn check_variants_in(&self, built: bool) -> Result<(), Error> {
        let any = self.softcap.is_some() || self.sinks.is_some() || self.alibi.is_some();
        if any && !built {
            return Err(Error::VariantsNotBuilt);
        }
        if let Some(cap) = self.softcap
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(Error::InvalidSoftcap);
        }
        self.check_sinks()?;
        per_head(Tensor::Alibi, self.alibi, self.shape.q_heads)
    }

    /// The length of the sinks, if any: one per query head (and none in a build without the
    /// variants).
    pub(crate) fn check_sinks(&self) -> Result<(), Error> {
        if self.sinks.is_some() && !VARIANTS {
            return Err(Error::VariantsNotBuilt);
        }
        per_head(Tensor::Sinks, self.sinks, self.shape.q_heads)
    }

    /// That `lse` with `stride` elements between heads holds `[q_heads][q_len]` (the rows of
    /// one sequence of a ragged batch in the batch's `lse`).
    pub(crate) fn check_lse_rows(&self, lse: &[f32], stride: usize) -> Result<(), Error> {
        let s = &self.shape;
        let extent = Layout {
            head_stride: stride,
            row_stride: 1,
        }
        .extent(s.q_heads, s.q_len, 1);
        check_len(
            Tensor::Lse,
            lse.len(),
            extent.ok_or(Error::Overflow(Tensor::Lse))?,
        )
    }

    /// The extents of `q`, `k` and `v` (in their own elements; with pages, every page the
    /// keys reach).
    fn check_qkv<K: KvType, V: KvType>(&self, q: &[f32], k: &[K], v: &[V]) -> Result<(), Error> {
        let s = &self.shape;
        let k_cols = units(Tensor::K, s.head_dim, K::KIND.values())?;
        let v_cols = units(Tensor::V, s.v_dim, V::KIND.values())?;
        check_extent(Tensor::Q, q.len(), self.q, s.q_heads, s.q_len, s.head_dim)?;
        if let Some(pages) = &self.pages {
            let (k, v) = ((self.k, k_cols, k.len()), (self.v, v_cols, v.len()));
            return pages.check(s.kv_heads, s.kv_len, k, v);
        }
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

/// A per-head array, if given, holds at least `q_heads` values.
fn per_head(tensor: Tensor, values: Option<&[f32]>, q_heads: usize) -> Result<(), Error> {
    match values {
        Some(v) if v.len() < q_heads => Err(Error::TooShort {
            tensor,
            needed: q_heads,
            len: v.len(),
        }),
        _ => Ok(()),
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
    check_len(tensor, len, needed)
}

/// [`Error::TooShort`] unless a slice of `len` elements holds the `needed` ones.
pub(crate) fn check_len(tensor: Tensor, len: usize, needed: usize) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use crate::{Error, Params, Shape};

    /// A build without the feature `softmax-variants` refuses every variant and accepts
    /// params without them; with it, each is checked on its own.
    #[test]
    fn variants_are_refused_where_not_built() {
        let p = Params::new(Shape::new(2, 1, 4, 8));
        let one = [0.0f32; 2];
        for (v, with) in [
            (p.with_softcap(2.0), Ok(())),
            (p.with_sinks(&one), Ok(())),
            (p.with_alibi(&one), Ok(())),
            (p.with_softcap(-1.0), Err(Error::InvalidSoftcap)),
        ] {
            assert_eq!(
                v.check_variants_in(false),
                Err(Error::VariantsNotBuilt),
                "{v:?}"
            );
            assert_eq!(v.check_variants_in(true), with, "{v:?}");
        }
        assert_eq!(p.check_variants_in(false), Ok(()));
    }
}
