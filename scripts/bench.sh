#!/usr/bin/env bash
# Runs the kv-bench suite: the toolkit against raw async-nats, etcd and Redis.
#
#   scripts/bench.sh [--quick] [--only 1,2,...,9,r3,ui]
#
# Installs what is missing: Debian packages through scripts/ensure-bench-packages.sh (etcd-server,
# redis-server, and protoc with the well-known .proto files for the etcd-client crate), the pinned
# nats-server through scripts/ensure-nats-server.sh. Starts
# etcd (own temp data dir) and Redis (--save '', no AOF) on free 127.0.0.1 ports; the bench
# binary starts its two nats-servers (default sync and sync_interval: always) through the
# kvtk-tests kit. Metric ui (the console, kvtk ui, in headless chromium) runs kvtk's ui bench,
# built here (cargo bench --no-run) after scripts/ensure-chromium.sh, its path passed in
# KV_BENCH_UI. Everything started here is stopped on exit. Writes target/bench/report.json,
# report.md and latency.svg. --quick takes about 4 minutes on 2 cores, a full run about 9;
# --only ui about 2 (after the builds).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root="$(pwd)"
say() { echo "bench: $*" >&2; }

bench_args=()
only=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --quick) bench_args+=(--quick) ;;
    --only) bench_args+=(--only "$2"); only="$2"; shift ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) say "unknown argument $1"; exit 2 ;;
    esac
    shift
done

# --- install what is missing -------------------------------------------------------------
scripts/ensure-bench-packages.sh run
NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
export NATS_SERVER_BIN

say "building kv-bench (release, all features)"
cargo build -q -p kv-bench --release --all-features

# Metric ui: kvtk's console bench and the browser it drives.
if [[ -z "$only" || ",$only," == *",ui,"* ]]; then
    scripts/ensure-chromium.sh >/dev/null
    say "building kvtk's ui bench (release)"
    KV_BENCH_UI="$(cargo bench -q -p kvtk --bench ui --no-run --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ui" and m.get("executable"):
        print(m["executable"])')"
    export KV_BENCH_UI
fi

# --- start etcd and redis ------------------------------------------------------------------
# Marker in the environment of every process of this run (the kit's nats-servers included),
# so that the cleanup can find strays of this run and only of this run.
export KV_TESTS_RUN_ID="kv-bench-$$-$RANDOM$RANDOM"
work="$(mktemp -d "${TMPDIR:-/tmp}/kv-bench.XXXXXX")"
pids=()

cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # nats-servers of this run that outlived a killed bench binary.
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == nats-server ]] || continue
        if tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "KV_TESTS_RUN_ID=$KV_TESTS_RUN_ID"; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until "$2" answers on 127.0.0.1:"$1" with something matching "$3".
wait_for() {
    local port="$1" request="$2" expect="$3" name="$4" log="$5" i reply
    for i in $(seq 1 200); do
        reply="$({ exec 3<>"/dev/tcp/127.0.0.1/$port" && printf '%b' "$request" >&3 &&
            timeout 1 cat <&3; } 2>/dev/null || true)"
        if [[ "$reply" == *"$expect"* ]]; then
            return 0
        fi
        sleep 0.05
    done
    say "$name did not become ready; its log:"
    cat "$log" >&2
    exit 1
}

etcd_port="$(free_port)"
etcd_peer="$(free_port)"
etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "bench=http://127.0.0.1:$etcd_peer" \
    >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_for "$etcd_port" 'GET /health HTTP/1.0\r\n\r\n' '"health":"true"' etcd "$work/etcd.log"
etcd_version="$(etcd --version | sed -n 's/^etcd Version: //p')"

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$redis_port" 'PING\r\n' '+PONG' redis "$work/redis.log"
redis_version="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"

say "etcd $etcd_version on 127.0.0.1:$etcd_port, redis $redis_version on 127.0.0.1:$redis_port"
export KV_BENCH_ETCD="http://127.0.0.1:$etcd_port|$etcd_version"
export KV_BENCH_REDIS="redis://127.0.0.1:$redis_port/|$redis_version"

started=$SECONDS
"${CARGO_TARGET_DIR:-target}/release/kv-bench" "${bench_args[@]}" --out "$repo_root/target/bench"
say "done in $((SECONDS - started)) s: target/bench/report.md, report.json, latency.svg"
