#!/usr/bin/env bash
# What durability costs: a whole sale (`seckill bench --spawn`: HTTP buys through the funnel,
# group commit, one consumer) on four Redis set-ups, started here on spare ports with their
# files on disk (not tmpfs) and stopped by PID at the end:
#   none      appendonly no                          redis.durability: none
#   everysec  appendonly yes, appendfsync everysec   redis.durability: aof_everysec
#   always    appendonly yes, appendfsync always     redis.durability: aof_always
#   replica   a primary and one local replica        redis.durability: replicas, wait_replicas: 1
# Rounds alternate the set-ups (none, everysec, always, replica, none, ...) so the machine's
# noise falls on all of them alike; each set-up's figure is the median of its rounds, and each
# ratio the median of the rounds' own ratios to `none` in the same round.
# Goals (issue 17): always >= 0.8 x none, replica >= 0.7 x none, in buys/s.
#
#   ROUNDS (3), REQUESTS (100000 purchases per run, every one a fresh buyer with stock for all),
#   CONCURRENCY (100), BATCH_PIPELINE (funnel.batch_pipeline for every set-up, 1). MySQL: the server the application's URL names (scripts/urls.sh), in a
#   database of its own. Writes target/bench/durability.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-100000}
CONCURRENCY=${CONCURRENCY:-100}
BATCH_PIPELINE=${BATCH_PIPELINE:-1}

bash scripts/setup.sh
. scripts/urls.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin seckill
S=$PWD/target/release/seckill

WORK=$(mktemp -d /var/tmp/seckill-bench-durability.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts redis-server NAME on PORT in a directory of its own, with the settings that follow.
start_redis() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$WORK/$name"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/$name" --save "" \
        --maxmemory-policy noeviction --logfile "$WORK/$name/redis.log" "$@" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
}

NONE=$(free_port) EVERYSEC=$(free_port) ALWAYS=$(free_port) PRIMARY=$(free_port) REPLICA=$(free_port)
start_redis none "$NONE" --appendonly no
start_redis everysec "$EVERYSEC" --appendonly yes --appendfsync everysec
start_redis always "$ALWAYS" --appendonly yes --appendfsync always
start_redis primary "$PRIMARY" --appendonly no
start_redis replica "$REPLICA" --appendonly no --replicaof 127.0.0.1 "$PRIMARY"
for _ in $(seq 100); do
    redis-cli -p "$REPLICA" info replication | grep -q master_link_status:up && break
    sleep 0.1
done

BENCH_DB=seckill_bench_durability
# serve refuses the shipped token secret: a fresh one per run.
BENCH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
write_config() { # name port durability wait_replicas
    cat >"$WORK/$1.yaml" <<EOF
database:
  url: $DB_SERVER_URL/$BENCH_DB
redis:
  url: redis://127.0.0.1:$2/0
  key_prefix: bench_durability
  durability: $3
  wait_replicas: $4
token:
  secret: $BENCH_SECRET
funnel:
  global_rps: 0
  per_user_rps: 0
  batch_pipeline: $BATCH_PIPELINE
EOF
}
write_config none "$NONE" none 0
write_config everysec "$EVERYSEC" aof_everysec 0
write_config always "$ALWAYS" aof_always 0
write_config replica "$PRIMARY" replicas 1
unset SECKILL_DATABASE_URL SECKILL_REDIS_URL SECKILL_KEY_PREFIX SECKILL_REDIS_DURABILITY SECKILL_TOKEN_SECRET
RUST_LOG=warn "$S" --config "$WORK/none.yaml" migrate >/dev/null

SETUPS=(none everysec always replica)
for round in $(seq "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        RUST_LOG=warn "$S" --config "$WORK/$setup.yaml" bench --spawn --json --consumers 1 \
            --stock "$REQUESTS" --users "$REQUESTS" --requests "$REQUESTS" --concurrency "$CONCURRENCY" \
            >"$WORK/$setup.$round.json"
        python3 - "$WORK/$setup.$round.json" "$round" "$setup" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"round {sys.argv[2]} {sys.argv[3]:<9} {r['rps']:.0f} req/s, p99 {r['latency_ms']['p99']:.2f} ms, "
      f"queued {r['outcomes'].get('queued', 0)}")
PY
    done
done
db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"

mkdir -p target/bench
python3 - "$WORK" "$ROUNDS" >target/bench/durability.md <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
setups = ["none", "everysec", "always", "replica"]
runs = {s: [json.load(open(f"{work}/{s}.{r}.json")) for r in range(1, rounds + 1)] for s in setups}
goal = {"always": 0.8, "replica": 0.7}
print("| Redis set-up | buys/s (median) | p99 ms (median) | ratio to none (median of rounds) | rounds (buys/s) | goal |")
print("|---|---|---|---|---|---|")
for s in setups:
    rps = [r["rps"] for r in runs[s]]
    p99 = [r["latency_ms"]["p99"] for r in runs[s]]
    ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(runs[s], runs["none"]))
    g = goal.get(s)
    met = "" if g is None else (f">= {g}: met" if ratio >= g else f">= {g}: NOT met")
    print(f"| {s} | {statistics.median(rps):.0f} | {statistics.median(p99):.2f} | {ratio:.2f} | "
          f"{', '.join(f'{x:.0f}' for x in rps)} | {met} |")
PY
cat target/bench/durability.md
