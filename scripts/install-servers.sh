#!/usr/bin/env bash
# Installs the real Durable Streams servers used by integration tests,
# benches, CI and the demo. Idempotent: already-installed servers are kept.
#
# Cache dir: ${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}
#   cargo/bin/durable-streams-server                     Rust server (crate durable-streams 0.1.5)
#   node/node_modules/@durable-streams/server            Node reference server (0.3.7)
set -euo pipefail

RUST_SERVER_VERSION=0.1.5
NODE_SERVER_VERSION=0.3.7

DIR="${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}"
mkdir -p "$DIR"

# --- Rust server -------------------------------------------------------------
RUST_BIN="$DIR/cargo/bin/durable-streams-server"
if [[ ! -x "$RUST_BIN" ]]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; it is needed to install durable-streams-server" >&2
        exit 1
    fi
    echo "installing durable-streams $RUST_SERVER_VERSION (Rust server) into $DIR/cargo ..." >&2
    cargo install durable-streams --version "$RUST_SERVER_VERSION" --locked --root "$DIR/cargo" --quiet
fi
echo "rust server: $RUST_BIN"

# --- Node reference server ---------------------------------------------------
if ! command -v node >/dev/null 2>&1; then
    echo "error: node not found on PATH; install Node.js (>= 18) to run the Node reference server" >&2
    exit 1
fi
NODE_PKG="$DIR/node/node_modules/@durable-streams/server"
if [[ ! -f "$NODE_PKG/package.json" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm not found on PATH; it is needed to install @durable-streams/server" >&2
        exit 1
    fi
    echo "installing @durable-streams/server@$NODE_SERVER_VERSION (Node server) into $DIR/node ..." >&2
    mkdir -p "$DIR/node"
    if ! npm install --prefix "$DIR/node" --no-audit --no-fund \
        "@durable-streams/server@$NODE_SERVER_VERSION" >"$DIR/node/npm-install.log" 2>&1; then
        cat "$DIR/node/npm-install.log" >&2
        echo "error: npm install @durable-streams/server@$NODE_SERVER_VERSION failed" >&2
        exit 1
    fi
fi
echo "node server: $NODE_PKG ($(node --version))"
