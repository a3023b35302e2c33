//! The one error type of the crate.

use core::fmt;

use crate::Isa;

/// Which tensor an [`Error`] is about. Non-exhaustive: a later variant of attention may
/// add a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tensor {
    /// The queries.
    Q,
    /// The keys.
    K,
    /// The values.
    V,
    /// The output.
    Out,
    /// The log-sum-exp output.
    Lse,
    /// The additive bias.
    Bias,
    /// The sinks, one per query head.
    Sinks,
    /// The ALiBi slopes, one per query head.
    Alibi,
    /// The block table of paged K/V ([`Pages::table`](crate::Pages::table)).
    BlockTable,
}

/// Which dimension of a [`Shape`](crate::Shape) an [`Error`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// `q_heads`.
    QHeads,
    /// `kv_heads`.
    KvHeads,
    /// `head_dim`.
    HeadDim,
    /// `v_dim`.
    VDim,
}

/// Why an attention call was refused.
///
/// Every check runs before anything is written: on `Err`, `out` and `lse` are untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A dimension that must be at least 1 is 0. (`q_len = 0` and `kv_len = 0` are allowed;
    /// see [`Shape`](crate::Shape).)
    ZeroDim(Dim),
    /// `q_heads` is not a multiple of `kv_heads`.
    HeadsNotDivisible {
        /// The number of query heads.
        q_heads: usize,
        /// The number of key/value heads.
        kv_heads: usize,
    },
    /// The slice is shorter than the last element that the shape and strides reach.
    TooShort {
        /// The tensor whose slice is too short.
        tensor: Tensor,
        /// Elements the shape and strides reach.
        needed: usize,
        /// Elements the slice holds.
        len: usize,
    },
    /// Computing the extent of a tensor overflowed `usize`.
    Overflow(Tensor),
    /// The strides of an output tensor make two of its elements share memory.
    Overlap(Tensor),
    /// `scale` is NaN or infinite.
    InvalidScale,
    /// The softcap is not finite and positive.
    InvalidSoftcap,
    /// Paged K/V with a [`page_len`](crate::Pages::page_len) of 0.
    ZeroPageLen,
    /// The params read K and V through pages, which this build of the library leaves out
    /// (it lacks the feature `paged-kv`).
    PagesNotBuilt,
    /// The cumulative offsets of a ragged [`Batch`](crate::ragged::Batch) do not describe
    /// the packed tensors: the two lists differ in length or are empty, or an entry is not
    /// 0 (the first), less than the one before, or the total (the last).
    Batch {
        /// The first entry found wrong (for lists of different lengths, the shorter's length).
        index: usize,
    },
    /// The params set a softcap, sinks or ALiBi slopes, which this build of the library
    /// leaves out (it lacks the feature `softmax-variants`).
    VariantsNotBuilt,
    /// The requested instruction set is not usable on this CPU (or not compiled in).
    Unsupported(Isa),
    /// The working memory passed to a call is smaller than the least it can run in.
    WorkspaceTooSmall {
        /// The least number of `f32`s that runs this shape.
        needed: usize,
        /// The number of `f32`s given.
        len: usize,
    },
    /// K or V is stored in blocks (`q8_0`, 32 values) and its row length (`head_dim` for
    /// K, `v_dim` for V) is not a multiple of the block.
    BlockSize {
        /// [`Tensor::K`] or [`Tensor::V`].
        tensor: Tensor,
        /// The row length.
        dim: usize,
        /// Values per block.
        block: usize,
    },
    /// A task index past the last task of a [`Plan`](crate::plan::Plan).
    TaskIndex {
        /// The index given.
        task: usize,
        /// The plan's number of tasks for the shape.
        tasks: usize,
    },
    /// A range of keys (split-KV partials, streaming chunks) is not within `0..=kv_len`, or
    /// its start is after its end.
    KeyRange {
        /// First key of the range.
        start: usize,
        /// One past the last key of the range.
        end: usize,
        /// The number of keys of the problem.
        kv_len: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroDim(d) => write!(f, "dimension {d:?} is 0; it must be at least 1"),
            Error::HeadsNotDivisible { q_heads, kv_heads } => {
                write!(
                    f,
                    "q_heads ({q_heads}) is not a multiple of kv_heads ({kv_heads})"
                )
            }
            Error::TooShort {
                tensor,
                needed,
                len,
            } => write!(
                f,
                "{tensor:?} holds {len} elements but its shape and strides reach {needed}"
            ),
            Error::Overflow(t) => write!(f, "the extent of {t:?} overflows usize"),
            Error::Overlap(t) => write!(f, "the strides of {t:?} make elements overlap"),
            Error::InvalidScale => f.write_str("scale is NaN or infinite"),
            Error::InvalidSoftcap => f.write_str("the softcap is not finite and positive"),
            Error::ZeroPageLen => f.write_str("page_len is 0; it must be at least 1"),
            Error::Batch { index } => {
                write!(
                    f,
                    "entry {index} of the ragged batch's cumulative offsets is wrong"
                )
            }
            Error::PagesNotBuilt => {
                f.write_str("paged K/V set in a build without the feature paged-kv")
            }
            Error::VariantsNotBuilt => f.write_str(
                "softcap, sinks or ALiBi set in a build without the feature softmax-variants",
            ),
            Error::Unsupported(isa) => write!(f, "{} is not available on this CPU", isa.name()),
            Error::WorkspaceTooSmall { needed, len } => write!(
                f,
                "the workspace holds {len} floats but this shape needs at least {needed}"
            ),
            Error::BlockSize { tensor, dim, block } => write!(
                f,
                "{tensor:?} is stored in blocks of {block} values but its rows have {dim}"
            ),
            Error::TaskIndex { task, tasks } => {
                write!(
                    f,
                    "task {task} is past the last of the plan's {tasks} tasks"
                )
            }
            Error::KeyRange { start, end, kv_len } => write!(
                f,
                "the key range {start}..{end} is not within the {kv_len} keys of the problem"
            ),
        }
    }
}

impl core::error::Error for Error {}
