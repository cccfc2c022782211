#!/bin/sh
# Every library name the user-facing text mentions exists: each cpat_* and
# CPAT_* identifier in README.md, NEWS.md and docs/*.md is declared in a
# public header under include/, so a renamed or removed function cannot
# live on in the docs (their fragments are sketches, not compiled; the
# README's blocks are compiled by check-snippets.py). Names of environment
# variables (CPAT_TEST_*, CPAT_BENCH_*, CPAT_FORK_ALL) are not API and are
# left out.
# usage: check-doc-names.sh SRCROOT
set -eu
src=$1
cd "$src"
missing=0
checked=0
for id in $(grep -oh '\b[cC][pP][aA][tT]_[A-Za-z0-9_]*' README.md NEWS.md docs/*.md | sort -u); do
	case $id in
	CPAT_TEST_* | CPAT_BENCH_* | CPAT_FORK_ALL) continue ;;
	*_) continue ;; # a family written as cpat_* or cpat_chan_*
	esac
	checked=$((checked + 1))
	if ! grep -rqw -- "$id" include/; then
		grep -nw -- "$id" README.md NEWS.md docs/*.md | sed 's/^/not in include\/: /'
		missing=$((missing + 1))
	fi
done
if [ "$missing" -ne 0 ]; then
	echo "FAIL: $missing of $checked names in the docs are declared nowhere in include/"
	exit 1
fi
echo "ok: the $checked cpat_/CPAT_ names in README.md, NEWS.md and docs/ are all in include/"
