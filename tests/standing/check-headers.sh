#!/bin/sh
# Every public header compiles alone: as C99 -pedantic -Werror, and as C++.
# usage: check-headers.sh SRCROOT CC [CXX]
set -eu
src=$1 cc=$2 cxx=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for h in "$src"/include/cpattern.h "$src"/include/cpattern/*.h; do
	rel=${h#"$src"/include/}
	printf '#include <%s>\n#include <%s>\nint main(void) { return 0; }\n' "$rel" "$rel" >"$tmp/t.c"
	$cc -std=c99 -pedantic -Wall -Wextra -Werror -I"$src/include" -c "$tmp/t.c" -o "$tmp/t.o" \
		|| { echo "FAIL: $rel as C99"; exit 1; }
	if [ -n "$cxx" ]; then
		printf '#include <%s>\nint main() { return 0; }\n' "$rel" >"$tmp/t.cc"
		$cxx -std=c++11 -pedantic -Wall -Wextra -Werror -I"$src/include" -c "$tmp/t.cc" -o "$tmp/t.o" \
			|| { echo "FAIL: $rel as C++"; exit 1; }
	fi
	n=$((n + 1))
done
echo "ok: $n headers compile alone as C99${cxx:+ and C++}"
