#!/bin/sh
# Builds a tiny consumer program against libcpattern the ways a user would,
# and runs it:
# (1) pkg-config after `meson install` into a temporary DESTDIR, with
#     LD_LIBRARY_PATH and with -Wl,-rpath from pkg-config's libdir;
# (2) CMake: find_package(cpattern CONFIG) on that install (a moved tree:
#     the config file finds everything relative to itself), the version
#     file's answers, and pkg_check_modules;
# (3) a Meson subproject through a wrap file with a [provide] section:
#     the consumer's `meson test` runs none of the library's tests and
#     builds none of its examples or benches, cmocka is not looked up, and
#     -Ddefault_library=static links the library statically.
# With the cpattern-redis module built, each also builds and runs a
# program on it. Prints "ok: ..." per check, "FAIL: ..." and exits 1 on
# the first failure.
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
# pkgconf prefixes --variable with the sysroot too, pkg-config 0.29 not.
libdir=$(pkg-config --variable=libdir cpattern)
case $libdir in
"$tmp/dest"/*) ;;
*) libdir="$tmp/dest$libdir" ;;
esac
have_shared=0
[ -e "$libdir/libcpattern.so" ] && have_shared=1
have_redis=0
[ -f "$pcdir/cpattern-redis.pc" ] && have_redis=1
# shellcheck disable=SC2046
$cc -std=c99 -Wall -Werror -o "$tmp/consumer-pc" "$cons/main.c" $(pkg-config --cflags --libs cpattern)
LD_LIBRARY_PATH="$libdir" "$tmp/consumer-pc" || { echo "FAIL: pkg-config consumer run"; exit 1; }
echo "ok: pkg-config consumer (LD_LIBRARY_PATH)"
# The README's rpath line: runs with no LD_LIBRARY_PATH.
# shellcheck disable=SC2046
$cc -std=c99 -Wall -Werror -o "$tmp/consumer-rpath" "$cons/main.c" \
	$(pkg-config --cflags --libs cpattern) -Wl,-rpath,"$libdir"
env -u LD_LIBRARY_PATH "$tmp/consumer-rpath" >/dev/null || { echo "FAIL: pkg-config consumer with rpath"; exit 1; }
echo "ok: pkg-config consumer (-Wl,-rpath)"
if [ $have_redis -eq 1 ]; then
	# shellcheck disable=SC2046
	$cc -std=c99 -Wall -Werror -o "$tmp/consumer-redis-pc" "$cons/redis_main.c" \
		$(pkg-config --cflags --libs cpattern-redis) -Wl,-rpath,"$libdir"
	"$tmp/consumer-redis-pc" >/dev/null || { echo "FAIL: pkg-config cpattern-redis consumer run"; exit 1; }
	echo "ok: pkg-config cpattern-redis consumer"
fi

# (2) CMake: the package config, then pkg_check_modules.
if command -v cmake >/dev/null 2>&1; then
	cmdir=$(dirname "$(find "$root" -name cpatternConfig.cmake | head -n1)")
	[ -f "$cmdir/cpatternConfigVersion.cmake" ] || { echo "FAIL: no cpatternConfig.cmake / cpatternConfigVersion.cmake installed"; exit 1; }
	case $cmdir in
	"$libdir/cmake/cpattern") ;;
	*) echo "FAIL: the CMake package is in $cmdir, not beside the library in $libdir/cmake/cpattern"; exit 1 ;;
	esac
	# A moved tree: nothing of the install is where its prefix says.
	mv "$tmp/dest" "$tmp/moved"
	mroot="$tmp/moved$prefix"
	mlibdir="$tmp/moved${libdir#"$tmp/dest"}"
	mkdir -p "$tmp/cmake-src"
	cp "$cons/main.c" "$cons/redis_main.c" "$tmp/cmake-src/"
	cat >"$tmp/cmake-src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.13)
project(cpattern_cmake_consumer C)
option(WITH_REDIS "use the cpattern-redis module too" OFF)
if(WITH_REDIS)
  find_package(cpattern 0.1 CONFIG REQUIRED COMPONENTS redis)
else()
  find_package(cpattern 0.1 CONFIG REQUIRED)
endif()
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE cpattern::cpattern)
if(WITH_REDIS)
  add_executable(consumer-redis redis_main.c)
  target_link_libraries(consumer-redis PRIVATE cpattern::cpattern-redis)
endif()
CM
	with_redis=OFF
	[ $have_redis -eq 1 ] && with_redis=ON
	cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$mroot" \
		-DWITH_REDIS=$with_redis >"$tmp/cmake.log" 2>&1 \
		&& cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1 \
		|| { cat "$tmp/cmake.log"; echo "FAIL: cmake find_package consumer"; exit 1; }
	LD_LIBRARY_PATH="$mlibdir" "$tmp/cmake-build/consumer" >/dev/null \
		|| { echo "FAIL: cmake find_package consumer run"; exit 1; }
	if [ $with_redis = ON ]; then
		LD_LIBRARY_PATH="$mlibdir" "$tmp/cmake-build/consumer-redis" >/dev/null \
			|| { echo "FAIL: cmake find_package cpattern-redis consumer run"; exit 1; }
	fi
	echo "ok: cmake find_package(cpattern CONFIG) consumer (moved install tree, redis: $with_redis)"
	mv "$tmp/moved" "$tmp/dest"

	# The version file: 0.x answers its own 0.x series only.
	ver=$(meson introspect "$build" --projectinfo | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
	maj=${ver%%.*} rest=${ver#*.} min=${rest%%.*}
	cat >"$tmp/ver.cmake" <<'CM'
string(REPLACE "." ";" _parts "${PACKAGE_FIND_VERSION}")
list(LENGTH _parts _n)
list(GET _parts 0 PACKAGE_FIND_VERSION_MAJOR)
set(PACKAGE_FIND_VERSION_MINOR 0)
if(_n GREATER 1)
  list(GET _parts 1 PACKAGE_FIND_VERSION_MINOR)
endif()
include("${VERSION_FILE}")
if(PACKAGE_VERSION_COMPATIBLE)
  message("yes")
else()
  message("no")
endif()
CM
	for pair in "$maj.$min:yes" "$ver:yes" "$maj.$((min + 1)):no" "$((maj + 1)).0:no" "$maj.$min.999:no"; do
		req=${pair%:*} want=${pair#*:}
		got=$(cmake -DPACKAGE_FIND_VERSION="$req" -DVERSION_FILE="$cmdir/cpatternConfigVersion.cmake" \
			-DCMAKE_SIZEOF_VOID_P= -P "$tmp/ver.cmake" 2>&1 | tr -d '[:space:]')
		[ "$got" = "$want" ] || { echo "FAIL: cpattern $ver asked for $req: compatible '$got', expected '$want'"; exit 1; }
	done
	echo "ok: cmake version file (cpattern $ver: $maj.$min and $ver accepted; $maj.$((min + 1)), $((maj + 1)).0, $maj.$min.999 refused)"

	cat >"$tmp/cmake-src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.13)
project(cpattern_cmake_consumer C)
find_package(PkgConfig REQUIRED)
pkg_check_modules(CPATTERN REQUIRED IMPORTED_TARGET cpattern)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE PkgConfig::CPATTERN)
CM
	rm -rf "$tmp/cmake-build"
	cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build" >"$tmp/cmake.log" 2>&1 \
		&& cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1 \
		|| { cat "$tmp/cmake.log"; echo "FAIL: cmake pkg_check_modules consumer"; exit 1; }
	LD_LIBRARY_PATH="$libdir" "$tmp/cmake-build/consumer" >/dev/null || { echo "FAIL: cmake pkg_check_modules consumer run"; exit 1; }
	echo "ok: cmake pkg_check_modules consumer"
else
	echo "note: cmake not installed, CMake consumers not checked"
fi

# (3) Meson subproject, found through the wrap file's [provide] section
# (the wrap names a directory that is already there: nothing to download).
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
mkdir -p "$tmp/sub/subprojects"
cp "$cons/main.c" "$cons/redis_main.c" "$cons/meson.build" "$tmp/sub/"
ln -s "$src" "$tmp/sub/subprojects/cpattern"
cat >"$tmp/sub/subprojects/cpattern.wrap" <<'WRAP'
[wrap-file]
directory = cpattern

[provide]
cpattern = cpattern_dep
cpattern-redis = cpattern_redis_dep
WRAP
for kind in shared static; do
	b="$tmp/sub/b-$kind"
	(cd "$tmp/sub" && meson setup "$b" --force-fallback-for=cpattern,cpattern-redis \
		-Ddefault_library=$kind >"$tmp/sub-$kind.log" 2>&1 \
		&& meson test -C "$b" >>"$tmp/sub-$kind.log" 2>&1) \
		|| { cat "$tmp/sub-$kind.log"; echo "FAIL: meson subproject consumer ($kind)"; exit 1; }
	# The consumer's tests only, and none of the library's programs.
	tests=$(meson introspect "$b" --tests | python3 -c 'import json,sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
	want="consumer"
	[ $have_redis -eq 1 ] && want="consumer consumer-redis"
	[ "$tests" = "$want" ] || { echo "FAIL: the consumer's meson test runs '$tests', not only '$want'"; exit 1; }
	extra=$(meson introspect "$b" --targets | python3 -c '
import json, sys
print(" ".join(t["name"] for t in json.load(sys.stdin)
               if t["type"] == "executable" and not t["name"].startswith("consumer")))')
	[ -z "$extra" ] || { echo "FAIL: the subproject builds programs of its own: $extra"; exit 1; }
	if grep -q "dependency cmocka" "$b/meson-logs/meson-log.txt"; then
		echo "FAIL: the subproject looked for cmocka"; exit 1
	fi
	needed=$(readelf -d "$b/consumer" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	case "$kind:$needed" in
	static:*libcpattern*) echo "FAIL: -Ddefault_library=static, and the consumer needs: $needed"; exit 1 ;;
	shared:*libcpattern.so*) ;;
	shared:*) echo "FAIL: -Ddefault_library=shared, and the consumer needs only: $needed"; exit 1 ;;
	esac
	echo "ok: meson subproject consumer via wrap [provide], $kind (tests run: $tests; NEEDED: $needed)"
done
