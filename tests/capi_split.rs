//! The split-KV and streaming C ABI (`qkv_partial_f32`, `qkv_merge_f32`, `qkv_stream_*`)
//! from C: builds the static library with the `capi` feature (a subprocess `cargo rustc`, the
//! build and directory of tests/capi.rs, so cargo finds it fresh when those tests ran
//! first), compiles `tests/c/split_test.c` against `include/qkv.h` with the system `cc`, and
//! runs it.

#[path = "c/harness.rs"]
mod harness;

use harness::*;
use std::process::Command;

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_partials_merges_and_streams_match_the_one_shot_call() {
    let mut libs = std_build().static_link();
    libs.push("-lm".into());
    let exe = compile(
        "cc",
        "split_test",
        &["-std=c99", "-O1"],
        &[&c_file("split_test.c")],
        &libs,
    );
    let text = stdout(&run(&mut Command::new(exe)));
    assert!(text.ends_with("PASS\n"), "{text}");
}
