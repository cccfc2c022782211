#!/usr/bin/env bash
# The whole test suite, in several builds (separate build folders under
# build/): a plain build; an AddressSanitizer + UBSan build; a
# ThreadSanitizer build; "portable", the whole suite on the portable
# parking path (meson -Dparking=portable: mutex and condition-variable
# stripes, what macOS and the BSDs use, instead of futexes); "clang", the
# suite built with clang; "aarch64", the library and unit suite
# cross-compiled for 64-bit Arm (scripts/cross/aarch64-linux-gnu.ini) and
# run under qemu-user; then the planted-bug checks (scripts/planted.sh:
# the unit suite must fail on each known bug planted in the library).
# Installs what is missing first (scripts/deps.sh). Ends with one line
# "N passed, N failed" counted over all of it from Meson's
# meson-logs/testlog.json, and exits non-zero if anything failed.
#
# usage: scripts/test.sh [plain|asan|tsan|portable|clang|aarch64|planted ...]
#        (default: all seven)
# A build whose toolchain cannot be had (not root, no clang, no arm64
# packages, no qemu-user) prints a line "SKIP <build>: why" and counts as
# one skipped check; aarch64 without qemu-user still compiles.
# Environment: CPAT_TEST_SCALE (stress sizes, default 1), CPAT_TEST_SEED,
# CPAT_TEST_TIMEOUT (per-test watchdog, seconds), CPAT_BUILD_ROOT (build/).
set -u
cd "$(dirname "$0")/.."
./scripts/deps.sh || exit 1
# What the examples and bench scenarios built on optional libraries need,
# clang for the libFuzzer target, clang-format for the format check, and a
# redis-server with hiredis for the cpattern-redis module and its tests
# (and SQLite for the real-time processor's)
# (they start their own server; the system's service is never used):
# without them those skip.
./scripts/deps.sh --optional libturbojpeg0-dev libmicrohttpd-dev \
	libcurl4-openssl-dev libcjson-dev clang clang-format valgrind \
	redis-server libhiredis-dev libsqlite3-dev gcc-aarch64-linux-gnu qemu-user \
	libuv1-dev

# The aarch64 build links its tests with arm64 cmocka: Debian multiarch.
arm64_ready() {
	dpkg-query -W -f='${Status}' libcmocka-dev:arm64 2>/dev/null | grep -q 'install ok installed'
}
arm64_deps() {
	arm64_ready && return 0
	command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || return 1
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		dpkg --add-architecture arm64 && apt-get update -qq >&2 || return 1
	fi
	./scripts/deps.sh --optional libcmocka-dev:arm64
	arm64_ready
}

# A skipped build: one line on the terminal, one SKIP in its test log.
skip_build() {
	echo "SKIP $1: $2"
	mkdir -p "$root/$1/meson-logs"
	printf '{"name": "%s-build", "result": "SKIP", "stdout": "SKIP: %s"}\n' "$1" "$2" \
		>"$root/$1/meson-logs/testlog.json"
}

root=${CPAT_BUILD_ROOT:-build}
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(plain asan tsan portable clang aarch64 planted)
start=$(date +%s)
status=0

for b in "${builds[@]}"; do
	case $b in
	planted)
		echo "=== planted bugs: the suite must catch each" >&2
		./scripts/planted.sh || status=1
		continue
		;;
	plain) opts=() ;;
	asan) opts=(-Db_sanitize=address,undefined) ;;
	tsan) opts=(-Db_sanitize=thread) ;;
	portable)
		# The parking path of every system but Linux, on the whole suite
		# (the standing checks and benches do not park differently).
		opts=(-Dparking=portable -Dstanding_checks=disabled -Dbenches=disabled) ;;
	clang)
		command -v clang >/dev/null 2>&1 || { skip_build clang "clang not installed"; continue; }
		opts=(--native-file scripts/cross/clang.ini) ;;
	aarch64)
		if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
			skip_build aarch64 "no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)"
			continue
		fi
		if ! arm64_deps; then
			skip_build aarch64 "no arm64 cmocka (as root: dpkg --add-architecture arm64; apt-get update; apt-get install libcmocka-dev:arm64)"
			continue
		fi
		opts=(--cross-file scripts/cross/aarch64-linux-gnu.ini -Dexamples=disabled -Dbenches=disabled) ;;
	*) echo "unknown build '$b' (plain, asan, tsan, portable, clang, aarch64, planted)" >&2; exit 2 ;;
	esac
	dir="$root/$b"
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" --werror -Dbuildtype=debugoptimized "${opts[@]}" >"$root-$b-setup.log" 2>&1 \
			|| { cat "$root-$b-setup.log"; echo "setup of $b failed" >&2; status=1; continue; }
	fi
	echo "=== $b build: compiling" >&2
	if ! meson compile -C "$dir" >"$dir/compile.log" 2>&1; then
		cat "$dir/compile.log"
		echo "=== $b build: compile FAILED" >&2
		status=1
		continue
	fi
	rm -f "$dir/meson-logs/testlog.json"
	if [ "$b" = aarch64 ]; then
		# The unit suite, under qemu-user (the cross file's exe_wrapper):
		# about 5x slower than native, hence the longer timeouts.
		if ! command -v qemu-aarch64 >/dev/null 2>&1; then
			skip_build aarch64 "compiled; qemu-user not installed, the unit suite not run (apt-get install qemu-user)"
			continue
		fi
		echo "=== $b build: unit suite under qemu-aarch64" >&2
		CPAT_TEST_TIMEOUT=${CPAT_TEST_TIMEOUT:-600} meson test -C "$dir" --no-rebuild \
			--print-errorlogs --suite unit --timeout-multiplier 4 || status=1
		continue
	fi
	echo "=== $b build: testing" >&2
	meson test -C "$dir" --no-rebuild --print-errorlogs || status=1
done

# Count over every build that produced a log (scripts/count_tests.py):
# its last line, "N passed, N failed", is what CI reads.
echo "# test command took $(( $(date +%s) - start )) s"
python3 scripts/count_tests.py "$root" "${builds[@]}"
rc=$?
[ $rc -eq 0 ] && [ $status -eq 0 ]
