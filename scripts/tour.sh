#!/usr/bin/env bash
# Runs the guided tour of the toolkit. Needs only Rust and Python/pip.
#
# Without NATS_URL the tour starts its own throwaway nats-server (provisioned here, installing
# the pinned one into .tools/ when no suitable binary exists). With NATS_URL it uses that server:
#   NATS_URL=nats://host:4222 scripts/tour.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${NATS_URL:-}" ]]; then
    NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
    export NATS_SERVER_BIN
fi

# The tour's last section runs kvtk, built beside the tour binary.
cargo build -q -p kvtk
exec cargo run -q -p kv-examples --bin tour -- "$@"
