//! The one-lane level's register tiles on 32-bit Arm with a hard-float VFP (Cortex-M4F/M7,
//! armv7-a): the loops of the generic [`qk_kernel`] (4 × 4, and one key × 4 rows) and
//! [`pv_kernel`] (4 × 4), written with `vldmia`, which loads 2, 4 or 8 consecutive floats
//! into consecutive registers in one instruction; and the normalisation of the output
//! ([`normalize`]). LLVM loads each float of those tiles with a `vldr` of its own (16 per 32
//! multiply-adds: 0.9 instructions a flop on Cortex-M4F), and at opt-level s and z leaves
//! their loops rolled, the accumulators in memory; here the 4 × 4 loops take 38 (Q·Kᵀ,
//! whose packed Q is tile by tile, two pairs of steps per turn) and 42 (P·V) instructions
//! per 64 flops at every opt-level. (Two pairs per turn in P·V too saved 1% of the firmware
//! call's instructions for 400 bytes of code at opt-level z.)
//!
//! Each multiply-add is a `vmla.f32` (multiply, round, add, round), which is what the
//! generic tiles' unfused `mul_add_e` compiles to on these cores, in the same order per
//! accumulator: the results are the generic tiles', bit for bit (the tests below compare
//! them).
//!
//! Each tile is one `asm!` block that names no floating-point register as an operand: on
//! `thumbv7em-none-eabihf` (single-precision FPU) stable Rust refuses `sreg` operands, and
//! `clobber_abi("C")` makes LLVM warn about `d16`–`d31`, which that FPU lacks. So the block
//! saves and restores all of `s0`–`s31` itself (128 bytes of stack while it runs) and reads
//! its operands from a `#[repr(C)]` record.
//!
//! [`qk_kernel`]: super::tiles::qk_kernel
//! [`pv_kernel`]: super::tiles::pv_kernel

use core::arch::asm;

use super::mem::{Rows, RowsMut};

/// `acc[i][j] += x[i] · y[j]` for the tile in `s0`–`s15` (`acc[i][j]` in `s(4i + j)`), with
/// `x[i]` and `y[j]` in the registers named: 16 `vmla.f32`, row by row.
macro_rules! outer_product {
    ($x0:literal, $x1:literal, $x2:literal, $x3:literal; $($y:literal),+) => {
        concat!(
            outer_row!("s0", "s1", "s2", "s3"; $x0; $($y),+),
            outer_row!("s4", "s5", "s6", "s7"; $x1; $($y),+),
            outer_row!("s8", "s9", "s10", "s11"; $x2; $($y),+),
            outer_row!("s12", "s13", "s14", "s15"; $x3; $($y),+),
        )
    };
}

/// One row of [`outer_product`]: `a[j] += x · y[j]`.
macro_rules! outer_row {
    ($($a:literal),+; $x:literal; $($y:literal),+) => {
        concat!($("vmla.f32 ", $a, ", ", $x, ", ", $y, "\n"),+)
    };
}

/// The accumulator rows of a tile: 4 rows of 4 in `s0`–`s15`, or 1 row in `s0`–`s3`, as
/// instructions that set them to 0, load them from `r12` (rows `r9` bytes apart) or store
/// them there.
macro_rules! acc_rows {
    (zero, 4) => {
        concat!(
            acc_rows!(zero, 1),
            "vmov s4, s5, r12, r12\n",
            "vmov s6, s7, r12, r12\n",
            "vmov s8, s9, r12, r12\n",
            "vmov s10, s11, r12, r12\n",
            "vmov s12, s13, r12, r12\n",
            "vmov s14, s15, r12, r12\n",
        )
    };
    // Two registers per `vmov` from a pair of core registers.
    (zero, 1) => {
        "vmov s0, s1, r12, r12\nvmov s2, s3, r12, r12\n"
    };
    ($op:literal, 4) => {
        concat!(
            $op,
            " r12, {{s0-s3}}\nadd r12, r9\n",
            $op,
            " r12, {{s4-s7}}\nadd r12, r9\n",
            $op,
            " r12, {{s8-s11}}\nadd r12, r9\n",
            $op,
            " r12, {{s12-s15}}\n",
        )
    };
    ($op:literal, 1) => {
        concat!($op, " r12, {{s0-s3}}\n")
    };
}

/// The loop over the pairs of steps, `r10` holding `steps` before and after: `pair` once
/// per turn, or twice (one `subs`/`bne` fewer per pair, and the odd pair after the loop).
macro_rules! steps_loop {
    (1, [$($pair:expr),*]) => {
        concat!(
            "lsrs r10, r10, #1\nbeq 4f\n3:\n",
            $($pair, "\n",)*
            "subs r10, r10, #1\nbne 3b\n4:\n",
            "ldr r10, [r0, #{steps}]\n",
        )
    };
    (2, [$($pair:expr),*]) => {
        concat!(
            "lsrs r10, r10, #2\nbeq 4f\n3:\n",
            $($pair, "\n",)*
            $($pair, "\n",)*
            "subs r10, r10, #1\nbne 3b\n4:\n",
            "ldr r10, [r0, #{steps}]\ntst r10, #2\nbeq 6f\n",
            $($pair, "\n",)*
            "6:\n",
        )
    };
}

/// The `asm!` block of a tile, around its own parts: saves `s0`–`s31`; sets the
/// accumulators (`acc_rows` rows of 4) to 0 when the record's `first` is set, or reads them
/// from its `acc` rows (`acc_stride` bytes apart); runs `setup`, then `pair` `steps / 2`
/// times ([`steps_loop`], `unroll` pairs per turn) and `single` once more when `steps` is
/// odd; writes the accumulators back and restores `s0`–`s31`. `r0` holds the record (of
/// type `$record`) throughout; `r9`, `r10` and `r12` are the frame's; the tile's own
/// operands and registers follow.
macro_rules! tile_asm {
    (
        $record:ident, $tile:expr, acc_rows: $rows:tt, unroll: $unroll:tt,
        setup: [$($setup:expr),* $(,)?],
        pair: [$($pair:expr),* $(,)?],
        single: [$($single:expr),* $(,)?],
        fields: [$($field:ident),* $(,)?],
        registers: [$($reg:tt),* $(,)?] $(,)?
    ) => {
        asm!(
            "vpush {{s0-s31}}",
            "ldr r12, [r0, #{first}]",
            "cmp r12, #0",
            "beq 1f",
            "mov r12, #0",
            acc_rows!(zero, $rows),
            "b 2f",
            "1:",
            "ldr r12, [r0, #{acc}]",
            "ldr r9, [r0, #{acc_stride}]",
            acc_rows!("vldmia", $rows),
            "2:",
            $($setup,)*
            "ldr r10, [r0, #{steps}]",
            steps_loop!($unroll, [$($pair),*]),
            "tst r10, #1",
            "beq 5f",
            $($single,)*
            "5:",
            "ldr r12, [r0, #{acc}]",
            "ldr r9, [r0, #{acc_stride}]",
            acc_rows!("vstmia", $rows),
            "vpop {{s0-s31}}",
            $($field = const core::mem::offset_of!($record, $field),)*
            first = const core::mem::offset_of!($record, first),
            acc = const core::mem::offset_of!($record, acc),
            acc_stride = const core::mem::offset_of!($record, acc_stride),
            steps = const core::mem::offset_of!($record, steps),
            in("r0") $tile,
            $(out($reg) _,)*
            out("r9") _, out("r10") _, out("r12") _,
        )
    };
}

/// What [`qk_4x4`]'s block reads: K rows (first: one `ldm` loads them), packed Q (its 4
/// rows of each column consecutive, columns consecutive), the score tile (stride in bytes),
/// the columns of `head_dim` (`steps`) and whether to start from 0.
#[repr(C)]
struct QkTile {
    k: [*const f32; 4],
    q: *const f32,
    acc: *mut f32,
    acc_stride: usize,
    steps: usize,
    first: usize,
}

const _: () = assert!(core::mem::offset_of!(QkTile, k) == 0);

impl QkTile {
    /// The record of a Q·Kᵀ tile over `dw` columns (`first`: the scores start from 0).
    fn new(k: [*const f32; 4], q_pack: Rows, s: RowsMut, dw: usize, first: bool) -> Self {
        debug_assert_eq!(q_pack.stride, 4);
        QkTile {
            k,
            q: q_pack.ptr,
            acc: s.ptr,
            acc_stride: s.stride * size_of::<f32>(),
            steps: dw,
            first: first as usize,
        }
    }
}

/// [`qk_kernel`](super::tiles::qk_kernel) for 4 keys × 4 query rows of one lane:
/// `s[x][n] (+)= Σ_{d < dw} k[x][d] · q_pack[d][n]`, adding to `s` unless `first`.
///
/// # Safety
/// `q_pack.stride` is 4: the packed rows of a column are followed by the next column's
/// (two columns load as one `vldmia` of 8). For `x < 4`, `d < dw`, `n < 4`: `k[x] + d`
/// and `q_pack.at(d, n)` are readable, and `s.at(x, n)` is readable and writable (all
/// `f32`s, so aligned to 4 bytes).
#[inline(always)]
pub(super) unsafe fn qk_4x4(k: [*const f32; 4], q_pack: Rows, s: RowsMut, dw: usize, first: bool) {
    let tile = QkTile::new(k, q_pack, s, dw, first);
    // SAFETY: the block reads columns d < dw of each K row and the 4·dw floats of the
    // packed Q (pairs of columns in the loop, then the last one when dw is odd) and reads
    // and writes the 4 × 4 floats at `s`: what the caller guarantees. It restores every
    // floating-point register it uses, and names every general-purpose one it changes.
    unsafe {
        tile_asm!(QkTile, &tile, acc_rows: 4, unroll: 2,
            setup: [
                "ldm r0, {{r1-r4}}",
                "ldr r5, [r0, #{q}]",
            ],
            pair: [
                "vldmia r5!, {{s16-s23}}",
                "vldmia r1!, {{s24-s25}}",
                "vldmia r2!, {{s26-s27}}",
                "vldmia r3!, {{s28-s29}}",
                "vldmia r4!, {{s30-s31}}",
                outer_product!("s24", "s26", "s28", "s30"; "s16", "s17", "s18", "s19"),
                outer_product!("s25", "s27", "s29", "s31"; "s20", "s21", "s22", "s23"),
            ],
            single: [
                "vldmia r5, {{s16-s19}}",
                "vldr s24, [r1]",
                "vldr s26, [r2]",
                "vldr s28, [r3]",
                "vldr s30, [r4]",
                outer_product!("s24", "s26", "s28", "s30"; "s16", "s17", "s18", "s19"),
            ],
            fields: [q],
            registers: ["r1", "r2", "r3", "r4", "r5"],
        );
    }
}

/// [`qk_kernel`](super::tiles::qk_kernel) for one key × 4 query rows of one lane: as
/// [`qk_4x4`] with `k[0]` alone (a last lone key of a block), 12 instructions per 16 flops.
///
/// # Safety
/// As [`qk_4x4`] for `x = 0`.
#[inline(always)]
pub(super) unsafe fn qk_1x4(k: *const f32, q_pack: Rows, s: RowsMut, dw: usize, first: bool) {
    let tile = QkTile::new([k; 4], q_pack, s, dw, first);
    // SAFETY: the block reads columns d < dw of the K row and the 4·dw floats of the packed
    // Q, and reads and writes the 4 floats at `s`: what the caller guarantees. Registers as
    // in `qk_4x4`.
    unsafe {
        tile_asm!(QkTile, &tile, acc_rows: 1, unroll: 1,
            setup: [
                "ldr r1, [r0]",
                "ldr r5, [r0, #{q}]",
            ],
            pair: [
                "vldmia r5!, {{s16-s23}}",
                "vldmia r1!, {{s24-s25}}",
                outer_row!("s0", "s1", "s2", "s3"; "s24"; "s16", "s17", "s18", "s19"),
                outer_row!("s0", "s1", "s2", "s3"; "s25"; "s20", "s21", "s22", "s23"),
            ],
            single: [
                "vldmia r5, {{s16-s19}}",
                "vldr s24, [r1]",
                outer_row!("s0", "s1", "s2", "s3"; "s24"; "s16", "s17", "s18", "s19"),
            ],
            fields: [q],
            registers: ["r1", "r5"],
        );
    }
}

/// What [`pv_4x4`]'s block reads: weight rows, value rows (strides in bytes), the
/// accumulator tile, the keys (`steps`), and `first`, always 0: P·V adds to the tile.
#[repr(C)]
struct PvTile {
    w: *const f32,
    w_stride: usize,
    v: *const f32,
    v_stride: usize,
    acc: *mut f32,
    acc_stride: usize,
    steps: usize,
    first: usize,
}

/// [`pv_kernel`](super::tiles::pv_kernel) for 4 query rows × 4 columns of `f32` values on
/// one lane: `acc[m][col..col + 4] += Σ_{j < cols} w[j][m] · v[j][v_col + col..][..4]`.
///
/// # Safety
/// For `m < 4`, `j < cols`: `w.at(j, m)` is readable, the 4 floats of row `j` of `v` from
/// column `v_col + col` are readable, and the 4 floats at `acc.at(m, col)` are readable and
/// writable.
#[inline(always)]
pub(super) unsafe fn pv_4x4(
    (v, v_col): (Rows, usize), w: Rows, acc: RowsMut, col: usize, cols: usize,
) {
    let f = size_of::<f32>();
    let tile = PvTile {
        w: w.ptr,
        w_stride: w.stride * f,
        v: v.ptr.wrapping_add(v_col + col),
        v_stride: v.stride * f,
        acc: acc.ptr.wrapping_add(col),
        acc_stride: acc.stride * f,
        steps: cols,
        first: 0,
    };
    // SAFETY: the block reads weight rows j < cols (4 floats each) and value rows j < cols
    // from column `v_col + col` (pairs in the loop, then the last one when `cols` is odd)
    // and reads and writes the 4 × 4 floats at `acc.at(0, col)`: what the caller
    // guarantees. Registers as in `qk_4x4`.
    unsafe {
        tile_asm!(PvTile, &tile, acc_rows: 4, unroll: 1,
            setup: [
                "ldr r1, [r0, #{w}]",
                "ldr r2, [r0, #{w_stride}]",
                "ldr r3, [r0, #{v}]",
                "ldr r4, [r0, #{v_stride}]",
            ],
            pair: [
                "vldmia r1, {{s16-s19}}",
                "vldmia r3, {{s24-s27}}",
                "add r1, r2",
                "add r3, r4",
                "vldmia r1, {{s20-s23}}",
                "vldmia r3, {{s28-s31}}",
                "add r1, r2",
                "add r3, r4",
                outer_product!("s16", "s17", "s18", "s19"; "s24", "s25", "s26", "s27"),
                outer_product!("s20", "s21", "s22", "s23"; "s28", "s29", "s30", "s31"),
            ],
            single: [
                "vldmia r1, {{s16-s19}}",
                "vldmia r3, {{s24-s27}}",
                outer_product!("s16", "s17", "s18", "s19"; "s24", "s25", "s26", "s27"),
            ],
            fields: [w, w_stride, v, v_stride],
            registers: ["r1", "r2", "r3", "r4"],
        );
    }
}

/// The plain path of [`Block::write`](super::Block::write)'s normalisation for the first
/// `4·quads` values: `dst[i] = acc[i] / sum`, with `vldmia`/`vstmia` of 4 (LLVM loads and
/// stores each float alone: 22 instructions per 4 values, 12 here). Returns the probe, `+0`
/// while every accumulator is finite, NaN after one that is not (`probe += acc[i] · 0`), as
/// the generic loop computes it: the same `vmla` and `vdiv`, in the same order.
///
/// # Safety
/// `quads ≥ 1`; `4·quads` floats at `acc` are readable and at `dst` writable.
#[inline(always)]
pub(super) unsafe fn normalize(dst: *mut f32, acc: *const f32, quads: usize, sum: f32) -> f32 {
    let probe: u32;
    // SAFETY: the block reads 4·quads floats from `acc` and writes as many at `dst`, what
    // the caller guarantees; it restores `s0`–`s10`, the only floating-point registers it
    // uses, and names every general-purpose one it changes.
    unsafe {
        asm!(
            "vpush {{s0-s10}}",
            "vmov s8, {sum}",
            "mov {t}, #0",
            "vmov s9, {t}",
            "vmov s10, {t}",
            "1:",
            "vldmia {acc}!, {{s0-s3}}",
            "vmla.f32 s9, s0, s10",
            "vmla.f32 s9, s1, s10",
            "vmla.f32 s9, s2, s10",
            "vmla.f32 s9, s3, s10",
            "vdiv.f32 s4, s0, s8",
            "vdiv.f32 s5, s1, s8",
            "vdiv.f32 s6, s2, s8",
            "vdiv.f32 s7, s3, s8",
            "vstmia {dst}!, {{s4-s7}}",
            "subs {n}, {n}, #1",
            "bne 1b",
            "vmov {t}, s9",
            "vpop {{s0-s10}}",
            sum = in(reg) sum.to_bits(),
            t = out(reg) probe,
            acc = inout(reg) acc => _,
            dst = inout(reg) dst => _,
            n = inout(reg) quads => _,
        )
    }
    f32::from_bits(probe)
}

#[cfg(test)]
mod tests {
    use pulp::Scalar;

    use super::super::tiles::{pv_kernel, qk_kernel};
    use super::*;
    use crate::test_data::values;

    fn bits(x: &[f32]) -> std::vec::Vec<u32> {
        x.iter().map(|x| x.to_bits()).collect()
    }

    /// `normalize` against the generic loop, bit for bit, with a NaN and an infinity in the
    /// accumulators and without.
    #[test]
    fn vfp_normalize_is_the_generic_loop() {
        for special in [false, true] {
            let mut acc = values(12, 7);
            if special {
                acc[5] = f32::INFINITY;
                acc[9] = f32::NAN;
            }
            let sum = 1.75f32;
            let mut dst = [0.0f32; 12];
            // SAFETY: 3 quads of 4 floats in both.
            let probe = unsafe { normalize(dst.as_mut_ptr(), acc.as_ptr(), 3, sum) };
            let mut want_probe = 0.0f32;
            let want: std::vec::Vec<f32> = acc
                .iter()
                .map(|&a| {
                    want_probe += a * 0.0;
                    a / sum
                })
                .collect();
            assert_eq!(bits(&dst), bits(&want));
            assert_eq!(probe.to_bits(), want_probe.to_bits());
        }
    }

    /// The assembly tiles against the generic ones, bit for bit, for every depth up to 9
    /// (both loop parities, no loop at all) and both starts.
    #[test]
    fn vfp_tiles_are_the_generic_tiles() {
        for dw in 0..10 {
            for first in [true, false] {
                // Q·Kᵀ: 4 K rows of stride 11, packed Q (row stride 4), scores stride 5.
                let k = values(4 * 11, 1 + dw as u32);
                let q = values(dw * 4 + 4, 2);
                let mut s = [values(4 * 5, 3), values(4 * 5, 3)];
                for (i, s) in s.iter_mut().enumerate() {
                    let kr = core::array::from_fn(|x| k[x * 11..].as_ptr());
                    let qp = Rows {
                        ptr: q.as_ptr(),
                        stride: 4,
                    };
                    let sp = RowsMut {
                        ptr: s.as_mut_ptr(),
                        stride: 5,
                    };
                    // SAFETY: every pointer stays inside its vector for these strides.
                    unsafe {
                        match i {
                            0 => qk_4x4(kr, qp, sp, dw, first),
                            _ => qk_kernel::<Scalar, 4, 4>(Scalar::new(), kr, qp, sp, dw, first),
                        }
                    }
                }
                assert_eq!(bits(&s[0]), bits(&s[1]), "qk dw {dw}");
                // The one-key tile: K row 2 alone.
                let mut s1 = [values(5, 8), values(5, 8)];
                for (i, s1) in s1.iter_mut().enumerate() {
                    let qp = Rows {
                        ptr: q.as_ptr(),
                        stride: 4,
                    };
                    let sp = RowsMut {
                        ptr: s1.as_mut_ptr(),
                        stride: 5,
                    };
                    let k2 = k[2 * 11..].as_ptr();
                    // SAFETY: as above.
                    unsafe {
                        match i {
                            0 => qk_1x4(k2, qp, sp, dw, first),
                            _ => qk_kernel::<Scalar, 1, 4>(Scalar::new(), [k2], qp, sp, dw, first),
                        }
                    }
                }
                assert_eq!(bits(&s1[0]), bits(&s1[1]), "qk one key dw {dw}");

                // P·V: weights stride 7, values stride 9 from column 3, accumulators stride 8.
                let w = values(dw * 7 + 4, 4);
                let v = values(dw * 9 + 8, 5);
                let mut acc = [values(4 * 8, 6), values(4 * 8, 6)];
                for (i, acc) in acc.iter_mut().enumerate() {
                    let (wp, vp) = (
                        Rows {
                            ptr: w.as_ptr(),
                            stride: 7,
                        },
                        Rows {
                            ptr: v.as_ptr(),
                            stride: 9,
                        },
                    );
                    let ap = RowsMut {
                        ptr: acc.as_mut_ptr(),
                        stride: 8,
                    };
                    // SAFETY: as above.
                    unsafe {
                        match i {
                            0 => pv_4x4((vp, 3), wp, ap, 0, dw),
                            _ => pv_kernel::<Scalar, f32, 4, 4>(
                                Scalar::new(),
                                (vp, 3),
                                wp,
                                ap,
                                0,
                                dw,
                                0,
                            ),
                        }
                    }
                }
                assert_eq!(bits(&acc[0]), bits(&acc[1]), "pv cols {dw}");
            }
        }
    }
}
