#!/usr/bin/env bash
# The verification matrix of qkv (issue 6), run by .ci/run (x86-scalar in its own order,
# the rest in the background beside its other steps):
#
#   fuzz-build     builds every fuzz target as `cargo fuzz build` does (nightly, ASan)
#   fuzz/<target>  every fuzz target (the bins of fuzz/Cargo.toml) for QKV_FUZZ_SECONDS (default 30)
#                  from its seed corpus fuzz/corpus/<target>
#   x86-scalar     the native test binaries under `qemu-x86_64 -cpu Nehalem` (no AVX): dispatch
#                  falls back to the scalar path (CROSS_EXPECT_ARCH=scalar)
#   miri           the tests that reach the kernel's unsafe tiles under Miri (scalar and
#                  emulated-lane paths), via cross-check
#   tsan           the threaded tests (parallel, offsets) under ThreadSanitizer, std rebuilt
#   avx512-exec    tests/avx512.rs, built static for x86_64-unknown-linux-musl, executed on an
#                  emulated Skylake-X (Bochs) by avx512-emu, with the AVX-512 level forced and
#                  required (CROSS_REQUIRE_AVX512=1, CROSS_EXPECT_ARCH=x86-v4); every test the
#                  binary lists must have run and passed in the guest
#
# .ci/run runs cross-check's default steps (NEON under qemu, no_std builds, the AVX-512
# compile check) itself; they are not repeated here.
#
# Runs from the repository root (any cwd works) on a fresh Debian 12 machine as root,
# installing what it needs; ../shared must be beside the checkout (or set QKV_SHARED).
# Every step runs even if an earlier one failed; each prints its time, a summary comes
# last, and the exit status is 1 if any step failed. Fuzzing and avx512-exec run in a
# second lane beside x86-scalar and miri (see the driver below).
#
# Environment:
#   QKV_FUZZ_SECONDS   seconds per fuzz target (default 30)
#   QKV_MATRIX_LANES   2 (default): the two lanes side by side; 1: every step one after another
#   QKV_MATRIX_STEPS   steps to run, comma-separated, of: fuzz x86-scalar miri tsan avx512-exec
#                      (default: all five)
#   QKV_SHARED         the shared tools folder (default ../shared)
#   AVX512EMU_TIMEOUT  limit for the emulator run in seconds (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

FUZZ_SECONDS=${QKV_FUZZ_SECONDS:-30}
LANES=${QKV_MATRIX_LANES:-2}
STEPS=${QKV_MATRIX_STEPS:-fuzz,x86-scalar,miri,tsan,avx512-exec}
SHARED=$(cd "${QKV_SHARED:-../shared}" && pwd)
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/qkv-matrix.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

SUDO=
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi

say() { printf 'matrix: %s\n' "$*"; }

# ------------------------------------------------------------------ installs
need_apt() {
	local p missing=()
	for p in "$@"; do
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "apt-get install ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_target() {
	local t
	for t in "$@"; do
		if ! rustup target list --installed | grep -qx "$t"; then
			say "rustup target add $t"
			rustup target add "$t"
		fi
	done
}

need_nightly() {
	if ! cargo +nightly --version >/dev/null 2>&1; then
		say "rustup toolchain install nightly"
		rustup toolchain install nightly --profile minimal
	fi
}

# ------------------------------------------------------------------ steps
# The fuzz targets are built the way `cargo fuzz build` (cargo-fuzz 0.13) builds them, with
# its flags: SanitizerCoverage as libFuzzer wants it, AddressSanitizer, `--cfg fuzzing`,
# debug assertions (and so overflow checks), release profile with debug info, for the host
# triple so build scripts stay uninstrumented. One difference: cargo-fuzz forces one codegen
# unit, which makes this build about twice as long on two cores for runs of seconds; the
# targets then run a little slower. CI does not install cargo-fuzz (minutes of compiling on
# a fresh machine); `cargo +nightly fuzz run <target>` works on this crate as well.
FUZZ_TRIPLE=x86_64-unknown-linux-gnu
FUZZ_RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions"
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

# Builds every target once (timed apart from the runs); the targets are fuzz/Cargo.toml's bins.
step_fuzz_build() {
	need_nightly
	RUSTFLAGS="$FUZZ_RUSTFLAGS" cargo +nightly build --manifest-path fuzz/Cargo.toml \
		--target "$FUZZ_TRIPLE" --release --config profile.release.debug=true --bins
	sed -n '/^\[\[bin\]\]/,/^name/s/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml >"$LOGS/fuzz-targets"
	[ -s "$LOGS/fuzz-targets" ] || {
		say "fuzz/Cargo.toml declares no fuzz targets"
		return 1
	}
	say "fuzz targets: $(tr '\n' ' ' <"$LOGS/fuzz-targets")"
}

# One fuzz target for FUZZ_SECONDS from its seed corpus. New corpus entries land in
# fuzz/corpus/<target>/ (git-ignored); a crash leaves fuzz/artifacts/<target>/crash-* and
# fails the step.
step_fuzz() {
	local t=$1
	mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
	"fuzz/target/$FUZZ_TRIPLE/release/$t" -artifact_prefix="fuzz/artifacts/$t/" \
		-max_total_time="$FUZZ_SECONDS" -timeout=30 -print_final_stats=1 "fuzz/corpus/$t" 2>&1 |
		grep -Ev '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|NEW_FUNC' |
		tee "$LOGS/fuzz-$t.log"
	grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$LOGS/fuzz-$t.log" |
		sed "s/^/matrix: fuzz\/$t /"
}

# The test binaries of a plain `cargo test` (target/debug; .ci/run has built them) rerun
# under `qemu-x86_64 -cpu Nehalem`: a runner for the host triple applies without --target, so
# nothing is rebuilt. The scalar level is the same baseline x86-64 code that `cargo test`
# checks natively; what this step adds is dispatch's fallback and the absence of any
# instruction Nehalem lacks. So it runs the tests that reach every path of the kernel (each
# documented rule at every tile edge, errors, split-KV, streaming, the fuzz regressions), not
# `random`, `properties`, `exp` or the C-ABI tests (whose programs would run on the host), and
# with QKV_UNDER_EMULATOR (tests/common's `under_emulator`) only at the emulated CPU's own
# level. CROSS_EXPECT_ARCH=scalar makes tests/dispatch.rs fail unless dispatch picked the
# scalar level, so the step cannot pass by running natively.
step_x86_scalar() {
	local host
	host=$(rustc -vV | sed -n 's/^host: //p')
	[ "$host" = x86_64-unknown-linux-gnu ] || {
		say "x86-scalar needs an x86_64-unknown-linux-gnu host, not $host"
		return 1
	}
	need_apt qemu-user
	QKV_UNDER_EMULATOR=1 CROSS_EXPECT_ARCH=scalar \
		CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64 -cpu Nehalem" \
		cargo test --lib --test dispatch --test semantics --test errors --test split \
		--test stream --test regressions --test workspace --test kv_types
}

# Miri interprets every operation (about 1000x slower than native), so it runs the tests
# that reach the kernel's `unsafe` tiles through every edge and entry point: each documented
# rule on shapes at every tile edge (semantics), errors, split-KV and streaming, fuzz
# regressions and dispatch. Left out: `random` and `properties` (the same paths on random
# shapes, which the native tests and the fuzz targets under AddressSanitizer cover), `exp`
# (no unsafe code), and the tests that run cargo or a C compiler. Runner::all leaves out the
# 8-lane instance under Miri (tests/common).
step_miri() {
	CROSS_STEPS=miri CROSS_MIRI_ARGS="--lib --test semantics --test errors --test split \
--test stream --test regressions --test dispatch --test workspace" "$SHARED/tools/cross-check"
}

# tests/avx512.rs on an emulated AVX-512 CPU. Its tests all have `avx512` in their names,
# force Isa::Avx512, fail (rather than skip) under CROSS_REQUIRE_AVX512=1 when the level is
# unavailable, and assert under CROSS_EXPECT_ARCH=x86-v4 that detection picked it.
step_avx512_exec() {
	local target=x86_64-unknown-linux-musl bin log=$LOGS/avx512-emu.log
	need_target "$target"
	cargo test --release --no-run --target "$target" --test avx512 2>&1 | tee "$LOGS/avx512-build.log"
	bin=$(sed -n 's/^ *Executable tests\/avx512\.rs (\(.*\))$/\1/p' "$LOGS/avx512-build.log" | tail -1)
	if [ -z "$bin" ] || [ ! -x "$bin" ]; then
		say "no executable for tests/avx512.rs in the cargo output"
		return 1
	fi
	say "running $bin on the emulated AVX-512 CPU"
	# The guest gets only the variables AVX512EMU_PASSENV names.
	AVX512EMU_PASSENV="RUST_BACKTRACE RUST_TEST_THREADS CROSS_REQUIRE_AVX512 CROSS_EXPECT_ARCH" \
		AVX512EMU_TIMEOUT=${AVX512EMU_TIMEOUT:-600} \
		RUST_BACKTRACE=1 RUST_TEST_THREADS=1 \
		CROSS_REQUIRE_AVX512=1 CROSS_EXPECT_ARCH=x86-v4 \
		"$SHARED/tools/avx512-emu" "$bin" avx512 --test-threads=1 2>&1 | tee "$log"
	# avx512-emu exits with the binary's status; also check that the guest really had
	# AVX-512 and that every test the filter selects ran and passed (a filter matching
	# nothing, or fewer tests than the binary has, would pass too).
	local f
	for f in avx512f avx512bw avx512cd avx512dq avx512vl; do
		grep -q "^AVX512EMU-BEGIN.*$f" "$log" || {
			say "the guest CPU did not report $f"
			return 1
		}
	done
	local passed listed
	listed=$("$bin" --list avx512 2>/dev/null | grep -c ': test$' || true)
	passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed; 0 failed; 0 ignored.*/\1/p' "$log" | tail -1)
	if [ -z "$passed" ] || [ "$passed" -lt 1 ] || [ "$passed" -ne "$listed" ]; then
		say "the guest passed ${passed:-no} avx512 tests of the $listed the binary lists"
		return 1
	fi
	if grep -q 'skipped: no AVX-512 here' "$log"; then
		say "a test skipped for lack of AVX-512"
		return 1
	fi
	say "avx512: all $passed tests passed on the emulated AVX-512 CPU"
}

# ThreadSanitizer on the threaded paths: tests/parallel.rs and tests/offsets.rs (plans over
# heads, query blocks and key splits, merged by the calling thread) with the `parallel`
# feature, std rebuilt instrumented (-Zbuild-std), on the host triple in a target directory of
# its own. TSAN_OPTIONS makes any report fail the run.
step_tsan() {
	local host
	host=$(rustc -vV | sed -n 's/^host: //p')
	RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" \
		TSAN_OPTIONS="halt_on_error=1 abort_on_error=1" \
		cargo +nightly test -Zbuild-std --target "$host" --target-dir target/tsan \
		--features parallel --test parallel --test offsets
}

# ------------------------------------------------------------------ driver
# Two lanes, one per core: fuzzing, Miri and Bochs each keep one core busy on a single
# thread, so they run side by side. Lane 1: x86-scalar, miri; lane 2 (in the background):
# fuzz-build, the fuzz runs, avx512-exec, tsan, about equally long (in CI's run of
# 2026-12-02: Miri 1,572 s; fuzz 850 s, Bochs 290 s and tsan 295 s, beside the other steps). Lane 2's output is printed
# when it ends; each step's result goes to $LOGS/summary.
START=$(date +%s)
run_step() {
	local name=$1 start rc status
	shift
	start=$(date +%s)
	printf '\n======== matrix: %s ========\n' "$name"
	set +e
	(
		set -euo pipefail
		"$@"
	)
	rc=$?
	set -e
	if [ $rc -eq 0 ]; then status=PASS; else status="FAIL (exit $rc)"; fi
	printf '%-22s %-14s %4ss\n' "$name" "$status" "$(($(date +%s) - start))" >>"$LOGS/summary"
	say "$name: $status in $(($(date +%s) - start))s"
}

lane() {
	local s targets=() t
	for s in "$@"; do
		case $s in
		fuzz)
			run_step fuzz-build step_fuzz_build
			[ -f "$LOGS/fuzz-targets" ] && mapfile -t targets <"$LOGS/fuzz-targets"
			for t in "${targets[@]}"; do run_step "fuzz/$t" step_fuzz "$t"; done
			;;
		x86-scalar) run_step x86-scalar step_x86_scalar ;;
		miri) run_step miri step_miri ;;
		tsan) run_step tsan step_tsan ;;
		avx512-exec) run_step avx512-exec step_avx512_exec ;;
		esac
	done
}

IFS=', ' read -r -a STEP_LIST <<<"$STEPS"
lane1=() lane2=() expected=0
for s in "${STEP_LIST[@]}"; do
	case $s in
	x86-scalar | miri) lane1+=("$s") ;;
	fuzz | avx512-exec | tsan) lane2+=("$s") ;;
	*)
		say "unknown step '$s' (known: fuzz x86-scalar miri tsan avx512-exec)"
		exit 2
		;;
	esac
	expected=$((expected + 1))
done
: >"$LOGS/summary"

lane2_pid=
if [ "$LANES" = 2 ] && [ ${#lane1[@]} -gt 0 ] && [ ${#lane2[@]} -gt 0 ]; then
	# The lanes' cargo builds use different target directories (target/debug, target/miri,
	# fuzz/target, target/x86_64-unknown-linux-musl), so neither waits on the other's lock.
	lane "${lane2[@]}" >"$LOGS/lane2.log" 2>&1 &
	lane2_pid=$!
	say "lane 2 (${lane2[*]}) running in the background; its output follows lane 1's"
	lane "${lane1[@]}"
	wait "$lane2_pid" || true
	printf '\n======== matrix: output of lane 2 (%s) ========\n' "${lane2[*]}"
	cat "$LOGS/lane2.log"
else
	lane "${lane1[@]}" "${lane2[@]}"
fi

printf '\n======== matrix summary (%ss in all) ========\n' "$(($(date +%s) - START))"
sed 's/^/  /' "$LOGS/summary"
FAILED=$(grep -vc ' PASS ' "$LOGS/summary" || true)
if [ "$(wc -l <"$LOGS/summary")" -lt "$expected" ]; then
	say "a lane ended before recording its steps"
	FAILED=$((FAILED + 1))
fi
say "$FAILED failed"
[ "$FAILED" -eq 0 ]
