#!/bin/sh
# The API reference builds without a single Doxygen warning: every public
# function, type, field and macro documented, @param names right, no broken
# reference. Skips (77) when doxygen is not installed.
# usage: check-docs.sh DOXYFILE   (configured from docs/Doxyfile.in)
set -eu
doxyfile=$1
if ! command -v doxygen >/dev/null 2>&1; then
	echo "skip: doxygen not installed (scripts/deps.sh --optional doxygen)"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The Doxyfile says WARN_AS_ERROR = YES (stop at the first warning);
# with QUIET = YES anything doxygen prints on stderr is a warning too.
rc=0
(cd "$tmp" && doxygen "$doxyfile") >"$tmp/out.log" 2>"$tmp/err.log" || rc=$?
if [ $rc -ne 0 ] || [ -s "$tmp/err.log" ]; then
	cat "$tmp/out.log" "$tmp/err.log"
	echo "FAIL: doxygen exited $rc with the warnings above (docs/Doxyfile.in)"
	exit 1
fi
[ -f "$tmp/html/index.html" ] || { echo "FAIL: no html/index.html"; exit 1; }
echo "ok: API reference built with no warning ($(doxygen --version))"
