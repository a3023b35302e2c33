//! What the C-ABI tests (`tests/capi*.rs`, `tests/c_link.rs`) share, included by path:
//! the documented build of the libraries, run once per test binary, and compiling and
//! running the C programs of this folder against them.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where the libraries and programs of these tests are built.
pub fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(ROOT);
    c
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The libraries built with `std`: `libqkv.a`, `libqkv.so` and `libqkv.rlib` in `dir`, and
/// the native libraries a C program linking the static one needs.
pub struct StdBuild {
    pub dir: PathBuf,
    pub native_libs: Vec<String>,
}

impl StdBuild {
    /// What a C program linking the static library passes the linker: the library, then
    /// the native libraries.
    pub fn static_link(&self) -> Vec<String> {
        let lib = self.dir.join("libqkv.a").to_string_lossy().into_owned();
        std::iter::once(lib)
            .chain(self.native_libs.iter().cloned())
            .collect()
    }
}

/// The documented build command (plus `rlib` for `layout.rs`), run once per test binary.
pub fn std_build() -> &'static StdBuild {
    static BUILD: OnceLock<StdBuild> = OnceLock::new();
    BUILD.get_or_init(|| {
        let target_dir = work_dir().join("std");
        let out = run(cargo()
            .args(["rustc", "--release", "--lib", "--features", "capi"])
            .args(["--crate-type", "rlib,staticlib,cdylib", "--target-dir"])
            .arg(&target_dir)
            .args(["--", "--print", "native-static-libs"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Cargo replays the note when the build is fresh; the fallback is glibc's usual list.
        let native_libs = stderr
            .lines()
            .find_map(|l| l.split("native-static-libs:").nth(1))
            .unwrap_or("-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc")
            .split_whitespace()
            .map(String::from)
            .collect();
        StdBuild {
            dir: target_dir.join("release"),
            native_libs,
        }
    })
}

/// Compiles `sources` with `compiler` and `flags` into `work_dir()/name`, returns the path.
pub fn compile(
    compiler: &str, name: &str, flags: &[&str], sources: &[&Path], libs: &[impl AsRef<OsStr>],
) -> PathBuf {
    let exe = work_dir().join(name);
    run(Command::new(compiler)
        .current_dir(ROOT)
        .args(flags)
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-Iinclude",
            "-o",
        ])
        .arg(&exe)
        .args(sources)
        .args(libs));
    exe
}

pub fn c_file(name: &str) -> PathBuf {
    Path::new(ROOT).join("tests/c").join(name)
}

/// Compiles `tests/c/{name}.c` as C99 against the static library (plus `extra_libs`), runs
/// it, and checks that it printed `PASS` last.
pub fn run_c_test(name: &str, extra_libs: &[&str]) {
    let mut libs = std_build().static_link();
    libs.extend(extra_libs.iter().map(|l| l.to_string()));
    let exe = compile(
        "cc",
        name,
        &["-std=c99", "-O1"],
        &[&c_file(&format!("{name}.c"))],
        &libs,
    );
    let text = stdout(&run(&mut Command::new(exe)));
    assert!(text.ends_with("PASS\n"), "{text}");
}
