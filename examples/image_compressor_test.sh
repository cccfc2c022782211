#!/bin/sh
# Smoke test of image_compressor: 250 generated JPEGs and one broken file
# through 4 workers; checks the statistics, the exit status (1: one image
# failed) and that 250 re-encoded images were written.
# usage: image_compressor_test.sh PROGRAM
set -u
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/in" "$dir/out"
"$1" --generate 250 "$dir/in" || { echo "FAIL: --generate" >&2; exit 1; }
printf 'not a jpeg' > "$dir/in/broken.jpg"
"$1" "$dir/in" "$dir/out" 4 > "$dir/log" 2> "$dir/err"
rc=$?
cat "$dir/log" "$dir/err"
[ $rc -eq 1 ] || { echo "FAIL: exit status $rc, expected 1" >&2; exit 1; }
# Exit status 1 is also what a sanitizer reports: make sure it was ours.
if grep -qE 'Sanitizer|runtime error' "$dir/err"; then
	echo "FAIL: sanitizer report" >&2; exit 1
fi
grep -q '^total 251, processed 250, failed 1,' "$dir/log" ||
	{ echo "FAIL: statistics" >&2; exit 1; }
grep -q '^error: broken.jpg: ' "$dir/log" || { echo "FAIL: no error" >&2; exit 1; }
grep -q '^progress: 200/251 ' "$dir/log" || { echo "FAIL: no progress" >&2; exit 1; }
n=$(ls "$dir/out" | wc -l)
[ "$n" -eq 250 ] || { echo "FAIL: $n images written, expected 250" >&2; exit 1; }
echo "ok: 250 images re-encoded, 1 failure reported"
