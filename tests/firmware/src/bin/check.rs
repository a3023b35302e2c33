//! Checks what the firmware programs printed under qemu against `qkv::reference`, and prints
//! the stack and instruction counts of every measured call.
//!
//! `check MAX_STACK LABEL=FILE...`: each FILE holds one program's output, LABEL names it in
//! the table (e.g. `c/release`). Fails (exit 1) after printing everything when an output is
//! outside its tolerance, a status is not the expected one, an error call wrote its outputs, a
//! required case is missing, or (unless MAX_STACK is 0) a call used more than MAX_STACK bytes
//! of stack.
//!
//! Tolerances: `qkv::tolerance::output_bound`/`lse_bound` per row for a plain call, the merged
//! bounds (depth 1) for `-split` results, the stream bounds (2 chunks) for `-stream` results,
//! with `score_abs` and `v_abs` computed from the inputs over each row's visible keys.
//!
//! Instructions: SysTick ticks times the instructions per tick that the calibration loop
//! (a known number of instructions) measured; exact to one tick.
use std::process::ExitCode;

use qkv::tolerance::{
    lse_bound, merged_lse_bound, merged_output_bound, output_bound, stream_lse_bound,
    stream_output_bound,
};
use qkv::{BlockQ8_0, KvKind, Params, f16, reference};
use qkv_firmware::{
    CALIBRATION_INSTRUCTIONS, GQA_SPLIT, SEEDS, fill, fill_f16, fill_q8_0, kv_kind, lens, params,
};

/// Every program must run these attention cases.
const REQUIRED: [&str; 3] = ["tiny", "gqa", "error"];

/// The inputs of a case: `k` and `v` as `f32` values (planar, value strides), and as the
/// type the case stores them in, if not `f32`.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    k16: Vec<f16>,
    v16: Vec<f16>,
    kq: Vec<BlockQ8_0>,
    vq: Vec<BlockQ8_0>,
}

fn inputs(p: &Params, kind: KvKind) -> Inputs {
    let [nq, nk, nv, _, _] = lens(&p.shape);
    let mut x = [vec![0.0; nq], vec![0.0; nk], vec![0.0; nv]];
    for (x, seed) in x.iter_mut().zip(SEEDS) {
        fill(x, seed);
    }
    let [q, mut k, mut v] = x;
    let (mut k16, mut v16) = (vec![], vec![]);
    let (mut kq, mut vq) = (vec![], vec![]);
    match kind {
        KvKind::F16 => {
            (k16, v16) = (vec![f16::ZERO; nk], vec![f16::ZERO; nv]);
            fill_f16(&mut k16, SEEDS[1]);
            fill_f16(&mut v16, SEEDS[2]);
            k = k16.iter().map(|x| x.to_f32()).collect();
            v = v16.iter().map(|x| x.to_f32()).collect();
        }
        KvKind::Q8_0 => {
            (kq, vq) = (
                vec![BlockQ8_0::default(); nk / 32],
                vec![BlockQ8_0::default(); nv / 32],
            );
            fill_q8_0(&mut kq, SEEDS[1]);
            fill_q8_0(&mut vq, SEEDS[2]);
            let values = |b: &[BlockQ8_0]| -> Vec<f32> {
                b.iter()
                    .flat_map(|b| b.qs.map(|q| b.d.to_f32() * q as f32))
                    .collect()
            };
            (k, v) = (values(&kq), values(&vq));
        }
        _ => {}
    }
    Inputs {
        q,
        k,
        v,
        k16,
        v16,
        kq,
        vq,
    }
}

/// `|got − want| ≤ bound`; false for NaN.
fn within(got: f32, want: f32, bound: f32) -> bool {
    (got - want).abs() <= bound
}

/// Compares one result (`out` rows and `lse`) with the reference; returns the failures.
fn compare(case: &str, out: &[Vec<f32>], lse: &[f32]) -> Vec<String> {
    let (shape_name, variant) = case.split_once('-').unwrap_or((case, ""));
    let (Some(typed), Some(p)) = (
        params(shape_name),
        params(shape_name.split('_').next().unwrap_or_default()),
    ) else {
        return vec![format!("{case}: unknown case")];
    };
    // `typed` has the K/V strides in elements of their type, `p` in values.
    let s = p.shape;
    let kind = kv_kind(shape_name);
    let x = inputs(&p, kind);
    let [_, _, _, nout, nlse] = lens(&s);
    let (mut want, mut want_lse) = (vec![0.0; nout], vec![0.0; nlse]);
    let (o, l) = (&mut want, Some(&mut want_lse[..]));
    // The reference on the stored types (which it widens exactly, as the kernel does).
    let r = match kind {
        KvKind::F16 => reference::attention(&typed, &x.q, &x.k16, &x.v16, o, l),
        KvKind::Q8_0 => reference::attention(&typed, &x.q, &x.kq, &x.vq, o, l),
        _ => reference::attention(&typed, &x.q, &x.k, &x.v, o, l),
    };
    if let Err(e) = r {
        return vec![format!("{case}: reference failed: {e:?}")];
    }
    if out.len() != nlse || out.iter().any(|r| r.len() != s.v_dim) || lse.len() != nlse {
        return vec![format!(
            "{case}: printed {} rows and {} lse, want {nlse}",
            out.len(),
            lse.len()
        )];
    }
    let group = s.q_heads / s.kv_heads;
    let mut failures = Vec::new();
    for h in 0..s.q_heads {
        for i in 0..s.q_len {
            let r = h * s.q_len + i;
            let g = h / group;
            let (mut score_abs, mut v_abs) = (0.0f32, 0.0f32);
            for j in (0..s.kv_len).filter(|&j| p.is_visible(i, j)) {
                let qr = &x.q[p.q.at(h, i)..][..s.head_dim];
                let kr = &x.k[p.k.at(g, j)..][..s.head_dim];
                let dot: f32 = qr.iter().zip(kr).map(|(a, b)| (a * b).abs()).sum();
                score_abs = score_abs.max(p.scale().abs() * dot);
                let vr = &x.v[p.v.at(g, j)..][..s.v_dim];
                v_abs = vr.iter().fold(v_abs, |m, x| m.max(x.abs()));
            }
            let lse_abs = want_lse[r].abs() + 20.0;
            let (hd, n) = (s.head_dim, s.kv_len);
            let (ob, lb) = match variant {
                // Partials merged: two by `merge`, or a plan's key splits by its finish.
                "split" | "ws-split" | "plan" | "ws-plan" => (
                    merged_output_bound(score_abs, v_abs, hd, n, lse_abs, 1),
                    merged_lse_bound(score_abs, hd, n, lse_abs, 1),
                ),
                "stream" | "ws-stream" => (
                    stream_output_bound(score_abs, v_abs, hd, n, lse_abs, 2),
                    stream_lse_bound(score_abs, hd, n, lse_abs, 2),
                ),
                _ => (
                    output_bound(score_abs, v_abs, hd, n),
                    lse_bound(score_abs, hd, n, want_lse[r].abs()),
                ),
            };
            let want_row = &want[p.out.at(h, i)..][..s.v_dim];
            for (c, (&got, &w)) in out[r].iter().zip(want_row).enumerate() {
                if !within(got, w, ob) {
                    failures.push(format!(
                        "{case}: out[{h}][{i}][{c}] = {got}, want {w} ± {ob}"
                    ));
                }
            }
            if !within(lse[r], want_lse[r], lb) {
                failures.push(format!(
                    "{case}: lse[{h}][{i}] = {}, want {} ± {lb}",
                    lse[r], want_lse[r]
                ));
            }
        }
    }
    failures.truncate(8);
    failures
}

/// One measured call.
struct Sample {
    label: String,
    call: String,
    status: u32,
    stack: u64,
    instructions: u64,
    /// Instructions per SysTick tick: the resolution of `instructions`.
    per_tick: u64,
}

fn parse_floats<'a>(words: impl Iterator<Item = &'a str>) -> Option<Vec<f32>> {
    words
        .map(|w| u32::from_str_radix(w, 16).ok().map(f32::from_bits))
        .collect()
}

/// Reads one program's output; returns its samples and pushes its failures.
fn check_file(label: &str, text: &str, failures: &mut Vec<String>) -> Vec<Sample> {
    let mut fail = |m: String| failures.push(format!("{label}: {m}"));
    let mut per_tick = None;
    let mut samples = Vec::new();
    let mut results: Vec<(String, Vec<Vec<f32>>, Vec<f32>)> = Vec::new();
    let mut untouched = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("calib") => {
                let ticks: u64 = w.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                let insns: u64 = w.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                // A tick must be a whole number of instructions; allow the loop's entry and
                // exit (a few instructions) on top.
                let k = (insns + ticks / 2).checked_div(ticks).unwrap_or(0);
                if insns != CALIBRATION_INSTRUCTIONS || k == 0 || insns.abs_diff(k * ticks) > k {
                    fail(format!(
                        "calibration: {insns} instructions took {ticks} ticks"
                    ));
                } else {
                    per_tick = Some(k);
                }
            }
            Some("case") => {
                let name = w.next().unwrap_or("?").to_string();
                let kv: Vec<&str> = w.collect();
                let field = |key: &str| {
                    kv.iter()
                        .position(|&x| x == key)
                        .and_then(|i| kv.get(i + 1)?.parse::<u64>().ok())
                };
                let (Some(status), Some(stack), Some(ticks)) =
                    (field("status"), field("stack"), field("ticks"))
                else {
                    fail(format!("unreadable line: {line}"));
                    continue;
                };
                if name == "selftest/stack" && stack != 1024 {
                    fail(format!(
                        "the stack self-test measured {stack} bytes, not 1024"
                    ));
                }
                // QKV_ERR_HEADS_NOT_DIVISIBLE; QKV_ERR_VARIANT, a softcap in a firmware build.
                let want = match name.rsplit('/').next() {
                    Some("error") => 2,
                    Some("variant") => 22,
                    _ => 0,
                };
                if status != want {
                    fail(format!("{name}: status {status}, want {want}"));
                }
                samples.push(Sample {
                    label: label.to_string(),
                    call: name,
                    status: status as u32,
                    stack,
                    instructions: ticks * per_tick.unwrap_or(0),
                    per_tick: per_tick.unwrap_or(0),
                });
            }
            Some(kind @ ("out" | "lse")) => {
                let case = w.next().unwrap_or("?").to_string();
                let Some(values) = parse_floats(w) else {
                    fail(format!("unreadable line: {line}"));
                    continue;
                };
                if results.last().is_none_or(|r| r.0 != case) {
                    results.push((case, Vec::new(), Vec::new()));
                }
                let r = results.last_mut().expect("pushed above");
                if kind == "out" {
                    r.1.push(values);
                } else {
                    r.2 = values;
                }
            }
            Some("untouched") => {
                let case = w.next().unwrap_or("?").to_string();
                if w.next() != Some("1") {
                    fail(format!("{case}: the failed call wrote its outputs"));
                }
                untouched.push(case);
            }
            Some("done") => done = true,
            _ => fail(format!("unexpected line: {line}")),
        }
    }
    if !done {
        fail("the program did not finish (no \"done\")".to_string());
    }
    // The program built with the K/V types (`ckv`) must also run them, and the C programs
    // the refused softcap.
    let typed: &[&str] = match (label.starts_with("ckv/"), label.starts_with("c")) {
        (true, _) => &["gqa_f16", "gqa_q8_0", "variant"],
        (false, true) => &["variant"],
        _ => &[],
    };
    for &case in REQUIRED.iter().chain(typed) {
        let ran = samples
            .iter()
            .any(|s| s.call == format!("attention/{case}"));
        let checked = results.iter().any(|r| r.0 == case) || untouched.iter().any(|c| c == case);
        if !ran || !checked {
            fail(format!("case {case} missing"));
        }
    }
    // The C program (every group) and the Rust one run a plan's tasks, with and without a
    // workspace, and print their results; the C program also calls the C reference, the
    // Rust one its partials and stream chunks in a workspace too.
    let calls: &[(&str, &str)] = match label.split('/').next() {
        Some("c") => &[
            ("plan_run_task", "gqa-plan"),
            ("plan_run_task_ws", "gqa-ws-plan"),
            ("reference", "gqa-reference"),
        ],
        Some("rust") => &[
            ("plan_run_task", "gqa-plan"),
            ("plan_run_task_ws", "gqa-ws-plan"),
            ("partial_in", "gqa-ws-split"),
            ("stream_update_in", "gqa-ws-stream"),
        ],
        _ => &[],
    };
    for &(call, case) in calls {
        let ran = samples.iter().any(|s| s.call == format!("{call}/gqa"));
        if !ran || !results.iter().any(|r| r.0 == case) {
            fail(format!("{call} ({case}) missing"));
        }
    }
    if !samples.iter().any(|s| s.call == "selftest/stack") {
        fail("the stack self-test is missing".to_string());
    }
    for (case, out, lse) in &results {
        for m in compare(case, out, lse) {
            fail(m);
        }
    }
    samples
}

/// Visible (query row, key) pairs times `2·(head_dim + v_dim)`, over all query heads.
fn flops(p: &Params) -> u64 {
    let s = p.shape;
    let pairs: u64 = (0..s.q_len)
        .map(|i| (0..s.kv_len).filter(|&j| p.is_visible(i, j)).count() as u64)
        .sum();
    pairs * s.q_heads as u64 * 2 * (s.head_dim + s.v_dim) as u64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(max_stack) = args.first().and_then(|a| a.parse::<u64>().ok()) else {
        eprintln!("usage: check MAX_STACK LABEL=FILE...");
        return ExitCode::FAILURE;
    };
    let mut failures = Vec::new();
    let mut samples = Vec::new();
    for arg in &args[1..] {
        let Some((label, path)) = arg.split_once('=') else {
            eprintln!("check: {arg} is not LABEL=FILE");
            return ExitCode::FAILURE;
        };
        match std::fs::read_to_string(path) {
            Ok(text) => samples.extend(check_file(label, &text, &mut failures)),
            Err(e) => failures.push(format!("{label}: cannot read {path}: {e}")),
        }
    }

    let gqa = params("gqa").expect("a known case");
    let gqa_flops = flops(&gqa);
    println!("Stack and instructions per call (qemu mps2-an386, -icount shift=0; these are");
    println!(
        "instructions executed, not cycles; stack = bytes below the stack pointer at the call):"
    );
    println!(
        "{:<16} {:<28} {:>6} {:>10} {:>12} {:>10}",
        "build", "call", "status", "stack B", "instructions", "insn/flop"
    );
    // The count of the GQA call's flops: every (query, key) pair, masked or not.
    let all_flops = gqa.shape.flops();
    let whole_call =
        |call: &str| ["attention/gqa", "attention_ws/gqa", "attention_in/gqa"].contains(&call);
    for s in &samples {
        let per_flop = if whole_call(&s.call) {
            format!("{:.3}", s.instructions as f64 / all_flops as f64)
        } else {
            String::new()
        };
        println!(
            "{:<16} {:<28} {:>6} {:>10} {:>12} {:>10}",
            s.label, s.call, s.status, s.stack, s.instructions, per_flop
        );
        if max_stack > 0 && s.stack > max_stack {
            failures.push(format!(
                "{} {}: {} bytes of stack, limit {max_stack}",
                s.label, s.call, s.stack
            ));
        }
    }
    println!(
        "attention/gqa: 8/2 heads, q_len 5, kv_len {}, head_dim 64, causal: {all_flops} flops \
         counting every pair as issue 13 does ({gqa_flops} over the visible pairs); insn/flop \
         against the first; split and stream results use keys 0..{GQA_SPLIT} and {GQA_SPLIT}..",
        gqa.shape.kv_len,
    );
    println!();
    println!(
        "Summary (instructions, not cycles; per flop counting every pair, and every visible one):"
    );
    println!(
        "{:<16} {:>12} {:>15} {:>14} {:>10} {:>14} {:>10} {:>10} {:>11}",
        "build",
        "max stack B",
        "attention/tiny",
        "attention/gqa",
        "insn/flop",
        "workspace/gqa",
        "insn/flop",
        "/visible",
        "resolution"
    );
    let mut labels: Vec<&str> = samples.iter().map(|s| s.label.as_str()).collect();
    labels.dedup();
    for label in labels {
        let of = |call: &str| {
            samples
                .iter()
                .find(|s| s.label == label && s.call == call)
                .map_or(0, |s| s.instructions)
        };
        let max = samples
            .iter()
            .filter(|s| s.label == label)
            .map(|s| s.stack)
            .max();
        let gqa_insns = of("attention/gqa");
        // The C program's workspace call, or the Rust program's.
        let ws_insns = of("attention_ws/gqa").max(of("attention_in/gqa"));
        let per_tick = samples
            .iter()
            .find(|s| s.label == label)
            .map_or(0, |s| s.per_tick);
        // (The K/V-types program has no f32 workspace call: "-".)
        let ws = |x: String| if ws_insns == 0 { "-".to_string() } else { x };
        println!(
            "{label:<16} {:>12} {:>15} {:>14} {:>10.3} {:>14} {:>10} {:>10} {:>11}",
            max.unwrap_or(0),
            of("attention/tiny"),
            gqa_insns,
            gqa_insns as f64 / all_flops as f64,
            ws(ws_insns.to_string()),
            ws(format!("{:.3}", ws_insns as f64 / all_flops as f64)),
            ws(format!("{:.3}", ws_insns as f64 / gqa_flops as f64)),
            format!("±{per_tick}")
        );
    }
    if max_stack == 0 {
        println!("stack limit: report only (QKV_FIRMWARE_MAX_STACK=0)");
    }
    if failures.is_empty() {
        println!("check: every output within tolerance of qkv::reference");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("check: FAIL {f}");
        }
        ExitCode::FAILURE
    }
}
