//! The C ABI, tested from C and C++: builds the library with the `capi` feature
//! (a subprocess `cargo rustc`, so plain `cargo test` runs these without the feature),
//! compiles the programs in `tests/c/` against `include/qkv.h` with the system `cc`/`c++`,
//! and runs them:
//! - `capi_test.c` against the static library (with and without `std`) and the shared one:
//!   results equal `qkv_reference_f32`'s at every available level, and every status code is
//!   reached with `out` and `lse` untouched;
//! - `header.cpp`: the header compiles as C++11 and links (the `extern "C"` guards);
//! - `layout.c` vs `layout.rs`: sizes, offsets, enum and macro values of the header equal
//!   those of `src/capi/`, so the hand-written header cannot drift;
//! - the firmware proof (`.ci/firmware.sh`) when `arm-none-eabi-gcc` is installed.

#[path = "c/harness.rs"]
mod harness;

use harness::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Compiles the one source `tests/c/{file}` with `compiler` under the language standard `std`
/// (a flag such as `-std=c99`) as `name`, linked with `link`.
fn compile_one(
    compiler: &str, std: &str, file: &str, name: &str, link: &[impl AsRef<OsStr>],
) -> PathBuf {
    compile(compiler, name, &[std], &[&c_file(file)], link)
}

/// Compiles `capi_test.c` as `name`, linked with `link`.
fn capi_test(name: &str, link: &[impl AsRef<OsStr>]) -> PathBuf {
    compile_one("cc", "-std=c99", "capi_test.c", name, link)
}

/// Runs a compiled `capi_test.c` and checks it passed and reached every status but
/// `QKV_ERR_INTERNAL` (a bug by definition) and `QKV_ERR_VARIANT` (only a library built
/// without `softmax-variants` returns it: the firmware programs, `.ci/firmware.sh`, check it).
fn check_capi_test(exe: &Path) {
    let out = run(&mut Command::new(exe));
    let text = stdout(&out);
    assert!(text.ends_with("PASS\n"), "{text}");
    let reached: Vec<i32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("reached "))
        .map(|n| n.parse().unwrap())
        .collect();
    let internal = status_values()
        .iter()
        .find(|(n, _)| n == "QKV_ERR_INTERNAL")
        .expect("QKV_ERR_INTERNAL")
        .1;
    for (name, value) in status_values() {
        if value != internal && name != "QKV_ERR_VARIANT" {
            assert!(
                reached.contains(&value),
                "{name} ({value}) never reached:\n{text}"
            );
        }
    }
}

/// `(name, value)` of every `QKV_OK`/`QKV_ERR_*` the Rust side defines, from `layout.rs`.
fn status_values() -> Vec<(String, i32)> {
    rust_layout()
        .lines()
        .filter_map(|l| l.strip_prefix("value "))
        .filter(|l| l.starts_with("QKV_OK ") || l.starts_with("QKV_ERR_"))
        .map(|l| {
            let (n, v) = l.rsplit_once(' ').unwrap();
            (n.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The output of `layout.rs`, compiled against the `capi` rlib.
fn rust_layout() -> &'static str {
    static LAYOUT: OnceLock<String> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let b = std_build();
        let exe = work_dir().join("layout_rs");
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        run(Command::new(rustc)
            .args(["--edition", "2024", "--crate-type", "bin", "-o"])
            .arg(&exe)
            .arg(c_file("layout.rs"))
            .arg("--extern")
            .arg(format!("qkv={}", b.dir.join("libqkv.rlib").display()))
            .arg("-L")
            .arg(format!("dependency={}", b.dir.join("deps").display())));
        stdout(&run(&mut Command::new(exe)))
    })
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_matches_reference_and_reaches_every_status() {
    let exe = capi_test("capi_test_static", &std_build().static_link());
    check_capi_test(&exe);
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_against_the_shared_library() {
    let b = std_build();
    let dir = b.dir.to_str().unwrap();
    let exe = capi_test(
        "capi_test_shared",
        &[
            &format!("-L{dir}"),
            &format!("-Wl,-rpath,{dir}"),
            "-lqkv",
            "-lm",
        ],
    );
    let ldd = Command::new("ldd").arg(&exe).output();
    if let Ok(ldd) = ldd {
        assert!(stdout(&ldd).contains("libqkv.so"), "{}", stdout(&ldd));
    }
    check_capi_test(&exe);
}

/// The `no_std` static library on the host: CPUID detection without std, the panic-handler
/// feature, the K/V types, softmax variants, paged K/V and the ragged C functions (`kv-*`,
/// `softmax-variants`, `paged-kv`, `capi-ragged`, which `--no-default-features` drops) and
/// `panic = "abort"` as docs/c-api.md says.
#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_against_the_no_std_static_library() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: the no_std host build is only tested on Linux");
        return;
    }
    let target_dir = work_dir().join("nostd");
    run(cargo()
        .args(["rustc", "--release", "--lib", "--no-default-features"])
        .args([
            "--features",
            "panic-handler,x86-v4,kv-f16,kv-bf16,kv-q8_0,softmax-variants,paged-kv,capi-ragged",
            "--crate-type",
            "staticlib",
        ])
        .args([
            "--config",
            "profile.release.panic=\"abort\"",
            "--target-dir",
        ])
        .arg(&target_dir));
    let lib = target_dir.join("release/libqkv.a");
    let exe = capi_test(
        "capi_test_nostd",
        &[lib.to_str().unwrap(), "-lm", "-Wl,--gc-sections"],
    );
    check_capi_test(&exe);
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn cxx_compiles_and_links_the_header() {
    let link = std_build().static_link();
    let exe = compile_one("c++", "-std=c++11", "header.cpp", "header_cpp", &link);
    let text = stdout(&run(&mut Command::new(exe)));
    assert!(text.starts_with("PASS"), "{text}");
    // And the header alone as a C++ translation unit.
    run(Command::new("c++")
        .current_dir(ROOT)
        .args([
            "-x",
            "c++",
            "-std=c++11",
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
        ])
        .args(["-Werror", "-Iinclude", "include/qkv.h"]));
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn header_layout_matches_rust() {
    let exe = compile_one("cc", "-std=c99", "layout.c", "layout_c", &[] as &[&str]);
    let c = stdout(&run(&mut Command::new(exe)));
    let rust = rust_layout();
    let c_lines: Vec<&str> = c.lines().collect();
    let rust_lines: Vec<&str> = rust.lines().collect();
    for (c, r) in c_lines.iter().zip(&rust_lines) {
        assert_eq!(c, r, "include/qkv.h (left) differs from src/capi/ (right)");
    }
    assert_eq!(c_lines.len(), rust_lines.len(), "C:\n{c}\nRust:\n{rust}");
    assert!(rust.contains("size qkv_desc"), "{rust}");
}

/// `.ci/firmware.sh` without installing anything: skipped (with a message) when
/// `arm-none-eabi-gcc` or the Rust target is missing; CI runs the script itself, which
/// installs them and fails if it cannot. `.ci/run` sets `QKV_FIRMWARE_STEP` to skip this
/// test, so as not to build and link the firmware twice.
#[test]
#[cfg_attr(miri, ignore = "runs cargo and a cross compiler")]
fn firmware_links_for_cortex_m4() {
    if std::env::var_os("QKV_FIRMWARE_STEP").is_some() {
        eprintln!("skipped: QKV_FIRMWARE_STEP is set; .ci/firmware.sh runs as its own CI step");
        return;
    }
    let have_gcc = Command::new("arm-none-eabi-gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let have_target = Command::new(rustc)
        .args([
            "--print",
            "target-libdir",
            "--target",
            "thumbv7em-none-eabihf",
        ])
        .output()
        .is_ok_and(|o| o.status.success() && Path::new(stdout(&o).trim()).is_dir());
    if !have_gcc || !have_target {
        eprintln!(
            "skipped: firmware proof needs arm-none-eabi-gcc (apt-get install gcc-arm-none-eabi) \
             and `rustup target add thumbv7em-none-eabihf`; run .ci/firmware.sh"
        );
        return;
    }
    let out = run(Command::new("bash")
        .current_dir(ROOT)
        .arg(".ci/firmware.sh")
        .env("QKV_FIRMWARE_NO_INSTALL", "1")
        // (The limits are firmware.sh's defaults, the issue's, as in `.ci/run`.)
        .env("QKV_FIRMWARE_TARGET_DIR", work_dir().join("firmware")));
    let text = stdout(&out);
    assert!(text.contains("qkv code size on Cortex-M4F"), "{text}");
    eprintln!("{}", text.lines().last().unwrap_or_default());
}
