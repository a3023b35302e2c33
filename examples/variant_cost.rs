//! What the softcap, sinks and ALiBi cost: prefill 4k² d128 (one head) and decode over 32k
//! keys (32 query heads over 8 kv heads, d128), each plain and with each variant, the calls
//! interleaved one by one so that every configuration sees the same machine; medians of the
//! call times and their ratio to the plain call of the same round.
//!
//! ```text
//! cargo run --release --example variant_cost [-- --level avx2|avx512|scalar|neon] [--seconds S]
//! ```

use std::time::Instant;

#[path = "common/problem.rs"]
mod problem;

use problem::{decode, prefill};
use qkv::{Isa, Level, Mask};

fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut level = Level::Detect;
    let mut seconds = 6.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--level", Some(l)) => {
                let isa = Isa::ALL.into_iter().find(|i| i.name() == l);
                level = Level::Isa(isa.unwrap_or_else(|| panic!("unknown level {l}")));
            }
            ("--seconds", Some(s)) => seconds = s.parse().expect("--seconds takes a number"),
            _ => panic!("usage: variant_cost [--level NAME] [--seconds S]"),
        }
    }
    let name = match level {
        Level::Isa(i) => i.name(),
        _ => Isa::detect().name(),
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(String::from)
        })
        .unwrap_or_default();
    println!("{cpu}; level {name}; {seconds} s a shape, calls interleaved");
    for problem in [
        prefill(1, 4096, Mask::NONE),
        prefill(1, 4096, Mask::causal()),
        decode(32, 8, 32768, Mask::NONE),
    ] {
        let s = problem.shape;
        let [q, k, v] = problem.inputs(fill);
        let mut out = vec![0.0f32; problem.out_len()];
        let sinks = vec![0.5f32; s.q_heads];
        let n = s.q_heads as f32;
        let slopes: Vec<f32> = (0..s.q_heads)
            .map(|h| (-8.0 * (h as f32 + 1.0) / n).exp2())
            .collect();
        let plain = problem.params();
        let configs = [
            ("plain", plain),
            ("softcap 30", plain.with_softcap(30.0)),
            ("sinks", plain.with_sinks(&sinks)),
            ("alibi", plain.with_alibi(&slopes)),
            (
                "all three",
                plain
                    .with_softcap(30.0)
                    .with_sinks(&sinks)
                    .with_alibi(&slopes),
            ),
        ];
        let mut times = vec![Vec::new(); configs.len()];
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds || times[0].len() < 3 {
            for (t, (_, p)) in times.iter_mut().zip(&configs) {
                let t0 = Instant::now();
                level
                    .attention(p, &q, &k, &v, &mut out, None)
                    .expect("valid problem");
                t.push(t0.elapsed().as_secs_f64());
            }
        }
        // Per round, each configuration's time over the plain call's.
        let plain_times = times[0].clone();
        println!("{}:", problem.name);
        for ((what, _), t) in configs.iter().zip(&times) {
            let ratios: Vec<f64> = t.iter().zip(&plain_times).map(|(a, b)| a / b).collect();
            println!(
                "  {what:11} {:9.3} ms   {:.3}× plain ({} rounds)",
                median(t.clone()) * 1e3,
                median(ratios),
                t.len()
            );
        }
    }
}
