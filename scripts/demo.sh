#!/usr/bin/env bash
# Newcomer demo: installs the Rust Durable Streams server if missing (cached
# outside the clone), starts it on a free loopback port, runs the guided tour
# (examples/tour.rs) against it, then stops the server and removes its data.
set -euo pipefail
cd "$(dirname "$0")/.."
export DS_TOOLS_DIR="${DS_TOOLS_DIR:-$HOME/.cache/durable-streams-client}"

scripts/install-servers.sh
server_bin="${DS_RUST_SERVER_BIN:-$DS_TOOLS_DIR/cargo/bin/durable-streams-server}"

# Build first so the server is not left idle during compilation.
cargo build -q -p durable-streams-client --example tour

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
data_dir=$(mktemp -d)
"$server_bin" --host 127.0.0.1 --port "$port" --data-dir "$data_dir" \
    --wal-shards 1 --wal-segment-bytes 16777216 >"$data_dir.log" 2>&1 &
server_pid=$!
cleanup() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    rm -rf "$data_dir" "$data_dir.log"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
echo "durable-streams-server listening on http://127.0.0.1:$port"
cargo run -q -p durable-streams-client --example tour -- "http://127.0.0.1:$port"
