#!/usr/bin/env bash
# Firmware test: qkv on an emulated Cortex-M4F (thumbv7em-none-eabihf), from C and from Rust.
#
# For each of the three profiles the README names (plain release; its size recipe,
# opt-level s + LTO; and opt-level z + LTO, which the issue's size limits are set at):
# - builds qkv as a no_std static library (features panic-handler) and links it into the
#   bare-metal C program tests/c/firmware.c with arm-none-eabi-gcc (no libc, no allocator, no
#   Rust runtime), and builds the Rust program tests/firmware/src/bin/firmware.rs, which links
#   qkv as a no_std rlib;
# - runs both under qemu-system-arm -M mps2-an386 -semihosting -icount shift=0; each computes
#   attention on deterministic inputs, paints the stack below each call and counts the
#   instructions of each call (SysTick under icount), and prints it all;
# - measures the .text qkv adds to the C program for four groups of C entry points;
# - builds the library again with the K/V type features (kv-f16, kv-q8_0, then all three)
#   and measures the .text qkv adds to the program calling qkv_attention_f32 alone (the
#   dispatch links every type compiled in), and runs a third program (ckv) calling
#   qkv_attention_f32 and qkv_attention_f32_ws with f16 and q8_0 K and V against the build
#   with all three.
# Then tests/firmware/src/bin/check.rs, on the host, compares every output with
# qkv::reference within qkv::tolerance and prints stack and instructions per call.
#
# Fails (after printing every number) when an output is wrong, a program does not finish, a
# call uses more stack than QKV_FIRMWARE_MAX_STACK bytes (default 2048, the issue's limit,
# for every call and K/V type; 0 reports only), or, unless QKV_FIRMWARE_SIZE_LIMITS=report,
# the code size at s + LTO or z + LTO exceeds the limits below.
#
# Installs, as root, the Rust target and the Debian packages gcc-arm-none-eabi,
# binutils-arm-none-eabi and qemu-system-arm when missing, unless QKV_FIRMWARE_NO_INSTALL=1:
# then missing tools fail, except qemu, whose absence skips the runs (link and size only).
# QKV_FIRMWARE_TARGET_DIR: cargo target dir (default target/firmware).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

target=thumbv7em-none-eabihf
target_dir=${QKV_FIRMWARE_TARGET_DIR:-target/firmware}
no_install=${QKV_FIRMWARE_NO_INSTALL:-0}
max_stack=${QKV_FIRMWARE_MAX_STACK:-2048}
size_limits=${QKV_FIRMWARE_SIZE_LIMITS:-enforce}
# The issue's limits on the code qkv adds: attention alone, and every group up to the stream's,
# "25 KB" and "40 KB" read as 25,000 and 40,000 bytes (the issue writes 98,076 B as 98 KB).
# Both size profiles are held to them: s + LTO (the README's recipe) to the issue's values
# always, z + LTO to these, the issue's unless overridden.
limit_attention=${QKV_FIRMWARE_LIMIT_ATTENTION:-25000}
limit_all=${QKV_FIRMWARE_LIMIT_ALL:-40000}
limits_s=("" 25000 "" 40000 "" "")
start=$SECONDS

case $size_limits in enforce | report) ;; *)
	echo "firmware.sh: QKV_FIRMWARE_SIZE_LIMITS is enforce or report, not $size_limits" >&2
	exit 1
	;;
esac

if ! rustc --print target-libdir --target "$target" >/dev/null 2>&1 ||
	[ ! -d "$(rustc --print target-libdir --target "$target")" ]; then
	[ "$no_install" = 1 ] && { echo "firmware.sh: Rust target $target missing" >&2; exit 1; }
	rustup target add "$target"
fi
packages=()
command -v arm-none-eabi-gcc >/dev/null || packages+=(gcc-arm-none-eabi binutils-arm-none-eabi)
command -v qemu-system-arm >/dev/null || packages+=(qemu-system-arm)
if [ ${#packages[@]} -gt 0 ] && [ "$no_install" != 1 ]; then
	apt-get update
	apt-get install -y --no-install-recommends "${packages[@]}"
fi
command -v arm-none-eabi-gcc >/dev/null || { echo "firmware.sh: arm-none-eabi-gcc missing" >&2; exit 1; }
run_qemu=1
command -v qemu-system-arm >/dev/null || {
	echo "firmware.sh: qemu-system-arm missing (QKV_FIRMWARE_NO_INSTALL=1): runs skipped"
	run_qemu=0
}

cflags=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -std=c99
	-Wall -Wextra -Werror -ffreestanding -ffunction-sections -fdata-sections -nostdlib
	-Iinclude -T tests/c/firmware.ld -Wl,--gc-sections -z noexecstack)
text() { arm-none-eabi-size "$1" | awk 'NR == 2 { print $1 }'; }

failed=()
outputs=()
declare -A size
# build_and_run PROFILE [ENV=VALUE...]: everything for one cargo profile.
build_and_run() {
	local profile=$1
	shift
	local dir=$target_dir/$profile
	local out=$dir/images
	local env=(env -u CARGO_PROFILE_RELEASE_OPT_LEVEL -u CARGO_PROFILE_RELEASE_LTO "$@")
	mkdir -p "$out"

	echo "== [$profile] cargo rustc --release --lib --no-default-features --features panic-handler" \
		"--crate-type staticlib --target $target ($*)"
	"${env[@]}" cargo rustc --release --lib --no-default-features --features panic-handler \
		--crate-type staticlib --target "$target" --target-dir "$dir"
	local lib=$dir/$target/release/libqkv.a

	echo "== [$profile] cargo rustc --manifest-path tests/firmware/Cargo.toml --release --bin firmware --target $target"
	"${env[@]}" cargo rustc --manifest-path tests/firmware/Cargo.toml --release --bin firmware \
		--target "$target" --target-dir "$dir" -- -C "link-arg=-T$root/tests/c/firmware.ld"
	cp "$dir/$target/release/firmware" "$out/rust.elf"

	# Group g calls: 1 qkv_attention_f32; 2 also qkv_partial_f32 and qkv_merge_f32; 3 also
	# qkv_stream_*; 4 also the _ws variants in a caller-owned workspace; 5 also qkv_plan_*
	# and qkv_reference_f32 (the program that runs). The stubs build is the same program
	# with empty qkv functions.
	local g
	for g in 1 2 3 4 5; do
		arm-none-eabi-gcc "${cflags[@]}" -DQKV_GROUP=$g tests/c/firmware.c "$lib" -lgcc \
			-o "$out/c$g.elf"
		arm-none-eabi-gcc "${cflags[@]}" -DQKV_GROUP=$g -DQKV_STUBS tests/c/firmware.c -lgcc \
			-o "$out/stubs$g.elf"
		size[$profile/$g]=$(($(text "$out/c$g.elf") - $(text "$out/stubs$g.elf")))
	done
	grep -q ' T qkv_attention_f32$' <(arm-none-eabi-nm "$out/c1.elf") ||
		{ echo "firmware.sh: qkv_attention_f32 not linked" >&2; exit 1; }

	# The K/V types: the group-1 program against libraries with each type feature.
	local kv
	for kv in kv-f16 kv-q8_0 kv-f16,kv-bf16,kv-q8_0; do
		echo "== [$profile] the same library with --features panic-handler,$kv"
		"${env[@]}" cargo rustc --release --lib --no-default-features \
			--features "panic-handler,$kv" --crate-type staticlib --target "$target" \
			--target-dir "$dir"
		cp "$dir/$target/release/libqkv.a" "$out/libqkv-$kv.a"
		arm-none-eabi-gcc "${cflags[@]}" -DQKV_GROUP=1 tests/c/firmware.c "$out/libqkv-$kv.a" \
			-lgcc -o "$out/c1-$kv.elf"
		size[$profile/$kv]=$(($(text "$out/c1-$kv.elf") - $(text "$out/stubs1.elf")))
	done
	arm-none-eabi-gcc "${cflags[@]}" -DQKV_GROUP=1 -DQKV_KV_TYPES tests/c/firmware.c \
		"$out/libqkv-kv-f16,kv-bf16,kv-q8_0.a" -lgcc -o "$out/ckv.elf"
	echo "== [$profile] largest symbols of the C program (every group)"
	arm-none-eabi-nm --print-size --size-sort --radix=d -C "$out/c5.elf" |
		awk '$3 ~ /[tTwW]/' | tail -5

	[ $run_qemu = 1 ] || return 0
	local prog
	for prog in c5 ckv rust; do
		local label=${prog%5}/$profile
		echo "== [$profile] qemu-system-arm -M mps2-an386 -semihosting -icount shift=0 -kernel $prog.elf"
		# Semihosting writes to stderr; qemu exits 0 only when the program says it succeeded.
		if ! timeout 300 qemu-system-arm -M mps2-an386 -nographic -semihosting -icount shift=0 \
			-kernel "$out/$prog.elf" </dev/null >"$out/$prog.stdout" 2>"$out/$prog.txt"; then
			failed+=("$label: the program failed under qemu (see $out/$prog.txt)")
		fi
		outputs+=("$label=$out/$prog.txt")
	done
}

echo "== cargo build --manifest-path tests/firmware/Cargo.toml --release --bin check (host)"
cargo build --manifest-path tests/firmware/Cargo.toml --release --bin check \
	--target-dir "$target_dir/host"

build_and_run release
build_and_run s-lto CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=true
build_and_run z-lto CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=true

if [ $run_qemu = 1 ]; then
	echo "== check: outputs against qkv::reference, stack (limit ${max_stack} B) and instructions"
	"$target_dir/host/release/check" "$max_stack" "${outputs[@]}" ||
		failed+=("check failed (outputs, statuses or stack; see above)")
fi

echo
echo "qkv code size on Cortex-M4F (thumbv7em-none-eabihf): .text the library adds to the C program"
printf '%-44s %12s %12s %12s %16s\n' "C entry points called" "release" "s + LTO" "z + LTO" "limits (s, z)"
groups=("" "qkv_attention_f32" "+ qkv_partial_f32, qkv_merge_f32" "+ qkv_stream_state_len/init/update/finish"
	"+ the _ws variants, qkv_workspace_size" "+ qkv_plan_make/run_task/finish, reference")
limits_z=("" "$limit_attention" "" "$limit_all" "" "")
for g in 1 2 3 4 5; do
	verdict=""
	if [ -n "${limits_z[$g]}" ]; then
		verdict="${limits_s[$g]}, ${limits_z[$g]}"
		for p in s z; do
			local_limit=${limits_s[$g]}
			[ $p = z ] && local_limit=${limits_z[$g]}
			if [ "${size[$p-lto/$g]}" -gt "$local_limit" ]; then
				verdict+=" EXCEEDED ($p)"
				[ "$size_limits" = enforce ] &&
					failed+=("code size of group $g at $p+LTO: ${size[$p-lto/$g]} B > $local_limit B")
			fi
		done
	fi
	printf '%-44s %12s %12s %12s %16s\n' "${groups[$g]}" "${size[release/$g]}" "${size[s-lto/$g]}" \
		"${size[z-lto/$g]}" "$verdict"
done
echo
echo "The K/V types: .text qkv adds to the program calling qkv_attention_f32 (f32 K/V) when the"
echo "library is built with these features besides panic-handler"
printf '%-44s %12s %12s %12s\n' "features" "release" "s + LTO" "z + LTO"
kvs=("" kv-f16 kv-q8_0 kv-f16,kv-bf16,kv-q8_0)
names=("(none: f32 only)" "kv-f16" "kv-q8_0" "kv-f16, kv-bf16, kv-q8_0 (all)")
for i in 0 1 2 3; do
	key=${kvs[$i]:-1}
	printf '%-44s %12s %12s %12s\n' "${names[$i]}" "${size[release/$key]}" "${size[s-lto/$key]}" \
		"${size[z-lto/$key]}"
done
[ "$size_limits" = enforce ] || echo "size limits: report only (QKV_FIRMWARE_SIZE_LIMITS=report)"
echo "firmware.sh: $((SECONDS - start)) s"

if [ ${#failed[@]} -gt 0 ]; then
	printf 'firmware.sh: FAIL %s\n' "${failed[@]}" >&2
	exit 1
fi
