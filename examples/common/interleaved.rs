//! What the cost examples (`variant_cost`, `paged_cost`) share: their command line (a level
//! and seconds per problem), the CPU's name, test data, and the median of interleaved
//! calls' times and of their ratios to a baseline call of the same round.

#![allow(dead_code)]

use qkv::{Isa, Level};

/// `--level NAME` (default: the detected level) and `--seconds S` (default 6).
pub struct Args {
    pub level: Level,
    pub seconds: f64,
}

impl Args {
    /// Parses the command line of example `name`. `--help` prints the usage and exits 0;
    /// anything else it does not take, or a level this CPU cannot run, prints what is wrong
    /// and the usage, and exits 2.
    pub fn parse(name: &str) -> Args {
        let usage = format!(
            "usage: {name} [--level NAME] [--seconds S]\n  \
             --level NAME  one of: {} (default: the detected level)\n  \
             --seconds S   seconds of interleaved calls per problem (default 6)",
            Isa::ALL.map(|i| i.name()).join(" ")
        );
        let fail = |what: String| -> ! {
            eprintln!("{name}: {what}\n{usage}");
            std::process::exit(2)
        };
        let mut out = Args {
            level: Level::Detect,
            seconds: 6.0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            match (a.as_str(), args.next()) {
                ("--level", Some(l)) => match Isa::ALL.into_iter().find(|i| i.name() == l) {
                    Some(isa) if isa.is_available() => out.level = Level::Isa(isa),
                    Some(_) => fail(format!("this CPU (or build) cannot run level {l}")),
                    None => fail(format!("unknown level {l}")),
                },
                ("--seconds", Some(s)) => match s.parse::<f64>() {
                    Ok(x) if x.is_finite() && x > 0.0 => out.seconds = x,
                    _ => fail(format!("--seconds takes a positive number, not {s}")),
                },
                (a, None) if a == "--level" || a == "--seconds" => {
                    fail(format!("{a} needs a value"))
                }
                (a, _) => fail(format!("unknown argument {a}")),
            }
        }
        out
    }

    /// The line the examples print first: the CPU, the level and how long each problem runs.
    pub fn header(&self) -> String {
        let name = match self.level {
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
        format!(
            "{cpu}; level {name}; {} s a problem, calls interleaved",
            self.seconds
        )
    }
}

/// `n` values in `[-1, 1)` from a xorshift generator seeded with `seed`.
pub fn fill(n: usize, seed: u64) -> Vec<f32> {
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

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints one line per configuration: its median time and the median of its per-round
/// ratio to configuration 0's time (`than` names configuration 0).
pub fn report(names: &[String], times: &[Vec<f64>], than: &str) {
    let base = &times[0];
    for (name, t) in names.iter().zip(times) {
        let ratios: Vec<f64> = t.iter().zip(base).map(|(a, b)| a / b).collect();
        println!(
            "  {name:12} {:9.3} ms   {:.3}× {than} ({} rounds)",
            median(t.clone()) * 1e3,
            median(ratios),
            t.len()
        );
    }
}
