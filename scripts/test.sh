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
# clang for the libFuzzer target, and a redis-server with hiredis for the
# cpattern-redis module and its tests (they start their own server; the
# system's service is never used): without them those skip.
./scripts/deps.sh --optional libturbojpeg0-dev libmicrohttpd-dev \
	libcurl4-openssl-dev libcjson-dev clang valgrind \
	redis-server libhiredis-dev

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

# Count over every build that produced a log: one line per test in
# testlog.json; TAP subtests are summed too, for the record.
echo "# test command took $(( $(date +%s) - start )) s"
python3 - "$root" "${builds[@]}" <<'PY'
import json, os, sys
root, builds = sys.argv[1], sys.argv[2:]
passed = failed = skipped = 0
for b in builds:
    log = os.path.join(root, b, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        print(f"# {b}: no test log (build failed)")
        failed += 1
        continue
    bp = bf = bs = sub = 0
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            r = t.get("result")
            if r in ("OK", "EXPECTEDFAIL"):
                bp += 1
            elif r == "SKIP":
                bs += 1
            else:
                bf += 1
                print(f"# {b}: FAILED {t.get('name')} ({r})")
            sub += sum(1 for l in (t.get("stdout") or "").splitlines() if l.startswith("ok "))
    print(f"# {b}: {bp} passed, {bf} failed, {bs} skipped ({sub} TAP subtests ok)")
    passed += bp; failed += bf; skipped += bs
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
PY
rc=$?
[ $rc -eq 0 ] && [ $status -eq 0 ]
