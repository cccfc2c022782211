#!/bin/sh
# Smoke test of log_processor: generates a small log (INFO, WARN and ERROR
# lines, and malformed ones), processes it, and checks that the output holds
# exactly the ERROR lines, in order.
# usage: log_processor_test.sh PROGRAM
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# 1000 lines: every 3rd is an ERROR (334), every 10th is malformed (only
# two words), which replaces 34 of those ERROR lines -> 300 ERROR lines
# (more than two batches of 100, so a remainder is flushed at the end).
awk 'BEGIN {
	for (i = 0; i < 1000; i++) {
		if (i % 10 == 0)        print "garbage" i " line";
		else if (i % 3 == 0)    printf "ERROR 12:00:%02d disk %d failed\n", i % 60, i;
		else if (i % 3 == 1)    printf "INFO 12:00:%02d request %d\n", i % 60, i;
		else                    printf "WARN 12:00:%02d slow %d\n", i % 60, i;
	}
}' > "$dir/in.log"
expected=$(grep -c '^ERROR ' "$dir/in.log")
"$1" "$dir/in.log" "$dir/out.log"
got=$(wc -l < "$dir/out.log")
if [ "$got" -ne "$expected" ]; then
	echo "FAIL: $got lines in the output, expected $expected" >&2
	exit 1
fi
if ! grep '^ERROR ' "$dir/in.log" | cmp -s - "$dir/out.log"; then
	echo "FAIL: the output is not the input's ERROR lines in order" >&2
	exit 1
fi
echo "ok: $got ERROR lines kept, in order"
