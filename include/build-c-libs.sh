#!/usr/bin/env bash
# Builds qkv's C libraries for this host and installs them, with the header and the files
# pkg-config and CMake need to find them, under one prefix:
#
#   include/build-c-libs.sh /usr/local          # or any directory, e.g. "$HOME/.local"
#
#   PREFIX/include/qkv.h
#   PREFIX/lib/libqkv.so.X.Y.Z                  shared library, SONAME libqkv.so.X
#   PREFIX/lib/libqkv.so.X -> libqkv.so.X.Y.Z   what programs load
#   PREFIX/lib/libqkv.so   -> libqkv.so.X       what -lqkv finds
#   PREFIX/lib/libqkv.a                         static library; only qkv_* symbols global
#   PREFIX/lib/pkgconfig/qkv.pc                 shared:  cc app.c $(pkg-config --cflags --libs qkv)
#   PREFIX/lib/pkgconfig/qkv-static.pc          static:  cc app.c $(pkg-config --cflags --libs qkv-static)
#   PREFIX/lib/cmake/qkv/qkvConfig.cmake        find_package(qkv): qkv::qkv, qkv::qkv_static
#
# Linking the static library by hand: pass -Wl,--gc-sections, or the program carries all
# of the Rust standard library the archive holds (megabytes), plus the system libraries
# PREFIX/lib/pkgconfig/qkv-static.pc lists:
#
#   cc -std=c99 -O2 -IPREFIX/include app.c PREFIX/lib/libqkv.a -Wl,--gc-sections \
#      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o app                 # glibc Linux
#   cc -std=c99 -O2 -IPREFIX/include app.c -LPREFIX/lib -lqkv -o app      # shared
#
# Both libraries come from one `cargo rustc` (features: default + capi and the K/V types
# kv-f16, kv-bf16 and kv-q8_0, named even though the defaults have them, so that a k_type or
# v_type of the header is never QKV_ERR_TYPE in an installed library; release profile), into
# cargo's target directory (CARGO_TARGET_DIR, else target/); set QKV_FEATURES to build other
# features than these (it must include capi). ELF platforms only (Linux, the BSDs):
# the SONAME, symlinks and symbol localisation are ELF's. Needs cargo, and binutils' ld,
# objcopy, ar and readelf.
set -euo pipefail

usage() {
	echo "usage: $0 PREFIX   (see the comment at the top of this script)" >&2
	exit 2
}
[ $# -eq 1 ] && [ -n "$1" ] || usage
case "$(uname -s)" in
Darwin | MINGW* | MSYS* | CYGWIN*)
	echo "$0: ELF platforms only; on $(uname -s) use the cargo rustc commands of docs/c-api.md" >&2
	exit 1
	;;
esac

mkdir -p "$1"
prefix=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
cargo=${CARGO:-cargo}
features=${QKV_FEATURES:-capi,kv-f16,kv-bf16,kv-q8_0}

version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml")
major=${version%%.*}
[ -n "$version" ] && [ -n "$major" ] || {
	echo "$0: no [package] version in $root/Cargo.toml" >&2
	exit 1
}
# The C ABI only grows (struct_size versions qkv_desc, status codes are only appended), so
# binary compatibility follows the major version.
soname=libqkv.so.$major

# One rustc run links both crate types; the link argument reaches only the cdylib (a static
# library is not linked), and the printed native libraries are what libqkv.a needs.
log=$(mktemp "${TMPDIR:-/tmp}/qkv-build.XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/qkv-localize.XXXXXX")
trap 'rm -rf "$log" "$work"' EXIT
(cd "$root" && "$cargo" rustc --release --lib --features "$features" \
	--crate-type staticlib,cdylib --target-dir "$target_dir" \
	-- -C "link-arg=-Wl,-soname,$soname" --print native-static-libs) 2>"$log" || {
	cat "$log" >&2
	exit 1
}
# Cargo replays the note from its cache when nothing was rebuilt.
native_libs=$(sed -n 's/.*native-static-libs: *//p' "$log" | tail -n 1)
[ -n "$native_libs" ] || {
	cat "$log" >&2
	echo "$0: cargo printed no native-static-libs" >&2
	exit 1
}
built=$target_dir/release

install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/qkv"
install -m 644 "$root/include/qkv.h" "$prefix/include/qkv.h"

install -m 755 "$built/libqkv.so" "$prefix/lib/libqkv.so.$version"
ln -sfn "libqkv.so.$version" "$prefix/lib/$soname"
ln -sfn "$soname" "$prefix/lib/libqkv.so"

# The static library holds the Rust standard library, whose global symbols (__rust_alloc,
# rust_eh_personality, ...) would clash with another Rust static library in the same
# program. Joined into one relocatable object, every symbol but the qkv_* functions becomes
# local; the object keeps one section per function, so --gc-sections still drops the unused.
# The standard library's objects embed LLVM bitcode (.llvmbc), which no C link uses and
# which makes binutils' nm and ar abort where an older LLVM's linker plugin is installed:
# it goes, and symbols are listed with readelf, which loads no plugin.
defined_globals() {
	readelf -Ws "$1" | awk '($5 == "GLOBAL" || $5 == "WEAK") && $7 != "UND" && NF >= 8 { print $8 }'
}
ld -r --whole-archive "$built/libqkv.a" -o "$work/qkv.o"
defined_globals "$work/qkv.o" | grep '^qkv_' | sort -u >"$work/keep" || true
[ -s "$work/keep" ] || {
	echo "$0: no qkv_* symbol in $built/libqkv.a" >&2
	exit 1
}
objcopy --keep-global-symbols="$work/keep" --remove-section=.llvmbc \
	--remove-section=.llvmcmd "$work/qkv.o"
rm -f "$work/libqkv.a"
ar rcs "$work/libqkv.a" "$work/qkv.o"
install -m 644 "$work/libqkv.a" "$prefix/lib/libqkv.a"
defined_globals "$prefix/lib/libqkv.a" | sort -u >"$work/exported"
cmp -s "$work/keep" "$work/exported" || {
	echo "$0: libqkv.a exports other symbols than qkv_*:" >&2
	comm -13 "$work/keep" "$work/exported" >&2
	exit 1
}

static_libs="-Wl,--gc-sections $native_libs"
fill() {
	sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@SONAME@|$soname|g" \
		-e "s|@STATIC_LIBS@|$static_libs|g" "$1"
}
fill "$root/include/qkv.pc.in" >"$prefix/lib/pkgconfig/qkv.pc"
fill "$root/include/qkv-static.pc.in" >"$prefix/lib/pkgconfig/qkv-static.pc"
fill "$root/include/qkvConfig.cmake.in" >"$prefix/lib/cmake/qkv/qkvConfig.cmake"
fill "$root/include/qkvConfigVersion.cmake.in" >"$prefix/lib/cmake/qkv/qkvConfigVersion.cmake"

echo "qkv $version installed in $prefix (static library: link with $static_libs)"
