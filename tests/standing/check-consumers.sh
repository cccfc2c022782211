#!/bin/sh
# Builds a tiny consumer program against libcpattern the three ways a user
# would: (1) pkg-config after `meson install` into a temporary prefix,
# (2) CMake's pkg_check_modules on the same install (when cmake is there),
# (3) as a Meson subproject with dependency('cpattern', fallback: ...).
# usage: check-consumers.sh SRCROOT BUILDROOT CC
set -eu
src=$1 build=$2 cc=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cons="$src/tests/standing/consumer"

# (1) pkg-config on an installed tree.
DESTDIR="$tmp/dest" meson install -C "$build" --no-rebuild --quiet >"$tmp/install.log" 2>&1 \
	|| { cat "$tmp/install.log"; echo "FAIL: meson install"; exit 1; }
prefix=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
root="$tmp/dest$prefix"
pcdir=$(dirname "$(find "$root" -name cpattern.pc | head -n1)")
[ -f "$pcdir/cpattern.pc" ] || { echo "FAIL: no cpattern.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$pcdir"
export PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
libdir=$(dirname "$(find "$root" -name 'libcpattern.so' | head -n1)")
# shellcheck disable=SC2046
$cc -std=c99 -Wall -Werror -o "$tmp/consumer-pc" "$cons/main.c" $(pkg-config --cflags --libs cpattern)
LD_LIBRARY_PATH="$libdir" "$tmp/consumer-pc" || { echo "FAIL: pkg-config consumer run"; exit 1; }
echo "ok: pkg-config consumer"

# (2) CMake consumer through pkg_check_modules.
if command -v cmake >/dev/null 2>&1; then
	mkdir -p "$tmp/cmake-src"
	cp "$cons/main.c" "$tmp/cmake-src/"
	cat >"$tmp/cmake-src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.13)
project(cpattern_cmake_consumer C)
find_package(PkgConfig REQUIRED)
pkg_check_modules(CPATTERN REQUIRED IMPORTED_TARGET cpattern)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE PkgConfig::CPATTERN)
CM
	cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build" >"$tmp/cmake.log" 2>&1 \
		&& cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1 \
		|| { cat "$tmp/cmake.log"; echo "FAIL: cmake consumer"; exit 1; }
	LD_LIBRARY_PATH="$libdir" "$tmp/cmake-build/consumer" || { echo "FAIL: cmake consumer run"; exit 1; }
	echo "ok: cmake consumer"
else
	echo "note: cmake not installed, CMake consumer not checked"
fi

# (3) Meson subproject.
mkdir -p "$tmp/sub/subprojects"
cp "$cons/main.c" "$cons/meson.build" "$tmp/sub/"
ln -s "$src" "$tmp/sub/subprojects/cpattern"
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
(cd "$tmp/sub" && meson setup b --force-fallback-for=cpattern \
	-Dcpattern:tests=false -Dcpattern:benches=false -Dcpattern:examples=false >"$tmp/sub.log" 2>&1 \
	&& meson test -C b >>"$tmp/sub.log" 2>&1) \
	|| { cat "$tmp/sub.log"; echo "FAIL: meson subproject consumer"; exit 1; }
echo "ok: meson subproject consumer"
