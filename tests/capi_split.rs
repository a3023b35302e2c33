//! The split-KV and streaming C ABI (`qkv_partial_f32`, `qkv_merge_f32`, `qkv_stream_*`)
//! from C: builds the static library with the `capi` feature (a subprocess `cargo rustc`,
//! as tests/capi.rs does), compiles `tests/c/split_test.c` against `include/qkv.h` with the
//! system `cc`, and runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_partials_merges_and_streams_match_the_one_shot_call() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi_split");
    std::fs::create_dir_all(&work).expect("create the test's work directory");
    // tests/capi.rs's build, same command and directory: when its tests ran first (cargo runs
    // the test files in order), cargo finds the library fresh and does not build it again.
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi/std");
    let out = run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(ROOT)
            .args(["rustc", "--release", "--lib", "--features", "capi"])
            .args(["--crate-type", "rlib,staticlib,cdylib", "--target-dir"])
            .arg(&target_dir)
            .args(["--", "--print", "native-static-libs"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let native: Vec<String> = stderr
        .lines()
        .find_map(|l| l.split("native-static-libs:").nth(1))
        .unwrap_or("-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc")
        .split_whitespace()
        .map(String::from)
        .collect();
    let exe = work.join("split_test");
    run(Command::new("cc")
        .current_dir(ROOT)
        .args([
            "-std=c99",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .args(["-Iinclude", "-o"])
        .arg(&exe)
        .arg("tests/c/split_test.c")
        .arg(target_dir.join("release/libqkv.a"))
        .args(&native)
        .arg("-lm"));
    let out = run(&mut Command::new(&exe));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("PASS\n"), "{text}");
}
