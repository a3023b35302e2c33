//! Single-threaded `qkv::attention` against `qkv::parallel::attention` on 1, 2, … threads, for
//! prefill and for long-context decode (split-KV). Timings alternate between the variants in
//! each round, and the median of the rounds is reported. Each thread count has a pool of its
//! own, entered with `ThreadPool::install`, which hands the call to a worker first: its
//! times include that worker's wake-up (on a VM, up to a millisecond: `benches/NOTES.md`
//! 36), which `bench --threads N`, calling from the main thread, does not.
//!
//! ```text
//! cargo run --release --features parallel --example parallel [rounds]
//! ```

#[path = "common/problem.rs"]
mod problem;

#[cfg(not(feature = "parallel"))]
fn main() {
    eprintln!("this example needs `--features parallel`");
}

#[cfg(feature = "parallel")]
fn main() {
    use problem::{decode, prefill};
    use qkv::parallel::{self, Plan};
    use qkv::{Isa, Mask};
    use std::time::Instant;

    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1, 2];
    if cores > 2 {
        threads.push(cores);
    }
    let pools: Vec<_> = threads
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .collect();
    println!(
        "{} cores, {} level, median of {rounds} rounds",
        cores,
        Isa::detect()
    );

    let fill = |n: usize, seed: u64| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 31 + seed as usize * 17) % 97) as f32 / 97.0 - 0.5)
            .collect()
    };
    let cases = [
        prefill(8, 1024, Mask::NONE),
        prefill(8, 1024, Mask::causal()),
        decode(32, 8, 32768, Mask::causal()),
        decode(8, 1, 32768, Mask::causal()),
    ];
    for problem in cases {
        let s = problem.shape;
        let [q, k, v] = problem.inputs(fill);
        let mut out = vec![0.0f32; problem.out_len()];
        let params = problem.params();
        // times[0]: single-threaded call; times[1 + n]: parallel on pools[n].
        let mut times = vec![vec![]; 1 + pools.len()];
        for _ in 0..rounds {
            let t = Instant::now();
            qkv::attention(&params, &q, &k, &v, &mut out, None).unwrap();
            times[0].push(t.elapsed().as_secs_f64());
            for (n, pool) in pools.iter().enumerate() {
                let t = Instant::now();
                pool.install(|| parallel::attention(&params, &q, &k, &v, &mut out, None))
                    .unwrap();
                times[1 + n].push(t.elapsed().as_secs_f64());
            }
        }
        let median = |ts: &mut Vec<f64>| {
            ts.sort_by(f64::total_cmp);
            ts[ts.len() / 2]
        };
        let base = median(&mut times[0]);
        println!("{}:", problem.name);
        println!("  qkv::attention           {:8.3} ms", base * 1e3);
        for (n, &nt) in threads.iter().enumerate() {
            let t = median(&mut times[1 + n]);
            let plan = Plan::auto(&s, nt);
            println!(
                "  parallel, {nt} thread(s)    {:8.3} ms  x{:.2}  (q_block {}, kv splits {})",
                t * 1e3,
                base / t,
                plan.q_block,
                s.kv_len.div_ceil(plan.kv_block.min(s.kv_len)),
            );
        }
    }
}
