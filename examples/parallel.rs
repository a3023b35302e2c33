//! Single-threaded `qkv::attention` against `qkv::parallel::attention` on 1, 2, … threads, for
//! prefill and for long-context decode (split-KV). Timings alternate between the variants in
//! each round, and the median of the rounds is reported.
//!
//! ```text
//! cargo run --release --features parallel --example parallel [rounds]
//! ```

#[cfg(not(feature = "parallel"))]
fn main() {
    eprintln!("this example needs `--features parallel`");
}

#[cfg(feature = "parallel")]
fn main() {
    use qkv::parallel::{self, Plan};
    use qkv::{Isa, Mask, Params, Shape};
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

    let fill = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 31 + seed * 17) % 97) as f32 / 97.0 - 0.5)
            .collect()
    };
    let cases = [
        (
            "prefill 8h 1024x1024 d128",
            Shape::new(8, 1024, 1024, 128),
            Mask::NONE,
        ),
        (
            "prefill 8h 1024x1024 d128 causal",
            Shape::new(8, 1024, 1024, 128),
            Mask::causal(),
        ),
        (
            "decode 32q/8kv kv=32768 d128",
            Shape::new(8, 1, 32768, 128).gqa(32, 8),
            Mask::causal(),
        ),
        (
            "decode 8q/1kv kv=32768 d128",
            Shape::new(1, 1, 32768, 128).gqa(8, 1),
            Mask::causal(),
        ),
    ];
    for (name, shape, mask) in cases {
        let s = shape;
        let q = fill(s.q_heads * s.q_len * s.head_dim, 1);
        let k = fill(s.kv_heads * s.kv_len * s.head_dim, 2);
        let v = fill(s.kv_heads * s.kv_len * s.v_dim, 3);
        let mut out = vec![0.0f32; s.q_heads * s.q_len * s.v_dim];
        let params = Params::new(shape).with_mask(mask);
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
        println!("{name}:");
        println!("  qkv::attention           {:8.3} ms", base * 1e3);
        for (n, &nt) in threads.iter().enumerate() {
            let t = median(&mut times[1 + n]);
            let plan = Plan::auto(&shape, nt);
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
