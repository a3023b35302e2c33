//! What the softcap, sinks and ALiBi cost: prefill 4k² d128 (one head) and decode over 32k
//! keys (32 query heads over 8 kv heads, d128), each plain and with each variant, the calls
//! interleaved one by one so that every configuration sees the same machine; medians of the
//! call times and their ratio to the plain call of the same round.
//!
//! ```text
//! cargo run --release --example variant_cost [-- --level avx2|avx512|scalar|neon] [--seconds S]
//! ```

use std::time::Instant;

#[path = "common/interleaved.rs"]
mod interleaved;
#[path = "common/problem.rs"]
mod problem;

use interleaved::{Args, fill, report};
use problem::{decode, prefill};
use qkv::Mask;

fn main() {
    let args = Args::parse("variant_cost");
    println!("{}", args.header());
    let (level, seconds) = (args.level, args.seconds);
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
        println!("{}:", problem.name);
        let names: Vec<String> = configs.iter().map(|c| c.0.to_string()).collect();
        report(&names, &times, "plain");
    }
}
