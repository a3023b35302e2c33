//! The worked example this crate grew from, computed for real:
//!
//! > The dog chased the ball because it was excited.
//!
//! When the model processes `it`, its query asks "which earlier token do I refer to?"; the
//! keys of `dog` and `ball` advertise what they are; the softmax of the scores decides how
//! much of each value flows into the output of `it`. This example builds tiny, hand-made Q,
//! K and V for the three tokens `dog`, `ball`, `it` (causal: a token sees itself and the
//! tokens before it), runs the real kernel (`qkv::attention`) and the `f64` reference
//! (`qkv::reference::attention`), and prints the score row, the softmax weights and the
//! output mix of the `it` row. Every number printed is computed here.
//!
//! ```sh
//! cargo run --release --example explain
//! ```
//!
//! The article illustrates the `it` row with scores of about 8.1 / 2.3 / 3.0 and weights of
//! about 0.82 / 0.06 / 0.12; those two illustrations do not belong together (a softmax of
//! those scores would give almost all the weight to `dog`), so the Q and K below are chosen
//! to give weights like the article's, and the scores that produce them are printed as they
//! come out.

use qkv::{Isa, Mask, Params, Shape};

const TOKENS: [&str; 3] = ["dog", "ball", "it"];

/// What each of the 4 Q/K dimensions means. A query says how much it looks for each
/// feature, a key how much its token has it; their dot product is how well they match.
const QK_DIMS: [&str; 4] = ["animal", "object", "pronoun", "excitable"];

/// Queries, `[token][dim]`: what each token looks for.
const Q: [[f32; 4]; 3] = [
    // dog: the first token sees only itself; its query does not matter.
    [0.0, 0.0, 0.0, 0.0],
    // ball: looks a little at object-like keys (itself) — enough to split its weight
    // between `dog` and itself.
    [0.0, 0.81, 0.0, 0.0],
    // it: a pronoun looking for its referent: an animal (the subject) that can be
    // "excited"; a little for objects (`ball` is a candidate too) and for pronouns
    // (every token keeps some of itself).
    [3.5, 0.8, 2.2, 2.5],
];

/// Keys, `[token][dim]`: what each token advertises.
const K: [[f32; 4]; 3] = [
    // dog: an animal, a possible subject, something that can be excited.
    [1.0, 0.0, 0.0, 1.0],
    // ball: an object, a possible noun to refer to.
    [0.0, 1.0, 0.0, 0.0],
    // it: a pronoun.
    [0.0, 0.0, 1.0, 0.0],
];

/// What each of the 4 value dimensions carries.
const V_DIMS: [&str; 4] = ["is-animal", "is-toy", "is-pronoun", "is-excited"];

/// Values, `[token][dim]`: the content a token passes on when attended to.
const V: [[f32; 4]; 3] = [
    [1.0, 0.0, 0.0, 0.9], // dog: an animal, and likely the excited one
    [0.0, 1.0, 0.0, 0.1], // ball: a toy
    [0.0, 0.0, 1.0, 0.0], // it: only "I am a pronoun"
];

fn flat<const N: usize>(rows: &[[f32; N]]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

fn main() -> Result<(), qkv::Error> {
    let n = TOKENS.len();
    let d = QK_DIMS.len();
    let shape = Shape::new(1, n, n, d); // 1 head, 3 queries, 3 keys, head_dim 4
    let params = Params::new(shape).with_mask(Mask::causal());
    let scale = params.scale();
    let (q, k, v) = (flat(&Q), flat(&K), flat(&V));
    let isa = Isa::detect();

    println!("\"The dog chased the ball because it was excited.\"");
    println!(
        "Tokens: dog (position 0), ball (1), it (2). Causal: each token sees itself and the \
         tokens before it.\n"
    );
    println!(
        "Q/K dimensions: {}; scale = 1/√{d} = {scale}",
        QK_DIMS.join(", ")
    );
    println!(
        "{:6} {:^30}  {:^30}",
        "", "Q: what I look for", "K: what I advertise"
    );
    for t in 0..n {
        println!("{:6} {}  {}", TOKENS[t], vec4(&Q[t]), vec4(&K[t]));
    }
    println!("\nV dimensions: {}", V_DIMS.join(", "));
    for t in 0..n {
        println!("{:6} {}", TOKENS[t], vec4(&V[t]));
    }

    // 1. The score row of `it`: scale · q_it · k_j, computed here for the keys it may see.
    let it = 2;
    let scores: Vec<f32> = (0..n)
        .map(|j| scale * Q[it].iter().zip(&K[j]).map(|(a, b)| a * b).sum::<f32>())
        .collect();

    // 2. The weights, from the kernel itself: with V = the identity (one-hot value rows,
    //    v_dim = kv_len), output row i is Σ_j w_ij e_j = (w_i0, w_i1, w_i2), the softmax
    //    weights. The lse output is ln Σ_j e^(s_ij), the softmax denominator.
    let id_shape = shape.with_v_dim(n);
    let id_params = Params::new(id_shape).with_mask(Mask::causal());
    let identity: Vec<f32> = (0..n * n)
        .map(|x| if x / n == x % n { 1.0 } else { 0.0 })
        .collect();
    let mut weights = vec![0.0f32; n * n];
    let mut lse = vec![0.0f32; n];
    qkv::attention(&id_params, &q, &k, &identity, &mut weights, Some(&mut lse))?;
    let mut ref_weights = vec![0.0f32; n * n];
    let mut ref_lse = vec![0.0f32; n];
    qkv::reference::attention(
        &id_params,
        &q,
        &k,
        &identity,
        &mut ref_weights,
        Some(&mut ref_lse),
    )?;

    println!("\nThe `it` row, step by step (kernel: qkv::attention at level {isa}):");
    println!("{:28} {:>8} {:>8} {:>8}", "", "dog", "ball", "it");
    println!(
        "{:28} {}",
        "score = scale · q_it·k_j",
        row3(&scores, |x| format!("{x:8.3}"))
    );
    println!(
        "{:28} {}",
        "weight (kernel, V = I)",
        row3(&weights[it * n..][..n], |x| format!("{x:8.4}"))
    );
    println!(
        "{:28} {}",
        "weight (reference)",
        row3(&ref_weights[it * n..][..n], |x| format!("{x:8.4}"))
    );
    let direct_lse = scores.iter().map(|s| (*s as f64).exp()).sum::<f64>().ln();
    println!(
        "lse of the `it` row: kernel {:.5}, reference {:.5}, ln Σ_j e^score_j computed here {:.5}",
        lse[it], ref_lse[it], direct_lse
    );

    println!("\nAll weights (rows: the token attending; ·: masked, a later token):");
    println!("{:6} {:>8} {:>8} {:>8}", "", "dog", "ball", "it");
    for i in 0..n {
        let cells: Vec<String> = (0..n)
            .map(|j| {
                if j <= i {
                    format!("{:8.3}", weights[i * n + j])
                } else {
                    format!("{:>8}", "·")
                }
            })
            .collect();
        println!("{:6} {}", TOKENS[i], cells.join(" "));
    }

    // 3. The output of `it` with the real values: the kernel, the reference, and the mix
    //    Σ_j w_j · v_j rebuilt from the weights above.
    let mut out = vec![0.0f32; n * d];
    qkv::attention(&params, &q, &k, &v, &mut out, None)?;
    let mut ref_out = vec![0.0f32; n * d];
    qkv::reference::attention(&params, &q, &k, &v, &mut ref_out, None)?;

    println!("\nThe output of `it` = Σ_j weight_j · v_j:");
    println!("{:24} {}", "", V_DIMS.map(|s| format!("{s:>10}")).join(" "));
    let w = &weights[it * n..][..n];
    let mut mix = [0.0f32; 4];
    for j in 0..n {
        let part: Vec<f32> = V[j].iter().map(|x| w[j] * x).collect();
        for (m, p) in mix.iter_mut().zip(&part) {
            *m += p;
        }
        println!(
            "{:24} {}",
            format!("{:.3} × v_{}", w[j], TOKENS[j]),
            cols(&part)
        );
    }
    println!("{:24} {}", "= sum of the above", cols(&mix));
    println!(
        "{:24} {}",
        format!("qkv::attention ({isa})"),
        cols(&out[it * d..][..d])
    );
    println!(
        "{:24} {}",
        "qkv::reference (f64)",
        cols(&ref_out[it * d..][..d])
    );
    let err = out
        .iter()
        .zip(&ref_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("largest |kernel − reference| over all three rows: {err:.1e}");

    let argmax = |x: &[f32]| {
        (0..x.len())
            .max_by(|&a, &b| x[a].total_cmp(&x[b]))
            .unwrap_or(0)
    };
    let top = argmax(w);
    let out_it = &out[it * d..][..d];
    let mut dims: Vec<usize> = (0..d).collect();
    dims.sort_by(|&a, &b| out_it[b].total_cmp(&out_it[a]));
    println!(
        "\nQ and K decided the routing: `it` sends {:.0}% of its attention to `{}`. V decided \
         the content: the output of `it` is now mostly {} ({:.2}) and {} ({:.2}).",
        100.0 * w[top],
        TOKENS[top],
        V_DIMS[dims[0]],
        out_it[dims[0]],
        V_DIMS[dims[1]],
        out_it[dims[1]],
    );
    Ok(())
}

fn vec4(x: &[f32; 4]) -> String {
    let cells: Vec<String> = x.iter().map(|v| format!("{v:6.2}")).collect();
    format!("[{}]", cells.join(""))
}

fn row3(x: &[f32], f: impl Fn(f32) -> String) -> String {
    x.iter().map(|&v| f(v)).collect::<Vec<_>>().join(" ")
}

fn cols(x: &[f32]) -> String {
    x.iter()
        .map(|v| format!("{v:10.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}
