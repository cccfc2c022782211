#!/bin/sh
# A shared library exports exactly the cpat_* functions its headers
# declare with CPAT_API, nothing more and nothing less.
# usage: check-symbols.sh SRCROOT LIB.so [HEADER...]
# Without HEADERs: the core library and every header but the optional
# modules' (cpattern/redis.h, the cpattern-redis library's).
set -eu
src=$1 lib=$2
shift 2
if [ $# -eq 0 ]; then
	for h in "$src"/include/cpattern/*.h; do
		[ "$(basename "$h")" = redis.h ] || set -- "$@" "$h"
	done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Declared: the name before '(' on every CPAT_API declaration (a declaration
# may span lines: join each header first).
for h in "$@"; do
	tr '\n' ' ' <"$h" | grep -o 'CPAT_API[^;(]*(' | sed 's/($//; s/.*[ *]//' | grep '^cpat_'
done | sort -u >"$tmp/declared"
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"
if ! diff -u "$tmp/declared" "$tmp/exported"; then
	echo "FAIL: exported symbols differ from the declared API (- declared only, + exported only)"
	exit 1
fi
echo "ok: $(wc -l <"$tmp/exported") exported symbols, exactly the declared cpat_* API"
