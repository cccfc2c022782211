#!/bin/sh
# Every C source and header under the given folders is formatted as
# .clang-format says: clang-format --dry-run --Werror finds nothing to
# change. Skips (77) when clang-format is not installed, or when its major
# version is not the one .clang-format names on its first line ("#
# clang-format N"): versions format the same settings differently.
# CLANG_FORMAT names the program to use (default: clang-format-N, then
# clang-format).
# usage: check-format.sh SRCROOT DIR...   (DIRs relative to SRCROOT)
# To format what this check lists: clang-format -i FILE...
set -eu
src=$1
shift
want=$(sed -n '1s/^# clang-format \([0-9][0-9]*\).*/\1/p' "$src/.clang-format")
cf=${CLANG_FORMAT:-}
if [ -z "$cf" ]; then
	for c in ${want:+clang-format-$want} clang-format; do
		if command -v "$c" >/dev/null 2>&1; then
			cf=$c
			break
		fi
	done
fi
if [ -z "$cf" ] || ! command -v "$cf" >/dev/null 2>&1; then
	echo "SKIP: clang-format not installed (scripts/deps.sh --optional clang-format)"
	exit 77
fi
version=$("$cf" --version)
have=$(echo "$version" | sed -n 's/.*clang-format version \([0-9][0-9]*\).*/\1/p')
if [ -n "$want" ] && [ "$have" != "$want" ]; then
	echo "SKIP: .clang-format is for clang-format $want, $cf is $version"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$src"
find "$@" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort >"$tmp/files"
n=0 bad=0
while IFS= read -r f; do
	n=$((n + 1))
	if ! "$cf" --dry-run --Werror "$f" >"$tmp/out" 2>&1; then
		bad=$((bad + 1))
		k=$(grep -c 'Wclang-format-violations' "$tmp/out" || true)
		echo "not formatted: $f ($k to change)"
		echo "$f" >>"$tmp/bad"
		[ $bad -gt 1 ] || head -n 9 "$tmp/out" >"$tmp/first"
	fi
done <"$tmp/files"
if [ $bad -gt 0 ]; then
	echo "the first places, in $(head -n 1 "$tmp/bad"):"
	cat "$tmp/first"
	echo "FAIL: $bad of $n files differ from what .clang-format asks ($version); to format them:"
	echo "  cd $src && $cf -i $(tr '\n' ' ' <"$tmp/bad" | sed 's/ $//')"
	exit 1
fi
echo "ok: $n files formatted as .clang-format asks ($version)"
