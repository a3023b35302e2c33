//! The kernel's working memory: the tiles of one block of query rows and the per-row state
//! of the online softmax. One field per meaning; rows are padded to whole vectors of any
//! width.

use super::config::{BLOCK_K, BLOCK_Q, MR, Q_DIM, V_PANEL};

/// Fixed-size tiles, on the stack of the call ([`STACK_BYTES`](super::STACK_BYTES)).
pub(super) struct Scratch {
    /// The block's Q, `[dim][row]`, one panel of `Q_DIM` columns (blocks of more than `MR`
    /// rows).
    pub q_pack: [f32; Q_DIM * BLOCK_Q],
    /// Scores, then weights, `[key][row]` (blocks of more than `MR` rows, and decode blocks
    /// cut by a mask edge, whose weights are copied here for the general P·V tiles).
    pub scores: [f32; BLOCK_K * BLOCK_Q],
    /// Scores, then weights, `[row][key]`, of blocks of at most `MR` rows.
    pub dot_scores: [f32; MR * BLOCK_K],
    /// Unnormalised outputs, `[row][V_PANEL]`.
    pub acc: [f32; BLOCK_Q * V_PANEL],
    /// Per row: the running max of the scores included so far (`-inf`: none yet).
    pub max: [f32; BLOCK_Q],
    /// Per row: the running sum of `e^(score − max)`.
    pub sum: [f32; BLOCK_Q],
    /// Per row: the first and one past the last key of the current block the mask lets it
    /// see, as `f32` for lane compares.
    pub window_lo: [f32; BLOCK_Q],
    pub window_hi: [f32; BLOCK_Q],
    /// Per row: the largest of its masked scores in the current block.
    pub block_max: [f32; BLOCK_Q],
    /// Per row: the smallest of its visible scores in the current block (`-inf` means some
    /// visible key is excluded by its score).
    pub min_visible: [f32; BLOCK_Q],
    /// Per row: the max the block's weights are taken against (the new running max).
    pub weight_max: [f32; BLOCK_Q],
    /// Per row: the sum of the block's weights.
    pub block_sum: [f32; BLOCK_Q],
    /// Per row: what the current key block means for it.
    pub rows: [RowBlock; BLOCK_Q],
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            q_pack: [0.0; Q_DIM * BLOCK_Q],
            scores: [0.0; BLOCK_K * BLOCK_Q],
            dot_scores: [0.0; MR * BLOCK_K],
            acc: [0.0; BLOCK_Q * V_PANEL],
            max: [0.0; BLOCK_Q],
            sum: [0.0; BLOCK_Q],
            window_lo: [0.0; BLOCK_Q],
            window_hi: [0.0; BLOCK_Q],
            block_max: [0.0; BLOCK_Q],
            min_visible: [0.0; BLOCK_Q],
            weight_max: [0.0; BLOCK_Q],
            block_sum: [0.0; BLOCK_Q],
            rows: [RowBlock::SKIP; BLOCK_Q],
        }
    }
}

/// What one key block means for one query row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct RowBlock {
    /// Every key of the block is included: the fast multi-row P·V path.
    pub whole: bool,
    /// Included keys, as bits of the block (bit `j` for key `k0 + j`); 0 means skip the row.
    pub keys: u64,
}

impl RowBlock {
    /// The row includes no key of the block.
    pub const SKIP: RowBlock = RowBlock {
        whole: false,
        keys: 0,
    };
}
