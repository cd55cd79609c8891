#!/usr/bin/env bash
# Installs cargo-deny (used by scripts/test.sh for the licenses and bans
# checks) into the tools cache. Idempotent: an installed binary of the pinned
# version is kept, so reruns (and CI reruns with the cache) take no time.
# Compiling it takes ~8 CPU-minutes (about 4-5 minutes on 2 cores).
#
# Cache dir: ${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}
#   cargo/bin/cargo-deny
set -euo pipefail

CARGO_DENY_VERSION=0.20.2

DIR="${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}"
BIN="$DIR/cargo/bin/cargo-deny"
if [[ ! -x "$BIN" ]] || [[ "$("$BIN" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    echo "installing cargo-deny $CARGO_DENY_VERSION into $DIR/cargo ..." >&2
    mkdir -p "$DIR"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --root "$DIR/cargo" --quiet
fi
echo "cargo-deny: $BIN"
