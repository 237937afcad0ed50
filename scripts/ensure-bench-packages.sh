#!/usr/bin/env bash
# Installs the Debian packages kv-bench needs, when some are missing.
#
#   scripts/ensure-bench-packages.sh build   # what `cargo build -p kv-bench --all-features` needs
#   scripts/ensure-bench-packages.sh run     # that, plus the systems scripts/bench.sh starts
#
# build: a C toolchain (ring and the cc crate), protoc and the well-known .proto files
#        (google/protobuf/*.proto: the etcd-client crate compiles etcd's API at build time);
# run:   also etcd-server, redis-server, and python3 with pip for scripts/ensure-nats-server.sh.
# Each package is checked with `dpkg -s`; when any is missing, `apt-get update` runs once and
# every missing package is installed in one `apt-get install` (as root, or through sudo).
set -euo pipefail

say() { echo "ensure-bench-packages: $*" >&2; }

build_packages=(gcc libc6-dev protobuf-compiler libprotobuf-dev)
run_packages=(etcd-server redis-server python3 python3-pip ca-certificates)

case "${1:-}" in
build) wanted=("${build_packages[@]}") ;;
run) wanted=("${build_packages[@]}" "${run_packages[@]}") ;;
*) say "usage: $0 build|run"; exit 2 ;;
esac

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "no dpkg/apt-get here: install ${wanted[*]} (or their equivalents) by hand"
    exit 0
fi

missing=()
for p in "${wanted[@]}"; do
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
