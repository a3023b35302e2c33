#!/usr/bin/env bash
# Firmware proof for the C ABI (issue 4): builds qkv as a no_std static library for a
# Cortex-M4F (thumbv7em-none-eabihf, features panic-handler), links it into the bare-metal C
# program tests/c/firmware.c with arm-none-eabi-gcc (no libc, no allocator, no Rust runtime),
# and prints the image size and what the library adds to it.
#
# Installs the Rust target and the Debian package gcc-arm-none-eabi when missing (as root),
# unless QKV_FIRMWARE_NO_INSTALL=1; fails if it cannot build or link.
# QKV_FIRMWARE_TARGET_DIR: cargo target dir (default target/firmware).
set -euo pipefail
cd "$(dirname "$0")/.."

target=thumbv7em-none-eabihf
target_dir=${QKV_FIRMWARE_TARGET_DIR:-target/firmware}
no_install=${QKV_FIRMWARE_NO_INSTALL:-0}

if ! rustc --print target-libdir --target "$target" >/dev/null 2>&1 ||
	[ ! -d "$(rustc --print target-libdir --target "$target")" ]; then
	[ "$no_install" = 1 ] && { echo "firmware.sh: Rust target $target missing" >&2; exit 1; }
	rustup target add "$target"
fi
if ! command -v arm-none-eabi-gcc >/dev/null; then
	[ "$no_install" = 1 ] && { echo "firmware.sh: arm-none-eabi-gcc missing" >&2; exit 1; }
	apt-get update
	apt-get install -y --no-install-recommends gcc-arm-none-eabi binutils-arm-none-eabi
fi

echo "== cargo rustc --release --lib --no-default-features --features panic-handler --crate-type staticlib --target $target"
cargo rustc --release --lib --no-default-features --features panic-handler \
	--crate-type staticlib --target "$target" --target-dir "$target_dir"
lib="$target_dir/$target/release/libqkv.a"

out="$target_dir/firmware"
mkdir -p "$out"
cflags=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -std=c99
	-Wall -Wextra -Werror -ffreestanding -ffunction-sections -fdata-sections -nostdlib
	-Iinclude -T tests/c/firmware.ld -Wl,--gc-sections -z noexecstack)

echo "== arm-none-eabi-gcc ${cflags[*]} tests/c/firmware.c $lib -lgcc"
arm-none-eabi-gcc "${cflags[@]}" tests/c/firmware.c "$lib" -lgcc -o "$out/firmware.elf"
arm-none-eabi-gcc "${cflags[@]}" -DQKV_BASELINE tests/c/firmware.c -lgcc -o "$out/baseline.elf"

# The image must call the library: qkv_attention_f32 and the kernel are linked in.
symbols=$(arm-none-eabi-nm "$out/firmware.elf")
grep -q ' T qkv_attention_f32$' <<<"$symbols" ||
	{ echo "firmware.sh: qkv_attention_f32 not linked" >&2; exit 1; }

echo "== arm-none-eabi-size"
arm-none-eabi-size "$out/firmware.elf" "$out/baseline.elf"
text() { arm-none-eabi-size "$1" | awk 'NR == 2 { print $1 }'; }
full=$(text "$out/firmware.elf")
base=$(text "$out/baseline.elf")
echo "== largest symbols"
arm-none-eabi-nm --print-size --size-sort --radix=d -C "$out/firmware.elf" |
	awk '$3 ~ /[tTwW]/' | tail -8
profile="release${CARGO_PROFILE_RELEASE_OPT_LEVEL:+, opt-level $CARGO_PROFILE_RELEASE_OPT_LEVEL}"
profile+="${CARGO_PROFILE_RELEASE_LTO:+, lto $CARGO_PROFILE_RELEASE_LTO}"
echo "qkv code size on Cortex-M4F (thumbv7em-none-eabihf, $profile): $((full - base)) bytes of .text" \
	"($full with the C program, $base without qkv)"
