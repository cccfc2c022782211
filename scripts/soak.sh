#!/usr/bin/env bash
# Soak run: builds tests/soak/soak.c in a sanitizer build folder of its own
# and runs it (exactly-once matrix, then a randomized mix of pools,
# pipelines and cancellations; see the program's header comment).
#
# usage: scripts/soak.sh [--asan|--tsan|--plain] [--builddir DIR] [soak args...]
#   --asan (default)  AddressSanitizer + UBSan build in build/soak-asan
#   --tsan            ThreadSanitizer build in build/soak-tsan
#   --plain           no sanitizer, build/soak-plain (fastest: for 10^8)
#   --builddir DIR    use DIR instead
#   soak args         passed on: --quick, --messages N (default 10^8),
#                     --minutes M (default 10), --seconds S, --producers P,
#                     --consumers C, --seed S
# The build folders live under $CPAT_BUILD_ROOT (default build/). Exits with
# the program's status: 0 clean, 1 a violation, other: a sanitizer report or
# a crash (the report is on stderr).
set -u
cd "$(dirname "$0")/.."
./scripts/deps.sh || exit 1

kind=asan
dir=""
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--asan) kind=asan ;;
	--tsan) kind=tsan ;;
	--plain) kind=plain ;;
	--builddir) dir=$2; shift ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) args+=("$1") ;;
	esac
	shift
done
case $kind in
asan) opts=(-Db_sanitize=address,undefined) ;;
tsan) opts=(-Db_sanitize=thread) ;;
plain) opts=() ;;
esac
dir=${dir:-${CPAT_BUILD_ROOT:-build}/soak-$kind}

mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dbuildtype=debugoptimized -Dexamples=disabled -Dbenches=disabled \
		"${opts[@]}" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
fi
meson compile -C "$dir" tests/soak/soak >"$dir/soak-compile.log" 2>&1 \
	|| { tail -30 "$dir/soak-compile.log"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
echo "soak.sh: $kind build in $dir" >&2
start=$(date +%s)
"$dir/tests/soak/soak" "${args[@]}"
rc=$?
echo "soak.sh: $kind build, exit status $rc after $(( $(date +%s) - start )) s" \
	"($( [ $rc -eq 0 ] && echo clean || echo FAILED ))" >&2
exit $rc
