#!/usr/bin/env bash
# The whole test suite, three times: a plain build, an AddressSanitizer +
# UBSan build and a ThreadSanitizer build (separate build folders under
# build/); then the planted-bug checks (scripts/planted.sh: the unit suite
# must fail on each known bug planted in the library). Installs what is
# missing first (scripts/deps.sh). Ends with one line "N passed, N failed"
# counted over all of it from Meson's meson-logs/testlog.json, and exits
# non-zero if anything failed.
#
# usage: scripts/test.sh [plain|asan|tsan|planted ...]   (default: all four)
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
	redis-server libhiredis-dev libsqlite3-dev

root=${CPAT_BUILD_ROOT:-build}
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(plain asan tsan planted)
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
	*) echo "unknown build '$b' (plain, asan, tsan, planted)" >&2; exit 2 ;;
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
	echo "=== $b build: testing" >&2
	rm -f "$dir/meson-logs/testlog.json"
	meson test -C "$dir" --no-rebuild --print-errorlogs || status=1
done

# Count over every build that produced a log (scripts/count_tests.py):
# its last line, "N passed, N failed", is what CI reads.
echo "# test command took $(( $(date +%s) - start )) s"
python3 scripts/count_tests.py "$root" "${builds[@]}"
rc=$?
[ $rc -eq 0 ] && [ $status -eq 0 ]
