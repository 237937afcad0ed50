#!/usr/bin/env bash
# Runs chosen nextest suites N times, optionally under background CPU load, and optionally the
# 2-minute chaos step M times; reports every failing run with its output and exits non-zero if
# any run failed (PITFALLS 34: a test that passes on a quiet machine only).
#
#   scripts/stress-tests.sh [--runs N] [--load L] [--chaos M] [--chaos-minutes X] [--seed S] [-- NEXTEST-ARGS...]
#
#   --runs N           runs of `cargo nextest run --no-fail-fast NEXTEST-ARGS` (default 10; 0 with
#                      no NEXTEST-ARGS)
#   --load L           L busy processes (`yes >/dev/null`) in the background while running,
#                      all killed when the script exits (default 0)
#   --chaos M          also run `scripts/chaos.sh --minutes X --seed S+i` M times (default 0)
#   --chaos-minutes X  minutes of each chaos run (default 2)
#   --seed S           the first chaos run's seed (default 1)
#
# Example: scripts/stress-tests.sh --runs 20 --load 2 -- -p kvtk-leader -p kvtk-locks
#
# Each run's output is saved as target/stress/<run>.log (tests-<i>, chaos-<i>; a chaos run's
# report as chaos-<i>.report.md); the last line is `stress: N runs, F failed`. There are no
# retries: no nextest configuration (.config/nextest.toml) retries a failed test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

runs=10
load=0
chaos=0
chaos_minutes=2
seed=1
nextest_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --load) load="$2"; shift 2 ;;
        --chaos) chaos="$2"; shift 2 ;;
        --chaos-minutes) chaos_minutes="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --) shift; nextest_args=("$@"); break ;;
        *) usage ;;
    esac
done
[[ ${#nextest_args[@]} -eq 0 ]] && runs=0
if [[ $runs -eq 0 && $chaos -eq 0 ]]; then
    usage
fi

NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
export NATS_SERVER_BIN
export KV_TESTS_RUN_ID="${KV_TESTS_RUN_ID:-kv-stress-$$-$RANDOM}"

out=target/stress
mkdir -p "$out"
rm -f "$out"/*.log "$out"/*.report.md

load_pids=()
stop_load() {
    local pid
    for pid in "${load_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    load_pids=()
}
trap stop_load EXIT
trap 'exit 130' INT TERM

# Build before the load starts and before counting: a compile error is not a flaky test.
if [[ $runs -gt 0 ]]; then
    cargo nextest run --no-run "${nextest_args[@]}"
fi
if [[ $chaos -gt 0 ]]; then
    cargo build -p kv-chaos
fi

for ((i = 0; i < load; i++)); do
    yes >/dev/null &
    load_pids+=("$!")
done
[[ $load -gt 0 ]] && echo "stress: $load busy processes in the background"

total=0
failed=0
# Runs "$@" with its output in target/stress/$run.log; on failure prints the failing tests and
# the end of the output.
attempt() {
    local run="$1" log="$out/$1.log"
    shift
    total=$((total + 1))
    if "$@" >"$log" 2>&1; then
        echo "stress: $run passed"
        return 0
    fi
    failed=$((failed + 1))
    echo "stress: $run FAILED (output: $log)"
    grep -E '^\s+(FAIL|TIMEOUT|SIGSEGV|SIGABRT|LEAK)|panicked at|Violations:' "$log" | head -40 || true
    echo "--- last 60 lines of $log"
    tail -60 "$log"
    echo "---"
}

for ((i = 1; i <= runs; i++)); do
    attempt "tests-$i" cargo nextest run --no-fail-fast "${nextest_args[@]}"
done
for ((i = 1; i <= chaos; i++)); do
    s=$((seed + i - 1))
    attempt "chaos-$i" scripts/chaos.sh --minutes "$chaos_minutes" --seed "$s" || true
    cp target/chaos/report.md "$out/chaos-$i.report.md" 2>/dev/null || true
done

echo "stress: $total runs, $failed failed"
[[ $failed -eq 0 ]]
