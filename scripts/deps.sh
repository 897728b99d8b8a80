#!/usr/bin/env bash
# deps.sh — check for the Debian packages attnbench needs; install the
# missing ones when running as root with apt-get, else say what to install.
# Usage: scripts/deps.sh [--check]   (exit 0 when everything is present)
set -u
PKGS="build-essential pkg-config libopenblas-dev libhdf5-dev hdf5-tools gnuplot-nox libcriterion-dev libinih-dev librandom123-dev libsleef-dev python3-numpy python3-h5py"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all Debian packages present"
    exit 0
fi
echo "deps: missing:$missing"
if [ "${1:-}" = "--check" ]; then exit 1; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null || {
        echo "deps: apt-get install failed; install by hand: apt-get install$missing" >&2
        exit 1
    }
    echo "deps: installed"
    exit 0
fi
echo "deps: run as root:  apt-get update && apt-get install -y$missing" >&2
exit 1
