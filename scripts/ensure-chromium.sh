#!/usr/bin/env bash
# Installs the browser kvtk's console tests drive, when it is missing: Debian's `chromium`
# and `chromium-driver` (the WebDriver server the tests talk to through fantoccini), and a
# font for the screenshots. Prints the chromedriver path on stdout.
#
#   CHROMEDRIVER="$(scripts/ensure-chromium.sh)"
#
# The check and the installation are scripts/ensure-debian-packages.sh's. On a machine
# without apt-get, a chromedriver on PATH is used as it is.
set -euo pipefail

"$(dirname "${BASH_SOURCE[0]}")/ensure-debian-packages.sh" chromium chromium-driver fonts-dejavu-core
if ! command -v chromedriver; then
    echo "ensure-chromium: no chromedriver: install chromium and its driver by hand" >&2
    exit 1
fi
