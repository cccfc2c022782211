#!/bin/sh
# `meson setup` of this tree on a machine without cmocka succeeds, with the
# tests reported disabled (the library needs only libc and pthreads).
# cmocka is hidden from both of Meson's finders: pkg-config (an empty
# PKG_CONFIG_LIBDIR) and CMake (a native file naming no cmake program).
# usage: check-setup-without-cmocka.sh SRCROOT
set -eu
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf "[binaries]\ncmake = 'false'\n" >"$tmp/native.ini"
if ! PKG_CONFIG_LIBDIR="$tmp/none" meson setup "$tmp/b" "$src" --native-file "$tmp/native.ini" \
	>"$tmp/setup.log" 2>&1; then
	cat "$tmp/setup.log"
	echo "FAIL: meson setup without cmocka failed"
	exit 1
fi
grep -q "Run-time dependency cmocka found: NO" "$tmp/setup.log" \
	|| { cat "$tmp/setup.log"; echo "FAIL: cmocka was not hidden"; exit 1; }
grep -q "cmocka not found: the tests are disabled" "$tmp/setup.log" \
	|| { cat "$tmp/setup.log"; echo "FAIL: no message saying the tests are disabled"; exit 1; }
grep -Eq "^ +tests +: False" "$tmp/setup.log" \
	|| { cat "$tmp/setup.log"; echo "FAIL: the summary does not report the tests disabled"; exit 1; }
echo "ok: meson setup without cmocka succeeds, tests disabled"
