//! The main job: every available level on the issue-3 shapes (or a shape of your own), each
//! row against a ceiling of this core measured next to it, and a three-pass SGEMM baseline.
//!
//! `cargo run --release --example bench -- --help` says what it runs and every option; the
//! text is [`HELP`] below.
//!
//! Per level and shape it prints the median time of several runs (after a warm-up run), the
//! rate (GFLOP/s for prefill, GB/s of K/V read for decode), that rate as a share of the
//! row's ceiling, the speed-up over the baseline and the largest error against
//! `qkv::reference` on the rows it checked (a sample of heads × rows for big shapes, each
//! recomputed by the reference as a one-row sub-problem with the same mask position).
//! Flops are counted as `2·(head_dim + v_dim)` per visible query·key pair: `4·q·kv·d` per
//! head unmasked, half of that causal.
//!
//! A ceiling is a property of the core *at that moment*: the clock moves with temperature,
//! the vector width in use and the neighbours on a shared host. So no ceiling is measured
//! once for the whole run; every timed kernel run is preceded by a short probe slot, and one
//! more follows the last, and the row is reported against the median of those slots (see
//! [`measure`] and [`Probe`]). A row above 100% of that is a measurement error and is
//! printed as one.
//!
//! Decode shapes also get two split-KV rows, `split-1t` and `split-2t`: the detected level
//! through `qkv::split::partial` over two key ranges, on one thread or one each on two
//! threads, then `qkv::split::merge` (see `common/split_kv.rs`); the time includes the merge.
//!
//! `--kv` stores K and V as `f16`, `bf16` or `q8_0` (or several: `--kv all`). A row's
//! storage types are then measured *interleaved*, in one process: each round runs every
//! type once (each run after its own probe slot), so the time ratio against the `f32` run
//! (`vs f32`, the median of the per-round ratios) compares runs made seconds apart under the
//! same neighbours and clock. The error column compares with the reference on the values the
//! types store (rounded or quantised), so it measures the kernel, not the rounding.

#[path = "common/baseline.rs"]
mod baseline;
#[path = "common/cases.rs"]
mod cases;
#[path = "common/split_kv.rs"]
mod split_kv;

use std::time::Instant;

use cases::kit::kv::{Stored, with_stored};
use cases::{Case, Data, Kind, Typed, at, kv_label};
use pulp::{Simd, WithSimd};
use qkv::{Isa, KvKind, KvType, Mask, Params, QueryPos, Shape};

const HELP: &str = "\
bench: qkv's attention levels against this core's measured ceilings and an SGEMM baseline

USAGE
    cargo run --release --example bench -- [OPTIONS]
    cargo run --release --features parallel --example bench -- --threads N [OPTIONS]
    cargo run --release --example bench -- --compare OLD.csv NEW.csv

WHAT THE DEFAULT RUN DOES (about a minute on a 2-core VM, a few seconds per shape)
    Every shape below, on one thread, for every level this CPU and build can run (scalar,
    avx2, avx512 on x86-64; scalar, neon on aarch64), plus `baseline` (three-pass attention
    on matrixmultiply's SGEMM, always run: it gives the `vs base` column) and, on decode
    shapes, `split-1t`/`split-2t` (split-KV decode over 2 key ranges on 1 or 2 threads).
      prefill-{1k,4k}-d{128,64}[-causal]  q_len = kv_len = 1024 or 4096, 1 head (--heads)
      window256-16k-d128                  causal sliding window of 256 keys, 16384², 1 head
      decode-{4k,32k}                     q_len 1, 32 query heads over 8 kv heads, d128
    K and V are f32 unless --kv says otherwise (the baseline always runs on f32).
    Each row: a warm-up run, then timed runs for about 0.25 s with their probe slots (3 to
    15 runs); the time is their median. A level estimated to take over 2 s a run is
    skipped (scalar on the big prefill shapes) unless --full.

COLUMNS
    kv      the storage type of K and V (k/v when they differ): f32, f16, bf16, q8_0
    rate    GFLOP/s (prefill; 4·q·kv·d per head over visible pairs) or GB/s of K+V read once
            per GQA group (decode), counted in the bytes of the row's storage type (q8_0: 34
            bytes per 32 values)
    %peak   the rate against a ceiling measured next to this row, on the row's threads:
            prefill: the level's own multiply-add probe (12 independent chains; fused on the
              SIMD levels; on scalar an unfused 4-lane mul+add, because the compiler
              vectorises \"scalar\" code to SSE2/NEON but cannot fuse it), for baseline the
              widest level matrixmultiply may use; decode: a streaming read of as many
              bytes as the row's K+V in its storage type (so both see the same caches).
            Every timed run is preceded by a probe slot, one more follows the last; the
            ceiling is the median of the slots. Above 100% prints as >100%! : a measurement
            error (the clock or a neighbour changed within the row), not a result.
    %avx2   prefill rate against the AVX2 FMA probe, measured the same way (a yardstick)
    vs base the baseline's time (f32 K/V, one thread) over the row's
    vs f32  with f32 among the --kv types: the row's time over the f32 row's of the same
            shape and level, the median of the ratios of runs made in the same round
            (< 1: the type is faster)
    runs    clean/timed; a clean run waited < 1% of its time on the run queue (threads: on
            average, over the threads that ran a tenth of it); the median is over the clean
            runs (* on the time: fewer than 3 were clean)
    err/tol max |out - qkv::reference| over the checked heads×rows; worst err over
            qkv::tolerance::output_bound (<= 1 passes)

OPTIONS
    --shape NAME      named shapes whose name contains NAME; repeatable
                        --shape decode            both decode shapes
                        --shape prefill-4k-d128   prefill-4k-d128 and its -causal twin
    --shape CUSTOM    your own shape: QH[/KVH]xQ_LENxKV_LENxHEAD_DIM[,causal|,window=N]
                      (query heads, kv heads (default QH), query rows, keys, head dim; x or
                      ×; window=N: the query at pos sees keys pos-N ..= pos; masks are
                      aligned bottom-right, the queries being the last q_len positions);
                      q_len 1 is reported as decode (GB/s), anything else as prefill
                        --shape 32/8x1x32768x128            Llama-style GQA decode
                        --shape 8x2048x2048x64,causal       8 heads, causal prefill
                        --shape 4/1x512x16384x128,window=4096
    --level NAME      only this row kind: scalar avx2 avx512 neon split split-1t split-2t
                      baseline (the baseline runs anyway, for `vs base`)
                        --level avx2
    --kv TYPES        store K and V as these types, comma-separated or repeated: f32 f16
                      bf16 q8_0, or all (= f32,f16,bf16,q8_0); several types are run
                      interleaved, and with f32 among them each row gets `vs f32`. q8_0
                      needs head_dim and v_dim multiples of 32 (other shapes skip it).
                      Default f32.
                        --kv all                     every type, with vs f32
                        --kv f32,f16 --shape decode-32k
    --k TYPE          K's type in every --kv entry, V keeping the entry's type (and --v
    --v TYPE          V's likewise): --kv f16 --k q8_0 stores K as q8_0 and V as f16
    --heads N         heads of the named prefill and window shapes (default 1; 8 with
                      --full). Decode shapes keep 32/8 heads; custom shapes give their own.
                        --heads 8
    --threads N       run the level rows with qkv::parallel::attention called from the main
                      thread, as a program would, with rayon's global pool of N threads
                      (the level forced, Plan::auto), and their ceilings probed on N
                      threads; the baseline stays on one thread. Needs the build feature:
                        cargo run --release --features parallel --example bench -- --threads 2
    --quick           fewer, shorter runs (about 0.05 s a row, 1 to 3 runs): a smoke test
    --full            more runs (about 1 s a row, 5 to 31), also the slow levels, 8 heads
    --csv             print CSV to stdout instead of the table
    --csv FILE        print the table and write CSV to FILE; columns include commit (-dirty
                      if tracked files changed), cpu, cpu_family, cpu_model, date_utc, rustc,
                      detected_level, threads, k_type, v_type, kv_bytes and time_vs_f32
                        --csv before.csv
    --compare A B     match the rows of two CSV files by (shape, level, K/V types) and print
                      B/A of time, rate and %peak per row, with their medians (runs nothing)
                        --compare before.csv after.csv
    --list            list the named shapes
    -h, --help        this text

ENVIRONMENT
    MMTEST_FEATURE=avx2,fma (or sse2) at build time limits the baseline's matrixmultiply
    kernel, e.g. to compare the avx2 (or scalar) level with a baseline of the same width:
      MMTEST_FEATURE=avx2,fma cargo run --release --example bench -- --level avx2
    QKV_BENCH_COMMIT=NAME at run time: the commit the header and the CSV name, in place of
    the checkout's (which is read when the bench runs, so a binary built at an older commit
    and copied aside for an A/B run would otherwise be named after today's checkout)
";

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

    /// Threads the row runs on: its ceiling is probed on as many.
    fn threads(self, level_threads: usize) -> usize {
        match self {
            Runner::Level(_) => level_threads,
            Runner::Baseline => 1,
            Runner::Split(t) => t,
        }
    }
}

/// Where the CSV goes.
enum CsvTo {
    /// Instead of the table.
    Stdout,
    /// Besides the table.
    File(String),
}

struct Options {
    /// `--shape` values: named-shape substrings and custom shapes.
    shapes: Vec<String>,
    level: Option<String>,
    heads: usize,
    /// `--threads N`: the level rows go through `qkv::parallel` on N threads.
    threads: Option<usize>,
    csv: Option<CsvTo>,
    compare: Option<(String, String)>,
    quick: bool,
    full: bool,
    list: bool,
    /// The (K, V) storage types each row runs with, in order, without repeats.
    kv: Vec<(KvKind, KvKind)>,
}

/// The types `--kv` names: one of `f32 f16 bf16 q8_0`, or `all` for the four.
fn kv_kinds(flag: &str, v: &str, all: bool) -> Vec<KvKind> {
    let mut r = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match KvKind::ALL.iter().find(|k| k.name() == name) {
            Some(&k) => r.push(k),
            None if all && name == "all" => r.extend(KvKind::ALL),
            None => usage_error(&format!(
                "{flag} takes {}, not {name:?}",
                if all {
                    "f32, f16, bf16, q8_0 or all (comma-separated)"
                } else {
                    "one of f32, f16, bf16, q8_0"
                }
            )),
        }
    }
    if r.is_empty() || (!all && r.len() > 1) {
        usage_error(&format!("{flag} takes one type, not {v:?}"));
    }
    r
}

/// Prints `msg` and exits with status 2, the usage-error status (no panic, no backtrace).
fn usage_error(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    eprintln!("(try --help)");
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        shapes: Vec::new(),
        level: None,
        heads: 1,
        threads: None,
        csv: None,
        compare: None,
        quick: false,
        full: false,
        list: false,
        kv: Vec::new(),
    };
    let mut heads = None;
    let (mut kv, mut k_only, mut v_only) = (Vec::new(), None, None);
    let mut args = std::env::args().skip(1).peekable();
    let positive = |flag: &str, v: String| -> usize {
        v.parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| usage_error(&format!("{flag} takes a positive integer, not {v:?}")))
    };
    while let Some(a) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")))
        };
        match a.as_str() {
            "--shape" => o.shapes.push(value("--shape")),
            "--level" => o.level = Some(value("--level")),
            "--kv" => kv.extend(kv_kinds("--kv", &value("--kv"), true)),
            "--k" => k_only = Some(kv_kinds("--k", &value("--k"), false)[0]),
            "--v" => v_only = Some(kv_kinds("--v", &value("--v"), false)[0]),
            "--heads" => heads = Some(positive("--heads", value("--heads"))),
            "--threads" => o.threads = Some(positive("--threads", value("--threads"))),
            "--compare" => {
                let a = value("--compare");
                let b = value("--compare (two files)");
                o.compare = Some((a, b));
            }
            "--csv" => {
                o.csv = Some(match args.next_if(|v| !v.starts_with('-') || v == "-") {
                    Some(f) if f != "-" => CsvTo::File(f),
                    _ => CsvTo::Stdout,
                })
            }
            "--quick" => o.quick = true,
            "--full" => o.full = true,
            "--list" => o.list = true,
            // `cargo bench` passes this to every target; ignore it.
            "--bench" => {}
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0)
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    o.heads = heads.unwrap_or(if o.full { 8 } else { 1 });
    if kv.is_empty() {
        kv.push(KvKind::F32);
    }
    for x in kv {
        let pair = (k_only.unwrap_or(x), v_only.unwrap_or(x));
        if !o.kv.contains(&pair) {
            o.kv.push(pair);
        }
    }
    o
}

/// Parses a custom shape, `QH[/KVH]xQ_LENxKV_LENxHEAD_DIM[,causal|,window=N]` (`x` or `×`).
fn custom_case(spec: &str) -> Result<Case, String> {
    let (dims, opt) = match spec.split_once(',') {
        Some((d, o)) => (d, Some(o)),
        None => (spec, None),
    };
    let parts: Vec<&str> = dims.split(['x', '×']).collect();
    let [heads, q_len, kv_len, head_dim] = parts[..] else {
        return Err(format!(
            "custom shape {spec:?}: expected QH[/KVH]xQ_LENxKV_LENxHEAD_DIM, e.g. \
             32/8x1x32768x128, got {} field(s) separated by x",
            parts.len()
        ));
    };
    let num = |what: &str, v: &str| -> Result<usize, String> {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!("custom shape {spec:?}: {what} must be a positive integer, not {v:?}")
            })
    };
    let (qh, kvh) = match heads.split_once('/') {
        Some((q, kv)) => (num("query heads", q)?, num("kv heads", kv)?),
        None => {
            let h = num("heads", heads)?;
            (h, h)
        }
    };
    if !qh.is_multiple_of(kvh) {
        return Err(format!(
            "custom shape {spec:?}: query heads ({qh}) must be a multiple of kv heads ({kvh})"
        ));
    }
    let (q_len, kv_len, d) = (
        num("q_len", q_len)?,
        num("kv_len", kv_len)?,
        num("head_dim", head_dim)?,
    );
    let (mask, suffix) = match opt.map(str::trim) {
        None => (Mask::NONE, String::new()),
        Some("causal") => (Mask::causal(), "-causal".to_string()),
        Some(w) if w.starts_with("window=") => {
            let n = num("window", &w["window=".len()..])?;
            (Mask::sliding_window(n), format!("-window{n}"))
        }
        Some(other) => {
            return Err(format!(
                "custom shape {spec:?}: unknown option {other:?} (causal or window=N)"
            ));
        }
    };
    // Q, K, V and the output, in f32; refuse what would not fit rather than abort on it.
    let floats = [qh * q_len * d, 2 * kvh * kv_len * d, qh * q_len * d]
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n));
    // (u64: 16 GiB is past a 32-bit `usize`, where `checked_mul` refuses first.)
    const MAX_BYTES: u64 = 16 << 30;
    match floats.and_then(|f| f.checked_mul(4)) {
        Some(bytes) if bytes as u64 <= MAX_BYTES => {}
        _ => {
            return Err(format!(
                "custom shape {spec:?}: its tensors would take over {} GiB",
                MAX_BYTES >> 30
            ));
        }
    }
    let heads_name = if qh == kvh {
        qh.to_string()
    } else {
        format!("{qh}/{kvh}")
    };
    Ok(Case {
        name: format!("{heads_name}x{q_len}x{kv_len}x{d}{suffix}"),
        kind: if q_len == 1 {
            Kind::Decode
        } else {
            Kind::Prefill
        },
        shape: Shape::new(kvh, q_len, kv_len, d).gqa(qh, kvh),
        mask,
    })
}

/// The rows' thread pool for `--threads`: `qkv::parallel` with the `parallel` feature;
/// without it there is no pool, and `--threads` is refused up front.
mod pool {
    use qkv::{Isa, KvType, Params};

    /// rayon's global pool, sized once: the rows call `qkv::parallel` from the main thread as
    /// a program would (the calling thread takes tasks beside the pool's workers).
    #[cfg(feature = "parallel")]
    pub struct Pool(());

    #[cfg(not(feature = "parallel"))]
    pub enum Pool {}

    impl Pool {
        #[cfg(feature = "parallel")]
        pub fn new(threads: usize) -> Result<Pool, String> {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .map(Pool)
                .map_err(|e| format!("cannot start {threads} threads: {e}"))
        }

        #[cfg(not(feature = "parallel"))]
        pub fn new(_threads: usize) -> Result<Pool, String> {
            Err(
                "--threads needs the `parallel` feature: cargo run --release --features \
                 parallel --example bench -- --threads N"
                    .to_string(),
            )
        }

        /// `qkv::parallel::attention` on the pool, with the level forced to `isa`.
        pub fn attention<K: KvType, V: KvType>(
            &self, isa: Isa, params: &Params, q: &[f32], k: &[K], v: &[V], out: &mut [f32],
        ) -> Result<(), qkv::Error> {
            #[cfg(not(feature = "parallel"))]
            {
                let _ = (isa, params, q, k, v, out);
                match *self {}
            }
            #[cfg(feature = "parallel")]
            {
                use qkv::parallel::{Plan, attention_planned};
                use qkv::split::Level;
                let plan = Plan::auto(&params.shape, rayon::current_num_threads());
                attention_planned(Level::Isa(isa), plan, params, q, k, v, out, None)
            }
        }
    }
}

/// Seconds of repeated runs aimed at per (level, shape), probe slots included, and the
/// bounds on the number of timed runs.
struct Budget {
    seconds: f64,
    min_runs: usize,
    max_runs: usize,
}

/// One of the kernels [`measure`] times, with the probes run in a slot before each of its
/// runs.
struct Arm<'a, 'b> {
    probes: Vec<Prober<'b>>,
    run: Box<dyn FnMut() + 'a>,
}

/// One timed run: its wall time and the seconds its threads waited for a CPU, per thread,
/// if the OS says.
type Run = (f64, Option<f64>);

/// Runs each arm once to warm up, then repeatedly in rounds (each round runs every arm once,
/// in order), each run preceded by a slot of its arm's probes (and one more slot per arm
/// after the last round; each [`Prober`] keeps its slots' rates), and returns each arm's
/// [`Timing`] and its runs in round order (for [`round_ratio`]). With one arm this is the
/// plain alternation probe, run, probe, run, ...
///
/// On a shared machine another process may take the core in the middle of a run. Linux
/// counts the time a thread waits on the run queue ([`thread_times`], updated each time a
/// thread gets the CPU back), so each run is classed as *clean* (the row's `threads` waited
/// under 1% of its wall time each, on average) or not, and the median is taken over the
/// clean runs when there are at least 3 (rounds are repeated, within 3× the budget, to get
/// them for every arm). Elsewhere, or if too few runs were clean, it is the median of all
/// runs, and [`Timing::clean`] says so. A warm-up run longer than a second is itself the
/// only sample (far past any cold-cache effect).
fn measure(budget: &Budget, threads: usize, arms: &mut [Arm]) -> Vec<(Timing, Vec<Run>)> {
    let run = |f: &mut dyn FnMut()| -> Run {
        let before = thread_times(threads > 1);
        let t = Instant::now();
        f();
        let dt = t.elapsed().as_secs_f64();
        let waited = before
            .zip(thread_times(threads > 1))
            .map(|(before, after)| {
                let waited: u64 = after
                    .iter()
                    .map(|&(tid, ran, waited)| {
                        let (ran0, waited0) = before
                            .iter()
                            .find(|b| b.0 == tid)
                            .map_or((0, 0), |b| (b.1, b.2));
                        // A pool thread that barely ran had no work: its waiting did not slow
                        // the row.
                        match ran.saturating_sub(ran0) as f64 * 1e-9 >= 0.1 * dt {
                            true => waited.saturating_sub(waited0),
                            false => 0,
                        }
                    })
                    .sum();
                waited as f64 * 1e-9 / threads as f64
            });
        (dt, waited)
    };
    let slot = |probes: &mut [Prober]| {
        let t = Instant::now();
        for p in probes.iter_mut() {
            p.slot();
        }
        t.elapsed().as_secs_f64()
    };
    // Warm-up: every arm once, after a slot of its probes.
    let mut firsts = Vec::new();
    let mut round_time = 0.0;
    for arm in arms.iter_mut() {
        round_time += slot(&mut arm.probes);
        let first = run(&mut arm.run);
        round_time += first.0;
        firsts.push(first);
    }
    if firsts.iter().any(|f| f.0 > 1.0) {
        for arm in arms.iter_mut() {
            slot(&mut arm.probes);
        }
        return firsts
            .into_iter()
            .map(|f| (Timing::of(vec![f]), vec![f]))
            .collect();
    }
    let target =
        ((budget.seconds / round_time.max(1e-9)) as usize).clamp(budget.min_runs, budget.max_runs);
    let start = Instant::now();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); arms.len()];
    loop {
        for (arm, r) in arms.iter_mut().zip(runs.iter_mut()) {
            slot(&mut arm.probes);
            r.push(run(&mut arm.run));
        }
        let rounds = runs[0].len();
        let clean = runs
            .iter()
            .map(|r| r.iter().filter(|x| is_clean(x)).count())
            .min()
            .unwrap_or(0);
        let more_for_clean = clean < 3
            && start.elapsed().as_secs_f64() < 3.0 * budget.seconds
            && rounds < 3 * budget.max_runs;
        if rounds >= target && !more_for_clean {
            break;
        }
    }
    for arm in arms.iter_mut() {
        slot(&mut arm.probes);
    }
    runs.into_iter()
        .map(|r| (Timing::of(r.clone()), r))
        .collect()
}

/// The median over rounds of `a`'s time over `b`'s in the same round ([`measure`]'s runs of
/// two arms): over the rounds in which both runs were clean if there are 3, else over all.
fn round_ratio(a: &[Run], b: &[Run]) -> Option<f64> {
    let pairs: Vec<(&Run, &Run)> = a.iter().zip(b).collect();
    let clean: Vec<f64> = pairs
        .iter()
        .filter(|(x, y)| is_clean(x) && is_clean(y))
        .map(|(x, y)| x.0 / y.0)
        .collect();
    if clean.len() >= 3 {
        Some(median(clean))
    } else if pairs.is_empty() {
        None
    } else {
        Some(median(pairs.iter().map(|(x, y)| x.0 / y.0).collect()))
    }
}

/// A run during which this thread waited for the CPU less than 1% of the time.
fn is_clean(run: &Run) -> bool {
    run.1.is_some_and(|w| w <= 0.01 * run.0)
}

/// What [`measure`] found.
struct Timing {
    /// Median seconds of one run: over the clean runs if there were 3, else over all.
    median: f64,
    /// Runs timed.
    runs: usize,
    /// Runs in which the threads kept their CPUs, if the OS says; the median is over these
    /// when there are at least 3.
    clean: Option<usize>,
    /// Share of all the timed thread time spent on a CPU (not waiting).
    cpu_share: Option<f64>,
}

/// The median of `v`, the mean of the two middle values of an even count; `v` is not empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

impl Timing {
    fn of(runs: Vec<Run>) -> Timing {
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

/// Nanoseconds each thread has spent on a CPU and waiting for one while runnable (Linux
/// schedstat), as `(thread id, ran, waited)`: this thread, or with `all` every thread of this
/// process (a threaded row's work runs on other threads, which may also be created and ended
/// within a run); `None` elsewhere.
///
/// A one-thread row reads only its own thread: the idle threads of a `--threads` pool
/// yield while they wait for work, and on a busy host a yielding thread waits on the run
/// queue without the row being slowed. For the same reason a threaded row counts the waits
/// of the threads that ran for at least a tenth of the run.
fn thread_times(all: bool) -> Option<Vec<(u64, u64, u64)>> {
    let read = |tid: u64, path: std::path::PathBuf| -> Option<(u64, u64, u64)> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((tid, fields.next()??, fields.next()??))
    };
    if !all {
        return Some(vec![read(0, "/proc/thread-self/schedstat".into())?]);
    }
    let mut times = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?;
        let tid = task.file_name().to_str()?.parse().ok()?;
        // A thread that ended between the listing and the read has nothing left to count.
        times.extend(read(tid, task.path().join("schedstat")));
    }
    Some(times)
}

/// Runs `f(0)` on the calling thread and `f(1)`, …, `f(threads - 1)` on as many scoped
/// threads, and returns when all are done.
fn on_threads(threads: usize, f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        let f = &f;
        for t in 1..threads {
            s.spawn(move || f(t));
        }
        f(0);
    });
}

// ---------------------------------------------------------------------------------------
// Ceilings

/// Independent FMA chains: more than latency × units on any core here, so the loop runs at
/// the FMA units' throughput (and few enough for 16 registers with the two constants).
const CHAINS: usize = 12;

/// Rounds of one probe run: about half a millisecond at any width on a 3 GHz core, short
/// enough to run between every two kernel runs.
const PROBE_ITERS: usize = 1 << 18;

/// Probe runs per slot, of which the fastest counts: a run that lost the core part-way is
/// not the ceiling.
const PROBE_RUNS: usize = 3;

/// `iters` rounds of one multiply-add on each of [`CHAINS`] independent vector accumulators:
/// fused, or a multiply then an add.
struct FmaProbe {
    iters: usize,
    a: f32,
    b: f32,
    fused: bool,
}

impl WithSimd for FmaProbe {
    /// The sum of the chains (to keep the work), and the lanes of the vectors used.
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, usize) {
        let a = simd.splat_f32s(self.a);
        let b = simd.splat_f32s(self.b);
        let mut acc = [simd.splat_f32s(0.0); CHAINS];
        for (i, x) in acc.iter_mut().enumerate() {
            *x = simd.splat_f32s(i as f32);
        }
        // Opaque, so that the compiler cannot see that every lane of a chain is the same and
        // pack several chains into one vector (which it does for the unfused 4-lane probe).
        let mut acc = std::hint::black_box(acc);
        // Two loops rather than a branch in one, so each is a plain chain of vector ops.
        if self.fused {
            for _ in 0..self.iters {
                for x in acc.iter_mut() {
                    *x = simd.mul_add_e_f32s(*x, a, b);
                }
            }
        } else {
            for _ in 0..self.iters {
                for x in acc.iter_mut() {
                    *x = simd.add_f32s(simd.mul_f32s(*x, a), b);
                }
            }
        }
        let mut s = simd.splat_f32s(0.0);
        for x in acc {
            s = simd.add_f32s(s, x);
        }
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        (simd.reduce_sum_f32s(s), lanes)
    }
}

/// The scalar level's ceiling: the unfused probe on the widest vectors plain scalar code of
/// this build may be vectorised to.
///
/// Why not one lane: the scalar level is compiled for the target's baseline, and LLVM
/// vectorises the "scalar" kernel's independent row and column loops to the baseline's
/// vectors (SSE2 on x86-64, NEON on aarch64: 4 lanes), so a one-lane ceiling is beaten by the
/// scalar kernel itself. Why not fused: Rust never contracts `a * b + c` into an FMA, and
/// the x86-64 baseline has none to contract to. So the fastest the scalar kernel can go is
/// full-width baseline vectors of separate multiplies and adds. A build that enables AVX or
/// AVX-512 for all code (`-C target-cpu=native`) lets LLVM go wider, and so does the probe.
fn run_scalar_ceiling(probe: FmaProbe) -> (f32, usize) {
    let probe = FmaProbe {
        fused: false,
        ..probe
    };
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f", feature = "x86-v4"))]
    if let Some(s) = pulp::x86::V4::try_new() {
        return Simd::vectorize(s, probe);
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    if let Some(s) = pulp::x86::V3::try_new() {
        return Simd::vectorize(s, probe);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = pulp::x86::V2::try_new() {
        return Simd::vectorize(s, probe);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(s) = pulp::aarch64::Neon::try_new() {
        return Simd::vectorize(s, probe);
    }
    Simd::vectorize(pulp::Scalar::new(), probe)
}

/// Runs the multiply-add probe for `isa` (see [`run_scalar_ceiling`] for the scalar level);
/// `None` if this build cannot run that level.
fn run_fma(isa: Isa, probe: FmaProbe) -> Option<(f32, usize)> {
    match isa {
        Isa::Scalar => Some(run_scalar_ceiling(probe)),
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

/// A ceiling measured next to a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The multiply-add probe at a level's width, GFLOP/s.
    Fma(Isa),
    /// A streaming read of a buffer of the row's K+V size, GB/s: the same bytes from the
    /// same level of the memory hierarchy as the kernel, so a decode that fits in L3 is
    /// compared with an L3 read, not with DRAM.
    Stream,
}

/// A [`Probe`] on a row's threads, and the rates of the slots run so far.
struct Prober<'a> {
    probe: Probe,
    threads: usize,
    /// The stream probe's buffer (empty for FMA probes).
    buf: &'a [f32],
    rates: Vec<f64>,
}

impl Prober<'_> {
    /// Runs one slot and records its rate: the fastest of [`PROBE_RUNS`] FMA runs, or
    /// stream passes over the buffer until a millisecond has passed (one pass of a big K/V).
    fn slot(&mut self) {
        let threads = self.threads;
        let (work, best) = match self.probe {
            Probe::Fma(isa) => {
                let probe = || FmaProbe {
                    iters: std::hint::black_box(PROBE_ITERS),
                    a: std::hint::black_box(0.999_999),
                    b: std::hint::black_box(1e-7),
                    fused: true,
                };
                let lanes = std::sync::atomic::AtomicUsize::new(0);
                let best = (0..PROBE_RUNS)
                    .map(|_| {
                        let t = Instant::now();
                        on_threads(threads, |_| {
                            let (sum, l) = run_fma(isa, probe()).unwrap_or_default();
                            std::hint::black_box(sum);
                            lanes.store(l, std::sync::atomic::Ordering::Relaxed);
                        });
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                // Two flops (a multiply and an add) per lane, chain and round.
                let flops = (PROBE_ITERS * CHAINS * 2 * lanes.into_inner()) as f64;
                (flops * threads as f64, best)
            }
            Probe::Stream => {
                let arch = pulp::Arch::new();
                let part = self.buf.len().div_ceil(threads).max(1);
                let start = Instant::now();
                let mut best = f64::INFINITY;
                while best == f64::INFINITY || start.elapsed().as_secs_f64() < 1e-3 {
                    let t = Instant::now();
                    on_threads(threads, |i| {
                        let mine = self.buf.chunks(part).nth(i).unwrap_or_default();
                        std::hint::black_box(arch.dispatch(SumProbe {
                            data: std::hint::black_box(mine),
                        }));
                    });
                    best = best.min(t.elapsed().as_secs_f64());
                }
                (std::mem::size_of_val(self.buf) as f64, best)
            }
        };
        self.rates.push(work / best / 1e9);
    }

    /// The median slot: the ceiling reported against.
    fn ceiling(&self) -> Option<f64> {
        (!self.rates.is_empty()).then(|| median(self.rates.clone()))
    }
}

/// Whether `isa`'s probe can run in this build on this CPU.
fn probe_runs(isa: Isa) -> bool {
    isa.is_available()
        && run_fma(
            isa,
            FmaProbe {
                iters: 1,
                a: 1.0,
                b: 0.0,
                fused: true,
            },
        )
        .is_some()
}

/// The level whose FMA ceiling bounds the baseline: `matrixmultiply` picks its widest
/// kernel at run time (AVX-512 where the CPU has it, else AVX2+FMA) unless built with
/// `MMTEST_FEATURE` (see `common/baseline.rs`).
fn baseline_level() -> Isa {
    Isa::available()
        .filter(|&i| probe_runs(i))
        .filter(|i| match i {
            Isa::Avx512 => baseline::allowed("avx512f"),
            Isa::Avx2 => baseline::allowed("avx2") && baseline::allowed("fma"),
            _ => true,
        })
        .max_by_key(|i| i.lanes())
        .unwrap_or(Isa::Scalar)
}

/// The probers of a row on `threads` threads, none run yet ([`probes_for`]); `buf` is the
/// stream probe's buffer.
fn probers<'b>(case: &Case, runner: Runner, threads: usize, buf: &'b [f32]) -> Vec<Prober<'b>> {
    probes_for(case, runner)
        .into_iter()
        .map(|probe| Prober {
            probe,
            threads,
            buf,
            rates: Vec::new(),
        })
        .collect()
}

/// The probes of a row: its own ceiling first, then the AVX2 yardstick (prefill only).
fn probes_for(case: &Case, runner: Runner) -> Vec<Probe> {
    if case.kind == Kind::Decode {
        return vec![Probe::Stream];
    }
    let own = match runner {
        Runner::Level(isa) => isa,
        Runner::Baseline => baseline_level(),
        Runner::Split(_) => Isa::detect(),
    };
    let mut v = vec![Probe::Fma(own)];
    if own != Isa::Avx2 && Isa::Avx2.is_available() && probe_runs(Isa::Avx2) {
        v.push(Probe::Fma(Isa::Avx2));
    }
    v
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
/// one-head sub-problem: same K/V rows, the query's mask position given explicitly. `k` and
/// `v` are the values the kernel read, as `f32`, in `params`' layouts.
fn check(params: &Params, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) -> Check {
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
        let kg = &k[at(&params.k, g, 0)..];
        let vg = &v[at(&params.v, g, 0)..];
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
            let qi = &q[at(&params.q, h, i)..][..s.head_dim];
            qkv::reference::attention(&sub, qi, kg, vg, &mut expect, None)
                .expect("valid reference sub-problem");
            let got = &out[at(&params.out, h, i)..][..s.v_dim];
            // Error and bound as the tests and the fuzz targets compute them.
            let row = cases::kit::row(params, q, k, v, h, i);
            let e = cases::kit::compare_row(&row, &expect, got);
            c.max_err = c.max_err.max(e.max_err);
            c.worst_ratio = c.worst_ratio.max(e.worst_ratio);
        }
    }
    c
}

// ---------------------------------------------------------------------------------------
// What the run was: written into every CSV row, so that two files can be told apart

/// The CPU, from `/proc/cpuinfo` (empty fields elsewhere).
struct Cpu {
    name: String,
    family: String,
    model: String,
}

impl Cpu {
    fn read() -> Cpu {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let mut name = field("model name");
        if name.is_empty() {
            name = std::env::consts::ARCH.to_string();
        }
        Cpu {
            name,
            family: field("cpu family"),
            model: field("model"),
        }
    }

    /// The model name with its family and model numbers.
    fn describe(&self) -> String {
        if self.family.is_empty() {
            self.name.clone()
        } else {
            format!(
                "{} (family {}, model {})",
                self.name, self.family, self.model
            )
        }
    }
}

/// The first line a command prints, if it runs and succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

/// The source's commit (`git rev-parse --short HEAD` in this crate's directory), with
/// `-dirty` when a tracked file differs from it (untracked files, such as CSV files written
/// next to the sources, change no build); "unknown" outside a git checkout. The checkout is
/// read at run time, so `QKV_BENCH_COMMIT` names the build instead where they differ.
fn commit() -> String {
    if let Ok(name) = std::env::var("QKV_BENCH_COMMIT") {
        return name;
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let Some(head) = command_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_string();
    };
    let dirty = std::process::Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, now, from the system clock.
fn utc_now() -> String {
    utc_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `secs` seconds after 1970-01-01T00:00:00Z.
fn utc_date(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The run's identity, the same in every CSV row.
struct RunInfo {
    commit: String,
    cpu: Cpu,
    date: String,
    rustc: String,
    detected: &'static str,
    threads: usize,
}

impl RunInfo {
    fn now(threads: usize) -> RunInfo {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        RunInfo {
            commit: commit(),
            cpu: Cpu::read(),
            date: utc_now(),
            rustc: command_line(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into()),
            detected: Isa::detect().name(),
            threads,
        }
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Splits one CSV line into fields (quotes as [`csv_field`] writes them).
fn csv_split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let f = fields.last_mut().expect("one field at least");
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                f.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => f.push(c),
        }
    }
    fields
}

// ---------------------------------------------------------------------------------------
// Rows

/// What a row's probes measured around it.
struct Ceilings {
    /// The row's own ceiling: its level's FMA probe (prefill; baseline: the widest level
    /// it may use) or the stream probe of its K/V size (decode), GFLOP/s or GB/s.
    own: Option<f64>,
    /// The AVX2 FMA probe (prefill only), GFLOP/s.
    avx2: Option<f64>,
}

impl Ceilings {
    fn of(probes: &[Prober]) -> Ceilings {
        let own = probes.first().and_then(Prober::ceiling);
        let avx2 = probes
            .iter()
            .find(|p| p.probe == Probe::Fma(Isa::Avx2))
            .and_then(Prober::ceiling);
        Ceilings { own, avx2 }
    }
}

struct Row {
    case: Case,
    runner: Runner,
    /// The storage types of K and V.
    kinds: (KvKind, KvKind),
    threads: usize,
    timing: Timing,
    ceil: Ceilings,
    check: Check,
    speedup: Option<f64>,
    /// This row's time over the f32 row's of the same shape and runner, per round
    /// ([`round_ratio`]); `None` for f32 itself or without an f32 row.
    vs_f32: Option<f64>,
}

impl Row {
    fn gflops(&self) -> f64 {
        self.case.flops() / self.timing.median / 1e9
    }

    /// Bytes of K and V in their storage types.
    fn kv_bytes(&self) -> f64 {
        self.case.kv_bytes_as(self.kinds.0, self.kinds.1)
    }

    fn gbps(&self) -> f64 {
        self.kv_bytes() / self.timing.median / 1e9
    }

    /// The rate as a percentage of the row's own ceiling.
    fn pct_peak(&self) -> Option<f64> {
        let rate = match self.case.kind {
            Kind::Decode => self.gbps(),
            Kind::Prefill => self.gflops(),
        };
        self.ceil.own.map(|c| 100.0 * rate / c)
    }

    fn pct_avx2(&self) -> Option<f64> {
        self.ceil.avx2.map(|c| 100.0 * self.gflops() / c)
    }
}

/// Without `--full`, a level is skipped on a prefill shape it would take longer than this to
/// run once (in practice: the scalar level on the big prefill shapes). The estimate uses the
/// slowest rate the level reached on an earlier shape of this run, or 10% of its ceiling.
const SKIP_SECONDS: f64 = 2.0;

/// The shapes `--shape` chose: named ones by substring, custom ones parsed.
fn chosen_cases(o: &Options) -> Vec<Case> {
    let named = cases::cases(o.heads);
    if o.shapes.is_empty() {
        return named;
    }
    let mut chosen: Vec<Case> = Vec::new();
    for s in &o.shapes {
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            chosen.push(custom_case(s).unwrap_or_else(|e| usage_error(&e)));
            continue;
        }
        let before = chosen.len();
        for c in named.iter().filter(|c| c.name.contains(s.as_str())) {
            if !chosen.iter().any(|x| x.name == c.name) {
                chosen.push(c.clone());
            }
        }
        if chosen.len() == before && !named.iter().any(|c| c.name.contains(s.as_str())) {
            usage_error(&format!(
                "no shape name contains {s:?} (--list names them; a custom shape starts with \
                 a digit, e.g. 32/8x1x32768x128)"
            ));
        }
    }
    chosen
}

const CSV_HEADER: &str = "shape,level,q_heads,kv_heads,q_len,kv_len,head_dim,mask,time_s,runs,\
    flops,gflops,kv_gbps,ceiling_gflops,avx2_ceiling_gflops,stream_gbps,pct_peak,pct_avx2,\
    speedup_vs_baseline,max_abs_err,err_over_tolerance,checked_heads,checked_rows,clean_runs,\
    cpu_share,threads,commit,cpu,cpu_family,cpu_model,date_utc,rustc,detected_level,k_type,\
    v_type,kv_bytes,time_vs_f32";

fn main() {
    let o = options();
    if let Some((a, b)) = &o.compare {
        return compare(a, b);
    }
    if o.list {
        for c in &cases::cases(o.heads) {
            println!("{:24} {}", c.name, c.describe());
        }
        return;
    }
    let chosen = chosen_cases(&o);
    let pool = o
        .threads
        .map(|n| pool::Pool::new(n).unwrap_or_else(|e| usage_error(&e)));
    let level_threads = o.threads.unwrap_or(1);
    let levels: Vec<Isa> = Isa::available()
        .filter(|i| o.level.as_deref().is_none_or(|l| l == i.name()))
        .collect();
    let splits: Vec<Runner> = [Runner::Split(1), Runner::Split(2)]
        .into_iter()
        .filter(|r| o.level.as_deref().is_none_or(|l| r.name().starts_with(l)))
        .collect();
    if levels.is_empty() && splits.is_empty() && o.level.as_deref() != Some("baseline") {
        let names: Vec<_> = Isa::available().map(|i| i.name()).collect();
        usage_error(&format!(
            "level {} is not available here; available: {} baseline split split-1t split-2t",
            o.level.as_deref().unwrap_or_default(),
            names.join(" ")
        ));
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

    let info = RunInfo::now(level_threads);
    let table = !matches!(o.csv, Some(CsvTo::Stdout));
    let mut csv: Option<Box<dyn std::io::Write>> = match &o.csv {
        None => None,
        Some(CsvTo::Stdout) => Some(Box::new(std::io::stdout())),
        Some(CsvTo::File(f)) => {
            Some(Box::new(std::fs::File::create(f).unwrap_or_else(|e| {
                usage_error(&format!("cannot create {f:?}: {e}"))
            })))
        }
    };
    if let Some(w) = &mut csv {
        writeln!(w, "{CSV_HEADER}").expect("CSV written");
    }
    if table {
        print_header(&info, &o);
    }

    // The baseline always runs: the speed-up column needs it.
    let mut runners: Vec<Runner> = vec![Runner::Baseline];
    runners.extend(levels.iter().map(|&i| Runner::Level(i)));
    runners.extend(splits);

    let mut base = baseline::Baseline::new();
    let mut over = false;
    // Per runner, the slowest prefill GFLOP/s seen so far, for the skip estimate.
    let mut slowest: Vec<(&'static str, f64)> = Vec::new();
    let f32_pair = (KvKind::F32, KvKind::F32);
    for case in &chosen {
        let params = case.params();
        let data = Data::new(case.shape, 1);
        // K and V in each --kv pair of types.
        let typed: Vec<Typed> =
            o.kv.iter()
                .filter_map(|&kinds| {
                    let t = Typed::new(case, &data, kinds);
                    if t.is_none() && table {
                        println!(
                            "{:24} {} skipped: q8_0 needs head_dim and v_dim multiples of 32",
                            case.name,
                            kv_label(kinds)
                        );
                    }
                    t
                })
                .collect();
        // The values each runs on, as f32: the reference's inputs.
        let values: Vec<(Vec<f32>, Vec<f32>)> = typed.iter().map(Typed::values).collect();
        let f32_arm = typed.iter().position(|t| t.kinds == f32_pair);
        // The stream probe's buffers: as many bytes as the K/V each row reads (the baseline
        // reads f32).
        let stream_buf = |kinds: (KvKind, KvKind)| -> Vec<f32> {
            match case.kind {
                Kind::Decode => vec![1.0; (case.kv_bytes_as(kinds.0, kinds.1) as usize / 4).max(1)],
                Kind::Prefill => Vec::new(),
            }
        };
        let base_buf = stream_buf(f32_pair);
        let bufs: Vec<Vec<f32>> = typed.iter().map(|t| stream_buf(t.kinds)).collect();
        let mut base_time = None;
        for &runner in &runners {
            if matches!(runner, Runner::Split(_)) && case.kind != Kind::Decode {
                continue;
            }
            if runner != Runner::Baseline && typed.is_empty() {
                continue;
            }
            let threads = runner.threads(level_threads);
            let probers = |buf| probers(case, runner, threads, buf);
            let seen = slowest.iter().find(|x| x.0 == runner.name()).map(|x| x.1);
            if !o.full && case.kind == Kind::Prefill {
                // Estimated from one probe slot when the level has no rate yet.
                let rate = seen.or_else(|| {
                    let mut p = probers(&base_buf);
                    p[0].slot();
                    p[0].ceiling().map(|c| 0.1 * c)
                });
                let estimate = rate.map_or(0.0, |r| case.flops() / (r * 1e9));
                if estimate > SKIP_SECONDS {
                    if table {
                        println!(
                            "{:24} {:8} skipped: about {:.0} s a run at {:.1} GFLOP/s (--full runs it)",
                            case.name,
                            runner.name(),
                            estimate,
                            rate.unwrap_or_default()
                        );
                    }
                    continue;
                }
            }
            // One arm per row: the baseline on f32, or the runner on each --kv pair.
            let arm_kinds: Vec<(KvKind, KvKind)> = if runner == Runner::Baseline {
                vec![f32_pair]
            } else {
                typed.iter().map(|t| t.kinds).collect()
            };
            let out_len = data.out.len();
            let mut outs: Vec<Vec<f32>> = vec![vec![f32::NAN; out_len]; arm_kinds.len()];
            let (measured, ceils) = {
                let mut arms: Vec<Arm> = if runner == Runner::Baseline {
                    let (params, base) = (&params, &mut base);
                    let Data { q, k, v, .. } = &data;
                    let out = &mut outs[0];
                    vec![Arm {
                        probes: probers(&base_buf),
                        run: Box::new(move || base.run(params, q, k, v, out)),
                    }]
                } else {
                    typed
                        .iter()
                        .zip(outs.iter_mut())
                        .zip(&bufs)
                        .map(|((t, out), buf)| Arm {
                            probes: probers(buf),
                            run: kernel_run(runner, pool.as_ref(), t, &data.q, out),
                        })
                        .collect()
                };
                let measured = measure(&budget, threads, &mut arms);
                let ceils: Vec<Ceilings> = arms.iter().map(|a| Ceilings::of(&a.probes)).collect();
                (measured, ceils)
            };
            if runner == Runner::Baseline {
                base_time = Some(measured[0].0.median);
            }
            let f32_runs = f32_arm
                .filter(|_| runner != Runner::Baseline)
                .map(|i| measured[i].1.clone());
            for (i, ((timing, runs), ceil)) in measured.into_iter().zip(ceils).enumerate() {
                let kinds = arm_kinds[i];
                let (k, v) = if runner == Runner::Baseline {
                    (&data.k, &data.v)
                } else {
                    (&values[i].0, &values[i].1)
                };
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
                    vs_f32: f32_runs
                        .as_ref()
                        .filter(|_| kinds != f32_pair)
                        .and_then(|f| round_ratio(&runs, f)),
                    runner,
                    kinds,
                    threads,
                    ceil,
                    timing,
                    check: check(&params, &data.q, k, v, &outs[i]),
                };
                over |= row.pct_peak().is_some_and(|p| p > 100.0);
                if table {
                    print_row(&row);
                }
                if let Some(w) = &mut csv {
                    writeln!(w, "{}", csv_row(&row, &info)).expect("CSV written");
                }
            }
        }
    }
    if over && table {
        println!(
            "\n>100%! : the rate is above the ceiling measured around the row, which a kernel \
             cannot reach: a measurement error (the clock or a neighbour changed between the \
             probe slots and the runs). Rerun; pin the core (taskset -c N) on a shared host."
        );
    }
}

/// A timed run of `runner` (a level or split-KV, not the baseline) on `t`'s K and V, Q
/// `q`, into `out`.
fn kernel_run<'a>(
    runner: Runner, pool: Option<&'a pool::Pool>, t: &'a Typed, q: &'a [f32], out: &'a mut [f32],
) -> Box<dyn FnMut() + 'a> {
    let params = &t.params;
    with_stored!(&t.k, |k| with_stored!(&t.v, |v| typed_run(
        runner, pool, params, q, k, v, out
    )))
}

/// [`kernel_run`] with the types known.
fn typed_run<'a, K: KvType, V: KvType>(
    runner: Runner, pool: Option<&'a pool::Pool>, params: &'a Params<'static>, q: &'a [f32],
    k: &'a [K], v: &'a [V], out: &'a mut [f32],
) -> Box<dyn FnMut() + 'a> {
    match (runner, pool) {
        (Runner::Level(isa), None) => Box::new(move || {
            isa.attention(params, q, k, v, out, None)
                .expect("valid inputs")
        }),
        (Runner::Level(isa), Some(pool)) => Box::new(move || {
            pool.attention(isa, params, q, k, v, out)
                .expect("valid inputs")
        }),
        (Runner::Split(t), _) => {
            let mut split = split_kv::SplitKv::new(params, t);
            Box::new(move || split.run(params, q, k, v, out))
        }
        (Runner::Baseline, _) => unreachable!("the baseline runs on f32 only"),
    }
}

use std::io::Write as _;

fn print_header(info: &RunInfo, o: &Options) {
    println!(
        "qkv bench: {}, {} thread(s) for the levels{}",
        info.cpu.describe(),
        info.threads,
        if info.threads > 1 {
            " (qkv::parallel; the baseline on one)"
        } else {
            ""
        }
    );
    println!(
        "commit {}, {}, {}, detected level {}",
        info.commit, info.rustc, info.date, info.detected
    );
    println!(
        "named prefill/window shapes use {} head(s) (--heads N); time = median of the runs \
         after a warm-up; flops = 4·q·kv·d per head over visible pairs (causal ≈ half)",
        o.heads
    );
    println!(
        "%peak: of a ceiling probed next to each run of the row (median of the slots): the \
         level's own multiply-add (scalar: {}-lane unfused mul+add) for prefill, a \
         streaming read of the row's K+V bytes for decode; %avx2: of the AVX2 FMA probe",
        run_scalar_ceiling(FmaProbe {
            iters: 0,
            a: 0.0,
            b: 0.0,
            fused: false
        })
        .1
    );
    println!(
        "baseline: three-pass matrixmultiply sgemm + softmax, one thread, widest kernel it \
         may use ({}){}",
        baseline_level().name(),
        match baseline::MM_FEATURES {
            Some(f) if !f.is_empty() => format!(", MMTEST_FEATURE={f}"),
            _ => String::new(),
        },
    );
    println!(
        "runs: clean/timed, a clean run kept the CPU (waited < 1% on the run queue, on average \
         over its working threads); the median is over the clean runs (* : fewer than 3 \
         clean, median of all); cpu: share of the timed thread time on a CPU"
    );
    println!(
        "err: max |out - qkv::reference| over the checked heads×rows (each recomputed as a \
         one-row sub-problem); tol: worst err / qkv::tolerance::output_bound (≤ 1 passes)"
    );
    println!();
    println!(
        "{:24} {:8} {:9} {:>10} {:>5} {:>4} {:>14} {:>7} {:>6} {:>8} {:>7} {:>9} {:>6} {:>7}",
        "shape",
        "level",
        "kv",
        "time ms",
        "runs",
        "cpu",
        "rate",
        "%peak",
        "%avx2",
        "vs base",
        "vs f32",
        "err",
        "tol",
        "checked"
    );
}

/// A percentage of a ceiling; one above 100% is flagged as the measurement error it is.
fn pct_of_ceiling(p: Option<f64>) -> String {
    match p {
        Some(v) if v > 100.0 => ">100%!".to_string(),
        Some(v) => format!("{v:.0}%"),
        None => "-".to_string(),
    }
}

fn print_row(r: &Row) {
    let decode = r.case.kind == Kind::Decode;
    let rate = if decode {
        format!("{:.1} GB/s", r.gbps())
    } else {
        format!("{:.1} GFLOP/s", r.gflops())
    };
    let pct_avx2 = match (decode, r.runner, r.pct_avx2()) {
        (true, ..) => "-".to_string(),
        // The AVX2 probe is this row's own ceiling: already in %peak.
        (false, Runner::Level(Isa::Avx2), _) => pct_of_ceiling(r.pct_peak()),
        (false, _, p) => p.map_or_else(|| "-".to_string(), |v| format!("{v:.0}%")),
    };
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
        "{:24} {:8} {:9} {:>10} {:>5} {:>4} {:>14} {:>7} {:>6} {:>8} {:>7} {:>9.1e} {:>6} {:>7}",
        r.case.name,
        r.runner.name(),
        kv_label(r.kinds),
        format!(
            "{:.3}{}",
            r.timing.median * 1e3,
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
        pct_of_ceiling(r.pct_peak()),
        pct_avx2,
        speed,
        r.vs_f32
            .map_or_else(|| "-".to_string(), |x| format!("{x:.3}x")),
        r.check.max_err,
        tol,
        format!("{}h×{}r", r.check.heads, r.check.rows),
    );
}

fn csv_row(r: &Row, info: &RunInfo) -> String {
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
    let s = r.case.shape;
    let mask = match (r.case.mask.left, r.case.mask.right) {
        (None, None) => "none".to_string(),
        (None, Some(0)) => "causal".to_string(),
        (Some(w), Some(0)) => format!("window{w}"),
        _ => "band".to_string(),
    };
    let decode = r.case.kind == Kind::Decode;
    let (fma_ceiling, stream) = if decode {
        (None, r.ceil.own)
    } else {
        (r.ceil.own, None)
    };
    let fields = [
        r.case.name.clone(),
        r.runner.name().to_string(),
        s.q_heads.to_string(),
        s.kv_heads.to_string(),
        s.q_len.to_string(),
        s.kv_len.to_string(),
        s.head_dim.to_string(),
        mask,
        format!("{:.6e}", r.timing.median),
        r.timing.runs.to_string(),
        format!("{:.0}", r.case.flops()),
        format!("{:.3}", r.gflops()),
        format!("{:.3}", r.gbps()),
        opt(fma_ceiling),
        opt(if decode { None } else { r.ceil.avx2 }),
        opt(stream),
        opt(r.pct_peak()),
        opt(if decode { None } else { r.pct_avx2() }),
        opt(r.speedup),
        format!("{:.3e}", r.check.max_err),
        format!("{:.4}", r.check.worst_ratio),
        r.check.heads.to_string(),
        r.check.rows.to_string(),
        r.timing.clean.map(|c| c.to_string()).unwrap_or_default(),
        opt(r.timing.cpu_share),
        r.threads.to_string(),
        info.commit.clone(),
        info.cpu.name.clone(),
        info.cpu.family.clone(),
        info.cpu.model.clone(),
        info.date.clone(),
        info.rustc.clone(),
        info.detected.to_string(),
        r.kinds.0.name().to_string(),
        r.kinds.1.name().to_string(),
        format!("{:.0}", r.kv_bytes()),
        opt(r.vs_f32),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// --compare

/// A CSV file of this bench: its header and rows, by column name.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(path: &str) -> Table {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| usage_error(&format!("cannot read {path:?}: {e}")));
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = csv_split(lines.next().unwrap_or_default());
        for need in ["shape", "level", "time_s"] {
            if !header.iter().any(|h| h == need) {
                usage_error(&format!(
                    "{path:?} is not a bench CSV: it has no {need:?} column"
                ));
            }
        }
        Table {
            header,
            rows: lines.map(csv_split).collect(),
        }
    }

    /// The field `col` of `row`, if the file has that column and the row a value there.
    fn get<'a>(&self, row: &'a [String], col: &str) -> Option<&'a str> {
        let i = self.header.iter().position(|h| h == col)?;
        row.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn num(&self, row: &[String], col: &str) -> Option<f64> {
        self.get(row, col)?.parse().ok()
    }

    /// "commit, cpu, date" of the file's first row, as far as it has them.
    fn describe(&self) -> String {
        let Some(row) = self.rows.first() else {
            return "no rows".to_string();
        };
        let parts: Vec<String> = [
            ("commit", ""),
            ("cpu", ""),
            ("date_utc", ""),
            ("detected_level", "detected "),
        ]
        .iter()
        .filter_map(|(col, label)| self.get(row, col).map(|v| format!("{label}{v}")))
        // The level rows' threads (the baseline always has one).
        .chain(
            self.rows
                .iter()
                .filter_map(|r| self.num(r, "threads"))
                .reduce(f64::max)
                .map(|t| format!("threads {t}")),
        )
        .collect();
        if parts.is_empty() {
            "no run information (an older CSV)".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// `--compare a b`: B/A of time, rate and %peak for each (shape, level) in both files.
fn compare(a_path: &str, b_path: &str) {
    let (a, b) = (Table::read(a_path), Table::read(b_path));
    println!("A: {a_path}: {}", a.describe());
    println!("B: {b_path}: {}", b.describe());
    println!(
        "B/A per row matched by (shape, level, K/V types): time (< 1: B faster), rate (> 1: B \
         faster), %peak (> 1: B closer to its ceiling; robust to a changed clock)"
    );
    println!();
    println!(
        "{:26} {:8} {:9} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>8}",
        "shape", "level", "kv", "A ms", "B ms", "time", "rate", "A %pk", "B %pk", "%peak"
    );
    // A CSV from before the K/V types has f32 rows only.
    let key = |t: &Table, r: &[String]| {
        let kind = |col| t.get(r, col).unwrap_or("f32").to_string();
        (
            t.get(r, "shape").unwrap_or_default().to_string(),
            t.get(r, "level").unwrap_or_default().to_string(),
            if kind("k_type") == kind("v_type") {
                kind("k_type")
            } else {
                format!("{}/{}", kind("k_type"), kind("v_type"))
            },
        )
    };
    let (mut times, mut rates, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    let mut only_a = Vec::new();
    for ra in &a.rows {
        let k = key(&a, ra);
        let Some(rb) = b.rows.iter().find(|rb| key(&b, rb) == k) else {
            only_a.push(format!("{}/{}/{}", k.0, k.1, k.2));
            continue;
        };
        let (Some(ta), Some(tb)) = (a.num(ra, "time_s"), b.num(rb, "time_s")) else {
            continue;
        };
        let time = tb / ta;
        // Rates from the files (they differ from 1/time when the head count differs);
        // else the inverse of the time ratio.
        let rate = match (a.num(ra, "gflops"), b.num(rb, "gflops")) {
            (Some(x), Some(y)) if x > 0.0 => y / x,
            _ => ta / tb,
        };
        let (pa, pb) = (a.num(ra, "pct_peak"), b.num(rb, "pct_peak"));
        let peak = match (pa, pb) {
            (Some(x), Some(y)) if x > 0.0 => Some(y / x),
            _ => None,
        };
        times.push(time);
        rates.push(rate);
        peaks.extend(peak);
        let pct = |p: Option<f64>| p.map_or_else(|| "-".to_string(), |v| format!("{v:.0}%"));
        println!(
            "{:26} {:8} {:9} {:>10.3} {:>10.3} {:>7.3}x {:>7.3}x {:>7} {:>7} {:>8}",
            k.0,
            k.1,
            k.2,
            ta * 1e3,
            tb * 1e3,
            time,
            rate,
            pct(pa),
            pct(pb),
            peak.map_or_else(|| "-".to_string(), |v| format!("{v:.3}x")),
        );
    }
    let only_b: Vec<String> = b
        .rows
        .iter()
        .map(|r| key(&b, r))
        .filter(|k| !a.rows.iter().any(|ra| key(&a, ra) == *k))
        .map(|k| format!("{}/{}/{}", k.0, k.1, k.2))
        .collect();
    if times.is_empty() {
        println!("no (shape, level) row is in both files");
    } else {
        println!(
            "{:26} {:8} {:9} {:>10} {:>10} {:>7.3}x {:>7.3}x {:>7} {:>7} {:>8}",
            format!("median of {} rows", times.len()),
            "",
            "",
            "",
            "",
            median(times),
            median(rates),
            "",
            "",
            if peaks.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}x", median(peaks))
            },
        );
    }
    if !only_a.is_empty() {
        println!("only in A: {}", only_a.join(" "));
    }
    if !only_b.is_empty() {
        println!("only in B: {}", only_b.join(" "));
    }
}

// `cargo test --release --example bench`: the parts of the command line and the CSV that a
// typo or a format change would break without any benchmark noticing.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_shapes_parse() {
        let c = custom_case("32/8x1x32768x128").unwrap();
        assert_eq!(c.name, "32/8x1x32768x128");
        assert_eq!(c.kind, Kind::Decode);
        let s = c.shape;
        assert_eq!(
            (s.q_heads, s.kv_heads, s.q_len, s.kv_len),
            (32, 8, 1, 32768)
        );
        assert_eq!((s.head_dim, s.v_dim), (128, 128));
        assert_eq!(c.mask.left, None);
        assert_eq!(c.mask.right, None);

        let c = custom_case("8×2048×2048×64,causal").unwrap();
        assert_eq!(c.name, "8x2048x2048x64-causal");
        assert_eq!(c.kind, Kind::Prefill);
        assert_eq!((c.shape.q_heads, c.shape.kv_heads), (8, 8));
        assert_eq!((c.mask.left, c.mask.right), (None, Some(0)));

        let c = custom_case("4/1x512x16384x128,window=4096").unwrap();
        assert_eq!(c.name, "4/1x512x16384x128-window4096");
        assert_eq!((c.mask.left, c.mask.right), (Some(4096), Some(0)));
    }

    #[test]
    fn bad_custom_shapes_say_why() {
        for (spec, why) in [
            ("32/8x1x128", "3 field(s)"),
            ("3/2x1x4x8", "multiple of kv heads"),
            ("4x1x4x8,foo", "unknown option"),
            ("4x0x4x8", "q_len must be a positive integer"),
            ("4xax4x8", "q_len must be a positive integer"),
            ("4x1x4x8,window=0", "window must be"),
            ("1024x65536x65536x128", "GiB"),
            ("4x99999999999999999999x4x8", "q_len"),
        ] {
            let e = custom_case(spec).err().unwrap();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn csv_fields_round_trip() {
        let fields = ["plain", "a,b", "say \"hi\"", "", "x"];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        assert_eq!(csv_split(&line.join(",")), fields);
        assert_eq!(CSV_HEADER.split(',').count(), 37);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn kv_types_parse_and_count_their_bytes() {
        use KvKind::*;
        assert_eq!(kv_kinds("--kv", "all", true), [F32, F16, Bf16, Q8_0]);
        assert_eq!(kv_kinds("--kv", "q8_0, f16", true), [Q8_0, F16]);
        assert_eq!(kv_kinds("--k", "bf16", false), [Bf16]);
        let c = custom_case("32/8x1x32768x128").unwrap();
        let f32_bytes = (8 * 32768 * 256 * 4) as f64;
        assert_eq!(c.kv_bytes(), f32_bytes);
        assert_eq!(c.kv_bytes_as(F16, Bf16), f32_bytes / 2.0);
        // Four 34-byte blocks per 128-value row.
        assert_eq!(c.kv_bytes_as(Q8_0, Q8_0), (8 * 32768 * 2 * 4 * 34) as f64);
        assert_eq!(kv_label((F16, F16)), "f16");
        assert_eq!(kv_label((Q8_0, F16)), "q8_0/f16");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
