//! The split-KV and streaming C ABI (`qkv_partial_f32`, `qkv_merge_f32`, `qkv_stream_*`)
//! from C: builds the static library with the `capi` feature (a subprocess `cargo rustc`, the
//! build and directory of tests/capi.rs, so cargo finds it fresh when those tests ran
//! first), compiles `tests/c/split_test.c` against `include/qkv.h` with the system `cc`, and
//! runs it.

#[path = "c/harness.rs"]
mod harness;

use harness::*;

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_partials_merges_and_streams_match_the_one_shot_call() {
    run_c_test("split_test", &["-lm"]);
}
