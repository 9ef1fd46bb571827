#!/usr/bin/env bash
# Redis CPU per purchase, Redis's side only: examples/redis_cost.rs against a redis-server of
# its own (the CPU counters are server-wide, so a shared Redis would count others' work), on a
# spare port, keeping nothing on disk; stopped by its PID afterwards.
#   scripts/bench/redis_cost.sh [reserve scripts, comma-separated; default lua/reserve.lua; FILE:plain
#   passes numbered buyers as they are, not as offsets]
# BATCH (30), PURCHASES (60000), ROUNDS (5) and NUMERIC_USERS (1: buyers named 1, 2, ...) pass
# through; PROFILE=release for a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${REDIS_COST_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" \
    --daemonize no --logfile "$DIR/redis.log" &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
PROFILE=${PROFILE:-dev}
cargo build -q --profile "$PROFILE" --example redis_cost
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/examples/redis_cost
REDIS_URL="redis://127.0.0.1:$PORT" SCRIPTS="${1:-lua/reserve.lua}" "$BIN"
