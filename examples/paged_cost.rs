//! What reading K and V through pages costs: decode over 32k keys (32 query heads over 8 kv
//! heads, d128) with K/V in `f32` and in `f16`, and a 4k² prefill, each with K and V in
//! order (planar) and in pools of pages of 16, 64 and 256 keys, laid out
//! `[pages][kv_heads][page_len][dim]` ("HND") and `[pages][page_len][kv_heads][dim]`
//! ("NHD", vLLM's), the pages in a shuffled order as a cache that has served many sequences
//! holds them; K and V interleaved, `[kv_len][kv_heads][dim]`, not paged; and the in-order K
//! and V read as pages of each length in place (what the pages cost the kernel, without
//! what scattered pages cost the memory system). The calls are interleaved one by one so
//! that every layout sees the same machine; medians of the call times and of their ratio to
//! the in-order call of the same round.
//!
//! ```text
//! cargo run --release --example paged_cost [-- --level avx2|avx512|scalar|neon] [--seconds S]
//! ```

use std::time::Instant;

#[path = "common/interleaved.rs"]
mod interleaved;
#[path = "common/problem.rs"]
mod problem;

use interleaved::{Args, fill, report};
use problem::{decode, prefill};
use qkv::{KvType, Layout, Level, Mask, Pages, Params, f16};

/// `pages` page indices in a shuffled order (a fixed permutation).
fn shuffled(pages: usize) -> Vec<u32> {
    let mut t: Vec<u32> = (0..pages as u32).collect();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..t.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        t.swap(i, (s % (i as u64 + 1)) as usize);
    }
    t
}

/// `x` (planar `[kv_heads][kv_len][dim]`) copied into a pool of pages of `page_len` keys,
/// `[pages][kv_heads][page_len][dim]` (`hnd`) or `[pages][page_len][kv_heads][dim]`, placed
/// as `table` says.
fn paged<T: Copy + Default>(
    x: &[T], (kv_heads, kv_len, dim): (usize, usize, usize), page_len: usize, table: &[u32],
    hnd: bool,
) -> Vec<T> {
    let stride = kv_heads * page_len * dim;
    let mut pool = vec![T::default(); table.len() * stride];
    for g in 0..kv_heads {
        for j in 0..kv_len {
            let (page, row) = (table[j / page_len] as usize, j % page_len);
            let within = match hnd {
                true => g * page_len + row,
                false => row * kv_heads + g,
            };
            let at = page * stride + within * dim;
            pool[at..at + dim].copy_from_slice(&x[(g * kv_len + j) * dim..][..dim]);
        }
    }
    pool
}

/// `x` (planar) re-laid interleaved, `[kv_len][kv_heads][dim]`.
fn interleaved<T: Copy + Default>(
    x: &[T], (kv_heads, kv_len, dim): (usize, usize, usize),
) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    for g in 0..kv_heads {
        for j in 0..kv_len {
            y[(j * kv_heads + g) * dim..][..dim]
                .copy_from_slice(&x[(g * kv_len + j) * dim..][..dim]);
        }
    }
    y
}

/// Times `problem` with K and V as `T`, in order and through pages of each length.
fn run<T: KvType + Copy + Default>(
    level: Level, seconds: f64, problem: &problem::Problem, convert: fn(&[f32]) -> Vec<T>,
    what: &str,
) {
    let s = problem.shape;
    let [q, k, v] = problem.inputs(fill);
    let (k, v) = (convert(&k), convert(&v));
    let mut out = vec![0.0f32; problem.out_len()];
    let plain = problem.params();
    let lens = [16usize, 64, 256];
    let (kd, vd) = (
        (s.kv_heads, s.kv_len, s.head_dim),
        (s.kv_heads, s.kv_len, s.v_dim),
    );
    let tables: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| shuffled(s.kv_len.div_ceil(l)))
        .collect();
    // Per layout (HND, NHD) and page length: the K and V pools.
    let mut pools: Vec<(bool, usize, [Vec<T>; 2])> = Vec::new();
    for hnd in [true, false] {
        for (&l, t) in lens.iter().zip(&tables) {
            pools.push((hnd, l, [paged(&k, kd, l, t, hnd), paged(&v, vd, l, t, hnd)]));
        }
    }
    let (ik, iv) = (interleaved(&k, kd), interleaved(&v, vd));
    let mut configs: Vec<(String, Params, &[T], &[T])> = vec![
        ("in order".to_string(), plain, &k, &v),
        (
            "interleaved".to_string(),
            Params {
                k: Layout::interleaved(s.kv_heads, s.head_dim),
                v: Layout::interleaved(s.kv_heads, s.v_dim),
                ..plain
            },
            &ik,
            &iv,
        ),
    ];
    for ((hnd, l, [pk, pv]), n) in pools.iter().zip(0..) {
        let table = &tables[n % lens.len()];
        let stride = |dim: usize| s.kv_heads * l * dim;
        let within = |dim: usize| match hnd {
            true => Layout::planar(*l, dim),
            false => Layout::interleaved(s.kv_heads, dim),
        };
        let params = Params {
            k: within(s.head_dim),
            v: within(s.v_dim),
            ..plain.with_pages(Pages::new(table, *l, stride(s.head_dim), stride(s.v_dim)))
        };
        let name = format!("{} pages of {l}", if *hnd { "HND" } else { "NHD" });
        configs.push((name, params, pk, pv));
    }
    // The in-order K and V read as pages in order: the same addresses as in order, so
    // what remains is what pages cost the kernel (page arithmetic, blocks read page by page),
    // without what scattered pages cost the memory system.
    let identities: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| (0..s.kv_len.div_ceil(l) as u32).collect())
        .collect();
    for (&l, identity) in lens.iter().zip(&identities) {
        let in_place = plain.with_pages(Pages::new(identity, l, l * s.head_dim, l * s.v_dim));
        if s.kv_len.is_multiple_of(l) {
            configs.push((format!("pages of {l} in place"), in_place, &k, &v));
        }
    }
    let mut times = vec![Vec::new(); configs.len()];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times[0].len() < 3 {
        for (t, (_, p, k, v)) in times.iter_mut().zip(&configs) {
            let t0 = Instant::now();
            level
                .attention(p, &q, k, v, &mut out, None)
                .expect("valid problem");
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    println!("{} ({what} K/V):", problem.name);
    let names: Vec<String> = configs.iter().map(|c| c.0.clone()).collect();
    report(&names, &times, "in order");
}

fn main() {
    let args = Args::parse("paged_cost");
    println!("{}", args.header());
    let (level, seconds) = (args.level, args.seconds);
    let dec = decode(32, 8, 32768, Mask::NONE);
    run::<f32>(level, seconds, &dec, |x| x.to_vec(), "f32");
    run::<f16>(
        level,
        seconds,
        &dec,
        |x| x.iter().map(|&a| f16::from_f32(a)).collect(),
        "f16",
    );
    let pre = prefill(1, 4096, Mask::causal());
    run::<f32>(level, seconds, &pre, |x| x.to_vec(), "f32");
}
