#!/usr/bin/env bash
# The README demo: set up, build, migrate, create an activity open now (for one hour) with
# two products, preheat it, issue tokens, start it, serve it, let 300 buyers rush 100 phones
# over HTTP, persist the orders, reconcile, show the status; then stop, end and flush it, and
# finish with a `seckill bench --spawn` sale and its invariant report.
#
# It uses its own database and key prefix, so it never touches a real deployment:
#   SECKILL_DATABASE_URL (the server of config.yaml's database.url, database seckill_demo)
#   SECKILL_REDIS_URL    (config.yaml's redis.url)
#   SECKILL_KEY_PREFIX   (demo)
# Every server it sets up, checks or cleans is the one these URLs name (scripts/urls.sh).
# Re-runnable: whatever a previous run left (even one that died midway) is flushed and the
# demo database is recreated first. DEMO_KEEP=1 leaves the activity online at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/urls.sh
if [ -z "${SECKILL_DATABASE_URL:-}" ]; then
    SECKILL_DATABASE_URL=$DB_SERVER_URL/seckill_demo
    . scripts/urls.sh
fi
export SECKILL_DATABASE_URL SECKILL_REDIS_URL=$REDIS_URL
export SECKILL_KEY_PREFIX=${SECKILL_KEY_PREFIX:-demo}
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

# Leftovers of a previous run: flush their Redis keys, then start from an empty database.
if db_cli -e "USE \`$DEMO_DB\`" 2>/dev/null; then
    for id in $("$SECKILL" activity list --json 2>/dev/null | grep -o '"id": [0-9]*' | grep -o '[0-9]*$'); do
        "$SECKILL" flush -y --force "$id" >/dev/null
    done
    db_cli -e "DROP DATABASE \`$DEMO_DB\`"
fi

run migrate
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
trap 'kill $SERVE_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -sf "http://$DEMO_BIND/ready" >/dev/null && break; sleep 0.1; done
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
kill -TERM $SERVE_PID; wait $SERVE_PID || true

if [ -n "${DEMO_KEEP:-}" ]; then
    echo
    echo "demo: activity $activity left online (database $DEMO_DB, key prefix $SECKILL_KEY_PREFIX)"
    exit 0
fi
run stop "$activity"
run stop --end "$activity"
step "seckill flush -y $activity"; "$SECKILL" flush -y "$activity" | tail -1
run status "$activity"
run bench --spawn --consumers 1 --stock 100 --users 2000 --requests 10000 --concurrency 64
echo
echo "demo: done (re-run at will; DEMO_KEEP=1 leaves the activity online)"
