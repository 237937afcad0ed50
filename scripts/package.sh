#!/usr/bin/env bash
# Packages every publishable crate of the workspace as `cargo publish` would, in dependency
# order, without uploading anything: the manifest rewrite, the file list, the README and
# LICENSE, and the resolution of each crate against crates.io plus the crates packaged before
# it (cargo's local overlay, so interdependent unpublished crates package together).
#
#   scripts/package.sh            # package only (--no-verify): what scripts/test.sh runs
#   scripts/package.sh --verify   # also build each packaged crate from its .crate file
#
# The crates are those whose manifest does not say `publish = false`. Verification builds
# each crate alone, against freshly resolved dependency versions, which costs a full
# dependency build on 2 cores; the workspace build in test.sh already compiles the same
# sources, so CI skips it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "package: $*" >&2; }

verify=(--no-verify)
case "${1:-}" in
"") ;;
--verify) verify=() ;;
*) say "usage: $0 [--verify]"; exit 2 ;;
esac

mapfile -t crates < <(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["publish"] is None:
        print(p["name"])
')
args=()
for c in "${crates[@]}"; do
    args+=(-p "$c")
done
say "packaging ${crates[*]}"
cargo package "${args[@]}" "${verify[@]}" --allow-dirty
