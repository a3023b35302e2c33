//! Criterion benchmarks over the issue-3 shapes: `cargo bench -p qkv-bench` (a few minutes),
//! or `cargo bench -p qkv-bench -- decode` for one group. (`benches/` is a package of its
//! own, so that qkv's test builds do not compile criterion.)
//!
//! Groups:
//! - `prefill`: `q_len = kv_len` ∈ {1024, 4096}, `head_dim` ∈ {128, 64}, unmasked and causal,
//!   and a sliding window of 256 at 16384, one head each; plus `prefill-256-d64-causal`, the
//!   small shape on which `qkv::reference` (the `f64` two-pass reference) is timed too;
//! - `decode`: `q_len = 1`, `kv_len` ∈ {4096, 32768}, 32 query heads over 8 kv heads,
//!   `head_dim` 128 (the reference is timed on the 4096 one), plus `split-1t` and `split-2t`:
//!   split-KV decode at the detected level, two `qkv::split::partial` key ranges on one
//!   thread or on two, then `qkv::split::merge` (`examples/common/split_kv.rs`).
//!
//! K and V stored as other types (`prefill-typed` and `decode-typed`): the detected level
//! with K and V both `f16` or both `q8_0` (`examples/common/cases.rs`'s `Typed`: rounded or
//! quantised as a KV cache would hold them), on `prefill-4k-d128` and both decode shapes,
//! next to the same level on `f32`, so that a type's entry and its `f32` twin are in one
//! group: `cargo bench -p qkv-bench -- typed`. The time ratio against `f32` measured in
//! interleaved rounds is the bench example's `--kv all` (`vs f32` column).
//!
//! One entry per available level (`scalar`, `avx2`, `avx512`, `neon`) plus `baseline`, the
//! three-pass SGEMM attention of `examples/common/baseline.rs`. The scalar level runs only
//! where one call takes under about a second (the 1024 and decode shapes), so that the whole
//! suite stays within minutes.
//!
//! Throughput is `Throughput::Elements(flops)`, so criterion's **"elem/s" means flop/s**
//! (`Gelem/s` = GFLOP/s), counted as `2·(head_dim + v_dim)` per visible query·key pair:
//! `4·q_len·kv_len·head_dim` per head unmasked, half of it causal. For the ceilings, the
//! share of them and the errors, run `cargo run --release --example bench`.

#[path = "../examples/common/baseline.rs"]
mod baseline;
#[path = "../examples/common/cases.rs"]
mod cases;
#[path = "../examples/common/split_kv.rs"]
mod split_kv;

use std::time::Duration;

use cases::kit::kv::{Stored, with_stored};
use cases::{Case, Data, Kind, Typed};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use qkv::{Isa, KvKind};

/// Flops above which the scalar level is left out (it runs at well under 1 GFLOP/s).
const SCALAR_MAX_FLOPS: f64 = 1.2e9;

fn bench_case(group: &mut BenchmarkGroup<'_, WallTime>, case: &Case, with_reference: bool) {
    let params = case.params();
    let mut d = Data::new(case.shape, 1);
    group.throughput(Throughput::Elements(case.flops() as u64));
    // Few samples for the slow entries, so the suite stays short.
    let big = case.flops() > 2e9;
    group.sample_size(10);
    // Every call is at least a millisecond: the same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(if big { 4 } else { 2 }));

    let mut base = baseline::Baseline::new();
    let Data { q, k, v, out } = &mut d;
    group.bench_function(format!("{}/baseline", case.name), |b| {
        b.iter(|| base.run(&params, q, k, v, out))
    });
    for isa in Isa::available() {
        if isa == Isa::Scalar && case.flops() > SCALAR_MAX_FLOPS {
            continue;
        }
        group.bench_function(format!("{}/{}", case.name, isa.name()), |b| {
            b.iter(|| isa.attention(&params, q, k, v, out, None).unwrap())
        });
    }
    if case.kind == Kind::Decode {
        for threads in 1..=split_kv::SPLITS {
            let mut split = split_kv::SplitKv::new(&params, threads);
            group.bench_function(format!("{}/split-{threads}t", case.name), |b| {
                b.iter(|| split.run(&params, q, k, v, out))
            });
        }
    }
    if with_reference {
        group.bench_function(format!("{}/reference", case.name), |b| {
            b.iter(|| qkv::reference::attention(&params, q, k, v, out, None).unwrap())
        });
    }
}

/// The storage types of the typed groups, after `f32` for comparison.
const TYPED: [KvKind; 3] = [KvKind::F32, KvKind::F16, KvKind::Q8_0];

/// The detected level on `case` with K and V both stored as each of [`TYPED`], as
/// `{shape}/{type}`. Decode's throughput is in bytes of K+V as stored (criterion's `B/s`),
/// prefill's in flops.
fn bench_typed(group: &mut BenchmarkGroup<'_, WallTime>, case: &Case) {
    let mut d = Data::new(case.shape, 1);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(if case.flops() > 2e9 { 4 } else { 2 }));
    let isa = Isa::detect();
    for kind in TYPED {
        let Some(t) = Typed::new(case, &d, (kind, kind)) else {
            continue;
        };
        group.throughput(match case.kind {
            Kind::Decode => Throughput::Bytes(case.kv_bytes_as(kind, kind) as u64),
            Kind::Prefill => Throughput::Elements(case.flops() as u64),
        });
        let (params, q, out) = (&t.params, &d.q, &mut d.out);
        group.bench_function(
            format!("{}/{}/{}", case.name, isa.name(), kind.name()),
            |b| {
                with_stored!(&t.k, |k| with_stored!(&t.v, |v| b
                    .iter(|| isa.attention(params, q, k, v, out, None).unwrap())))
            },
        );
    }
}

fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill");
    group.warm_up_time(Duration::from_millis(500));
    bench_case(&mut group, &cases::small_case(), true);
    for case in cases::cases(1).iter().filter(|c| c.kind == Kind::Prefill) {
        bench_case(&mut group, case, false);
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.warm_up_time(Duration::from_millis(500));
    for case in cases::cases(1).iter().filter(|c| c.kind == Kind::Decode) {
        bench_case(&mut group, case, case.shape.kv_len <= 4096);
    }
    group.finish();
}

fn typed(c: &mut Criterion) {
    let all = cases::cases(1);
    for (name, kind) in [
        ("prefill-typed", Kind::Prefill),
        ("decode-typed", Kind::Decode),
    ] {
        let mut group = c.benchmark_group(name);
        group.warm_up_time(Duration::from_millis(500));
        for case in all
            .iter()
            .filter(|c| c.kind == kind && (kind == Kind::Decode || c.name == "prefill-4k-d128"))
        {
            bench_typed(&mut group, case);
        }
        group.finish();
    }
}

criterion::criterion_group!(benches, prefill, decode, typed);
criterion::criterion_main!(benches);
