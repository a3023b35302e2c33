//! Attention over a KV cache stored in 16 or 8 bits, and the error each storage type adds.
//!
//! A decode step (32 query heads over 8 kv heads, head_dim 128, a 4096-token cache) and a
//! 256-row causal prefill, with K and V kept as `f32`, `f16`, `bf16` and `q8_0`. Each row
//! of the table compares the output with `qkv::reference` on the original `f32` cache: the
//! error of storing the cache in that type (the kernel's own error is the `f32` row).
//!
//! ```sh
//! cargo run --release --example kv_cache
//! ```

#[path = "common/problem.rs"]
mod problem;

use problem::{decode, prefill};
use qkv::{BlockQ8_0, KvType, Mask, bf16, f16};

/// A deterministic sample of [-1, 1) (SplitMix64).
fn sample(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `x` quantised to q8_0 blocks, 32 values each (rows are whole blocks here).
fn q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks_exact(32)
        .map(|c| BlockQ8_0::quantize(c.try_into().expect("32 values")))
        .collect()
}

/// The largest and the mean absolute difference of two outputs.
fn error(got: &[f32], want: &[f32]) -> (f32, f32) {
    let diff = got.iter().zip(want).map(|(g, w)| (g - w).abs());
    let max = diff.clone().fold(0.0f32, f32::max);
    (max, diff.sum::<f32>() / got.len() as f32)
}

fn main() -> Result<(), qkv::Error> {
    for problem in [
        decode(32, 8, 4096, Mask::NONE),
        prefill(4, 256, Mask::causal()),
    ] {
        let s = problem.shape;
        let [q, k, v] = problem.inputs(sample);
        let mut want = vec![0.0f32; problem.out_len()];
        let params = problem.params();
        qkv::reference::attention(&params, &q, &k, &v, &mut want, None)?;

        let name = &problem.name;
        println!("{name}: max and mean |out - reference on the f32 cache|");
        println!("  type   bytes/key   max error   mean error");
        let mut out = vec![0.0f32; want.len()];
        // One call per storage type: the same function, K and V as the cache holds them.
        let mut row = |name: &str, run: &mut dyn FnMut(&mut [f32]) -> Result<(), qkv::Error>| {
            run(&mut out)?;
            let (max, mean) = error(&out, &want);
            let bytes = bytes_per_key(name, s.kv_heads, s.head_dim + s.v_dim);
            println!("  {name:<6} {bytes:>9}   {max:>9.2e}   {mean:>10.2e}");
            Ok::<(), qkv::Error>(())
        };
        row("f32", &mut |out| {
            qkv::attention(&params, &q, &k, &v, out, None)
        })?;
        let (k16, v16) = (to::<f16>(&k, f16::from_f32), to::<f16>(&v, f16::from_f32));
        row("f16", &mut |out| {
            qkv::attention(&params, &q, &k16, &v16, out, None)
        })?;
        let (kb, vb) = (
            to::<bf16>(&k, bf16::from_f32),
            to::<bf16>(&v, bf16::from_f32),
        );
        row("bf16", &mut |out| {
            qkv::attention(&params, &q, &kb, &vb, out, None)
        })?;
        // q8_0 strides count 32-value blocks: `with_kv_units` turns the layouts into them.
        let p8 = params.with_kv_units::<BlockQ8_0, BlockQ8_0>();
        let (k8, v8) = (q8_0(&k), q8_0(&v));
        row("q8_0", &mut |out| {
            qkv::attention(&p8, &q, &k8, &v8, out, None)
        })?;
        println!();
    }
    Ok(())
}

/// `x` converted value by value.
fn to<T: KvType>(x: &[f32], f: fn(f32) -> T) -> Vec<T> {
    x.iter().map(|&x| f(x)).collect()
}

/// Bytes of K and V per key across `kv_heads` heads of `values` values (head_dim + v_dim).
fn bytes_per_key(kind: &str, kv_heads: usize, values: usize) -> usize {
    let per_value = match kind {
        "f32" => 4.0,
        "f16" | "bf16" => 2.0,
        _ => 34.0 / 32.0,
    };
    (kv_heads as f64 * values as f64 * per_value) as usize
}
