//! Which keys each query row sees: [`Mask`], a band of key positions around the row's
//! position, and [`QueryPos`], where the rows sit among the keys.

/// Where query row `i` sits among the keys, for the causal and window masks.
///
/// Query `i` has the absolute position `offset + i`, compared with key positions `0..kv_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum QueryPos {
    /// `offset = kv_len - q_len`: the queries are the last `q_len` positions. This is the
    /// KV-cache convention (a decoded token sees the whole cache) and the default.
    #[default]
    BottomRight,
    /// `offset = 0`: query `i` sits at position `i`.
    TopLeft,
    /// An explicit offset; it may be negative.
    Offset(i64),
}

/// Which keys each query row may attend to: the band `pos - left ..= pos + right` of key
/// positions, where `pos` is the row's position ([`QueryPos`]).
///
/// `None` leaves a side unbounded. Keys outside the band are skipped (they are loop bounds,
/// never multiplied by zero): whole blocks outside every row's band are not read at all, and
/// inside a block an excluded key's score is discarded and its `v` row not read for that row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Mask {
    /// Keys at most this many positions before the query; `None`: no limit.
    pub left: Option<usize>,
    /// Keys at most this many positions after the query; `Some(0)` is causal; `None`: no limit.
    pub right: Option<usize>,
    /// Where the query rows sit.
    pub query_pos: QueryPos,
}

impl Mask {
    /// Every key is visible to every query.
    pub const NONE: Mask = Mask {
        left: None,
        right: None,
        query_pos: QueryPos::BottomRight,
    };

    /// Causal: query `i` sees keys up to its own position, bottom-right aligned.
    pub const fn causal() -> Mask {
        Mask {
            left: None,
            right: Some(0),
            query_pos: QueryPos::BottomRight,
        }
    }

    /// Causal sliding window: query at `pos` sees keys `pos - window ..= pos`.
    pub const fn sliding_window(window: usize) -> Mask {
        Mask {
            left: Some(window),
            right: Some(0),
            query_pos: QueryPos::BottomRight,
        }
    }

    /// The same mask with keys up to `right` positions after the query visible.
    pub const fn with_right(self, right: Option<usize>) -> Mask {
        Mask { right, ..self }
    }

    /// The same mask with the queries aligned as `query_pos` says.
    pub const fn aligned(self, query_pos: QueryPos) -> Mask {
        Mask { query_pos, ..self }
    }
}
