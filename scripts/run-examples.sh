#!/usr/bin/env bash
# Runs every example of the workspace (`cargo metadata`: each member's `examples/*.rs`) and the
# tour against one throwaway nats-server, and fails when one fails or runs longer than 3
# minutes. scripts/test.sh calls it; it works alone too:
#
#   scripts/run-examples.sh
#
# The server (from scripts/ensure-nats-server.sh, or NATS_SERVER_BIN) listens on 127.0.0.1 on
# a port it picks itself (reported through its ports file), keeps JetStream in a temporary
# directory, and is stopped (by its pid) and removed when the script exits. Each example gets
# its URL in NATS_URL, so none starts a server of its own. Examples must finish by themselves
# and clean up what they create (they share the server).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "run-examples: $*" >&2; }

if [[ -z "${NATS_SERVER_BIN:-}" ]]; then
    NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
fi

# The same feature set as test.sh's build, so nothing is rebuilt after it.
cargo build --workspace --all-features --examples --bins

metadata="$(cargo metadata --format-version 1 --no-deps)"
target_dir="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")"
mapfile -t examples < <(python3 -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    for t in p["targets"]:
        if "example" in t["kind"]:
            print(p["name"], t["name"])
' <<<"$metadata" | sort)

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p -1 -sd "$work/store" --ports_file_dir "$work" \
    >"$work/server.log" 2>&1 &
server_pid=$!

ports_file="$work/$(basename "$NATS_SERVER_BIN")_$server_pid.ports"
for _ in $(seq 1 100); do
    [[ -s "$ports_file" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; say "nats-server exited"; exit 1; }
    sleep 0.1
done
[[ -s "$ports_file" ]] || { cat "$work/server.log" >&2; say "no ports file after 10 s"; exit 1; }
NATS_URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nats"][0])' "$ports_file")"
export NATS_URL
say "nats-server $server_pid at $NATS_URL"

run() {
    local what="$1"
    shift
    local started=$SECONDS
    echo
    echo "--- $what"
    if ! timeout 180 "$@"; then
        say "$what failed (or ran over 3 minutes); the server's log ends with:"
        tail -20 "$work/server.log" >&2
        exit 1
    fi
    say "$what finished in $((SECONDS - started)) s"
}

for entry in "${examples[@]}"; do
    read -r package example <<<"$entry"
    run "$package example $example" "$target_dir/debug/examples/$example"
done
run "the tour" "$target_dir/debug/tour"

say "${#examples[@]} examples and the tour ran"
