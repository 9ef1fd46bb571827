#!/usr/bin/env bash
# The README demo: set up, build, migrate, create an activity open now (for one hour) with
# two products, preheat it, issue tokens, start it, serve it, let 300 buyers rush 100 phones
# over HTTP, persist the orders, reconcile, show the status; then stop, end and flush it, and
# finish with a `seckill bench --spawn` sale and its invariant report.
#
# It uses its own database and key prefix, so it never touches a real deployment:
#   SECKILL_DATABASE_URL (the server of config.yaml's database.url, database seckill_demo)
#   SECKILL_REDIS_URL    (config.yaml's redis.url; see below)
#   SECKILL_KEY_PREFIX   (demo)
# "Never lose an order" needs a Redis that fsyncs its append-only file before it answers
# (redis.durability: aof_always, the default), and the Redis set up for the tests keeps nothing
# on disk. So unless SECKILL_REDIS_URL is given, the demo runs a Redis of its own with
# `appendonly yes`, `appendfsync always`, `maxmemory-policy noeviction` on DEMO_REDIS_PORT
# (16390) in DEMO_REDIS_DIR (/tmp/seckill-demo-redis), and stops it at the end.
# Every server it sets up, checks or cleans is the one these URLs name (scripts/urls.sh).
# Re-runnable: whatever a previous run left (even one that died midway) is flushed and the
# demo database is recreated first. It prints the buyer page's URL once `serve` is up.
# DEMO_KEEP=1 leaves the activity online and `serve` running (its page open) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/urls.sh
if [ -z "${SECKILL_DATABASE_URL:-}" ]; then
    SECKILL_DATABASE_URL=$DB_SERVER_URL/seckill_demo
    . scripts/urls.sh
fi
OWN_REDIS=${SECKILL_REDIS_URL:+no}
export SECKILL_DATABASE_URL SECKILL_REDIS_URL=$REDIS_URL
export SECKILL_KEY_PREFIX=${SECKILL_KEY_PREFIX:-demo}
# doctor refuses the shipped token secret: a fresh one per run (tokens live as long as the run).
export SECKILL_TOKEN_SECRET=${SECKILL_TOKEN_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
DEMO_DB=$DB_NAME
case "$DEMO_DB" in
    *demo*) ;;
    *) echo "demo: refusing to recreate database '$DEMO_DB' (its name must contain 'demo')" >&2; exit 1 ;;
esac

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

step() { if [ -t 1 ]; then printf '\n\033[1m$ %s\033[0m\n' "$*"; else printf '\n$ %s\n' "$*"; fi; }
run() { step "seckill $*"; "$SECKILL" "$@"; }

step "cargo build"
cargo build --quiet
SECKILL=target/debug/seckill
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

DEMO_REDIS_PORT=${DEMO_REDIS_PORT:-16390}
DEMO_REDIS_DIR=${DEMO_REDIS_DIR:-/tmp/seckill-demo-redis}
stop_demo_redis() {
    if [ -f "$DEMO_REDIS_DIR/redis.pid" ]; then
        kill "$(cat "$DEMO_REDIS_DIR/redis.pid")" 2>/dev/null || true
        rm -f "$DEMO_REDIS_DIR/redis.pid"
    fi
}
if [ -z "$OWN_REDIS" ]; then
    command -v redis-server >/dev/null ||
        { echo "demo: redis-server is needed to run the demo's own Redis (apt-get install redis-server)" >&2; exit 1; }
    mkdir -p "$DEMO_REDIS_DIR"
    if ! redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1; then
        step "redis-server --port $DEMO_REDIS_PORT --appendonly yes --appendfsync always --maxmemory-policy noeviction"
        redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --dir "$DEMO_REDIS_DIR" \
            --appendonly yes --appendfsync always --maxmemory-policy noeviction --save "" \
            --daemonize yes --pidfile "$DEMO_REDIS_DIR/redis.pid" --logfile "$DEMO_REDIS_DIR/redis.log"
        for _ in $(seq 50); do redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    export SECKILL_REDIS_URL=redis://127.0.0.1:$DEMO_REDIS_PORT/0
    [ -n "${DEMO_KEEP:-}" ] || trap 'stop_demo_redis; rm -rf "$WORK"' EXIT
fi

# Leftovers of a previous run: flush their Redis keys, then start from an empty database.
if db_cli -e "USE \`$DEMO_DB\`" 2>/dev/null; then
    for id in $("$SECKILL" activity list --json 2>/dev/null | grep -o '"id": [0-9]*' | grep -o '[0-9]*$'); do
        "$SECKILL" flush -y --force "$id" >/dev/null
    done
    db_cli -e "DROP DATABASE \`$DEMO_DB\`"
fi

run migrate
run doctor
start=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
step "seckill activity create --name 'Demo flash sale' --start $start --end $end"
activity=$("$SECKILL" activity create --name 'Demo flash sale' --start "$start" --end "$end")
echo "$activity"
run product add --activity "$activity" --name 'Phone' --price 4999.00 --stock 100 --limit-per-user 1
run product add --activity "$activity" --name 'Earbuds' --price 199.90 --stock 500 --limit-per-user 2
run product list --activity "$activity"
run hot "$activity"
run start "$activity"
run token "$activity" --range 1-300 --out "$WORK/tokens.csv"
head -3 "$WORK/tokens.csv"

DEMO_BIND=${DEMO_BIND:-127.0.0.1:18081}
step "seckill serve --bind $DEMO_BIND &"
SECKILL_HTTP_BIND=$DEMO_BIND "$SECKILL" serve >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
trap '{ [ -n "${DEMO_KEEP:-}" ] || kill $SERVE_PID 2>/dev/null; } || true; [ -n "$OWN_REDIS" ] || [ -n "${DEMO_KEEP:-}" ] || stop_demo_redis; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -sf "http://$DEMO_BIND/ready" >/dev/null && break; sleep 0.1; done
echo
echo "demo: the buyer page: http://$DEMO_BIND/sale/$activity (every sale: http://$DEMO_BIND/)"
echo "demo: open it in a browser while the demo runs; with DEMO_KEEP=1 it stays up afterwards"
curl -sf "http://$DEMO_BIND/api/v1/activities/$activity"; echo

phone=$("$SECKILL" product list --activity "$activity" --json | grep -o '"id": [0-9]*' | sed -n 1p | grep -o '[0-9]*$')
step "300 buyers rush 100 phones (curl, 30 at a time)"
buy() {
    IFS=, read -r user token <<<"$1"
    curl -s -X POST "http://$DEMO_BIND/api/v1/buy" -H 'content-type: application/json' \
        -d "{\"product_id\": $phone, \"user_id\": \"$user\", \"quantity\": 1, \"token\": \"$token\"}"
    echo
}
export -f buy
export DEMO_BIND phone
xargs -P 30 -I{} bash -c 'buy "$@"' _ {} <"$WORK/tokens.csv" >"$WORK/answers.jsonl"
grep -o '"status":"queued"\|"error":"[a-z_]*"' "$WORK/answers.jsonl" | sort | uniq -c
order=$(grep -o '"order_no":"[^"]*"' "$WORK/answers.jsonl" | head -1 | cut -d'"' -f4)
step "curl /api/v1/orders/$order"
curl -s "http://$DEMO_BIND/api/v1/orders/$order"; echo

run consumer --once
run order show "$order"
run reconcile "$activity"
run status "$activity"
if [ -n "${DEMO_KEEP:-}" ]; then
    echo
    echo "demo: activity $activity left online (database $DEMO_DB, Redis $SECKILL_REDIS_URL, key prefix $SECKILL_KEY_PREFIX)"
    echo "demo: its buyer page stays at http://$DEMO_BIND/sale/$activity (seckill serve, PID $SERVE_PID: kill $SERVE_PID stops it)"
    [ -n "$OWN_REDIS" ] || echo "demo: its Redis keeps running; stop it with: kill \$(cat $DEMO_REDIS_DIR/redis.pid)"
    exit 0
fi
kill -TERM $SERVE_PID; wait $SERVE_PID || true
run stop "$activity"
run stop --end "$activity"
step "seckill flush -y $activity"; "$SECKILL" flush -y "$activity" | tail -1
run status "$activity"
run bench --spawn --consumers 1 --stock 100 --users 2000 --requests 10000 --concurrency 64
echo
echo "demo: done (re-run at will; DEMO_KEEP=1 leaves the activity online)"
