//! The phases of a block: each step (Q packing, scores, the online-softmax step, weighted
//! values) runs as a call of its own ([`phase`]), entered with the level's target features.
//! [`Step`] holds the steps that do not depend on the K/V types, [`Stored`] those of decode
//! that read K or V as stored.

use super::mem::{self, with_count};
use super::scratch::Scratch;
use super::widen::{Phase, Widen};
use super::{Block, Inputs, Keys};
use crate::kv::KvType;

/// Runs a phase in a frame of its own, entered with the level's target features.
///
/// Every phase of a block is a call: the code of a phase that does not depend on the K/V
/// types exists once per level, however many type pairs call it; and on the scalar level,
/// what microcontrollers run, the stack holds one phase's frame at a time rather than the
/// spills of all of them inlined into one. A phase is long enough (a block of keys) that the
/// call costs nothing measurable.
#[inline(never)]
pub(super) fn phase<S: Widen, P: Phase>(simd: S, p: P) -> P::Output {
    simd.enter(p)
}

/// A phase of a block that does not depend on the K/V types: its block, inputs, key block
/// and working memory, and which step it is.
struct Step<'s, 'w> {
    block: Block,
    x: &'s Inputs<'s, 's>,
    keys: Keys,
    scratch: &'s mut Scratch<'w>,
    op: Op<'s>,
}

/// The steps of [`Step`].
pub(super) enum Op<'s> {
    /// Pack the block's Q (`qk`).
    PrepareQ,
    /// The scores of the key block against columns `d0..d0 + dw` of `head_dim`, K's rows of
    /// those columns in `k` (`qk`).
    Scores {
        d0: usize,
        dw: usize,
        k: mem::KvRows<'s>,
    },
    /// The online-softmax step (`softmax`).
    Softmax,
    /// The weighted values of the block's panel, V's rows in `v` (`pv`).
    Values(mem::KvRows<'s>),
}

impl Phase for Step<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Widen>(self, simd: S) {
        let (b, x, keys, scratch) = (self.block, self.x, self.keys, self.scratch);
        match self.op {
            Op::PrepareQ => b.prepare_q::<S>(x, scratch),
            Op::Scores { d0, dw, k } => b.scores_tiled(simd, x, keys, (d0, dw), k, scratch),
            Op::Softmax => b.softmax(simd, x, keys, scratch),
            Op::Values(v) => b.values_tiled(simd, keys, v, scratch),
        }
    }
}

/// A phase of a decode block that reads K or V as stored (`T`), without widening a tile:
/// the dot tile's scores ([`Block::scores_dot`]) or the key-major weighted values
/// ([`Block::pv_keys`]). One instance per level and type serves K and V alike.
struct Stored<'s, 'w, T> {
    block: Block,
    x: &'s Inputs<'s, 's>,
    data: &'s [T],
    keys: Keys,
    scratch: &'s mut Scratch<'w>,
    read: Read,
}

/// Which tensor a [`Stored`] phase reads.
#[derive(Clone, Copy)]
pub(super) enum Read {
    Scores,
    Values,
}

impl<T: KvType> Phase for Stored<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Widen>(self, simd: S) {
        let (b, x, data, keys, scratch) = (self.block, self.x, self.data, self.keys, self.scratch);
        match self.read {
            Read::Scores => {
                with_count!(b.rows, [4, 3, 2], 1, M => b.scores_dot::<S, T, M>(simd, x, data, keys, scratch))
            }
            // (Never on one lane, `weighted_values` says: its instances are left out there.)
            Read::Values if S::F32_LANES > 1 => {
                with_count!(b.rows, [4, 3, 2], 1, M => b.pv_keys::<S, T, M>(simd, x, data, keys, scratch))
            }
            Read::Values => {}
        }
    }
}

/// The weighted values of a decode block through the register tiles, V read as stored
/// (`T`, narrower than `f32`: `f32` V takes them as a [`Step`]); a phase of its own rather than
/// a [`Stored`] one, whose frame would then hold both tiles'.
struct StoredValues<'s, 'w, T> {
    block: Block,
    x: &'s Inputs<'s, 's>,
    v: &'s [T],
    keys: Keys,
    scratch: &'s mut Scratch<'w>,
}

impl<T: KvType> Phase for StoredValues<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Widen>(self, simd: S) {
        self.block
            .values_stored(simd, self.x, self.v, self.keys, self.scratch)
    }
}

impl Block {
    /// Runs a [`StoredValues`] phase of the block over `v`.
    #[inline(always)]
    pub(super) fn stored_values_step<S: Widen, T: KvType>(
        self, simd: S, x: &Inputs, (v, keys): (&[T], Keys), scratch: &mut Scratch,
    ) {
        let values = StoredValues {
            block: self,
            x,
            v,
            keys,
            scratch,
        };
        phase(simd, values)
    }

    /// Runs a [`Stored`] phase of the block over `data`, K or V as `read` says.
    #[inline(always)]
    pub(super) fn stored_step<S: Widen, T: KvType>(
        self, simd: S, x: &Inputs, (data, keys): (&[T], Keys), scratch: &mut Scratch, read: Read,
    ) {
        let stored = Stored {
            block: self,
            x,
            data,
            keys,
            scratch,
            read,
        };
        phase(simd, stored)
    }

    /// Runs one [`Step`] of the block as a [`phase`].
    #[inline(always)]
    pub(super) fn step<S: Widen>(
        self, simd: S, x: &Inputs, keys: Keys, scratch: &mut Scratch, op: Op,
    ) {
        let step = Step {
            block: self,
            x,
            keys,
            scratch,
            op,
        };
        phase(simd, step)
    }
}
