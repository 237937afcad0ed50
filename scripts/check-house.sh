#!/usr/bin/env bash
# The house rules of ARCHITECTURE.md, checked: no library file over 600 lines, no library
# function over 60 lines, no import circle between files of a crate except the named ones.
# Usage: scripts/check-house.sh [--report]   (--report lists without failing)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

libs=(kv-core kv-locks kv-leader kv-membership kv-config kv-doctor kv-ui tests)
existing=()
for d in "${libs[@]}"; do [[ -d $d/src ]] && existing+=("$d"); done

failed=0
long_files=$(find "${existing[@]/%//src}" -name '*.rs' -print0 | xargs -0 wc -l | awk '$2 != "total" && $1 > 600')
if [[ -n $long_files ]]; then echo "files over 600 lines:"; echo "$long_files"; failed=1; fi

long_fns=$(python3 scripts/house/long_functions.py 60 "${existing[@]/%//src}" | sort -rn)
if [[ -n $long_fns ]]; then echo "functions over 60 lines:"; echo "$long_fns"; failed=1; fi

# Circles ARCHITECTURE.md names as one idea in two files.
allowed='^$'
circles=$(python3 scripts/house/import_circles.py "${existing[@]/%//src}" | grep -Ev "$allowed")
if [[ -n $circles ]]; then echo "import circles:"; echo "$circles"; failed=1; fi

if [[ ${1:-} == --report ]]; then exit 0; fi
if [[ $failed == 0 ]]; then echo "house: ok"; fi
exit $failed
