#!/usr/bin/env bash
# What durability costs: a whole sale (`seckill bench --spawn`: HTTP buys through the funnel,
# group commit, one consumer) on four Redis set-ups, started here on spare ports with their
# files on disk (not tmpfs) and stopped by PID at the end:
#   none      appendonly no                          redis.durability: none
#   everysec  appendonly yes, appendfsync everysec   redis.durability: aof_everysec
#   always    appendonly yes, appendfsync always     redis.durability: aof_always
#   replica   a primary and one local replica        redis.durability: replicas, wait_replicas: 1
# For each concurrency of CONCURRENCY, rounds alternate the set-ups (none, everysec, always,
# replica, none, ...) so the machine's noise falls on all of them alike; each set-up's figure is
# the median of its rounds, and each ratio the median of the rounds' own ratios to `none` in the
# same round. Goals (issue 17): always >= 0.8 x none, replica >= 0.7 x none, in buys/s.
#
# Beside each ratio, what bounds `always` (from the load's window alone, see `seckill bench
# --json`'s `during_load`): purchases per group-commit call, Redis's fsyncs (`perf trace` of
# the always server's fdatasync calls, when perf is there; Redis's own LATENCY monitor gives
# the slowest), how many of them no batch explains (the consumer's reads, persist marks and
# acks, each a write of its own), and Little's law: N connections each waiting about 1.5
# fsyncs (its batch's, and half of the one running when it arrived) allow N / (1.5 x fsync).
#
#   ROUNDS (3), REQUESTS (100000 purchases per run, every one a fresh buyer with stock for all),
#   CONCURRENCY ("100 400 1000"), BATCH_PIPELINE (funnel.batch_pipeline for every set-up, 1;
#   always runs funnel.batch_pipeline_aof_always instead, 2 unless a variant sets it),
#   SETUPS ("none everysec always replica"; a set-up NAME+V runs NAME's Redis with the extra
#   config lines of $FUNNEL_V under `funnel:` and $CONSUMER_V under `consumer:`, and the
#   binary $BIN_V when set, e.g. SETUPS="none always always+nolinger" FUNNEL_nolinger=
#   "batch_linger_us_aof_always: 0"), BUILD (1; 0 takes target/release/seckill as it is), FSYNC_TRACE
#   (1; 0 leaves perf out). MySQL: the server the application's URL names (scripts/urls.sh),
#   in a database of its own. Writes target/bench/durability.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-100000}
CONCURRENCY=${CONCURRENCY:-100 400 1000}
BATCH_PIPELINE=${BATCH_PIPELINE:-1}
read -r -a SETUPS <<<"${SETUPS:-none everysec always replica}"
[ "${SETUPS[0]}" = none ] || { echo "SETUPS must start with none (the baseline of every ratio)" >&2; exit 2; }

bash scripts/setup.sh
. scripts/urls.sh
export PATH="$HOME/.cargo/bin:$PATH"
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet --bin seckill
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
start_redis always "$ALWAYS" --appendonly yes --appendfsync always --latency-monitor-threshold 1
start_redis primary "$PRIMARY" --appendonly no
start_redis replica "$REPLICA" --appendonly no --replicaof 127.0.0.1 "$PRIMARY"
for _ in $(seq 100); do
    redis-cli -p "$REPLICA" info replication | grep -q master_link_status:up && break
    sleep 0.1
done
declare -A PORT=([none]=$NONE [everysec]=$EVERYSEC [always]=$ALWAYS [replica]=$PRIMARY)

# Every fdatasync of the always server, with its time and duration, for the whole run; each
# bench run's load window picks its own. perf's timestamps are CLOCK_MONOTONIC: the offset to
# the wall clock is noted once. FSYNC_TRACE=0 leaves it out.
TRACE=$WORK/always.fsyncs
if command -v perf >/dev/null && [ "${FSYNC_TRACE:-1}" = 1 ]; then
    ALWAYS_PID=$(redis-cli -p "$ALWAYS" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
    perf trace -T -p "$ALWAYS_PID" -e fdatasync,fsync -o "$TRACE" 2>"$WORK/perf.err" &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
    sleep 1
    python3 -c 'import time; print(time.time() - time.clock_gettime(time.CLOCK_MONOTONIC))' >"$WORK/clock_offset"
fi

BENCH_DB=seckill_bench_durability
# serve refuses the shipped token secret: a fresh one per run.
BENCH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
indent() { [ -z "$1" ] || printf '%s\n' "$1" | sed 's/^/  /'; }
write_config() { # setup (NAME or NAME+VARIANT)
    local base=${1%%+*} variant="" durability wait=0 funnel="" consumer="" f c
    [ "$base" = "$1" ] || variant=${1#*+}
    case $base in
        none) durability=none ;;
        everysec) durability=aof_everysec ;;
        always) durability=aof_always ;;
        replica) durability=replicas wait=1 ;;
        *) echo "unknown set-up $1 (none, everysec, always, replica, each with an optional +VARIANT)" >&2; exit 2 ;;
    esac
    if [ -n "$variant" ]; then
        f=FUNNEL_$variant c=CONSUMER_$variant
        funnel=${!f:-} consumer=${!c:-}
    fi
    # A variant's own batch_pipeline wins (YAML refuses a key twice).
    case $funnel in *batch_pipeline:*) ;; *) funnel="batch_pipeline: $BATCH_PIPELINE${funnel:+
$funnel}" ;; esac
    cat >"$WORK/$1.yaml" <<EOF
database:
  url: $DB_SERVER_URL/$BENCH_DB
redis:
  url: redis://127.0.0.1:${PORT[$base]}/0
  key_prefix: bench_durability
  durability: $durability
  wait_replicas: $wait
token:
  secret: $BENCH_SECRET
funnel:
  global_rps: 0
  per_user_rps: 0
$(indent "$funnel")
consumer:
  group: persist
$(indent "$consumer")
EOF
}
bin_of() { # setup
    local variant=${1#*+} b
    if [ "$variant" = "$1" ]; then echo "$S"; return; fi
    b=BIN_$variant
    echo "${!b:-$S}"
}
for setup in "${SETUPS[@]}"; do write_config "$setup"; done
unset SECKILL_DATABASE_URL SECKILL_REDIS_URL SECKILL_KEY_PREFIX SECKILL_REDIS_DURABILITY SECKILL_TOKEN_SECRET
RUST_LOG=warn "$S" --config "$WORK/none.yaml" migrate >/dev/null

for conc in $CONCURRENCY; do
    for round in $(seq "$ROUNDS"); do
        uptime >"$WORK/load.$conc.$round"
        for setup in "${SETUPS[@]}"; do
            base=${setup%%+*}
            [ "$base" != always ] || redis-cli -p "$ALWAYS" latency reset >/dev/null
            # A failed run (no JSON, e.g. Redis too slow to answer) is reported as such, and the
            # rounds go on; the report leaves it out of the medians.
            RUST_LOG=warn "$(bin_of "$setup")" --config "$WORK/$setup.yaml" bench --spawn --json --consumers 1 \
                --stock "$REQUESTS" --users "$REQUESTS" --requests "$REQUESTS" --concurrency "$conc" \
                >"$WORK/$setup.$conc.$round.json" || true
            [ "$base" != always ] || redis-cli -p "$ALWAYS" latency latest >"$WORK/$setup.$conc.$round.latency"
            python3 - "$WORK/$setup.$conc.$round.json" "$conc" "$round" "$setup" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(print(f"c={sys.argv[2]} round {sys.argv[3]} {sys.argv[4]:<16} FAILED (see the log above)", flush=True))
d = r.get("during_load") or {}
per = (d.get("batched_purchases") or 0) / d["batches"] if d.get("batches") else float("nan")
print(f"c={sys.argv[2]} round {sys.argv[3]} {sys.argv[4]:<16} {r['rps']:.0f} req/s, p99 {r['latency_ms']['p99']:.2f} ms, "
      f"queued {r['outcomes'].get('queued', 0)}, {per:.1f} purchases per call", flush=True)
PY
        done
        uptime >>"$WORK/load.$conc.$round"
    done
done
if [ -n "${PERF_PID:-}" ]; then # perf writes out its last events when interrupted
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
fi
db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"

mkdir -p target/bench
python3 scripts/bench/durability_report.py "$WORK" "$ROUNDS" "$CONCURRENCY" "${SETUPS[*]}" >target/bench/durability.md
cat target/bench/durability.md
