#!/usr/bin/env bash
# Installs what building and testing libcpattern needs on Debian 12, when it
# is missing: with apt-get as root, otherwise it prints the command to run.
#
# usage: scripts/deps.sh [extra Debian packages...]
#        scripts/deps.sh --optional PKG...
# The first form needs the base packages (and the extras) and fails when it
# cannot have them. The second only tries: as root it installs what is
# missing of PKG..., otherwise it names what is missing; it never fails, and
# whatever needs a missing optional package skips itself with a line saying
# so.
set -u
optional=0
if [ "${1:-}" = --optional ]; then
	optional=1
	shift
	pkgs=("$@")
else
	pkgs=(meson ninja-build pkg-config libcmocka-dev gcc g++ cmake "$@")
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
	if [ $optional -eq 1 ]; then
		echo "deps: optional ${missing[*]} missing (not installing: not root or no apt-get); what needs them will skip" >&2
		exit 0
	fi
	echo "deps: missing ${missing[*]}; install them, as root:" >&2
	echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package lists may be missing or stale on a fresh machine: update once
# if the first attempt cannot find a package.
if ! apt-get install -y -qq "${missing[@]}" >&2; then
	apt-get update -qq >&2
	apt-get install -y -qq "${missing[@]}" >&2 || {
		[ $optional -eq 1 ] && { echo "deps: could not install optional ${missing[*]}; what needs them will skip" >&2; exit 0; }
		exit 1
	}
fi
