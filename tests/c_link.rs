//! What a C user installs: `include/build-c-libs.sh` into a prefix under the target directory
//! (one library build per test binary), then the checks that the installed files work:
//! - the shared library carries the SONAME its symlinks name, and the static library
//!   exports exactly the shared library's `qkv_*` functions, nothing of Rust's runtime;
//! - `tests/c/link/interleaved.c` compiled with `cc $(pkg-config --cflags --libs qkv)`
//!   (shared, run with `LD_LIBRARY_PATH`) and `qkv-static` (static), and through CMake's
//!   `find_package(qkv)` with both imported targets; the program checks
//!   `qkv_desc_interleaved()` against `qkv_desc_planar()` on transposed data.
//!
//! Linux only (the script is for ELF platforms). The pkg-config and CMake tests are skipped,
//! with a message, when the tool is not installed (`apt-get install pkg-config cmake`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");

fn work() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_link")
}

/// Runs `cmd` and returns its stdout, or panics with everything it printed.
fn output(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{cmd:?}: {}\n{out}\n{err}", o.status);
    out.into_owned()
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The prefix `build-c-libs.sh` installed into, or `None` (said why) off Linux.
fn prefix() -> Option<&'static Path> {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: include/build-c-libs.sh is tested on Linux only");
        return None;
    }
    Some(PREFIX.get_or_init(|| {
        let prefix = work().join("prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        output(
            Command::new("bash")
                .arg(Path::new(ROOT).join("include/build-c-libs.sh"))
                .arg(&prefix)
                .env("CARGO_TARGET_DIR", work().join("target")),
        );
        prefix
    }))
}

/// The names of the symbols `file` defines with global or weak binding (readelf, not nm:
/// see the script).
fn defined_globals(file: &Path, dynamic: bool) -> BTreeSet<String> {
    let table = if dynamic { "--dyn-syms" } else { "--syms" };
    output(Command::new("readelf").args(["-W", table]).arg(file))
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, _, _, _, "GLOBAL" | "WEAK", _, ndx, name, ..] if ndx != "UND" => {
                Some(name.to_string())
            }
            _ => None,
        })
        .collect()
}

/// The `NEEDED` and `SONAME` entries of `file`'s dynamic section.
fn dynamic_entries(file: &Path) -> String {
    output(Command::new("readelf").arg("-d").arg(file))
}

/// Runs a compiled `interleaved.c` and checks that it passed against this version.
fn check_program(exe: &Path, lib_dir: Option<&Path>) {
    let mut cmd = Command::new(exe);
    if let Some(dir) = lib_dir {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let text = output(&mut cmd);
    assert!(text.ends_with("PASS\n"), "{text}");
    assert!(text.starts_with(&format!("qkv {VERSION} ")), "{text}");
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and binutils")]
fn libraries_have_a_soname_and_export_only_qkv() {
    let Some(prefix) = prefix() else { return };
    let lib = prefix.join("lib");
    let real = format!("libqkv.so.{VERSION}");
    let soname = format!("libqkv.so.{MAJOR}");
    assert_eq!(
        std::fs::read_link(lib.join(&soname)).unwrap(),
        Path::new(&real)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libqkv.so")).unwrap(),
        Path::new(&soname)
    );
    let dynamic = dynamic_entries(&lib.join(&real));
    assert!(
        dynamic.contains(&format!("Library soname: [{soname}]")),
        "{dynamic}"
    );

    let shared = defined_globals(&lib.join(&real), true);
    assert!(shared.contains("qkv_attention_f32"), "{shared:?}");
    let header = std::fs::read_to_string(prefix.join("include/qkv.h")).unwrap();
    for f in &shared {
        assert!(
            f.starts_with("qkv_") && header.contains(&format!("{f}(")),
            "libqkv.so exports {f}, which qkv.h does not declare"
        );
    }
    // The static library: the same functions and nothing else (no __rust_alloc, no
    // rust_eh_personality, no mangled Rust symbol) that could clash in a C program.
    assert_eq!(defined_globals(&lib.join("libqkv.a"), false), shared);
}

/// The installed prefix, if `tool` is installed too; if not, says why the test is skipped.
fn prefix_and(tool: &str) -> Option<&'static Path> {
    if !installed(tool) {
        eprintln!("skipped: {tool} is not installed (apt-get install {tool})");
        return None;
    }
    prefix()
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo and a C compiler")]
fn c_program_links_through_pkg_config() {
    let Some(prefix) = prefix_and("pkg-config") else {
        return;
    };
    let lib = prefix.join("lib");
    for (package, shared) in [("qkv", true), ("qkv-static", false)] {
        // Only this prefix's .pc files, whatever the machine has installed.
        let flags = output(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", package])
                .env("PKG_CONFIG_LIBDIR", lib.join("pkgconfig"))
                .env_remove("PKG_CONFIG_PATH"),
        );
        let exe = work().join(format!("interleaved-{package}"));
        output(
            Command::new("cc")
                .args([
                    "-std=c99",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-pedantic",
                ])
                .arg(Path::new(ROOT).join("tests/c/link/interleaved.c"))
                .args(flags.split_whitespace())
                .arg("-o")
                .arg(&exe),
        );
        let needed = dynamic_entries(&exe);
        let soname = format!("[libqkv.so.{MAJOR}]");
        assert_eq!(needed.contains(&soname), shared, "{package}: {needed}");
        check_program(&exe, shared.then_some(lib.as_path()));
    }
}

#[test]
#[cfg_attr(miri, ignore = "runs cargo, cmake and a C compiler")]
fn c_program_links_through_cmake() {
    let Some(prefix) = prefix_and("cmake") else {
        return;
    };
    let build = work().join("cmake");
    let _ = std::fs::remove_dir_all(&build);
    output(
        Command::new("cmake")
            .arg("-S")
            .arg(Path::new(ROOT).join("tests/c/link"))
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .arg("-DCMAKE_C_FLAGS=-Wall -Wextra -Werror -pedantic"),
    );
    output(Command::new("cmake").arg("--build").arg(&build));
    // CMake links the shared library with an rpath to the prefix: no LD_LIBRARY_PATH.
    check_program(&build.join("interleaved_shared"), None);
    check_program(&build.join("interleaved_static"), None);
    let soname = format!("[libqkv.so.{MAJOR}]");
    assert!(dynamic_entries(&build.join("interleaved_shared")).contains(&soname));
    assert!(!dynamic_entries(&build.join("interleaved_static")).contains(&soname));
}
