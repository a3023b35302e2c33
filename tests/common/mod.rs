//! The test kit: attention problems ([`Case`]), the instances of the kernel to run them on
//! ([`levels`]) and the comparison of a result with `qkv::reference` under `qkv::tolerance`
//! ([`compare`]).
//!
//! One copy serves three crates, each including it by path because a crate that depends on
//! `qkv` cannot be a dev-dependency of `qkv` (it would bring a second copy of `qkv`'s
//! types): the integration tests (`mod common;`), the fuzz crate (`fuzz/src/lib.rs`) and the
//! examples and benches (`examples/common/cases.rs`). Each uses part of it, so unused items
//! and re-exports are allowed here, once, rather than at each include.
#![allow(dead_code, unused_imports)]

pub mod case;
pub mod compare;
pub mod exp;
pub mod kv;
pub mod pages;
pub mod ragged;

pub use case::{
    Case, alibi_slopes, error_fixture, extent, laid_out, random_cases, random_mask, random_sinks,
    series_case, short_k_error,
};
pub use compare::{
    Expected, Joined, Outputs, Row, RowError, assert_same_bits, check, check_all, check_in,
    check_level, close, compare_joined, compare_row, joined_series, one_shot, row,
};
pub use pages::{CallInputs, Paging};
pub use ragged::{Ragged, check_ragged};

use qkv::plan::Plan;
use qkv::split::Level;
use qkv::{Emulated, Isa, Shape};

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in `[-1, 1)`, 24 bits.
    pub fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// True with probability `num / den`.
    pub fn coin(&mut self, num: u64, den: u64) -> bool {
        self.u64() % den < num
    }
    /// One of `xs`.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
    /// `n` values uniform in `±amp`.
    pub fn fill(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * amp).collect()
    }
}

/// `native`, or under Miri (about 1000× slower) the smaller `miri`: how many problems a test
/// runs, or how big they are.
pub fn budget<T>(native: T, miri: T) -> T {
    if cfg!(miri) { miri } else { native }
}

/// True when CI runs this test binary under an instruction-set emulator (qemu-aarch64 for
/// NEON, `qemu-x86_64 -cpu Nehalem` for the scalar fallback), which sets `QKV_UNDER_EMULATOR`.
/// The tests then check only the levels of the emulated CPU ([`levels`]) and sweep `exp`
/// more sparsely: pulp's portable 4/8/16-lane instances are plain Rust whose results do not
/// depend on the CPU, and the native `cargo test` runs them in full.
pub fn under_emulator() -> bool {
    std::env::var_os("QKV_UNDER_EMULATOR").is_some()
}

/// The instances every comparison runs: each level this CPU has, then pulp's portable widths
/// ([`widths`]; none under an emulator, see [`under_emulator`]).
pub fn levels() -> Vec<Level> {
    let mut r: Vec<Level> = Isa::available().map(Level::Isa).collect();
    if !under_emulator() {
        r.extend(widths().into_iter().map(Level::Emulated));
    }
    r
}

/// pulp's portable 4/8/16-lane instances. Miri runs the narrowest and widest: the 8-lane one
/// is the same generic code at a width between them, and each call there costs seconds.
pub fn widths() -> Vec<Emulated> {
    let mut w = Emulated::ALL.to_vec();
    if cfg!(miri) {
        w.retain(|&e| e != Emulated::Lanes8);
    }
    w
}

/// A random plan for `s`: each block from 0 (one block for the whole length) to the length.
pub fn random_plan(rng: &mut Rng, s: &Shape) -> Plan {
    Plan {
        q_block: rng.range(0, s.q_len + 1),
        kv_block: rng.range(0, s.kv_len + 1),
    }
}

/// How many merges deep the key splits of `plan` go, for `Joined::Merged`'s tolerance.
pub fn plan_depth(s: &Shape, plan: Plan) -> usize {
    let splits = s.kv_len.div_ceil(plan.kv_block.clamp(1, s.kv_len.max(1)));
    splits.saturating_sub(1)
}

/// [`joined_series`] with a [`random_plan`] for each case and level: `run` computes the case
/// through the plan's tasks and says who it is (for messages); the result is held to the
/// bound of its merge depth ([`plan_depth`]).
pub fn plan_series(
    seed: u64, count: usize, big_every: usize,
    mut run: impl FnMut(&mut Rng, &Case, Level, Plan) -> (Outputs, String),
) {
    joined_series(seed, count, big_every, |rng, case, level| {
        let plan = random_plan(rng, &case.shape);
        let (got, who) = run(rng, case, level, plan);
        (got, Joined::Merged(plan_depth(&case.shape, plan)), who)
    });
}
