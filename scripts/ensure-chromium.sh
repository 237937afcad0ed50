#!/usr/bin/env bash
# Installs the browser kvtk-ui's tests drive, when it is missing: Debian's `chromium` and
# `chromium-driver` (the WebDriver server the tests talk to through fantoccini).
#
#   scripts/ensure-chromium.sh     # prints the chromedriver path on stdout
#
# Each package is checked with `dpkg-query`; when one is missing, `apt-get update` runs once
# and both are installed in one `apt-get install` (as root, or through sudo). On a machine
# without apt-get, a chromedriver on PATH is used as it is.
set -euo pipefail

say() { echo "ensure-chromium: $*" >&2; }

wanted=(chromium chromium-driver fonts-dejavu-core)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    if command -v chromedriver >/dev/null 2>&1; then
        command -v chromedriver
        exit 0
    fi
    say "no dpkg/apt-get here: install chromium and its chromedriver by hand"
    exit 1
fi

missing=()
for p in "${wanted[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
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
fi

command -v chromedriver
