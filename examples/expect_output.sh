#!/bin/sh
# usage: expect_output.sh EXPECTED PROGRAM [ARGS...]
# Runs PROGRAM and fails unless it exits 0 and its stdout is byte for byte
# EXPECTED (a printf format: "4\n16\n").
set -u
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
printf "$1" > "$dir/expected"
shift
"$@" > "$dir/actual"
rc=$?
if [ $rc -ne 0 ]; then
	echo "FAIL: $1 exited with $rc" >&2
	exit 1
fi
if ! cmp -s "$dir/expected" "$dir/actual"; then
	echo "FAIL: expected:" >&2; od -c "$dir/expected" >&2
	echo "got:" >&2; od -c "$dir/actual" >&2
	exit 1
fi
cat "$dir/actual"
echo "ok: output matches"
