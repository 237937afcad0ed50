#!/usr/bin/env bash
# Installs cargo-machete (the unused-dependency check scripts/test.sh runs) when the pinned
# version is missing: `cargo install --locked` from crates.io, built from source (about a
# minute on 2 cores), into cargo's bin directory.
set -euo pipefail

version="0.9.2"

say() { echo "ensure-cargo-machete: $*" >&2; }

if [[ "$(cargo machete --version 2>/dev/null || true)" == *"$version"* ]]; then
    exit 0
fi
say "installing cargo-machete $version"
# Its own temporary target directory: the workspace's CARGO_TARGET_DIR is for the workspace.
env -u CARGO_TARGET_DIR cargo install --locked --quiet cargo-machete --version "$version"
