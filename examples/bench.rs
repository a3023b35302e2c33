//! The main job: every available level on the issue-3 shapes, against the measured ceiling of
//! this core and a three-pass SGEMM baseline.
//!
//! ```sh
//! cargo run --release --example bench                       # default: about a minute
//! cargo run --release --example bench -- --shape decode     # shapes whose name contains "decode"
//! cargo run --release --example bench -- --level avx2 --csv # one level, machine-readable
//! cargo run --release --example bench -- --full             # 8 prefill heads, more runs
//! MMTEST_FEATURE=avx2,fma cargo run --release --example bench -- --level avx2
//!                                                # baseline on AVX2 too, as on an AVX2 CPU
//! MMTEST_FEATURE=sse2 cargo run --release --example bench -- --level scalar
//!                                                # baseline without AVX, for the scalar level
//! ```
//!
//! Flags: `--shape NAME` (substring of a shape name), `--level NAME` (`scalar`, `avx2`,
//! `avx512`, `neon`, `split` (both split-KV rows), `split-1t`, `split-2t`, or `baseline`
//! alone; the baseline always runs, for the speed-up), `--heads N` (prefill heads, default 1; 8 with `--full`), `--full` (also the levels that
//! would take seconds per call, and more runs), `--quick` (fewer runs), `--csv`, `--list`.
//!
//! Per level and shape it prints the median time of several runs (after a warm-up run), the
//! rate (GFLOP/s for prefill, GB/s of K/V read for decode), that rate as a share of this
//! core's ceiling measured in the same run (the FMA probe of the level itself, the AVX2 FMA
//! probe, or the streaming-read probe), the speed-up over the baseline and the largest error
//! against `qkv::reference` on the rows it checked (a sample of heads × rows for big shapes,
//! each recomputed by the reference as a one-row sub-problem with the same mask position).
//! Flops are counted as `2·(head_dim + v_dim)` per visible query·key pair: `4·q·kv·d` per
//! head unmasked, half of that causal.
//!
//! Decode shapes also get two split-KV rows, `split-1t` and `split-2t`: the detected level
//! through `qkv::split::partial` over two key ranges, on one thread or one each on two
//! threads, then `qkv::split::merge` (see `common/split_kv.rs`); the time includes the merge.
//! Their `%peak` is of the one-core streaming probe, so above 100% means the second core's
//! share of memory bandwidth; `runs`/`cpu` see only the calling thread.

#[path = "common/baseline.rs"]
mod baseline;
#[path = "common/cases.rs"]
mod cases;
#[path = "common/split_kv.rs"]
mod split_kv;

use std::time::Instant;

use cases::{Case, Data, Kind, at};
use pulp::{Simd, WithSimd};
use qkv::{Isa, Mask, Params, QueryPos, Shape};

/// Who computes a row of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    Level(Isa),
    Baseline,
    /// Split-KV decode at the detected level: [`split_kv::SPLITS`] key ranges as
    /// `qkv::split::partial`s on this many threads, then `qkv::split::merge` (decode only).
    Split(usize),
}

impl Runner {
    fn name(self) -> &'static str {
        match self {
            Runner::Level(isa) => isa.name(),
            Runner::Baseline => "baseline",
            Runner::Split(1) => "split-1t",
            Runner::Split(_) => "split-2t",
        }
    }
}

struct Options {
    shape: Option<String>,
    level: Option<String>,
    heads: usize,
    csv: bool,
    quick: bool,
    full: bool,
    list: bool,
}

fn options() -> Options {
    let mut o = Options {
        shape: None,
        level: None,
        heads: 1,
        csv: false,
        quick: false,
        full: false,
        list: false,
    };
    let mut heads = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--shape" => o.shape = Some(value("--shape")),
            "--level" => o.level = Some(value("--level")),
            "--heads" => {
                let v = value("--heads");
                heads = Some(v.parse().ok().filter(|&h| h > 0).unwrap_or_else(|| {
                    eprintln!("--heads takes a positive integer, not {v:?}");
                    std::process::exit(2)
                }))
            }
            "--csv" => o.csv = true,
            "--quick" => o.quick = true,
            "--full" => o.full = true,
            "--list" => o.list = true,
            // `cargo bench` passes this to every target; ignore it.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: bench [--shape NAME] [--level NAME] [--heads N] [--full] [--quick] \
                     [--csv] [--list]\n\
                     levels: scalar avx2 avx512 neon (those available here run), split-1t split-2t (decode), baseline\n\
                     shapes (substring match): {}",
                    cases::cases(1)
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                std::process::exit(2)
            }
        }
    }
    o.heads = heads.unwrap_or(if o.full { 8 } else { 1 });
    o
}

/// Seconds of repeated runs aimed at per (level, shape), and the bounds on their number.
struct Budget {
    seconds: f64,
    min_runs: usize,
    max_runs: usize,
}

/// Runs `f` once to warm up, then repeatedly, and returns the median time.
///
/// On a shared machine another process may take the core in the middle of a run. Linux
/// counts the time a thread waits on the run queue (`/proc/thread-self/schedstat`, updated
/// each time the thread gets the CPU back), so each run is classed as *clean* (waited under
/// 1% of its time) or not, and the median is taken over the clean runs when there are at
/// least 3 (runs are repeated, within 3× the budget, to get them). Elsewhere, or if too few
/// runs were clean, it is the median of all runs, and [`Timing::clean`] says so. A warm-up
/// run longer than a second is itself the only sample (far past any cold-cache effect).
fn measure(budget: &Budget, mut f: impl FnMut()) -> Timing {
    let mut run = || {
        let w0 = waited_ns();
        let t = Instant::now();
        f();
        let dt = t.elapsed().as_secs_f64();
        let waited = match (w0, waited_ns()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * 1e-9),
            _ => None,
        };
        (dt, waited)
    };
    let first = run();
    if first.0 > 1.0 {
        return Timing::of(vec![first]);
    }
    let target =
        ((budget.seconds / first.0.max(1e-9)) as usize).clamp(budget.min_runs, budget.max_runs);
    let start = Instant::now();
    let mut runs = Vec::new();
    loop {
        runs.push(run());
        let clean = runs.iter().filter(|r| is_clean(r)).count();
        let more_for_clean = clean < 3
            && start.elapsed().as_secs_f64() < 3.0 * budget.seconds
            && runs.len() < 3 * budget.max_runs;
        if runs.len() >= target && !more_for_clean {
            break;
        }
    }
    Timing::of(runs)
}

/// A run during which this thread waited for the CPU less than 1% of the time.
fn is_clean(run: &(f64, Option<f64>)) -> bool {
    run.1.is_some_and(|w| w <= 0.01 * run.0)
}

/// What [`measure`] found.
struct Timing {
    /// Median seconds of one run: over the clean runs if there were 3, else over all.
    median: f64,
    /// Runs timed.
    runs: usize,
    /// Runs in which this thread kept the CPU, if the OS says; the median is over these when
    /// there are at least 3.
    clean: Option<usize>,
    /// Share of all the timed wall-clock time this thread was on a CPU (not waiting).
    cpu_share: Option<f64>,
}

impl Timing {
    fn of(runs: Vec<(f64, Option<f64>)>) -> Timing {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let clean: Vec<f64> = runs.iter().filter(|r| is_clean(r)).map(|r| r.0).collect();
        let known = runs.iter().all(|r| r.1.is_some());
        let wall: f64 = runs.iter().map(|r| r.0).sum();
        let waited: f64 = runs.iter().filter_map(|r| r.1).sum();
        Timing {
            median: if clean.len() >= 3 || (runs.len() == 1 && clean.len() == 1) {
                median(clean.clone())
            } else {
                median(runs.iter().map(|r| r.0).collect())
            },
            runs: runs.len(),
            clean: known.then_some(clean.len()),
            cpu_share: known.then(|| (1.0 - waited / wall).max(0.0)),
        }
    }

    /// Whether the median comes from runs that kept the CPU.
    fn is_clean(&self) -> bool {
        self.clean.is_some_and(|c| c >= 3.min(self.runs))
    }
}

/// The shortest time: a ceiling is a property of the core, and sharing the core with other
/// processes can only make a probe slower, never faster.
fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

/// Nanoseconds this thread has spent waiting for a CPU while runnable (Linux
/// `/proc/thread-self/schedstat`, second field); `None` elsewhere.
fn waited_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Ceilings

/// Independent FMA chains: more than latency × units on any core here, so the loop runs at
/// the FMA units' throughput.
const CHAINS: usize = 12;

/// `iters` rounds of one FMA on each of [`CHAINS`] independent vector accumulators.
struct FmaProbe {
    iters: usize,
    a: f32,
    b: f32,
}

impl WithSimd for FmaProbe {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let a = simd.splat_f32s(self.a);
        let b = simd.splat_f32s(self.b);
        let mut acc = [simd.splat_f32s(0.0); CHAINS];
        for (i, x) in acc.iter_mut().enumerate() {
            *x = simd.splat_f32s(i as f32);
        }
        for _ in 0..self.iters {
            for x in acc.iter_mut() {
                // Fused where the level has FMA; on `Scalar` a multiply and an add, which is
                // what scalar code compiled for baseline x86-64 (no FMA) can do fastest.
                *x = simd.mul_add_e_f32s(*x, a, b);
            }
        }
        let mut s = simd.splat_f32s(0.0);
        for x in acc {
            s = simd.add_f32s(s, x);
        }
        simd.reduce_sum_f32s(s)
    }
}

/// Runs the FMA probe at `isa`'s width; `None` if this build cannot run that level.
fn run_fma(isa: Isa, probe: FmaProbe) -> Option<f32> {
    match isa {
        Isa::Scalar => Some(Simd::vectorize(pulp::Scalar::new(), probe)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pulp::x86::V3::try_new().map(|s| Simd::vectorize(s, probe)),
        #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
        Isa::Avx512 => pulp::x86::V4::try_new().map(|s| Simd::vectorize(s, probe)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => pulp::aarch64::Neon::try_new().map(|s| Simd::vectorize(s, probe)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Peak single-core GFLOP/s of `isa`'s multiply-add (2 flops per lane), measured: fused on
/// the SIMD levels; on `Scalar` a separate multiply and add, the best plain scalar code can
/// do on a target without FMA (pulp's `Scalar::mul_add_f32s` instead calls `fmaf`, a libm
/// function call per element on such targets).
fn fma_ceiling(isa: Isa, quick: bool) -> Option<f64> {
    let lanes = isa.lanes() as f64;
    // Short runs (a few ms at any width), many of them: on a shared core, some run whole
    // time slices without being preempted, and the best of them is the ceiling.
    let iters: usize = if isa == Isa::Scalar { 1 << 19 } else { 1 << 20 };
    let probe = || FmaProbe {
        iters: std::hint::black_box(iters),
        a: std::hint::black_box(0.999_999),
        b: std::hint::black_box(1e-7),
    };
    run_fma(isa, probe())?;
    let times = (0..if quick { 15 } else { 41 })
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run_fma(isa, probe()));
            t.elapsed().as_secs_f64()
        })
        .collect();
    let flops = iters as f64 * CHAINS as f64 * lanes * 2.0;
    Some(flops / best(times) / 1e9)
}

/// Sums a buffer with several vector accumulators: a pure streaming read.
struct SumProbe<'a> {
    data: &'a [f32],
}

impl WithSimd for SumProbe<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (head, tail) = S::as_simd_f32s(self.data);
        let mut acc = [simd.splat_f32s(0.0); 8];
        let mut chunks = head.chunks_exact(8);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a = simd.add_f32s(*a, *x);
            }
        }
        for x in chunks.remainder() {
            acc[0] = simd.add_f32s(acc[0], *x);
        }
        let mut s = simd.splat_f32s(0.0);
        for a in acc {
            s = simd.add_f32s(s, a);
        }
        simd.reduce_sum_f32s(s) + tail.iter().sum::<f32>()
    }
}

/// Single-core streaming read bandwidth in GB/s over a buffer far larger than the caches.
fn stream_bandwidth(quick: bool) -> (f64, usize) {
    let mib = if quick { 128 } else { 256 };
    let data: Vec<f32> = (0..mib << 18).map(|i| (i & 7) as f32).collect();
    let arch = pulp::Arch::new();
    std::hint::black_box(arch.dispatch(SumProbe { data: &data }));
    let times = (0..if quick { 3 } else { 9 })
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(arch.dispatch(SumProbe {
                data: std::hint::black_box(&data),
            }));
            t.elapsed().as_secs_f64()
        })
        .collect();
    ((mib << 20) as f64 / best(times) / 1e9, mib)
}

// ---------------------------------------------------------------------------------------
// Checking against the reference

/// The result of comparing sampled output rows with `qkv::reference`.
struct Check {
    max_err: f64,
    /// Largest `error / qkv::tolerance::output_bound` over the checked rows.
    worst_ratio: f64,
    heads: usize,
    rows: usize,
}

/// Heads and rows to check: all of a small shape; otherwise up to 4 heads spread over the
/// GQA groups and rows at the start, around block edges, in the middle and at the end.
fn sample(shape: Shape) -> (Vec<usize>, Vec<usize>) {
    let heads: Vec<usize> = if shape.q_heads <= 4 {
        (0..shape.q_heads).collect()
    } else {
        let mut h = vec![
            0,
            shape.q_heads / 3 + 1,
            2 * shape.q_heads / 3 + 2,
            shape.q_heads - 1,
        ];
        h.retain(|&x| x < shape.q_heads);
        h.dedup();
        h
    };
    let n = shape.q_len;
    let mut rows: Vec<usize> = if n <= 8 {
        (0..n).collect()
    } else {
        vec![0, 1, 63, 64, 65, n / 2 + 5, n - 2, n - 1]
            .into_iter()
            .filter(|&r| r < n)
            .collect()
    };
    rows.sort_unstable();
    rows.dedup();
    (heads, rows)
}

/// Compares the sampled rows of `out` with the reference, each row recomputed as a one-row,
/// one-head sub-problem: same K/V rows, the query's mask position given explicitly.
fn check(params: &Params, d: &Data) -> Check {
    let s = params.shape;
    let (heads, rows) = sample(s);
    let scale = params.scale();
    let group = s.q_heads / s.kv_heads;
    let offset = params.query_offset() as i64;
    let mut c = Check {
        max_err: 0.0,
        worst_ratio: 0.0,
        heads: heads.len(),
        rows: rows.len(),
    };
    let mut expect = vec![0.0f32; s.v_dim];
    for &h in &heads {
        let g = h / group;
        let k = &d.k[at(&params.k, g, 0)..];
        let v = &d.v[at(&params.v, g, 0)..];
        for &i in &rows {
            let one = Shape::new(1, 1, s.kv_len, s.head_dim).with_v_dim(s.v_dim);
            let sub = Params::new(one)
                .with_scale(scale)
                .with_mask(Mask {
                    query_pos: QueryPos::Offset(offset + i as i64),
                    ..params.mask
                })
                .with_layouts(
                    params.q,
                    params.k,
                    params.v,
                    qkv::Layout::planar(1, s.v_dim),
                );
            let q = &d.q[at(&params.q, h, i)..][..s.head_dim];
            qkv::reference::attention(&sub, q, k, v, &mut expect, None)
                .expect("valid reference sub-problem");
            let got = &d.out[at(&params.out, h, i)..][..s.v_dim];
            // Error and bound as the tests and the fuzz targets compute them.
            let row = cases::kit::row(params, &d.q, &d.k, &d.v, h, i);
            let e = cases::kit::compare_row(&row, &expect, got);
            c.max_err = c.max_err.max(e.max_err);
            c.worst_ratio = c.worst_ratio.max(e.worst_ratio);
        }
    }
    c
}

// ---------------------------------------------------------------------------------------

/// The CPU's model name with its family and model numbers, from `/proc/cpuinfo`.
fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(fam), Some(model)) => format!("{name} (family {fam}, model {model})"),
        (Some(name), _, _) => name,
        _ => std::env::consts::ARCH.to_string(),
    }
}

struct Ceilings {
    /// Per level, its own FMA peak in GFLOP/s.
    fma: Vec<(Isa, f64)>,
    /// The AVX2 FMA peak, the issue's yardstick.
    avx2: Option<f64>,
    /// The peak of the widest level here that the baseline may use: `matrixmultiply` picks
    /// its widest kernel at run time (AVX-512 where the CPU has it, else AVX2+FMA) unless
    /// built with `MMTEST_FEATURE` (see `common/baseline.rs`); this is the baseline's ceiling.
    widest: Option<(Isa, f64)>,
    stream: f64,
}

impl Ceilings {
    fn of(&self, r: Runner) -> Option<f64> {
        match r {
            Runner::Level(isa) => self.fma.iter().find(|(i, _)| *i == isa).map(|x| x.1),
            Runner::Baseline => self.widest.map(|x| x.1),
            Runner::Split(_) => None,
        }
    }
}

struct Row {
    case: Case,
    runner: Runner,
    timing: Timing,
    check: Check,
    speedup: Option<f64>,
}

/// Without `--full`, a level is skipped on a prefill shape it would take longer than this to
/// run once (in practice: the scalar level on the big prefill shapes). The estimate uses the
/// slowest rate the level reached on an earlier shape of this run, or 10% of its ceiling.
const SKIP_SECONDS: f64 = 2.0;

fn main() {
    let o = options();
    let all = cases::cases(o.heads);
    if o.list {
        for c in &all {
            println!("{:24} {}", c.name, c.describe());
        }
        return;
    }
    let chosen: Vec<Case> = all
        .into_iter()
        .filter(|c| o.shape.as_deref().is_none_or(|s| c.name.contains(s)))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "no shape matches {}; try --list",
            o.shape.as_deref().unwrap_or_default()
        );
        std::process::exit(2);
    }
    let levels: Vec<Isa> = Isa::available()
        .filter(|i| o.level.as_deref().is_none_or(|l| l == i.name()))
        .collect();
    let splits: Vec<Runner> = [Runner::Split(1), Runner::Split(2)]
        .into_iter()
        .filter(|r| o.level.as_deref().is_none_or(|l| r.name().starts_with(l)))
        .collect();
    // The baseline always runs: the speed-up column needs it.
    let baseline = true;
    if levels.is_empty() && splits.is_empty() && o.level.as_deref() != Some("baseline") {
        let names: Vec<_> = Isa::available().map(|i| i.name()).collect();
        eprintln!(
            "level {} is not available here; available: {} baseline split-1t split-2t",
            o.level.as_deref().unwrap_or_default(),
            names.join(" ")
        );
        std::process::exit(2);
    }

    let budget = if o.quick {
        Budget {
            seconds: 0.05,
            min_runs: 1,
            max_runs: 3,
        }
    } else if o.full {
        Budget {
            seconds: 1.0,
            min_runs: 5,
            max_runs: 31,
        }
    } else {
        Budget {
            seconds: 0.25,
            min_runs: 3,
            max_runs: 15,
        }
    };

    // Ceilings, measured now, on this core.
    let mut fma: Vec<(Isa, f64)> = Vec::new();
    for isa in Isa::available() {
        if let Some(g) = fma_ceiling(isa, o.quick) {
            fma.push((isa, g));
        }
    }
    let avx2 = fma.iter().find(|(i, _)| *i == Isa::Avx2).map(|x| x.1);
    let (stream, stream_mib) = stream_bandwidth(o.quick);
    let widest = fma
        .iter()
        .copied()
        .filter(|(i, _)| match i {
            Isa::Avx512 => baseline::allowed("avx512f"),
            Isa::Avx2 => baseline::allowed("avx2") && baseline::allowed("fma"),
            _ => true,
        })
        .max_by_key(|(i, _)| i.lanes());
    let ceil = Ceilings {
        fma,
        avx2,
        widest,
        stream,
    };

    if !o.csv {
        println!("qkv bench: {}, single thread", cpu_name());
        print!(
            "ceilings measured now: multiply-add, {CHAINS} independent chains (fused on SIMD \
             levels, mul+add on scalar)"
        );
        for (isa, g) in &ceil.fma {
            print!(", {} {:.1} GFLOP/s", isa.name(), g);
        }
        println!(
            "; streaming read of {stream_mib} MiB: {:.1} GB/s",
            ceil.stream
        );
        println!(
            "prefill/window shapes use {} head(s) (--heads N); time = median of the runs after a \
             warm-up; flops = 4·q·kv·d per head over visible pairs (causal ≈ half)",
            o.heads
        );
        println!(
            "%peak: of the level's own FMA ceiling (prefill) or of the streaming bandwidth \
             (decode: GB/s of K+V read once per GQA group); %avx2: of the AVX2 FMA ceiling; \
             baseline: three-pass matrixmultiply sgemm + softmax"
        );
        if let Some((isa, _)) = ceil.widest {
            println!(
                "baseline: matrixmultiply picks its widest kernel at run time{}; its %peak is of \
                 the {} ceiling",
                match baseline::MM_FEATURES {
                    Some(f) if !f.is_empty() => format!(", among MMTEST_FEATURE={f}"),
                    _ => String::new(),
                },
                isa.name()
            );
        }
        println!(
            "runs: clean/timed, a clean run kept the CPU (waited < 1% on the run queue); the \
             median is over the clean runs (* : fewer than 3 clean, median of all, inflated by \
             other processes); cpu: share of all timed wall time on a CPU"
        );
        println!(
            "levels estimated (from their rate so far) to take over {SKIP_SECONDS} s a run are \
             skipped unless --full"
        );
        println!(
            "err: max |out - qkv::reference| over the checked heads×rows (each recomputed as a \
             one-row sub-problem); tol: worst err / qkv::tolerance::output_bound (≤ 1 passes)"
        );
        println!();
        println!(
            "{:24} {:8} {:>10} {:>5} {:>4} {:>14} {:>6} {:>6} {:>8} {:>9} {:>6} {:>7}",
            "shape",
            "level",
            "time ms",
            "runs",
            "cpu",
            "rate",
            "%peak",
            "%avx2",
            "vs base",
            "err",
            "tol",
            "checked"
        );
    } else {
        println!(
            "shape,level,q_heads,kv_heads,q_len,kv_len,head_dim,mask,time_s,runs,flops,gflops,\
             kv_gbps,ceiling_gflops,avx2_ceiling_gflops,stream_gbps,pct_peak,pct_avx2,\
             speedup_vs_baseline,max_abs_err,err_over_tolerance,checked_heads,checked_rows,clean_runs,cpu_share"
        );
    }

    let mut runners: Vec<Runner> = Vec::new();
    if baseline {
        runners.push(Runner::Baseline);
    }
    runners.extend(levels.iter().map(|&i| Runner::Level(i)));
    runners.extend(splits);

    let mut base = baseline::Baseline::new();
    let mut over_stream = false;
    // Per runner, the slowest prefill GFLOP/s seen so far, for the skip estimate.
    let mut slowest: Vec<(&'static str, f64)> = Vec::new();
    for case in &chosen {
        let params = case.params();
        let mut data = Data::new(case.shape, 1);
        let mut base_time = None;
        for &runner in &runners {
            if matches!(runner, Runner::Split(_)) && case.kind != Kind::Decode {
                continue;
            }
            let seen = slowest.iter().find(|x| x.0 == runner.name()).map(|x| x.1);
            if let (false, Kind::Prefill, Some(rate)) =
                (o.full, case.kind, seen.or(ceil.of(runner).map(|c| 0.1 * c)))
            {
                let estimate = case.flops() / (rate * 1e9);
                if estimate > SKIP_SECONDS {
                    if !o.csv {
                        println!(
                            "{:24} {:8} skipped: about {:.0} s a run at {:.1} GFLOP/s (--full runs it)",
                            case.name,
                            runner.name(),
                            estimate,
                            rate
                        );
                    }
                    continue;
                }
            }
            data.out.fill(f32::NAN);
            let timing = {
                let Data { q, k, v, out } = &mut data;
                match runner {
                    Runner::Baseline => measure(&budget, || base.run(&params, q, k, v, out)),
                    Runner::Level(isa) => measure(&budget, || {
                        isa.attention(&params, q, k, v, out, None)
                            .expect("valid inputs")
                    }),
                    Runner::Split(threads) => {
                        let mut split = split_kv::SplitKv::new(&params, threads);
                        measure(&budget, || split.run(&params, q, k, v, out))
                    }
                }
            };
            if runner == Runner::Baseline {
                base_time = Some(timing.median);
            }
            if case.kind == Kind::Prefill {
                let rate = case.flops() / timing.median / 1e9;
                match slowest.iter_mut().find(|x| x.0 == runner.name()) {
                    Some(x) => x.1 = x.1.min(rate),
                    None => slowest.push((runner.name(), rate)),
                }
            }
            let row = Row {
                case: case.clone(),
                speedup: base_time.map(|b| b / timing.median),
                runner,
                timing,
                check: check(&params, &data),
            };
            over_stream |= case.kind == Kind::Decode
                && case.kv_bytes() / row.timing.median / 1e9 > ceil.stream;
            print_row(&row, &ceil, o.csv);
        }
    }
    if over_stream && !o.csv {
        println!(
            "\nnote: a decode rate above 100% of the streaming probe ({stream_mib} MiB, from DRAM) \
             means K/V came partly from cache: decode-4k's K+V is 32 MiB, about the size of the L3 \
             caches of many server CPUs, and stays there between runs"
        );
    }
}

fn print_row(r: &Row, ceil: &Ceilings, csv: bool) {
    let flops = r.case.flops();
    let time = r.timing.median;
    let gflops = flops / time / 1e9;
    let gbps = r.case.kv_bytes() / time / 1e9;
    let own = ceil.of(r.runner);
    let decode = r.case.kind == Kind::Decode;
    let pct_peak = if decode {
        Some(100.0 * gbps / ceil.stream)
    } else {
        own.map(|c| 100.0 * gflops / c)
    };
    let pct_avx2 = ceil.avx2.map(|c| 100.0 * gflops / c);
    let s = r.case.shape;
    if csv {
        let opt = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
        let mask = match (r.case.mask.left, r.case.mask.right) {
            (None, None) => "none".to_string(),
            (None, Some(0)) => "causal".to_string(),
            (Some(w), Some(0)) => format!("window{w}"),
            _ => "band".to_string(),
        };
        println!(
            "{},{},{},{},{},{},{},{},{:.6e},{},{:.0},{:.3},{:.3},{},{},{:.3},{},{},{},{:.3e},{:.4},{},{},{},{}",
            r.case.name,
            r.runner.name(),
            s.q_heads,
            s.kv_heads,
            s.q_len,
            s.kv_len,
            s.head_dim,
            mask,
            time,
            r.timing.runs,
            flops,
            gflops,
            gbps,
            opt(own),
            opt(ceil.avx2),
            ceil.stream,
            opt(pct_peak),
            opt(pct_avx2),
            opt(r.speedup),
            r.check.max_err,
            r.check.worst_ratio,
            r.check.heads,
            r.check.rows,
            r.timing.clean.map(|c| c.to_string()).unwrap_or_default(),
            opt(r.timing.cpu_share),
        );
        return;
    }
    let rate = if decode {
        format!("{gbps:.1} GB/s")
    } else {
        format!("{gflops:.1} GFLOP/s")
    };
    let pct = |x: Option<f64>| x.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into());
    let pct_avx2 = if decode { None } else { pct_avx2 };
    let speed = r
        .speedup
        .filter(|_| r.runner != Runner::Baseline)
        .map(|x| format!("{x:.2}x"))
        .unwrap_or_else(|| "-".into());
    let tol = if r.check.worst_ratio <= 1.0 {
        format!("{:.0e}", r.check.worst_ratio)
    } else {
        format!("{:.1}!", r.check.worst_ratio)
    };
    println!(
        "{:24} {:8} {:>10} {:>5} {:>4} {:>14} {:>6} {:>6} {:>8} {:>9.1e} {:>6} {:>7}",
        r.case.name,
        r.runner.name(),
        format!(
            "{:.3}{}",
            time * 1e3,
            if r.timing.is_clean() { "" } else { "*" }
        ),
        match r.timing.clean {
            Some(c) => format!("{c}/{}", r.timing.runs),
            None => r.timing.runs.to_string(),
        },
        r.timing
            .cpu_share
            .map(|x| format!("{:.0}%", 100.0 * x.min(1.0)))
            .unwrap_or_else(|| "-".into()),
        rate,
        pct(pct_peak),
        pct(pct_avx2),
        speed,
        r.check.max_err,
        tol,
        format!("{}h×{}r", r.check.heads, r.check.rows),
    );
}
