#!/usr/bin/env bash
# Installs what building and testing libcpattern needs on Debian 12, when it
# is missing: with apt-get as root, otherwise it prints the command to run.
# usage: scripts/deps.sh [extra Debian packages...]
set -u
pkgs=(meson ninja-build pkg-config libcmocka-dev gcc g++ cmake "$@")
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${missing[*]} and no apt-get here: install their equivalents" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${missing[*]}; run as root:" >&2
	echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2
