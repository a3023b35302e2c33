//! The register tiles: the only code that reads K, V and the packed tiles through raw
//! pointers. Each is an `unsafe fn` whose `# Safety` says exactly what it reads and writes;
//! the callers in `qk` and `pv` check those ranges once per call with slices.

use pulp::Simd;

use super::mem::{PREFETCHES, Rows, RowsMut, StreamHint, prefetch_at, prefetch_once};
use super::mem::{read_vector as vec, write_vector as store};
use super::widen::Widen;
use crate::kv::{self, KvKind, KvType};

/// The Q·Kᵀ register tile: `KR` keys × `N` vectors of packed query rows, over `dw` columns
/// of `head_dim`: `s[x][..] (+)= Σ_d k[x][d] · q_pack[d][..]`, broadcasting K elements from
/// the caller's rows. Adds to the scores in `s` unless `first`.
///
/// # Safety
/// For `x < KR`, `d < dw`, `n < N`: `k[x] + d` is readable, the `lanes` floats at
/// `q_pack.at(d, n·lanes)` are readable, and those at `s.at(x, n·lanes)` are readable and
/// writable.
#[inline(always)]
pub(super) unsafe fn qk_kernel<S: Simd, const KR: usize, const N: usize>(
    simd: S, k: [*const f32; KR], q_pack: Rows, s: RowsMut, dw: usize, first: bool,
) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if S::F32_LANES == 1 && N == 4 && (KR == 4 || KR == 1) {
        // SAFETY: the caller's guarantee is `qk_4x4`'s, or `qk_1x4`'s for one key (one
        // lane: column `n·lanes` is `n`).
        return unsafe {
            match KR {
                1 => super::vfp::qk_1x4(k[0], q_pack, s, dw, first),
                _ => super::vfp::qk_4x4(core::array::from_fn(|x| k[x]), q_pack, s, dw, first),
            }
        };
    }
    let lanes = S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); N]; KR];
    if !first {
        for (x, acc) in acc.iter_mut().enumerate() {
            for (n, a) in acc.iter_mut().enumerate() {
                // SAFETY: x < KR, n < N: readable by the caller's guarantee.
                *a = unsafe { vec::<S>(s.at(x, n * lanes)) };
            }
        }
    }
    for d in 0..dw {
        let qv: [S::f32s; N] = core::array::from_fn(|n| {
            // SAFETY: d < dw, n < N.
            unsafe { vec::<S>(q_pack.at(d, n * lanes)) }
        });
        for (x, acc) in acc.iter_mut().enumerate() {
            // SAFETY: x < KR and d < dw.
            let kb = simd.splat_f32s(unsafe { *k[x].add(d) });
            for n in 0..N {
                acc[n] = simd.mul_add_e_f32s(kb, qv[n], acc[n]);
            }
        }
    }
    for (x, acc) in acc.iter().enumerate() {
        for (n, &a) in acc.iter().enumerate() {
            // SAFETY: writable by the caller's guarantee.
            unsafe { store::<S>(s.at(x, n * lanes), a) };
        }
    }
}

/// Whether level `S`'s decode tiles step rows stored as `T` a whole line (a q8_0 block) at
/// a time, its vectors unrolled with one prefetch and one set of block scales per line:
/// q8_0 on the SIMD levels, where the per-vector test of `RowLoads::at` and the pointers it
/// kept in memory were nearly as many instructions as the arithmetic (AVX-512). The other
/// types test each vector (stepping their lines cost 1–4% on AVX2), and so does one lane
/// (code size; benches/NOTES.md 35).
#[inline(always)]
const fn steps_lines<S: Simd, T: KvType>() -> bool {
    S::F32_LANES > 1 && matches!(T::KIND, KvKind::Q8_0)
}

/// The decode dot tile: `s[m][x] = Σ_d q[m][d] · k[x][d]` for `m < M` query rows
/// and `X` consecutive keys stored as `K`, widened in registers, lanes along `head_dim`, `C`
/// accumulator chains per score (`M × X × C` multiply-adds in flight) and one horizontal sum
/// per score. Each 64 bytes of K read are paired with one prefetch (`hint`) of the same
/// columns of the same row of `ahead` (prefetch addresses only: they may lie anywhere).
///
/// # Safety
/// For `x < X`, the `dim` values of row `x` of `k` are readable; so are the `dim` floats at
/// every `q[m]`; and `s.at(m, x)` is writable for `m < M`, `x < X`.
#[inline(always)]
pub(super) unsafe fn dot_kernel<
    S: Widen,
    K: KvType,
    const M: usize,
    const X: usize,
    const C: usize,
>(
    simd: S, k: Rows<K>, q: [*const f32; M], dim: usize, (ahead, hint): (Rows<K>, StreamHint),
    s: RowsMut,
) {
    let lanes = S::F32_LANES;
    let line = kv::line_values(K::KIND);
    let mut acc = [[[simd.splat_f32s(0.0); C]; X]; M];
    // Multiplies the K and Q vectors of one column block into chain `c`. Index loops, not a
    // closure over iterators: at opt-level z those stayed calls, the deepest frames of a
    // firmware call (benches/NOTES.md 30).
    let fma = |acc: &mut [[[S::f32s; C]; X]; M], kv: [S::f32s; X], qv: [S::f32s; M], c: usize| {
        let mut m = 0;
        while m < M {
            let mut x = 0;
            while x < X {
                acc[m][x][c] = simd.mul_add_e_f32s(qv[m], kv[x], acc[m][x][c]);
                x += 1;
            }
            m += 1;
        }
    };
    let full = dim / lanes * lanes;
    let mut k_loads = kv::RowLoads::<S, K, X>::new(simd, core::array::from_fn(|x| k.row(x)));
    // Each turn takes a run of `C` vectors (the chains), or a whole line where the level
    // steps them ([`steps_lines`]), unrolled: its scales are read once, as its first vector
    // comes, with no test per vector.
    let by_lines = steps_lines::<S, K>();
    let step = match by_lines {
        true => line.max(C * lanes),
        false => C * lanes,
    };
    // A q8_0 row is whole blocks (validation), and a block at least `C` vectors: `step`
    // divides it, so its turns need no end test.
    debug_assert!(!by_lines || dim.is_multiple_of(step));
    let mut d = 0;
    while d < full {
        // Chain `i % C` takes vector `i` of the turn (a constant trip count keeps the chain
        // index constant and the accumulators in registers).
        for i in 0..step / lanes {
            let at = d + i * lanes;
            if !by_lines && at >= full {
                break;
            }
            // `d` is a multiple of `step`: where that is a whole number of lines, `i` alone
            // says whether `at` starts one.
            let starts_line = match step.is_multiple_of(line) {
                true => (i * lanes).is_multiple_of(line),
                false => at.is_multiple_of(line),
            };
            if starts_line {
                for x in 0..X {
                    prefetch_once(kv::value_ptr(ahead.row(x), at), hint);
                }
                // SAFETY: at < full ≤ dim: the line holding `at` is inside every row of `k`.
                unsafe { k_loads.line(simd, at) };
            }
            // SAFETY: at + lanes ≤ full ≤ dim: inside row x of `k`, in the line entered
            // (lines start at column 0, and columns come in order).
            let kv = unsafe { k_loads.get(simd, at) };
            // SAFETY: the same columns of every q row.
            let qv = core::array::from_fn(|m| unsafe { vec::<S>(q[m].add(at)) });
            fma(&mut acc, kv, qv, i % C);
        }
        d += step;
    }
    if S::F32_LANES > 1 && full < dim {
        // The loop's prefetch again, written out: shared through a closure it measured 10
        // points slower on AVX-512 decode-32k (82% → 72% of the streaming read).
        if full.is_multiple_of(line) {
            for x in 0..X {
                prefetch_once(kv::value_ptr(ahead.row(x), full), hint);
            }
        }
        // (A q8_0 row has no tail: its length is a multiple of 32, so of the lanes.)
        let units = dim / K::KIND.values();
        // SAFETY: row x holds `dim` values, `units` elements of `K`.
        let row = |x: usize| unsafe { core::slice::from_raw_parts(k.row(x), units) };
        // SAFETY: `dim - full` floats from `q[m] + full` are inside the row.
        let q_tail = |m: usize| unsafe { core::slice::from_raw_parts(q[m].add(full), dim - full) };
        fma(
            &mut acc,
            core::array::from_fn(|x| kv::load_tail(simd, row(x), full, dim - full)),
            core::array::from_fn(|m| simd.partial_load_f32s(q_tail(m))),
            0,
        );
    }
    if S::F32_LANES == 1 {
        // One lane: each chain's sum is its score (grouping them cost Cortex-M4F code).
        for (m, acc) in acc.iter().enumerate() {
            for (x, chains) in acc.iter().enumerate() {
                let sum = chains[1..]
                    .iter()
                    .fold(chains[0], |a, &b| simd.add_f32s(a, b));
                // SAFETY: writable by the caller's guarantee.
                unsafe { *s.at(m, x) = simd.reduce_sum_f32s(sum) };
            }
        }
        return;
    }
    // The M·X scores, reduced four at a time (row-major; zero vectors fill the last four).
    // Plain loops: an `array::map` closure was left out of line without the level's target
    // features, and its vector adds became calls.
    let zero = simd.splat_f32s(0.0);
    for first in (0..M * X).step_by(4) {
        let mut group = [zero; 4];
        for (k, g) in group.iter_mut().enumerate() {
            let n = first + k;
            if n < M * X {
                let chains = &acc[n / X][n % X];
                *g = chains[0];
                for &c in &chains[1..] {
                    *g = simd.add_f32s(*g, c);
                }
            }
        }
        for (k, score) in simd.sum4(group).into_iter().enumerate() {
            let n = first + k;
            if n < M * X {
                // SAFETY: n / X < M and n % X < X: writable by the caller's guarantee.
                unsafe { *s.at(n / X, n % X) = score };
            }
        }
    }
}

/// The P·V register tile: `acc[m][col..col + N·lanes] += Σ_{j < cols} w[j][m] ·
/// v[j][v_col + col..]` for `m < M`, broadcasting weights (`[key][row]`) and streaming value
/// rows stored as `T`, widened in registers; with `ahead` > 0 (`f32` rows only), each row's
/// lines `ahead` elements further on are prefetched (a hint: any address is allowed).
///
/// # Safety
/// For `m < M`, `j < cols`: `w.at(j, m)` is readable, the `N·lanes` values of row `j` of `v`
/// from column `v_col + col` are readable (`v_col + col` a multiple of the lanes), and the
/// floats at `acc.at(m, col)` are readable and writable.
#[inline(always)]
pub(super) unsafe fn pv_kernel<S: Widen, T: KvType, const M: usize, const N: usize>(
    simd: S, (v, v_col): (Rows<T>, usize), w: Rows, acc: RowsMut, col: usize, cols: usize,
    ahead: usize,
) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if S::F32_LANES == 1 && T::KIND == KvKind::F32 && M == 4 && N == 4 {
        // `T` is `f32` (its kind); a prefetch is nothing on this target.
        let v = Rows {
            ptr: v.ptr.cast::<f32>(),
            stride: v.stride,
        };
        // SAFETY: the caller's guarantee is `pv_4x4`'s (one lane: column `n·lanes` is `n`).
        return unsafe { super::vfp::pv_4x4((v, v_col), w, acc, col, cols) };
    }
    let lanes = S::F32_LANES;
    let mut a: [[S::f32s; N]; M] = core::array::from_fn(|m| {
        // SAFETY: m < M, n < N: readable by the caller's guarantee.
        core::array::from_fn(|n| unsafe { vec::<S>(acc.at(m, col + n * lanes)) })
    });
    // The key loop twice, with and without the prefetch: testing `ahead` inside it kept
    // `ahead` and a stride in memory on AVX2 (4% more instructions in prefill).
    let prefetch = PREFETCHES && ahead != 0 && T::KIND == KvKind::F32;
    // SAFETY: the caller's guarantee, passed on.
    unsafe {
        match prefetch {
            false => pv_rows::<S, T, M, N, false>(simd, &mut a, (v, v_col + col), w, cols, 0),
            true => pv_rows::<S, T, M, N, true>(simd, &mut a, (v, v_col + col), w, cols, ahead),
        }
    }
    for (m, a) in a.iter().enumerate() {
        for (n, &x) in a.iter().enumerate() {
            // SAFETY: writable by the caller's guarantee.
            unsafe { store::<S>(acc.at(m, col + n * lanes), x) };
        }
    }
}

/// [`pv_kernel`]'s key loop on its accumulators `a`, from column `col` of `v`'s rows,
/// prefetching `ahead` further on when `PREFETCH`.
///
/// # Safety
/// As [`pv_kernel`]'s for `v` and `w`.
#[inline(always)]
unsafe fn pv_rows<S: Widen, T: KvType, const M: usize, const N: usize, const PREFETCH: bool>(
    simd: S, a: &mut [[S::f32s; N]; M], (v, col): (Rows<T>, usize), w: Rows, cols: usize,
    ahead: usize,
) {
    let lanes = S::F32_LANES;
    for j in 0..cols {
        let row = v.row(j);
        let vv: [S::f32s; N] = match T::KIND {
            // A q8_0 block's scale once per row, not per vector (at opt-level z the
            // `RowLoads` of other types stay a struct: not for them).
            KvKind::Q8_0 => {
                let mut loads = kv::RowLoads::<S, T, 1>::new(simd, [row]);
                // SAFETY: j < cols, n < N: readable by the caller's guarantee.
                core::array::from_fn(|n| unsafe { loads.at(simd, col + n * lanes)[0] })
            }
            // SAFETY: as above.
            _ => core::array::from_fn(|n| unsafe { kv::load::<S, T>(simd, row, col + n * lanes) }),
        };
        if PREFETCH {
            let at = kv::value_ptr(row, col + ahead);
            for line in (0..N * lanes * size_of::<f32>()).step_by(64) {
                prefetch_at(at.wrapping_add(line));
            }
        }
        for (m, a) in a.iter_mut().enumerate() {
            // SAFETY: m < M and j < cols.
            let wb = simd.splat_f32s(unsafe { *w.at(j, m) });
            for n in 0..N {
                a[n] = simd.mul_add_e_f32s(wb, vv[n], a[n]);
            }
        }
    }
}

/// The key-major P·V tile: `acc[m][c·lanes..] += Σ_{x < X} w[m][x] · v[x][col0 + c·lanes..]`
/// for `m < M` and every whole vector `c < full` of the panel, `X` value rows stored as `V`
/// read side by side in memory order and widened in registers (`[row][key]` weights); with
/// `ahead`, the same columns of its rows are prefetched (`hint`; addresses only, anywhere),
/// one request per line read.
///
/// # Safety
/// For `x < X`, values `col0..col0 + full·lanes` of row `x` of `v` are readable, and `col0`
/// is a multiple of the lanes; for `m < M`,
/// `w.at(m, x)` is readable and the `full·lanes` floats of row `m` of `acc` are readable
/// and writable.
#[inline(always)]
pub(super) unsafe fn pv_keys_kernel<S: Widen, V: KvType, const M: usize, const X: usize>(
    simd: S, v: Rows<V>, col0: usize, w: Rows, acc: RowsMut, full: usize,
    (ahead, hint): (Option<Rows<V>>, StreamHint),
) {
    let lanes = S::F32_LANES;
    let line = kv::line_values(V::KIND);
    let wb: [[S::f32s; X]; M] = core::array::from_fn(|m| {
        core::array::from_fn(|x| {
            // SAFETY: m < M and x < X: readable by the caller's guarantee.
            simd.splat_f32s(unsafe { *w.at(m, x) })
        })
    });
    let mut v_loads = kv::RowLoads::<S, V, X>::new(simd, core::array::from_fn(|x| v.row(x)));
    /// `acc[m][c·lanes..] += Σ_x wb[m][x] · vv[x]` for `m < M` (a plain fn: a closure could
    /// be left out of line without the level's target features).
    ///
    /// # Safety
    /// For `m < M`, the `lanes` floats at `acc.at(m, c·lanes)` are readable and writable.
    #[inline(always)]
    unsafe fn add<S: Simd, const M: usize, const X: usize>(
        simd: S, wb: &[[S::f32s; X]; M], vv: [S::f32s; X], acc: RowsMut, c: usize,
    ) {
        for (m, wb) in wb.iter().enumerate() {
            let at = acc.at(m, c * S::F32_LANES);
            // SAFETY: readable by the caller's guarantee.
            let mut a = unsafe { vec::<S>(at) };
            for x in 0..X {
                a = simd.mul_add_e_f32s(wb[x], vv[x], a);
            }
            // SAFETY: writable by the caller's guarantee.
            unsafe { store::<S>(at, a) };
        }
    }
    // Whole lines where the level steps them ([`steps_lines`]), as in `dot_kernel`: one
    // prefetch and one set of block scales per line, its vectors unrolled. Unlike K's rows,
    // a panel may start inside a block (the least tiles' 16 columns), known only here: those
    // panels, and the other types, take the loop after it, which tests each vector. (One
    // loop choosing per vector measured 1.02× the time of a q8_0 decode in L2,
    // benches/NOTES.md 35.)
    let per_line = line / lanes;
    let stepped = match steps_lines::<S, V>() && col0.is_multiple_of(line) {
        true => full / per_line * per_line,
        false => 0,
    };
    let mut c = 0;
    while c < stepped {
        for i in 0..per_line {
            let col = col0 + (c + i) * lanes;
            if i == 0 {
                if let Some(ahead) = ahead {
                    for x in 0..X {
                        prefetch_once(kv::value_ptr(ahead.row(x), col), hint);
                    }
                }
                // SAFETY: the line's values are col..col + line ≤ col0 + full·lanes.
                unsafe { v_loads.line(simd, col) };
            }
            // SAFETY: x < X and col + lanes ≤ col0 + full·lanes, in the line just entered;
            // m < M and c + i < full: inside the first full·lanes floats of row m of `acc`.
            unsafe { add(simd, &wb, v_loads.get(simd, col), acc, c + i) };
        }
        c += per_line;
    }
    while c < full {
        let col = col0 + c * lanes;
        if let Some(ahead) = ahead.filter(|_| col.is_multiple_of(line)) {
            for x in 0..X {
                prefetch_once(kv::value_ptr(ahead.row(x), col), hint);
            }
        }
        // SAFETY: x < X and col + lanes ≤ col0 + full·lanes; c < full, as above.
        unsafe { add(simd, &wb, v_loads.at(simd, col), acc, c) };
        c += 1;
    }
}
