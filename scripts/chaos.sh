#!/usr/bin/env bash
# History-checked chaos: runs the recipes' workloads on a 3-node cluster (R3 buckets; with
# --replicas 1, R1 buckets, which take the single-server paths) under a seeded nemesis (for N minutes, between a fault-free start and end) and writes
# target/chaos/report.md and timeline.svg. Exits non-zero on any safety violation, and on any
# liveness violation (a failure, a slow waiter, a missed term, a lagging config reader while no
# fault is in place). A failing run replays from its seed. The locks workload includes
# multi-locks.
#
#   scripts/chaos.sh [--minutes N] [--seed S] [--workload locks|leader|watch|config|members|all] [--replicas 1|3]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

minutes=2
seed=1
workload=all
replicas=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --replicas) replicas="$2"; shift 2 ;;
        *) echo "usage: $0 [--minutes N] [--seed S] [--workload locks|leader|watch|config|members|all] [--replicas 1|3]" >&2; exit 2 ;;
    esac
done

NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
export NATS_SERVER_BIN
export KV_TESTS_RUN_ID="${KV_TESTS_RUN_ID:-kv-chaos-$$-$RANDOM}"

cargo build -p kv-chaos
exec target/debug/kv-chaos --minutes "$minutes" --seed "$seed" --workload "$workload" --replicas "$replicas" --out target/chaos
