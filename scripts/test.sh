#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run). Needs Rust and Python/pip, and
# root (or sudo) for apt-get: it provisions nats-server, Debian's protoc packages for the
# benchmark build and cargo-machete itself, then runs formatting, the markdown link check,
# the MSRV and unused-dependency checks, lints, every test (the console's in headless chromium), rustdoc, the benchmark build, every
# example and the tour against a throwaway server (every step with all features), the packaging
# of every publishable crate and two 2-minute fixed-seed chaos runs (R3 buckets, then R1), and finally checks that no
# nats-server it started survives.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo; echo "==> $*"; }
run_started=$SECONDS

# Every process of this run inherits this marker, which tells our servers from anyone else's.
export KV_TESTS_RUN_ID="kv-tests-$$-$RANDOM$RANDOM"

step "provisioning nats-server"
NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
export NATS_SERVER_BIN
"$NATS_SERVER_BIN" --version

# nats-server processes that carry this run's marker in their environment.
our_servers() {
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == nats-server ]] || continue
        if tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "KV_TESTS_RUN_ID=$KV_TESTS_RUN_ID"; then
            echo "${p#/proc/}"
        fi
    done
}

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "scripts/check-links.sh (relative links and anchors in every markdown file)"
scripts/check-links.sh

step "scripts/check-house.sh (no library file over 600 lines, function over 60, import circle)"
scripts/check-house.sh

step "scripts/check-msrv.sh (no locked dependency needs a newer Rust than our rust-version)"
scripts/check-msrv.sh

step "cargo machete (no unused dependencies)"
scripts/ensure-cargo-machete.sh
cargo machete

# Every step builds every feature (kvtk-config's toml and yaml, kvtk-tests' docker — compiled and
# unit-tested only: no Docker engine here —, kv-bench's etcd and redis, the testing hooks), so
# one feature set is compiled once. etcd-client compiles etcd's .proto files at build time:
# protoc and Debian's libprotobuf-dev.
step "scripts/ensure-bench-packages.sh build (protoc for kv-bench's etcd feature)"
scripts/ensure-bench-packages.sh build

# kvtk's console tests (kv-cli/tests/ui.rs) drive a real browser: Debian's chromium and
# chromium-driver.
step "scripts/ensure-chromium.sh (the headless browser of the kvtk ui tests)"
CHROMEDRIVER="$(scripts/ensure-chromium.sh)"
export CHROMEDRIVER

# kv-cli/tests/protocol.rs runs the Python protocol client (clients/python/kvtk_view.py)
# against kvtk: the pinned nats-py from PyPI into .tools/.
step "scripts/ensure-python-client.sh (nats-py for the Python protocol client's test)"
KVTK_PYTHON_CLIENT_PATH="$(scripts/ensure-python-client.sh)"
export KVTK_PYTHON_CLIENT_PATH

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --workspace --all-features"
    cargo nextest run --workspace --all-features
else
    step "cargo test --workspace --all-features (cargo-nextest not installed)"
    cargo test --workspace --all-targets --all-features
fi

step "cargo test --workspace --all-features --doc"
cargo test --workspace --all-features --doc

step "cargo doc --workspace --all-features --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "scripts/run-examples.sh (builds every binary and example with all features, kv-bench included; runs each example and the tour against a throwaway server)"
scripts/run-examples.sh

step "scripts/package.sh (every publishable crate packaged as cargo publish would, in dependency order)"
scripts/package.sh

# The logs go under target/ even when CARGO_TARGET_DIR points elsewhere.
mkdir -p target
for replicas in 3 1; do
    step "scripts/chaos.sh --minutes 2 --seed 1 --replicas $replicas (history-checked chaos, fixed seed, R$replicas buckets)"
    scripts/chaos.sh --minutes 2 --seed 1 --replicas "$replicas" >"target/chaos-r$replicas.log" 2>&1 || {
        tail -80 "target/chaos-r$replicas.log" >&2
        exit 1
    }
    sed -n '/^| workload/,/^$/p' target/chaos/report.md
done

step "checking for stray nats-server processes"
# Servers die with their handles; give any SIGKILLed child a moment to be reaped.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    [[ -z "$(our_servers)" ]] && break
    sleep 0.2
done
stray="$(our_servers)"
if [[ -n "$stray" ]]; then
    echo "stray nats-server processes left by this run:" >&2
    for pid in $stray; do
        echo "  $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
    done
    # These are ours (they carry this run's marker): end them by pid, then fail.
    kill -9 $stray 2>/dev/null || true
    exit 1
fi
echo "none"

echo
echo "all checks passed in $((SECONDS - run_started)) s"
