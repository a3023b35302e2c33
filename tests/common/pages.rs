//! Paged K/V for the test kit: a [`Case`]'s K and V copied, as stored, into pools of pages in
//! reverse order with an unused page 0 and unused rows poisoned (NaN), and the params that
//! read them through the table. The reference and the oracle keep reading the case's
//! contiguous `k` and `v`, so a paged call is checked against the same numbers laid out
//! independently of the crate's page arithmetic.

use qkv::{BlockQ8_0, Layout, Pages, Params, bf16, f16};

use super::case::Case;
use super::kv::Stored;

/// How a case pages its K and V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    /// Keys per page.
    pub page_len: usize,
    /// `[pages][kv_heads][page_len][dim]` ("HND") rather than `[pages][page_len][kv_heads][dim]`.
    pub hnd: bool,
    /// The row of key 0 in the first page ([`Pages::offset`]).
    pub offset: usize,
}

impl Paging {
    /// Pages of `page_len` keys, either layout, key 0 at row 0 or (one time in three) at
    /// any row of the first page.
    pub fn random(rng: &mut super::Rng, page_len: usize) -> Paging {
        Paging {
            page_len,
            hnd: rng.coin(1, 2),
            offset: if rng.coin(1, 3) {
                rng.range(0, page_len - 1)
            } else {
                0
            },
        }
    }
}

/// K and V as a call reads them: the case's stored tensors, or pools of pages and their table.
pub struct CallInputs {
    pub k: Stored,
    pub v: Stored,
    /// With paging: the table, the K and V layouts within a page and the page strides.
    paged: Option<Pools>,
}

/// The table of a paged call, how it pages, and the K and V layouts within a page and page
/// strides.
type Pools = (Vec<u32>, Paging, [(Layout, usize); 2]);

impl CallInputs {
    /// The params of the call: [`Case::stored_params`], with the pages when paged.
    pub fn params<'a>(&'a self, case: &'a Case) -> Params<'a> {
        let p = case.stored_params();
        match &self.paged {
            None => p,
            Some((table, paging, [(lk, sk), (lv, sv)])) => {
                let pages = Pages {
                    offset: paging.offset,
                    ..Pages::new(table, paging.page_len, *sk, *sv)
                };
                Params {
                    k: *lk,
                    v: *lv,
                    ..p.with_pages(pages)
                }
            }
        }
    }
}

impl Case {
    /// K and V as the call reads them ([`CallInputs`]).
    pub fn call_inputs(&self) -> CallInputs {
        let (k, v) = self.stored();
        let Some(paging) = self.paging else {
            return CallInputs { k, v, paged: None };
        };
        let s = self.shape;
        let sp = self.stored_params();
        let n = (paging.offset + s.kv_len).div_ceil(paging.page_len);
        // Reversed, page 0 unused: a read through the wrong page or row shows as NaN.
        let table: Vec<u32> = (0..n).map(|e| (n - e) as u32).collect();
        let (k, lk) = pool(&k, sp.k, s.head_dim, paging, &table, s.kv_heads, s.kv_len);
        let (v, lv) = pool(&v, sp.v, s.v_dim, paging, &table, s.kv_heads, s.kv_len);
        CallInputs {
            k,
            v,
            paged: Some((table, paging, [lk, lv])),
        }
    }
}

/// `t` (laid out as `l`, rows of `dim` values) copied into pages as `paging` says, through
/// `table`: the pool, and its layout within a page and page stride, in elements.
fn pool(
    t: &Stored, l: Layout, dim: usize, paging: Paging, table: &[u32], heads: usize, kv_len: usize,
) -> (Stored, (Layout, usize)) {
    let page = |values| (dim / values, l, paging, table, heads, kv_len);
    match t {
        Stored::F32(x) => copy_pages(x, page(1), f32::NAN, Stored::F32),
        Stored::F16(x) => copy_pages(x, page(1), f16::NAN, Stored::F16),
        Stored::Bf16(x) => copy_pages(x, page(1), bf16::NAN, Stored::Bf16),
        Stored::Q8_0(x) => {
            let poison = BlockQ8_0 {
                d: f16::NAN,
                qs: [0; 32],
            };
            copy_pages(x, page(32), poison, Stored::Q8_0)
        }
    }
}

/// The copy of [`pool`] for one element type: `units` elements per row.
type Where<'a> = (usize, Layout, Paging, &'a [u32], usize, usize);

fn copy_pages<T: Copy>(
    t: &[T], (units, l, paging, table, heads, kv_len): Where, poison: T, wrap: fn(Vec<T>) -> Stored,
) -> (Stored, (Layout, usize)) {
    let len = paging.page_len;
    let (layout, stride) = match paging.hnd {
        true => (Layout::planar(len, units), heads * len * units),
        false => (Layout::interleaved(heads, units), len * heads * units),
    };
    let mut pool = vec![poison; (table.len() + 1) * stride];
    for g in 0..heads {
        for j in 0..kv_len {
            let n = paging.offset + j;
            let at = table[n / len] as usize * stride + layout.at(g, n % len);
            pool[at..at + units].copy_from_slice(&t[l.at(g, j)..][..units]);
        }
    }
    (wrap(pool), (layout, stride))
}
