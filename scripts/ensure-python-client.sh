#!/usr/bin/env bash
# Installs what the Python protocol client (clients/python/kvtk_view.py) needs: the pinned
# nats-py from PyPI into the git-ignored .tools/python-client, unless it is there already.
# Nothing else is downloaded.
#
# Prints the directory to put on PYTHONPATH on stdout (messages go to stderr), so:
#   PYTHONPATH="$(scripts/ensure-python-client.sh)" python3 clients/python/kvtk_view.py …
set -euo pipefail

PINNED="nats-py==2.16.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$repo_root/.tools/python-client"
stamp="$target/.installed"

say() { echo "ensure-python-client: $*" >&2; }

if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    say "python3 with pip is needed (e.g. apt-get install python3-pip)"
    exit 1
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$PINNED" ]]; then
    say "installing $PINNED from PyPI into $target"
    # --upgrade replaces a copy left by an earlier pin.
    python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$target" "$PINNED" >&2
    echo "$PINNED" >"$stamp"
fi
if ! PYTHONPATH="$target" python3 -c 'import nats' 2>/dev/null; then
    say "nats-py in $target cannot be imported"
    exit 1
fi
echo "$target"
