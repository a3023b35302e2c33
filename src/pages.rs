//! Paged K/V: the keys of a sequence in fixed-size pages of a pool, found through a block
//! table (vLLM's and FlashInfer's paged KV cache), read in place. [`Pages`], where each key
//! is, and the check of a table against the pools.

use crate::error::{Error, Tensor};
use crate::validate::check_len;
use crate::{Layout, Params};

/// Whether this build reads paged K/V (feature `paged-kv`).
pub(crate) const PAGED: bool = cfg!(feature = "paged-kv");

/// K and V stored in pages of `page_len` keys, in any order, found through a block table.
///
/// Key `j` of the sequence is row `(offset + j) % page_len` of page
/// `table[(offset + j) / page_len]`. Page `p` of the `k` pool starts at element
/// `p · k_page_stride` (of `v`, at `p · v_page_stride`); within a page, kv heads and rows
/// are laid out as [`Params::k`](crate::Params::k) and [`Params::v`](crate::Params::v) say.
/// So element `d` of key `j` of kv head `g` is at
/// `table[(offset + j) / page_len] · k_page_stride + k.at(g, (offset + j) % page_len) + d`.
///
/// The two usual layouts of a pool of pages of `page_len` keys:
/// - `[pages][page_len][kv_heads][dim]` (vLLM's and FlashInfer's "NHD"):
///   [`Layout::interleaved`]`(kv_heads, dim)` and a page stride of `page_len · kv_heads · dim`;
/// - `[pages][kv_heads][page_len][dim]` ("HND"): [`Layout::planar`]`(page_len, dim)` and a
///   page stride of `kv_heads · page_len · dim`.
///
/// Strides count elements of the stored type, as the layouts do (`q8_0` blocks: see
/// [`Params::with_kv_units`](crate::Params::with_kv_units), which divides these too).
/// The kernel cuts its blocks of keys at page ends, so a page of at least 48 keys costs
/// nothing; smaller pages make smaller blocks. Decode reads the kv heads of a page in turn
/// where their rows lie side by side (NHD, and HND pages of under 16 KiB per head), which
/// takes up to 8 blocks' tiles of working memory
/// ([`workspace_len`](crate::workspace_len) counts them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pages<'a> {
    /// The page of each `page_len` keys of the sequence, in order; it must hold at least
    /// `(offset + kv_len) / page_len` entries, rounded up.
    pub table: &'a [u32],
    /// Keys per page; at least 1 ([`Error::ZeroPageLen`]).
    pub page_len: usize,
    /// Elements of `k` from one page to the next.
    pub k_page_stride: usize,
    /// Elements of `v` from one page to the next.
    pub v_page_stride: usize,
    /// The row of key 0 in its page, counted from the start of `table[0]`: the first
    /// `offset` rows of the table's pages are not keys of this call (0 for a whole sequence;
    /// split-KV parts and stream chunks start later).
    pub offset: usize,
}

impl<'a> Pages<'a> {
    /// Pages of `page_len` keys through `table`, from the first row of `table[0]`.
    pub const fn new(
        table: &'a [u32], page_len: usize, k_page_stride: usize, v_page_stride: usize,
    ) -> Pages<'a> {
        Pages {
            table,
            page_len,
            k_page_stride,
            v_page_stride,
            offset: 0,
        }
    }

    /// The page (its index in the pool) and the row in it of key `j`. Wrapping: valid only
    /// where [`Pages::check`] passed; a table too short gives page 0.
    #[inline(always)]
    pub(crate) fn locate(&self, j: usize) -> (usize, usize) {
        let n = self.offset.wrapping_add(j);
        let len = self.page_len.max(1);
        let page = self.table.get(n / len).copied().unwrap_or(0);
        (page as usize, n % len)
    }

    /// One past the last key in the page of key `j`.
    #[inline(always)]
    pub(crate) fn page_end(&self, j: usize) -> usize {
        let len = self.page_len.max(1);
        j.saturating_add(len - self.offset.wrapping_add(j) % len)
    }

    /// The same pages with key `start` as key 0.
    pub(crate) fn starting_at(self, start: usize) -> Pages<'a> {
        let len = self.page_len.max(1);
        let n = self.offset.saturating_add(start);
        Pages {
            table: self.table.get(n / len..).unwrap_or(&[]),
            offset: n % len,
            ..self
        }
    }

    /// What a pool must hold for the pages of `kv_len` keys of `kv_heads` heads, with rows of
    /// `cols` elements laid out as `l` within a page and pages `stride` elements apart: one
    /// past the last element any of them reaches (the last page counted only as far as its
    /// last key). `None` when that overflows `usize`. Entries missing from a table too short
    /// reach nothing here ([`Pages::check`] refuses the table); a `page_len` of 0 reaches
    /// nothing.
    pub(crate) fn reach(
        &self, kv_heads: usize, kv_len: usize, l: Layout, cols: usize, stride: usize,
    ) -> Option<usize> {
        let len = self.page_len;
        if len == 0 || kv_len == 0 {
            return Some(0);
        }
        let end = self.offset.checked_add(kv_len)?;
        let first = self.offset / len;
        let entries = end.div_ceil(len).min(self.table.len());
        let mut needed = 0usize;
        for (e, &page) in self
            .table
            .get(first..entries)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            // Rows `..rows` of this page hold keys (the last page may be partly used).
            let rows = (end - (first + e) * len).min(len);
            let reach = (page as usize)
                .checked_mul(stride)?
                .checked_add(l.extent(kv_heads, rows, cols)?)?;
            needed = needed.max(reach);
        }
        Some(needed)
    }

    /// Checks the table and both pools for `kv_len` keys of `kv_heads` heads, with rows of
    /// `k_cols` and `v_cols` elements laid out as `k` and `v` within a page: every page the
    /// keys reach must lie inside its pool. `O(pages)`.
    ///
    /// Errors: [`Error::PagesNotBuilt`] in a build without the feature `paged-kv`;
    /// [`Error::ZeroPageLen`]; [`Error::TooShort`] for a table with too few entries
    /// ([`Tensor::BlockTable`]) or a pool too short for a page it names ([`Tensor::K`],
    /// [`Tensor::V`]); [`Error::Overflow`] where an extent overflows `usize`.
    pub(crate) fn check(
        &self, kv_heads: usize, kv_len: usize, k: (Layout, usize, usize), v: (Layout, usize, usize),
    ) -> Result<(), Error> {
        self.check_in(PAGED, kv_heads, kv_len, k, v)
    }

    /// [`Pages::check`] in a build with paged K/V (`built`) or without.
    fn check_in(
        &self, built: bool, kv_heads: usize, kv_len: usize,
        (k, k_cols, k_len): (Layout, usize, usize), (v, v_cols, v_len): (Layout, usize, usize),
    ) -> Result<(), Error> {
        if !built {
            return Err(Error::PagesNotBuilt);
        }
        let len = self.page_len;
        if len == 0 {
            return Err(Error::ZeroPageLen);
        }
        if kv_len == 0 {
            return Ok(());
        }
        let end = self
            .offset
            .checked_add(kv_len)
            .ok_or(Error::Overflow(Tensor::BlockTable))?;
        check_len(Tensor::BlockTable, self.table.len(), end.div_ceil(len))?;
        let pools = [
            (Tensor::K, k, k_cols, self.k_page_stride, k_len),
            (Tensor::V, v, v_cols, self.v_page_stride, v_len),
        ];
        for (tensor, layout, cols, stride, len) in pools {
            let needed = self
                .reach(kv_heads, kv_len, layout, cols, stride)
                .ok_or(Error::Overflow(tensor))?;
            check_len(tensor, len, needed)?;
        }
        Ok(())
    }
}

/// Where the kernel and the reference find a key's row: through the pages if any.
impl<'a> Params<'a> {
    /// The pages the kernel reads through: none in a build without them, whose validation
    /// refuses params that set them (so the kernel's code for them is left out).
    #[inline(always)]
    pub(crate) fn paged(&self) -> Option<Pages<'a>> {
        if PAGED { self.pages } else { None }
    }

    /// Where key `j` of kv head `g` starts in `k` (wrapping, as [`Layout::at`]; through
    /// the pages if any).
    #[inline(always)]
    pub(crate) fn k_at(&self, g: usize, j: usize) -> usize {
        self.row_at(self.k, |p| p.k_page_stride, g, j)
    }

    /// [`Params::k_at`] for `v`.
    #[inline(always)]
    pub(crate) fn v_at(&self, g: usize, j: usize) -> usize {
        self.row_at(self.v, |p| p.v_page_stride, g, j)
    }

    /// Row `j` of head `g` of a tensor laid out as `l`, in pages `page_stride` apart.
    #[inline(always)]
    fn row_at(&self, l: Layout, page_stride: fn(&Pages) -> usize, g: usize, j: usize) -> usize {
        match self.paged() {
            None => l.at(g, j),
            Some(p) => {
                let (page, row) = p.locate(j);
                page.wrapping_mul(page_stride(&p))
                    .wrapping_add(l.at(g, row))
            }
        }
    }

    /// One past the last key stored in order with key `j` at the row stride: the end of its
    /// page, or `usize::MAX` without pages.
    #[inline(always)]
    pub(crate) fn run_end(&self, j: usize) -> usize {
        match self.paged() {
            None => usize::MAX,
            Some(p) => p.page_end(j),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without the feature `paged-kv` refuses pages, however well they fit.
    #[test]
    fn pages_are_refused_where_not_built() {
        let pages = Pages::new(&[0], 4, 16, 16);
        let rows = (Layout::planar(4, 4), 4, 16);
        assert_eq!(pages.check_in(true, 1, 4, rows, rows), Ok(()));
        assert_eq!(
            pages.check_in(false, 1, 4, rows, rows),
            Err(Error::PagesNotBuilt)
        );
    }
}
