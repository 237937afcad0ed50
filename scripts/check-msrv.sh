#!/usr/bin/env bash
# Checks the workspace's minimum supported Rust version (MSRV) against its locked dependencies.
#
#   scripts/check-msrv.sh           # every package in Cargo.lock declares rust-version <= ours
#   scripts/check-msrv.sh --build   # also installs the MSRV toolchain with rustup and runs
#                                   # `cargo +MSRV check --workspace --all-targets --all-features`
#
# The MSRV is `workspace.package.rust-version` in Cargo.toml, inherited by every member. The
# workspace uses the MSRV-aware resolver (`resolver = "3"`), so `cargo update` prefers versions
# whose declared rust-version fits; this check fails when a dependency in the lock file (any
# platform, dev- and build-dependencies included) declares a newer one anyway, e.g. after a
# `cargo update --ignore-rust-version` or a new dependency without a compatible release.
# Needs python3 (as scripts/ensure-nats-server.sh does).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "check-msrv: $*" >&2; }

build=false
case "${1:-}" in
"") ;;
--build) build=true ;;
*) say "usage: $0 [--build]"; exit 2 ;;
esac

metadata="$(mktemp)"
trap 'rm -f "$metadata"' EXIT
# --locked: read Cargo.lock as it is, never rewrite it.
cargo metadata --format-version 1 --locked >"$metadata"

msrv="$(python3 - "$metadata" <<'PY'
import json
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(open(sys.argv[1]))
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"check-msrv: workspace members must all inherit one rust-version, found {sorted(map(str, ours))}")
msrv = ours.pop()
above = sorted(
    (version(p["rust_version"]), p["name"], p["version"])
    for p in meta["packages"]
    if p["id"] not in members and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
)
for v, name, ver in above:
    print(f"check-msrv: {name} {ver} declares rust-version {'.'.join(map(str, v))} > {msrv}", file=sys.stderr)
if above:
    sys.exit(f"check-msrv: {len(above)} locked package(s) need a newer Rust than the declared MSRV {msrv}: "
             "raise workspace.package.rust-version (and README's MSRV section) or keep the older versions")
print(msrv)
PY
)"
say "every locked package fits rust-version $msrv"

if $build; then
    rustup toolchain install "$msrv" --profile minimal
    cargo "+$msrv" check --workspace --all-targets --all-features --locked
    say "the workspace builds with Rust $msrv"
fi
