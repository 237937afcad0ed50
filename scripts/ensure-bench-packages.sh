#!/usr/bin/env bash
# Installs the Debian packages kv-bench needs, when some are missing.
#
#   scripts/ensure-bench-packages.sh build   # what `cargo build -p kv-bench --all-features` needs
#   scripts/ensure-bench-packages.sh run     # that, plus the systems scripts/bench.sh starts
#
# build: a C toolchain (ring and the cc crate), protoc and the well-known .proto files
#        (google/protobuf/*.proto: the etcd-client crate compiles etcd's API at build time);
# run:   also etcd-server, redis-server, and python3 with pip for scripts/ensure-nats-server.sh.
# The check and the installation are scripts/ensure-debian-packages.sh's: missing packages
# are installed in one `apt-get install` (as root, or through sudo).
set -euo pipefail

build_packages=(gcc libc6-dev protobuf-compiler libprotobuf-dev)
run_packages=(etcd-server redis-server python3 python3-pip ca-certificates)

case "${1:-}" in
build) wanted=("${build_packages[@]}") ;;
run) wanted=("${build_packages[@]}" "${run_packages[@]}") ;;
*) echo "ensure-bench-packages: usage: $0 build|run" >&2; exit 2 ;;
esac

exec "$(dirname "${BASH_SOURCE[0]}")/ensure-debian-packages.sh" "${wanted[@]}"
