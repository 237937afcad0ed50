#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing.
#
#   scripts/ensure-debian-packages.sh PACKAGE...
#
# Each package is checked with `dpkg-query`; when any is missing, `apt-get update` runs once
# and every missing package is installed in one `apt-get install` (as root, or through
# sudo). Exits 0 without apt-get (saying what to install by hand), 1 when packages are
# missing and cannot be installed. Used by ensure-bench-packages.sh and ensure-chromium.sh.
set -euo pipefail

say() { echo "ensure-debian-packages: $*" >&2; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "no dpkg/apt-get here: install $* (or their equivalents) by hand"
    exit 0
fi

missing=()
for p in "$@"; do
    # `dpkg -s` also succeeds for removed packages whose configuration is kept: ask for the state.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

sudo=()
if [[ $EUID -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "missing ${missing[*]}, and not root without sudo: install them by hand"
        exit 1
    fi
    sudo=(sudo)
fi
say "installing ${missing[*]} with apt-get"
"${sudo[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
