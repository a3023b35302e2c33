//! The kernel's tuning constants, each documented by the loop it cuts, and the compile-time
//! checks that keep them consistent. `benches/NOTES.md` records the measurements behind them.

use pulp::Simd;

use super::mem::StreamHint;
use crate::dispatch::Cpu;
use crate::kv::{KvKind, KvType};

/// Query rows per block at full size: the lanes of the score tile, and the rows that share
/// each K and V block read. A multiple of every lane count (1, 4, 8, 16).
pub const BLOCK_Q: usize = 48;
/// Keys per block at full size: a multiple of every key tile ([`KR_WIDE`], [`KR_NARROW`],
/// [`KR_WIDE_SCALAR`]), and at most 64 so a row's included keys fit in a `u64` bit set.
/// 24 ran prefill-4k-d128 1.06–1.08× slower on an Intel Xeon with AMX, and 56 (with a 4-key
/// AVX2 tile) within noise there (benches/NOTES.md 33).
pub(crate) const BLOCK_K: usize = 48;
/// Columns of `head_dim` in the packed Q block at full size. Up to this, Q is packed once
/// per block of rows and the scores of a key tile are summed in registers over the whole
/// head; beyond it the head is done in panels, and Q is re-packed per key block.
pub(crate) const Q_DIM: usize = 128;
/// Columns of `v_dim` accumulated per pass at full size; a multiple of every lane count.
/// Wider values are done in several passes, each recomputing the scores.
pub(crate) const V_PANEL: usize = 128;
/// The most `f32` lanes of any instance: rows and key rows of the tiles are padded to it.
pub(crate) const MAX_LANES: usize = 16;

/// The tile sizes a call may run with, best first: the first that fits the working memory
/// given (each clamped to what the shape needs) is used. `(rows, keys, q columns, v
/// columns)` per block. Smaller tiles cost speed, never correctness:
/// - fewer Q columns re-pack Q per key block (a copy of `rows × q columns` per block);
/// - fewer rows read each K and V block for fewer rows (more memory traffic);
/// - fewer V columns recompute the scores for every V panel (the Q·Kᵀ work again);
/// - blocks of at most `MR` rows take the decode path, whose keys need only be a multiple
///   of the lanes; packed blocks need keys in multiples of every key tile (24).
///
/// The last entry is the minimum: one row, 16 keys, 16 V columns, whatever the shape.
pub(crate) const TILE_TABLE: [(usize, usize, usize, usize); 9] = [
    (BLOCK_Q, BLOCK_K, Q_DIM, V_PANEL),
    (BLOCK_Q, BLOCK_K, 64, V_PANEL),
    (BLOCK_Q, BLOCK_K, 32, 64),
    (16, 24, 32, 64),
    (16, 24, 16, 32),
    (MR, 16, 0, 32),
    (MR, 16, 0, 16),
    (2, 16, 0, 16),
    (1, 16, 0, 16),
];
/// Blocks of at most this many rows (decode with a GQA group of up to 4) take the unpacked
/// Q·Kᵀ path and the per-row softmax.
pub(crate) const MR: usize = 4;
/// Query rows of the P·V register tile: `PV_ROWS × NV_WIDE` = 24 accumulators with 32
/// registers, `PV_ROWS × NV_NARROW` = 12 with 16, plus the V loads and a broadcast.
pub(crate) const PV_ROWS: usize = 6;
/// Query rows of the P·V register tile on the scalar level: `4 × NV_WIDE` = 16 accumulators.
/// With 6 rows LLVM's unrolling by two keys spilled a quarter of the tile's operands on
/// Cortex-M4F (32 single-precision registers); with 4, none (`benches/NOTES.md` 23).
pub(crate) const PV_ROWS_SCALAR: usize = 4;

/// The query rows of level `S`'s P·V register tile.
#[inline(always)]
pub(crate) const fn pv_rows<S: Simd>() -> usize {
    match S::F32_LANES {
        1 => PV_ROWS_SCALAR,
        _ => PV_ROWS,
    }
}
/// Keys of the Q·Kᵀ register tile on levels with 32 vector registers (AVX-512, NEON):
/// `KR_WIDE × QR_WIDE` = 24 accumulators, 3 row loads and a broadcast.
pub(crate) const KR_WIDE: usize = 8;
/// Vectors of query rows of the Q·Kᵀ register tile with 32 registers (48 rows on AVX-512).
pub(crate) const QR_WIDE: usize = 3;
/// The wide Q·Kᵀ tile of the scalar level (one lane): 4 keys × 4 rows = 16 accumulators,
/// the rows side by side so LLVM can vectorise them where the target has SIMD. With 6 keys
/// (24 accumulators) LLVM's unrolling by two columns spilled 17 values per step on
/// Cortex-M4F (`benches/NOTES.md` 23).
pub(crate) const KR_WIDE_SCALAR: usize = 4;
/// Rows of the scalar level's Q·Kᵀ tile.
pub(crate) const QR_WIDE_SCALAR: usize = 4;
/// Keys of the Q·Kᵀ register tile with 16 registers (AVX2): `KR_NARROW × QR_NARROW`
/// = 12 accumulators, more than FMA latency × throughput, plus 2 loads and a broadcast.
pub(crate) const KR_NARROW: usize = 6;
/// Vectors of query rows of the Q·Kᵀ register tile with 16 registers.
pub(crate) const QR_NARROW: usize = 2;
/// Vectors of `v_dim` of the P·V register tile on wide levels (see [`wide`]).
pub(crate) const NV_WIDE: usize = 4;
/// The same with 16 registers.
pub(crate) const NV_NARROW: usize = 2;

/// Keys of the decode dot tile with 32 vector registers (AVX-512, NEON) for K stored in 16
/// or 8 bits: `M ≤ MR` rows × 4 keys of accumulators, reduced four at a time
/// (`Widen::sum4`). On Zen 4 (AVX-512), with 4 keys instead of 2 an f16 decode-32k took 8–9%
/// less time (benches/NOTES.md 26). On an Intel Xeon with AMX (KVM family 6 model 167),
/// AVX-512, against 2 keys: q8_0 decode 0.90–1.01× the time at 512 to 32k keys (3 rounds
/// each), f16 decode-32k 0.98–1.07× (5 rounds; benches/NOTES.md 37). NEON follows the register count, unmeasured (no Arm machine;
/// qemu is no timer).
pub(crate) const DOT_KEYS_WIDE: usize = 4;
/// The same with 16 registers (AVX2), on the scalar level, and for `f32` K on every level:
/// `M` × 2 keys (one key alone gets two chains per row). With 4, AVX2 spilled and ran 4–6%
/// slower (Zen 4). `f32` K with 32 registers (AVX-512) on the Intel Xeon above: 2 keys took
/// 0.80–0.86× the time of 4 at 32k keys (decode, 32/8 heads, d128, 8 rounds), 0.86–0.98× at
/// 4k, 0.81–0.89× at 512 (in L2; 3 rounds each). (On Zen 4 an earlier kernel had run f32 at 4k keys 9% faster
/// with 4 and the same at 32k, benches/NOTES.md 26: not measured again.)
pub(crate) const DOT_KEYS_NARROW: usize = 2;

/// The keys of level `S`'s decode dot tile for K stored as `T`.
#[inline(always)]
pub(crate) const fn dot_keys<S: Simd, T: KvType>() -> usize {
    let narrow_k = !matches!(T::KIND, KvKind::F32);
    match S::REGISTER_COUNT >= 32 && S::F32_LANES > 1 && narrow_k {
        true => DOT_KEYS_WIDE,
        false => DOT_KEYS_NARROW,
    }
}
/// Keys of the decode P·V tile (key-major, on the SIMD levels): `M ≤ MR` rows × 4 keys of
/// broadcast weights, the accumulators read and written once per 4 keys. On AVX-512, 2 and 8
/// keys were 20% and 8% slower from memory (Zen 5). With 16 registers (AVX2) the 16 weights
/// do not all stay in registers and are broadcast from memory as they are used, and 4 keys
/// still beat 2 (measured on Zen 4, alternating builds, 7–9 rounds): decode-32k f16
/// 0.84–0.87× the time, f32 0.92–0.93×, f32 at 4k keys 0.85× (benches/NOTES.md 29).
pub(crate) const PV_KEYS: usize = 4;

/// How far ahead, in keys, the decode path asks for K rows (V rows are asked for a block
/// ahead, [`BLOCK_K`]). Without prefetches decode ran at about half the streaming bandwidth on
/// Zen 5; with one request per line read, 24 measured best at 32k keys there: AVX-512 lost
/// 10–20% at 32 and 48 and 7% at 16; AVX2 was within noise from 16 to 48 and lost 10% at 8.
/// On an Intel Xeon with AMX (KVM family 6 model 167) 12, 24 and 48 were within noise with
/// `prefetcht1` (benches/NOTES.md 33).
pub(crate) const PREFETCH_KEYS: usize = 24;

/// Keys per decode block through pages longer than a block of `keys`: the longest multiple
/// of 4 (the tiles' key steps), from 16 to `keys`, that divides `page_len`, so that every
/// block of a page has one length; `None` where there is none (then the page is cut into
/// blocks of `keys` and a rest, as for prefill). Pages of 256 keys cut 48 × 4 + 32 × 2 ran
/// decode-32k 1.06–1.07× the time of the same K/V in order (the pages in place, so only the
/// cut differs), and in blocks of 32 1.00–1.02×; pages of 128 (48 + 40 + 40) 1.07–1.09×
/// against 1.01×; pages of 64 cut 24 + 24 + 16 1.20–1.23× against 32 + 32's 1.02× (AVX-512,
/// f32; f16 and AVX2 alike within their noise). Why a mix of lengths costs a stream that
/// much is not known. Measured on an Intel Xeon with AMX only (KVM family 6 model 167,
/// benches/NOTES.md 34).
pub(crate) const fn paged_decode_keys(page_len: usize, keys: usize) -> Option<usize> {
    if page_len <= keys {
        return None;
    }
    let mut d = keys - keys % 4;
    while d >= 16 {
        if page_len.is_multiple_of(d) {
            return Some(d);
        }
        d -= 4;
    }
    None
}

/// Decode blocks that read K and V together, a key block of each in turn
/// (`kernel::run_together`), where the kv heads' rows lie side by side, when the working
/// memory holds their tiles. 8 covers the kv heads of most models, and 8 heads' rows make
/// runs long enough for the memory where there are more. Targets without a SIMD level
/// (microcontrollers, mostly cacheless) take one: the code stays out.
pub(crate) const BLOCKS_TOGETHER: usize =
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        8
    } else {
        1
    };

/// Side by side, for [`BLOCKS_TOGETHER`]: each kv head's rows start less than this after
/// the previous head's. Read head by head, such rows are a short run per head and page (or
/// row), each a restart of the memory's stream; rows further apart are long runs that read
/// best one head at a time. Decode-32k (32/8 heads, d128), the blocks one at a time → together,
/// time against planar K and V, on an Intel Xeon with AMX (KVM family 6 model 167),
/// AVX-512, two rounds (benches/NOTES.md 37):
///
/// | K and V, f32 (f16) | heads apart | one at a time | together |
/// | --- | --- | --- | --- |
/// | interleaved | 512 B (256 B) | 1.84–1.92× (2.60–2.63×) | 1.11–1.12× (1.33–1.47×) |
/// | pages of 16, `[page][key][head][dim]` | 512 B (256 B) | 1.99–2.11× (3.21–3.22×) | 0.99–1.00× (1.41–1.52×) |
/// | pages of 256, `[page][key][head][dim]` | 512 B (256 B) | 1.91–1.93× (2.70–2.78×) | 1.07× (1.19–1.30×) |
/// | pages of 16, `[page][head][key][dim]` | 8 KiB (4 KiB) | 1.28–1.35× (1.79–1.89×) | 1.20–1.22× (1.45–1.58×) |
/// | pages of 64, `[page][head][key][dim]` | 32 KiB (16 KiB) | 1.08× (1.30–1.33×) | 1.13–1.14× (1.22–1.35×) |
/// | pages of 256, `[page][head][key][dim]` | 128 KiB (64 KiB) | 1.02× (1.14–1.16×) | 1.08–1.10× (1.17–1.30×) |
pub(crate) const HEADS_APART_BYTES: usize = 16 * 1024;

/// How many blocks later, in the order [`BLOCKS_TOGETHER`] blocks read K and V, are the
/// rows a block's tiles ask for while reading its own: decode-32k (32/8 heads, d128) with
/// interleaved K and V, f16 / f32, AVX-512, on an Intel Xeon with AMX (KVM family 6 model 167),
/// against the planar time: 1 block 1.65× / 0.92×, 2 blocks 1.35× / 0.92×, 4 blocks 1.38× /
/// 0.93×, 8 (a head's own next key block) 1.78× / 1.10×; pages of 16 keys, `[page][key][head]
/// [dim]` 1.67× / 0.87×, 1.39× / 0.84×, 1.32× / 0.84×, 1.31× / 0.91×, and
/// `[page][head][key][dim]` 1.19× / 1.18×, 1.19× / 1.15×, 1.15× / 1.16×, 1.14× / 1.14×
/// (benches/NOTES.md 37).
pub(crate) const TOGETHER_AHEAD: usize = 4;

/// Whether the blocks of a turn ([`BLOCKS_TOGETHER`]) whose key block's rows of every head
/// are one run (interleaved K and V, pages `[page][key][head][dim]`) ask for the next key
/// block's rows in shares, block `i` the `i`th, so that the turn asks for the run in the
/// order it lies, rather than each for the rows read [`TOGETHER_AHEAD`] blocks later: with
/// pages longer than a key block, or none. Pages of one key block or less keep the blocks
/// later in turn. Decode-32k (32/8 heads, d128), AVX-512, on an Intel Xeon with AMX (KVM
/// family 6 model 167), builds alternated, three rounds, ms (benches/NOTES.md 38):
///
/// | K and V, f16 (f32) | blocks later | in shares |
/// | --- | --- | --- |
/// | interleaved | 14.3–14.6 (24.5–25.5) | 12.4–12.9 (22.7–25.3) |
/// | pages of 256, `[page][key][head][dim]` | 12.8–13.2 (23.4–23.8) | 12.0–12.5 (22.4–24.0) |
/// | pages of 64 | 13.2–13.4 (23.4–24.1) | 13.1–13.5 (22.6–24.2) |
/// | pages of 16 (kept: blocks later) | 14.8–15.3 (22.3–22.6) | 15.3–15.4 (23.8–24.2) |
#[inline(always)]
pub(crate) const fn prefetch_in_shares(page_len: Option<usize>, block_keys: usize) -> bool {
    match page_len {
        Some(len) => len > block_keys,
        None => true,
    }
}

/// How decode asks for the K/V lines it streams from memory, per [`Cpu`]:
/// - **AMD Zen 5 and later** (measured on Zen 5, family 26 model 2): `prefetchnta`, which the
///   [`PREFETCH_KEYS`] measurements above were taken with (75–86% of the streaming read).
/// - **Every other CPU**: `prefetcht1`, into L2, where the hardware's own stream prefetchers
///   put lines on the cores we know. Measured on Zen 4 (family 25 model 17): decode-32k took
///   33–36 ms with `prefetchnta` or `prefetcht0` and 19–22 ms with `prefetcht1` or
///   `prefetcht2` (benches/NOTES.md 26). On an Intel Xeon with AMX and AVX512-FP16 (KVM
///   reports family 6 model 167; 2 MiB L2, 480 MiB L3): 0.86× the time of `prefetcht0` with
///   AVX-512 and 0.83× with AVX2, `prefetchnta` 2.1× (benches/NOTES.md 33). On Emerald Rapids
///   (family 6 model 207) `prefetcht0` had run at twice the speed of `prefetchnta`
///   (benches/NOTES.md 16); `prefetcht1` was not measured there.
#[inline(always)]
pub(crate) fn stream_hint() -> StreamHint {
    match crate::dispatch::cpu() {
        Cpu::AmdZen5On => StreamHint::NonTemporal,
        Cpu::Intel | Cpu::AmdBeforeZen5 | Cpu::Other => StreamHint::SecondLevel,
    }
}

/// Whether the P·V register tile (prefill, and decode blocks that mask keys) asks for each V
/// row's lines a key block ahead, per [`Cpu`]:
/// - **AMD Zen 5 and later** (measured on Zen 5): yes. AVX2 prefill-4k-d128 went from 70–72%
///   to 78–79% of the FMA probe with it, AVX-512 within noise (benches/NOTES.md 11).
/// - **Intel** (measured on Emerald Rapids, and on a Xeon with AMX, KVM family 6 model 167):
///   no. Without it AVX-512 prefill-4k-d128 went from 58–63% to 67–69% of the probe on
///   Emerald Rapids (issue 15's measurement): the block's K, V and packed Q already overflow
///   the 48 KiB L1, and the prefetched lines evict them. With it the later Xeon took
///   1.03–1.08× the time (benches/NOTES.md 33).
/// - **AMD before Zen 5, and every other CPU** (measured on Zen 4): no. Without it AVX2
///   prefill d128 took 0.93–0.94× the time, AVX-512 0.985–0.994× (benches/NOTES.md 27).
#[inline(always)]
pub(crate) fn prefetch_values() -> bool {
    matches!(crate::dispatch::cpu(), Cpu::AmdZen5On)
}

/// Whether the wide register tiles fit: levels with 32 vector registers, and the scalar
/// level, whose targets have 32 floating-point registers (Cortex-M4F, RV32F; and on x86-64
/// LLVM turns its rows of 4 into SSE2 vectors).
#[inline(always)]
pub(crate) const fn wide<S: Simd>() -> bool {
    S::REGISTER_COUNT >= 32 || S::F32_LANES == 1
}

const _: () = assert!(
    BLOCK_K.is_multiple_of(KR_WIDE)
        && BLOCK_K.is_multiple_of(KR_NARROW)
        && BLOCK_K.is_multiple_of(KR_WIDE_SCALAR)
        && BLOCK_Q.is_multiple_of(QR_WIDE_SCALAR)
        && BLOCK_Q.is_multiple_of(16 * 3)
        && BLOCK_Q.is_multiple_of(PV_ROWS)
        && PV_ROWS_SCALAR <= PV_ROWS
        && V_PANEL.is_multiple_of(MAX_LANES)
        && BLOCK_K < u64::BITS as usize
        && MR <= BLOCK_Q
        && tile_table_is_valid()
);

/// Every entry of [`TILE_TABLE`] is a shape the tiles support.
const fn tile_table_is_valid() -> bool {
    let mut n = 0;
    while n < TILE_TABLE.len() {
        let (rows, keys, q_cols, v_cols) = TILE_TABLE[n];
        let packed_ok = rows <= MR
            || (keys.is_multiple_of(KR_WIDE)
                && keys.is_multiple_of(KR_NARROW)
                && keys.is_multiple_of(KR_WIDE_SCALAR)
                && q_cols > 0);
        if !(rows >= 1
            && rows <= BLOCK_Q
            && keys >= 1
            && keys <= BLOCK_K
            && q_cols <= Q_DIM
            && v_cols.is_multiple_of(MAX_LANES)
            && v_cols > 0
            && packed_ok)
        {
            return false;
        }
        n += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long pages are cut into blocks of one length, the longest that divides them; pages a
    /// block long or shorter, and those no multiple of 4 from 16 up divides, are not.
    #[test]
    fn paged_decode_blocks_divide_the_page() {
        let cases = [
            ((256, 48), Some(32)),
            ((128, 48), Some(32)),
            ((96, 48), Some(48)),
            ((100, 48), Some(20)),
            ((200, 48), Some(40)),
            ((64, 48), Some(32)),
            ((128, 16), Some(16)),
            ((48, 48), None),
            ((16, 48), None),
            ((52, 48), None),
            ((250, 48), None),
            ((usize::MAX, 48), None),
        ];
        for ((page_len, keys), want) in cases {
            assert_eq!(paged_decode_keys(page_len, keys), want, "{page_len} {keys}");
        }
    }
}
