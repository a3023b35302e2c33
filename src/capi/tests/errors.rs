//! The one `Error` → status mapping: every variant has its documented status, and every
//! entry point returns each variant it can produce as that status, writing nothing.

use super::super::*;
use super::{data, desc};
use crate::capi_split::*;
use crate::{Dim, Tensor};
use core::ops::Range;
extern crate std;
use std::{vec, vec::Vec};

mod buffers;
use buffers::Buffers;

/// One value of every [`Error`] variant, with the status the docs give it.
const EVERY_ERROR: [(Error, QkvStatus); 16] = [
    (Error::ZeroDim(Dim::VDim), QKV_ERR_ZERO_DIM),
    (
        Error::HeadsNotDivisible {
            q_heads: 3,
            kv_heads: 2,
        },
        QKV_ERR_HEADS_NOT_DIVISIBLE,
    ),
    (
        Error::TooShort {
            tensor: Tensor::Q,
            needed: 24,
            len: 1,
        },
        QKV_ERR_TOO_SHORT,
    ),
    (Error::Overflow(Tensor::Q), QKV_ERR_OVERFLOW),
    (Error::Overlap(Tensor::Out), QKV_ERR_OVERLAP),
    (Error::InvalidScale, QKV_ERR_INVALID_SCALE),
    (Error::Unsupported(Isa::Scalar), QKV_ERR_UNSUPPORTED),
    (
        Error::KeyRange {
            start: 0,
            end: 6,
            kv_len: 5,
        },
        QKV_ERR_TOO_SHORT,
    ),
    (
        Error::WorkspaceTooSmall { needed: 58, len: 1 },
        QKV_ERR_WORKSPACE_TOO_SMALL,
    ),
    (
        Error::BlockSize {
            tensor: Tensor::K,
            dim: 4,
            block: 32,
        },
        QKV_ERR_BLOCK_SIZE,
    ),
    (Error::TaskIndex { task: 99, tasks: 6 }, QKV_ERR_TASK),
    (Error::InvalidSoftcap, QKV_ERR_INVALID_SOFTCAP),
    (Error::VariantsNotBuilt, QKV_ERR_VARIANT),
    (Error::ZeroPageLen, QKV_ERR_ZERO_DIM),
    (Error::PagesNotBuilt, QKV_ERR_VARIANT),
    (Error::Batch { index: 1 }, QKV_ERR_TOO_SHORT),
];

/// The index of `e`'s variant in [`EVERY_ERROR`]. No wildcard arm: a new variant does not
/// compile here until it is listed there (and so tested below).
fn variant(e: Error) -> usize {
    match e {
        Error::ZeroDim(_) => 0,
        Error::HeadsNotDivisible { .. } => 1,
        Error::TooShort { .. } => 2,
        Error::Overflow(_) => 3,
        Error::Overlap(_) => 4,
        Error::InvalidScale => 5,
        Error::Unsupported(_) => 6,
        Error::KeyRange { .. } => 7,
        Error::WorkspaceTooSmall { .. } => 8,
        Error::BlockSize { .. } => 9,
        Error::TaskIndex { .. } => 10,
        Error::InvalidSoftcap => 11,
        Error::VariantsNotBuilt => 12,
        Error::ZeroPageLen => 13,
        Error::PagesNotBuilt => 14,
        Error::Batch { .. } => 15,
    }
}

#[test]
fn every_error_maps_to_its_documented_status() {
    for (n, &(e, status)) in EVERY_ERROR.iter().enumerate() {
        assert_eq!(variant(e), n, "{e:?} is listed out of place");
        assert_eq!(error_status(e), status, "{e:?}");
        assert_ne!(status, QKV_ERR_INTERNAL);
    }
}

/// The entry points that report [`Error`]s (`qkv_stream_state_len` reports none).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    Attention,
    AttentionWs,
    AttentionIsa,
    Reference,
    Partial,
    PartialWs,
    Merge,
    StreamInit,
    StreamUpdate,
    StreamUpdateWs,
    StreamFinish,
    PlanRunTask,
    PlanFinish,
    AddSinks,
    #[cfg(feature = "capi-ragged")]
    Ragged,
    #[cfg(all(feature = "capi-ragged", feature = "parallel"))]
    RaggedParallel,
}

const ENTRIES: &[Entry] = &[
    Entry::Attention,
    Entry::AttentionWs,
    Entry::AttentionIsa,
    Entry::Reference,
    Entry::Partial,
    Entry::PartialWs,
    Entry::Merge,
    Entry::StreamInit,
    Entry::StreamUpdate,
    Entry::StreamUpdateWs,
    Entry::StreamFinish,
    Entry::PlanRunTask,
    Entry::PlanFinish,
    Entry::AddSinks,
    #[cfg(feature = "capi-ragged")]
    Entry::Ragged,
    #[cfg(all(feature = "capi-ragged", feature = "parallel"))]
    Entry::RaggedParallel,
];

/// The variants `entry` cannot return, each for the reason given.
fn unreachable(entry: Entry) -> Vec<usize> {
    let unsupported = variant(Error::Unsupported(Isa::Scalar));
    let key_range = variant(EVERY_ERROR[7].0);
    let overlap = variant(Error::Overlap(Tensor::Out));
    let scale = variant(Error::InvalidScale);
    let workspace = variant(EVERY_ERROR[8].0);
    let block = variant(EVERY_ERROR[9].0);
    let task = variant(EVERY_ERROR[10].0);
    let softcap = variant(Error::InvalidSoftcap);
    let mut never = match entry {
        // Only a forced level can be unsupported; only split-KV and streams take key ranges;
        // only the `_ws` calls (and plan tasks) take a workspace.
        Entry::Attention | Entry::Reference => vec![unsupported, key_range, workspace],
        #[cfg(all(feature = "capi-ragged", feature = "parallel"))]
        Entry::RaggedParallel => vec![unsupported, key_range, workspace],
        #[cfg(feature = "capi-ragged")]
        Entry::Ragged => vec![unsupported, key_range, workspace],
        Entry::AttentionWs => vec![unsupported, key_range],
        Entry::AttentionIsa => vec![key_range, workspace],
        Entry::Partial => vec![unsupported, workspace],
        Entry::PartialWs => vec![unsupported],
        // A merge reads no scale, softcap and no keys (so no K/V type); nor does adding
        // the sinks.
        Entry::Merge | Entry::AddSinks => {
            vec![unsupported, key_range, scale, workspace, block, softcap]
        }
        // The state's own layout is planar, so it cannot overlap; no keys at init.
        Entry::StreamInit => vec![unsupported, key_range, overlap, workspace, block],
        Entry::StreamUpdate => vec![unsupported, overlap, workspace],
        Entry::StreamUpdateWs => vec![unsupported, overlap],
        Entry::StreamFinish => vec![unsupported, key_range, workspace, block],
        // A task writes its part of the partial buffer, not `out`.
        Entry::PlanRunTask => vec![unsupported, key_range, overlap],
        // The merge of the partials reads no keys.
        Entry::PlanFinish => vec![unsupported, key_range, workspace, block],
    };
    // Only a task has an index.
    if entry != Entry::PlanRunTask {
        never.push(task);
    }
    // This build has the variants (`validate.rs` tests the refusal without them).
    never.push(variant(Error::VariantsNotBuilt));
    // Calls that read no K or V never look at the pages.
    if matches!(
        entry,
        Entry::Merge
            | Entry::AddSinks
            | Entry::StreamInit
            | Entry::StreamFinish
            | Entry::PlanFinish
    ) {
        never.push(variant(Error::ZeroPageLen));
    }
    // This build has paged K/V (`pages.rs` tests the refusal without it).
    never.push(variant(Error::PagesNotBuilt));
    // Only the ragged calls take offsets.
    if !is_ragged(entry) {
        never.push(variant(Error::Batch { index: 0 }));
    }
    never
}

/// Whether `entry` is one of the ragged calls, which take `cu_q` and `cu_k`.
fn is_ragged(entry: Entry) -> bool {
    #[cfg(all(feature = "capi-ragged", feature = "parallel"))]
    if entry == Entry::RaggedParallel {
        return true;
    }
    #[cfg(feature = "capi-ragged")]
    if entry == Entry::Ragged {
        return true;
    }
    let _ = entry;
    false
}

/// A call that must fail with `error`: the descriptor, key range, level, state length,
/// workspace length and, for the ragged calls, offsets to pass.
struct Case {
    error: Error,
    desc: QkvDesc,
    keys: Range<usize>,
    isa: i32,
    state_len: usize,
    ws_len: usize,
    /// `cu_q` and `cu_k`; none for two sequences that describe the descriptor's totals.
    offsets: Option<([usize; 3], [usize; 3])>,
}

/// Room for every tensor of every case below.
const ROOM: usize = 256;
/// Room for the workspace of the `_ws` calls: more than `qkv_workspace_size` of [`desc`].
const WS_ROOM: usize = 1024;

/// The cases of `entry`, one or more per variant it can return, on [`desc`]'s problem.
fn cases(entry: Entry) -> Vec<Case> {
    let base = desc();
    let case = |error, desc| Case {
        error,
        desc,
        keys: 0..5,
        isa: Isa::Scalar as i32,
        state_len: ROOM,
        ws_len: WS_ROOM,
        offsets: None,
    };
    let scaled = |d| QkvDesc {
        flags: QKV_FLAG_SCALE,
        scale: 0.5,
        ..d
    };
    let huge = QkvLayout {
        head_stride: usize::MAX,
        row_stride: 4,
    };
    let (too_short, overflow) = match entry {
        // No tensor is read: the state is short, or its length overflows.
        Entry::StreamInit => (
            Case {
                state_len: 1,
                ..case(EVERY_ERROR[2].0, base)
            },
            case(
                Error::Overflow(Tensor::Out),
                QkvDesc {
                    q_len: usize::MAX,
                    ..base
                },
            ),
        ),
        // `q` is not read: a count of `out` below its extent, or with strides whose extent
        // overflows.
        Entry::Merge | Entry::StreamFinish | Entry::PlanFinish | Entry::AddSinks => (
            case(
                EVERY_ERROR[2].0,
                QkvDesc {
                    out_count: 1,
                    ..base
                },
            ),
            case(
                Error::Overflow(Tensor::Out),
                QkvDesc {
                    out: huge,
                    out_count: 4,
                    ..base
                },
            ),
        ),
        _ => (
            case(EVERY_ERROR[2].0, QkvDesc { q_count: 1, ..base }),
            case(
                Error::Overflow(Tensor::Q),
                QkvDesc {
                    q: huge,
                    q_count: 4,
                    ..base
                },
            ),
        ),
    };
    let mut all = vec![
        case(
            Error::ZeroDim(Dim::VDim),
            scaled(QkvDesc::planar(2, 2, 3, 5, 4, 0)),
        ),
        case(EVERY_ERROR[1].0, scaled(QkvDesc::planar(3, 2, 3, 5, 4, 4))),
        too_short,
        overflow,
        case(
            Error::Overlap(Tensor::Out),
            QkvDesc {
                out: QkvLayout::default(),
                ..base
            },
        ),
        case(
            Error::InvalidScale,
            QkvDesc {
                scale: f32::NAN,
                ..base
            },
        ),
        case(
            Error::InvalidSoftcap,
            QkvDesc {
                softcap: -1.0,
                ..base
            },
        ),
        // Past `kv_len`, and reversed.
        case(EVERY_ERROR[7].0, base),
        #[allow(clippy::reversed_empty_ranges)]
        Case {
            keys: 3..2,
            ..case(EVERY_ERROR[7].0, base)
        },
    ];
    all[7].keys = 0..6;
    // A level this CPU lacks (x86 has no NEON, Arm no AVX).
    if let Some(isa) = Isa::ALL.into_iter().find(|i| !i.is_available()) {
        all.push(Case {
            isa: isa as i32,
            ..case(Error::Unsupported(isa), base)
        });
    }
    // One float of workspace, fewer than any shape needs.
    all.push(Case {
        ws_len: 1,
        ..case(EVERY_ERROR[8].0, base)
    });
    // K in q8_0 blocks, with a `head_dim` of 4 (one block per row, rounded up: 9 blocks,
    // 306 bytes, within `ROOM` floats).
    all.push(case(
        EVERY_ERROR[9].0,
        QkvDesc {
            k_type: QKV_TYPE_Q8_0,
            k: QkvLayout {
                head_stride: 5,
                row_stride: 1,
            },
            ..base
        },
    ));
    // Paged K/V with pages of no key.
    static TABLE: [u32; 8] = [0; 8];
    all.push(case(
        Error::ZeroPageLen,
        QkvDesc {
            block_table: TABLE.as_ptr(),
            page_len: 0,
            ..base
        },
    ));
    // Ragged offsets whose query rows end short of `q_len`.
    all.push(Case {
        offsets: Some(([0, 2, 2], [0, 2, 5])),
        ..case(Error::Batch { index: 2 }, base)
    });
    // A task index past the plan's tasks.
    all.push(Case {
        keys: 99..100,
        ..case(EVERY_ERROR[10].0, base)
    });
    let skip = unreachable(entry);
    all.retain(|c| !skip.contains(&variant(c.error)));
    if matches!(
        entry,
        Entry::Partial | Entry::PartialWs | Entry::StreamUpdate | Entry::StreamUpdateWs
    ) {
        // A range of 2^63 keys (K and V broadcast) whose query position, shifted by its
        // first key, leaves `i64`: a part that long cannot move its window along.
        let broadcast = QkvLayout {
            head_stride: 0,
            row_stride: 0,
        };
        let shifted = QkvDesc {
            mask: QKV_MASK_CAUSAL,
            query_pos: QKV_QUERY_POS_OFFSET,
            query_offset: i64::MIN,
            kv_len: (1 << 63) + 1,
            k: broadcast,
            v: broadcast,
            ..base
        };
        all.push(Case {
            keys: 1..(1 << 63) + 1,
            ..case(Error::Overflow(Tensor::Q), shifted)
        });
    }
    all
}

/// From every entry point, each [`Error`] variant it can return comes back as
/// [`error_status`] says, with every buffer (outputs and stream state included) untouched.
#[test]
fn every_entry_point_returns_each_error_as_its_status() {
    for &entry in ENTRIES {
        let mut covered = unreachable(entry);
        for c in cases(entry) {
            let mut bufs = Buffers::new();
            if matches!(
                entry,
                Entry::StreamUpdate | Entry::StreamUpdateWs | Entry::StreamFinish
            ) {
                let init = Case {
                    error: c.error,
                    desc: desc(),
                    keys: 0..0,
                    isa: 0,
                    state_len: ROOM,
                    ws_len: 0,
                    offsets: None,
                };
                assert_eq!(bufs.call(Entry::StreamInit, &init), QKV_OK);
            }
            let before = bufs.snapshot();
            let got = bufs.call(entry, &c);
            assert_eq!(got, error_status(c.error), "{entry:?}: {:?}", c.error);
            assert!(bufs.snapshot() == before, "{entry:?}: {:?} wrote", c.error);
            covered.push(variant(c.error));
        }
        for (e, _) in EVERY_ERROR {
            assert!(
                covered.contains(&variant(e)),
                "{entry:?}: no case for {e:?}"
            );
        }
    }
}
