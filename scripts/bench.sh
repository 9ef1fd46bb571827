#!/usr/bin/env bash
# One benchmark run on this machine: the figures that matter and their ratios, all taken in
# the same run so that numbers from noisy shared machines are compared with each other.
# Figures 0 to 4 are taken in turn (1, 3, 0, 2, 4: each goal's pair one after the other),
# ROUNDS times (3), and each is the median of its rounds, each goal ratio the median of the
# rounds' ratios: the speed of a shared machine drifts by tens of percent within minutes.
#
#   0. wrk -t2 -c100 with the buy script against scripts/bench/zero_work.c, a server that
#      does no work at all: what the client and the kernel alone allow on this machine, and
#      the whole machine's CPU time that each request costs there
#   1. redis-benchmark -c 50, one EVALSHA per purchase of a naive deduct script
#      (scripts/bench/naive_deduct.lua): the ceiling of the classic design
#   2. wrk -t2 -c100 on /health: the HTTP ceiling of our server
#      (and, right before it in each round, `seckill bench --probe /health`: our load
#      generator next to wrk, about five seconds' worth)
#   3. wrk -t2 -c100 POST /api/v1/buy, a fresh user with a valid token per request, stock
#      never running out (each round its own product): successful buys per second, p50/p99
#   4. the same on a sold-out product: sold-out answers per second, p50/p99
#   3n. the same wrk buy script against examples/naive_server.rs (axum + redis-rs, one EVALSHA
#      of naive_deduct.lua per request, no token, no queue), right before (3): buys/s, and
#      Redis CPU per purchase there, by `INFO cpu` (the whole process) and by `INFO
#      commandstats` (EVALSHA's own usec) (goals: (3) >= 1.25 x (3n); Redis per purchase of
#      (3) <= 1/3 of (3n)'s); (3) also prints its purchases per group-commit call
#   4b. the same two wrk runs against examples/http_floor.rs: a bare axum Router on serve's
#      HTTP set-up (threads or runtime), doing none of our work (what the stack alone gives, for comparison)
#   5. one `seckill consumer --once` draining what (3) queued into MariaDB: orders per second
#   5c. its ceiling, right after it (examples/bench_consumer/ runs both): the same rows
#      inserted again into a fresh database with the same schema by bare multi-row INSERTs
#      in five shapes (bound as the consumer sends them, SQL text, 7,000 rows per INSERT, one
#      transaction per INSERT, two connections at once; the best counts), and consumer / ceiling; with the CPU
#      per order of the consumer, MySQL (when local) and Redis in each (goal (5) >= 50,000/s)
#   6. Redis CPU time per purchase in (1) and in (3), from Redis's own counters, and so how
#      many purchases one Redis core can decide either way
#   6c. the whole machine's CPU time per request in (0), (2) and (3), from /proc/stat, and the
#      most buys per second this machine could give even if our server cost nothing:
#      cores / (machine time per request in (0) + Redis time per purchase in (3))
#   7. peak RSS of `seckill serve` (VmHWM; goal <= 64 MiB)
#   8. `seckill bench --spawn`: a whole sale with its invariants
#   9. what durability costs: scripts/bench/durability.sh (the same sale on Redis servers of
#      its own: no persistence, appendfsync everysec / always, wait_replicas 1; goals
#      always >= 0.8 x none, wait_replicas >= 0.7 x none); BENCH_DURABILITY=0 skips it
#  10. stock sharding: scripts/bench/buckets.sh (one hot product, 1 vs 4 buckets, on a local
#      three-primary Redis Cluster: buys/s and each primary's Redis CPU per purchase and share);
#      BENCH_BUCKETS=0 skips it
#   ratios: (3)/(1) (goal >= 1.5), (4)/(2) (goal >= 0.9), (6) ours/naive, (5) (>= 50,000/s), (5)/(5c)
#
# The server runs with the rate limits off (funnel.global_rps and per_user_rps 0), like
# `seckill bench --spawn`: one client machine would otherwise measure the 429 path.
#
# Own database and key prefix (BENCH_DB=seckill_bench, BENCH_PREFIX=bench) on the MySQL and Redis
# servers the application's URLs name (SECKILL_DATABASE_URL, SECKILL_REDIS_URL, else
# config.yaml's; see scripts/urls.sh), server on
# 127.0.0.1:BENCH_PORT (18080); BENCH_SECS (10) is each wrk run's duration, BUY_USERS
# (1500000) the tokens issued (more than a round can use; a round that re-sends users, who are
# then answered limit_exceeded, is flagged in the output and in latest.md). Everything is removed afterwards
# (server killed, keys flushed, database dropped), also on failure.
# The zero-work server listens on BENCH_PORT + 1 and is built with the C compiler that Rust
# needs anyway. Results: target/bench/latest.md and target/bench/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DB=${BENCH_DB:-seckill_bench}
BENCH_PREFIX=${BENCH_PREFIX:-bench}
BENCH_PORT=${BENCH_PORT:-18080}
BENCH_SECS=${BENCH_SECS:-10}
BUY_USERS=${BUY_USERS:-1500000}
ROUNDS=${ROUNDS:-3}
NAIVE_N=${NAIVE_N:-300000}
case "$BENCH_DB" in
    *bench*) ;;
    *) echo "bench: refusing to drop database '$BENCH_DB' (its name must contain 'bench')" >&2; exit 1 ;;
esac

log() { printf '\nbench: %s\n' "$*" >&2; }

. scripts/urls.sh
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "cargo build --release"
cargo build --release --quiet --bin seckill --example http_floor --example naive_server --example bench_consumer
S=$PWD/target/release/seckill
OUT=target/bench
mkdir -p "$OUT"
WORK=$(mktemp -d)
BASE=http://127.0.0.1:$BENCH_PORT
ZERO_PORT=$((BENCH_PORT + 1))
FLOOR_PORT=$((BENCH_PORT + 2))
NAIVE_PORT=$((BENCH_PORT + 3))
cc -O2 -pthread -o "$WORK/zero_work" scripts/bench/zero_work.c

# Our own configuration only: environment overrides would point the run elsewhere.
unset SECKILL_DATABASE_URL SECKILL_KEY_PREFIX SECKILL_HTTP_BIND SECKILL_REDIS_URL SECKILL_TOKEN_SECRET \
    SECKILL_REDIS_DURABILITY
# serve refuses the shipped token secret: a fresh one per run.
BENCH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# These rows measure the buy path itself on the configured Redis, whatever it keeps on disk
# (the machine's Redis keeps nothing): durability none, said here rather than hidden. The
# buyers are numbered (as `seckill token --range` numbers them), and their totals live in the
# products' totals arrays below NUMERIC_IDS_BELOW (redis.numeric_user_ids_below; default
# 16777216, the most; 0: in the bought hashes, the default of a fresh config).
NUMERIC_IDS_BELOW=${NUMERIC_IDS_BELOW:-16777216}
cat >"$WORK/config.yaml" <<EOF
database:
  url: $DB_SERVER_URL/$BENCH_DB
redis:
  url: $REDIS_URL
  key_prefix: $BENCH_PREFIX
  durability: none
  numeric_user_ids_below: $NUMERIC_IDS_BELOW
http:
  bind: 127.0.0.1:$BENCH_PORT
token:
  secret: $BENCH_SECRET
funnel:
  global_rps: 0
  per_user_rps: 0
EOF
sk() { RUST_LOG=${RUST_LOG:-warn} "$S" --config "$WORK/config.yaml" "$@"; }

unlink_keys() {
    redis_cli --scan --pattern "$1" | while mapfile -t -n 1000 batch && [ ${#batch[@]} -gt 0 ]; do
        redis_cli unlink "${batch[@]}" </dev/null >/dev/null
    done
}
SERVER=""; ZERO=""; FLOOR=""
cleanup() {
    for pid in $SERVER $ZERO $FLOOR $NAIVE_SERVER; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    unlink_keys "$BENCH_PREFIX:*"
    db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_before() { unlink_keys "$BENCH_PREFIX:*"; db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"; }
cleanup_before
sk migrate >/dev/null

# wrk latency like "512.00us" / "1.23ms" / "1.01s" -> milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
wrk_total() { awk '/requests in/ { print $1 }' "$1"; }
wrk_pct() { to_ms "$(awk -v p="$2%" '$1 == p { print $2; exit }' "$1")"; }
# Buy answers with code $1 so far, from the server's own counter (exact, and free for wrk).
buy_answers() {
    curl -s "$BASE/metrics" | awk -v c="code=\"$1\"" '
        /^seckill_requests_total\{/ && index($0, "route=\"/api/v1/buy\"") && index($0, c) { n += $NF }
        END { printf "%d", n }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "0"; else printf "%.2f", a / b }'; }
json_num() { grep -o "\"$2\": *[0-9.eE+-]*" "$1" | head -1 | sed 's/.*: *//'; }
# printf-style rounding for the table: fmt FORMAT VALUE ("-" when empty).
fmt() { if [ -z "$2" ]; then echo -; else awk -v f="$1" -v v="$2" 'BEGIN { printf f, v }'; fi; }

# Redis's own CPU time so far, in microseconds (all its threads).
redis_cpu_us() {
    redis_cli info cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { printf "%.0f", s * 1e6 }'
}
# Microseconds Redis spent inside EVALSHA so far (`INFO commandstats`: the scripts with every
# command they ran, without the network and event-loop work `INFO cpu` also counts).
redis_evalsha_us() {
    redis_cli info commandstats | tr -d '\r' | awk -F'[:,=]' '$1 == "cmdstat_evalsha" { print $5; f = 1 } END { if (!f) print 0 }'
}
# "count sum" of our server's group-commit batch sizes so far (purchases per script call).
batch_sizes() {
    curl -s "$BASE/metrics" | awk '
        /^seckill_group_commit_batch_size_count/ { c += $NF } /^seckill_group_commit_batch_size_sum/ { s += $NF }
        END { printf "%d %d", c, s }'
}
# The whole machine's CPU time so far, in clock ticks: busy (user, nice, system, irq,
# softirq) and in all.
cpu_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# Starts sampling, in the background, which share of the machine is busy in the middle of
# the wrk run about to start (from BENCH_SECS/2 + 1 s on, for 2 s: wrk first spends a few
# seconds in the script's init, formatting its requests, before its timer starts) into file $1.
# The window lies inside a run without init (/health) only when BENCH_SECS >= 6.
sample_busy_share() {
    (
        sleep $((BENCH_SECS / 2 + 1))
        read -r b0 t0 < <(cpu_ticks); sleep 2; read -r b1 t1 < <(cpu_ticks)
        div $((b1 - b0)) $((t1 - t0)) >"$1"
    ) &
    SAMPLER=$!
}
# Appends to array $1 the whole machine's CPU microseconds per request of wrk's run in file
# $2: its busy share (sampled by sample_busy_share into file $3) of all cores, over wrk's
# rate. Not to be called in $(...): only this shell can wait for the sampler it started.
add_machine_us_per_request() {
    local -n into=$1
    wait "$SAMPLER"
    into+=("$(awk -v share="$(cat "$3")" -v cores="$(nproc)" -v rps="$(wrk_rps "$2")" \
        'BEGIN { printf "%.2f", share * cores * 1e6 / rps }')")
}
# Median of the numbers given (the middle one; the lower middle for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

log "preparing the sale: one never-ending product per round, a sold-out one, $BUY_USERS tokens"
start=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
A=$(sk activity create --name "bench.sh $(date -u +%FT%TZ)" --start "$start" --end "$end")
BIG=()
for r in $(seq "$ROUNDS"); do
    BIG+=("$(sk product add --activity "$A" --name "big $r" --price 1 --stock 5000000 --limit-per-user 1)")
done
P2=$(sk product add --activity "$A" --name none --price 1 --stock 0 --limit-per-user 1)
sleep 0.05
sk hot "$A" >/dev/null
sk token "$A" --range "1-$BUY_USERS" --out "$WORK/tokens.csv" >&2
sk start "$A" >/dev/null
IFS=, read -r SO_USER SO_TOKEN < <(head -1 "$WORK/tokens.csv")
SHA=$(redis_cli script load "$(cat scripts/bench/naive_deduct.lua)")

RUST_LOG=warn "$S" --config "$WORK/config.yaml" serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 100); do listening "$BENCH_PORT" && break; sleep 0.1; done
listening "$BENCH_PORT" || { echo "bench: seckill serve did not come up:" >&2; cat "$WORK/serve.log" >&2; exit 1; }
"$WORK/zero_work" "$ZERO_PORT" 2 &
ZERO=$!
for _ in $(seq 50); do listening "$ZERO_PORT" && break; sleep 0.1; done
listening "$ZERO_PORT" || { echo "bench: the zero-work server did not come up" >&2; exit 1; }
target/release/examples/http_floor "127.0.0.1:$FLOOR_PORT" &
FLOOR=$!
for _ in $(seq 50); do listening "$FLOOR_PORT" && break; sleep 0.1; done
listening "$FLOOR_PORT" || { echo "bench: the http_floor server did not come up" >&2; exit 1; }
REDIS_URL="$REDIS_URL" KEY_PREFIX="$BENCH_PREFIX:naivehttp" target/release/examples/naive_server "127.0.0.1:$NAIVE_PORT" 2>"$WORK/naive_server.log" &
NAIVE_SERVER=$!
for _ in $(seq 50); do listening "$NAIVE_PORT" && break; sleep 0.1; done
listening "$NAIVE_PORT" || { echo "bench: the naive server did not come up" >&2; cat "$WORK/naive_server.log" >&2; exit 1; }

# Answers with code $1 since the count $2, at most wrk's total in file $3 (wrk leaves out
# answers that arrive after its timer).
answers_since() {
    local n t
    n=$(( $(buy_answers "$1") - $2 )); t=$(wrk_total "$3")
    echo $(( n < t ? n : t ))
}
# wrk's rate in file $1, counting only the $2 answers that had the code sought.
rate_of() { awk -v r="$(wrk_rps "$1")" -v ok="$2" -v n="$(wrk_total "$1")" 'BEGIN { printf "%.0f", r * ok / n }'; }

# wrk with the buy script against the server at $1: fresh users with valid tokens for
# product $2 (each round has its own, so every token is unused), output into file $3.
wrk_buys() {
    scripts/bench/buy_requests.sh "$WORK/tokens.csv" "$2" 2 "${1#http://}" "$WORK/requests"
    REQUESTS="$WORK/requests" wrk -t2 -c100 -d"${BENCH_SECS}s" --latency -s scripts/bench/buy.lua "$1" >"$3"
    local sent
    sent=$(wrk_total "$3")
    # The zero-work server answers every request alike: only the buying servers' answers change.
    if [ "$1" != "http://127.0.0.1:$ZERO_PORT" ] && [ "${sent:-0}" -gt "$BUY_USERS" ]; then
        RESENT+=("$1: $sent requests")
        echo "bench: WARNING: $sent requests to $1 re-sent users past the $BUY_USERS tokens: that round's buys are too low; raise BUY_USERS" >&2
    fi
}
RESENT=()

# Taken in rounds (see the top of this file): the machine's speed drifts within minutes.
NAIVE_HTTP=(); NAIVE_HTTP_US=(); NAIVE_HTTP_EV=(); BUY_EV=(); R_EV=(); BATCH=(); R_HTTP=(); R_REDIS=(); R_BUY=(); R_SO=(); R_FLOOR=(); PROBE=(); R_PROBE=(); FLOOR_H=(); FLOOR_SO=(); NAIVE=(); NAIVE_US=(); ZW=(); ZW_US=(); HEALTH=(); HEALTH_US=(); BUYS=(); BUY_US=(); BUY_MACHINE_US=(); SOLD=()
for r in $(seq "$ROUNDS"); do
    log "round $r of $ROUNDS"
    # 1. The classic design: one EVALSHA per purchase, straight from a C client.
    redis_cli set "$BENCH_PREFIX:naive:stock" 100000000 >/dev/null
    cpu0=$(redis_cpu_us)
    redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" --dbnum "$REDIS_DB" \
        ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} -c 50 -n "$NAIVE_N" -r 10000000 -q \
        EVALSHA "$SHA" 2 "$BENCH_PREFIX:naive:bought:__rand_int__" "$BENCH_PREFIX:naive:stock" 1 | tr '\r' '\n' >"$WORK/naive.txt"
    cpu1=$(redis_cpu_us)
    unlink_keys "$BENCH_PREFIX:naive:*"
    NAIVE+=("$(fmt %.0f "$(grep -o '[0-9.]* requests per second' "$WORK/naive.txt" | tail -1 | awk '{ print $1 }')")")
    NAIVE_US+=("$(div $((cpu1 - cpu0)) "$NAIVE_N")")

    # 3n. The naive axum server with the same wrk script (all fresh users: every answer a 200).
    redis_cli set "$BENCH_PREFIX:naivehttp:stock:${BIG[$((r - 1))]}" 100000000 >/dev/null
    cpu0=$(redis_cpu_us); ev0=$(redis_evalsha_us)
    wrk_buys "http://127.0.0.1:$NAIVE_PORT" "${BIG[$((r - 1))]}" "$WORK/naivehttp.$r.txt"
    cpu1=$(redis_cpu_us); ev1=$(redis_evalsha_us)
    NAIVE_HTTP_EV+=("$(div $((ev1 - ev0)) "$(wrk_total "$WORK/naivehttp.$r.txt")")")
    unlink_keys "$BENCH_PREFIX:naivehttp:*"
    NAIVE_HTTP+=("$(fmt %.0f "$(wrk_rps "$WORK/naivehttp.$r.txt")")")
    NAIVE_HTTP_US+=("$(div $((cpu1 - cpu0)) "$(wrk_total "$WORK/naivehttp.$r.txt")")")

    # 3. Successful buys, right after (1) and (3n) so that they compare the same minute.
    before=$(buy_answers ok); cpu0=$(redis_cpu_us); ev0=$(redis_evalsha_us); read -r bc0 bs0 <<<"$(batch_sizes)"
    sample_busy_share "$WORK/buy.$r.busy"
    wrk_buys "$BASE" "${BIG[$((r - 1))]}" "$WORK/buy.$r.txt"
    cpu1=$(redis_cpu_us); ev1=$(redis_evalsha_us); read -r bc1 bs1 <<<"$(batch_sizes)"
    BATCH+=("$(div $((bs1 - bs0)) $((bc1 - bc0)))")
    add_machine_us_per_request BUY_MACHINE_US "$WORK/buy.$r.txt" "$WORK/buy.$r.busy"
    ok=$(answers_since ok "$before" "$WORK/buy.$r.txt")
    BUYS+=("$(rate_of "$WORK/buy.$r.txt" "$ok")")
    BUY_US+=("$(div $((cpu1 - cpu0)) "$ok")")
    BUY_EV+=("$(div $((ev1 - ev0)) "$ok")")

    # 0. The same client against a server that does nothing.
    sample_busy_share "$WORK/zero.$r.busy"
    wrk_buys "http://127.0.0.1:$ZERO_PORT" "${BIG[$((r - 1))]}" "$WORK/zero.$r.txt"
    add_machine_us_per_request ZW_US "$WORK/zero.$r.txt" "$WORK/zero.$r.busy"
    ZW+=("$(fmt %.0f "$(wrk_rps "$WORK/zero.$r.txt")")")

    # 2b. Our load generator on /health, right before wrk's run of (2): about five seconds'
    # worth of requests at the rate the zero-work server just gave.
    probe_n=$(awk -v r="${ZW[-1]}" 'BEGIN { n = int(r * 5); if (n < 100000) n = 100000; print n }')
    sk bench --url "$BASE" --probe /health --requests "$probe_n" --concurrency 100 --json >"$WORK/probe.$r.json"
    PROBE+=("$(fmt %.0f "$(json_num "$WORK/probe.$r.json" rps)")")

    # 2. The HTTP ceiling of our server.
    sample_busy_share "$WORK/health.$r.busy"
    wrk -t2 -c100 -d"${BENCH_SECS}s" --latency "$BASE/health" >"$WORK/health.$r.txt"
    add_machine_us_per_request HEALTH_US "$WORK/health.$r.txt" "$WORK/health.$r.busy"
    HEALTH+=("$(fmt %.0f "$(wrk_rps "$WORK/health.$r.txt")")")
    R_PROBE+=("$(div "${PROBE[-1]}" "${HEALTH[-1]}")")

    # 4. Sold-out answers, right after (2): one well-formed request at a product with no stock.
    before=$(buy_answers sold_out)
    PRODUCT=$P2 USER_ID=$SO_USER TOKEN=$SO_TOKEN wrk -t2 -c100 -d"${BENCH_SECS}s" --latency \
        -s scripts/bench/sold_out.lua "$BASE" >"$WORK/soldout.$r.txt"
    SOLD+=("$(rate_of "$WORK/soldout.$r.txt" "$(answers_since sold_out "$before" "$WORK/soldout.$r.txt")")")
    R_BUY+=("$(div "${BUYS[-1]}" "${NAIVE[-1]}")")
    R_HTTP+=("$(div "${BUYS[-1]}" "${NAIVE_HTTP[-1]}")"); R_REDIS+=("$(div "${BUY_US[-1]}" "${NAIVE_HTTP_US[-1]}")"); R_EV+=("$(div "${BUY_EV[-1]}" "${NAIVE_HTTP_EV[-1]}")"); R_SO+=("$(div "${SOLD[-1]}" "${HEALTH[-1]}")")

    # 4b. The same two runs against a bare axum Router (every answer there is the 409).
    wrk -t2 -c100 -d"${BENCH_SECS}s" "http://127.0.0.1:$FLOOR_PORT/health" >"$WORK/floor_health.$r.txt"
    PRODUCT=$P2 USER_ID=$SO_USER TOKEN=$SO_TOKEN wrk -t2 -c100 -d"${BENCH_SECS}s" \
        -s scripts/bench/sold_out.lua "http://127.0.0.1:$FLOOR_PORT" >"$WORK/floor_soldout.$r.txt"
    FLOOR_H+=("$(fmt %.0f "$(wrk_rps "$WORK/floor_health.$r.txt")")")
    FLOOR_SO+=("$(fmt %.0f "$(wrk_rps "$WORK/floor_soldout.$r.txt")")")
    R_FLOOR+=("$(div "${FLOOR_SO[-1]}" "${FLOOR_H[-1]}")")
    echo "round $r: naive axum ${NAIVE_HTTP[-1]}/s (redis ${NAIVE_HTTP_US[-1]} us each)," \
        "naive ${NAIVE[-1]}/s (redis ${NAIVE_US[-1]} us each)," \
        "zero-work ${ZW[-1]}/s (machine ${ZW_US[-1]} us each), /health ${HEALTH[-1]}/s (our load generator ${PROBE[-1]}/s)," \
        "buys ${BUYS[-1]}/s (redis ${BUY_US[-1]}, EVALSHA ${BUY_EV[-1]} against the naive's ${NAIVE_HTTP_EV[-1]}, machine ${BUY_MACHINE_US[-1]} us each; ${BATCH[-1]} per call), sold out ${SOLD[-1]}/s," \
        "stack floor /health ${FLOOR_H[-1]}/s, sold out ${FLOOR_SO[-1]}/s" >&2
done
BUY_200=$(buy_answers ok)
NAIVE_RPS=$(median "${NAIVE[@]}"); NAIVE_REDIS_US=$(median "${NAIVE_US[@]}")
NAIVE_HTTP_RPS=$(median "${NAIVE_HTTP[@]}"); NAIVE_HTTP_REDIS_US=$(median "${NAIVE_HTTP_US[@]}")
RH=$(median "${R_HTTP[@]}"); RR=$(median "${R_REDIS[@]}"); RE=$(median "${R_EV[@]}")
NAIVE_HTTP_EV_US=$(median "${NAIVE_HTTP_EV[@]}"); BUY_EV_US=$(median "${BUY_EV[@]}"); BATCH_SIZE=$(median "${BATCH[@]}")
HEALTH_RPS=$(median "${HEALTH[@]}"); HEALTH_MACHINE_US=$(median "${HEALTH_US[@]}")
ZW_RPS=$(median "${ZW[@]}"); ZW_MACHINE_US=$(median "${ZW_US[@]}")
BUY_MACHINE=$(median "${BUY_MACHINE_US[@]}")
BUY_RPS=$(median "${BUYS[@]}"); BUY_REDIS_US=$(median "${BUY_US[@]}")
SO_RPS=$(median "${SOLD[@]}")
FLOOR_H_RPS=$(median "${FLOOR_H[@]}"); FLOOR_SO_RPS=$(median "${FLOOR_SO[@]}")
PROBE_RPS=$(median "${PROBE[@]}")
# Latency of the round whose rate is the median.
for r in $(seq "$ROUNDS"); do
    if [ "${BUYS[$((r - 1))]}" = "$BUY_RPS" ]; then
        BUY_P50=$(wrk_pct "$WORK/buy.$r.txt" 50); BUY_P99=$(wrk_pct "$WORK/buy.$r.txt" 99)
    fi
    if [ "${SOLD[$((r - 1))]}" = "$SO_RPS" ]; then
        SO_P50=$(wrk_pct "$WORK/soldout.$r.txt" 50); SO_P99=$(wrk_pct "$WORK/soldout.$r.txt" 99)
    fi
    if [ "${HEALTH[$((r - 1))]}" = "$HEALTH_RPS" ]; then
        H_P50=$(wrk_pct "$WORK/health.$r.txt" 50); H_P99=$(wrk_pct "$WORK/health.$r.txt" 99)
    fi
done
REDIS_NAIVE_CEIL=$(fmt %.0f "$(div 1000000 "$NAIVE_REDIS_US")")
REDIS_BUY_CEIL=$(fmt %.0f "$(div 1000000 "$BUY_REDIS_US")")
# Even a server that cost nothing leaves the client, the kernel and Redis to share the cores.
BUY_CEIL=$(fmt %.0f "$(div "$(( $(nproc) * 1000000 ))" "$(awk -v a="$ZW_MACHINE_US" -v b="$BUY_REDIS_US" 'BEGIN { print a + b }')")")

RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER/status")
RSS_MIB=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""

log "5. one consumer draining the $BUY_200 queued reservations into MariaDB, 5c. and its ceiling"
RUST_LOG=${RUST_LOG:-warn} target/release/examples/bench_consumer --config "$WORK/config.yaml" --json >"$WORK/consumer.json"
DRAINED=$(json_num "$WORK/consumer.json" orders)
ORDERS_RPS=$(fmt %.0f "$(json_num "$WORK/consumer.json" consumer_orders_per_s)")
CEIL_RPS=$(fmt %.0f "$(json_num "$WORK/consumer.json" ceiling_orders_per_s)")
CEIL_PREP=$(fmt %.0f "$(json_num "$WORK/consumer.json" ceiling_prepared_orders_per_s)")
CEIL_TEXT=$(fmt %.0f "$(json_num "$WORK/consumer.json" ceiling_text_orders_per_s)")
R5=$(fmt %.2f "$(json_num "$WORK/consumer.json" consumer_over_ceiling)")
# CPU per order (µs) of the drain, the consumer's own and MySQL's ("-": MySQL is not local).
C_US=$(fmt %.2f "$(json_num "$WORK/consumer.json" consumer_cpu_us_per_order)")
C_MYSQL_US=$(fmt %.2f "$(json_num "$WORK/consumer.json" consumer_mysql_cpu_us_per_order)")
CEIL_MYSQL_US=$(fmt %.2f "$(json_num "$WORK/consumer.json" ceiling_mysql_cpu_us_per_order)")
echo "consumer: $DRAINED orders, $ORDERS_RPS orders/s; ceiling $CEIL_RPS/s; ratio $R5" >&2

log "8. seckill bench --spawn: a whole sale, 1000 units, 100,000 users, 200,000 requests"
set +e
sk bench --spawn --stock 1000 --users 100000 --requests 200000 --concurrency 256 --consumers 1 --json >"$WORK/sale.json"
SALE_EXIT=$?
set -e
[ -s "$WORK/sale.json" ] || echo null >"$WORK/sale.json"
SALE_RPS=$(fmt %.0f "$(json_num "$WORK/sale.json" rps)")
SALE_SELLOUT=$(fmt %.3f "$(json_num "$WORK/sale.json" sellout_s)")
SALE_P99=$(fmt %.2f "$(json_num "$WORK/sale.json" p99)")
SALE_PASSED=$(grep -o '"passed": *[a-z]*' "$WORK/sale.json" | sed 's/.*: *//')
SALE_PASSED=${SALE_PASSED:-no report}

# The goals' ratios are taken within each round, between runs one after the other, and the
# median of the rounds' ratios is reported: a ratio of medians would compare different minutes.
R1=$(median "${R_BUY[@]}")
R2=$(median "${R_SO[@]}")
RF=$(median "${R_FLOOR[@]}")
RP=$(median "${R_PROBE[@]}")
R6=$(div "$REDIS_BUY_CEIL" "$REDIS_NAIVE_CEIL")
R0=$(div "$ZW_RPS" "$NAIVE_RPS")
RC=$(div "$BUY_CEIL" "$NAIVE_RPS")
ok() { awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN { r = (op == ">=") ? (a + 0 >= b + 0) : (a + 0 <= b + 0); print r ? "yes" : "NO" }'; }
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MACHINE="$(nproc) cores, ${CPU:-unknown CPU}, $(uname -sr)"
DATE=$(date -u +%FT%TZ)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

cat >"$OUT/latest.md" <<EOF
Run $DATE on $MACHINE (commit $COMMIT), \`scripts/bench.sh\`: figures 0 to 4b are medians of $ROUNDS rounds taken in turn, wrk ${BENCH_SECS}s each.${RESENT[0]:+
**Rounds that re-sent users past the $BUY_USERS tokens (their buys are too low; raise BUY_USERS):** ${RESENT[*]}.}
Rounds: naive axum ${NAIVE_HTTP[*]}; naive ${NAIVE[*]}; zero-work ${ZW[*]}; /health ${HEALTH[*]}; our load generator on /health ${PROBE[*]}; buys ${BUYS[*]}; sold out ${SOLD[*]};
stack floor (4b) /health ${FLOOR_H[*]}; sold out ${FLOOR_SO[*]};
ratios per round: buys/naive axum ${R_HTTP[*]}; Redis per purchase ours/naive axum ${R_REDIS[*]} (\`INFO cpu\`), ${R_EV[*]} (EVALSHA); purchases per script call ${BATCH[*]}; buys/naive ${R_BUY[*]}; sold out/health ${R_SO[*]}; our load generator/wrk ${R_PROBE[*]}; the stack's floor ${R_FLOOR[*]} (the ratio rows give their medians).

| # | figure | value | p50 / p99 |
|---|---|---|---|
| 0 | a server that does no work (\`bench/zero_work.c\`), \`wrk -t2 -c100\` with the buy script | $ZW_RPS req/s | |
| 1 | naive EVALSHA deduct, \`redis-benchmark -c 50\` | $NAIVE_RPS /s | |
| 2 | \`GET /health\`, \`wrk -t2 -c100\` | $HEALTH_RPS req/s | $H_P50 / $H_P99 ms |
| 2b | \`GET /health\`, \`seckill bench --probe\` (100 connections) | $PROBE_RPS req/s | |
| 3n | the naive axum server (\`examples/naive_server.rs\`), same wrk buy script | $NAIVE_HTTP_RPS /s | |
| 3 | successful buys, fresh users, \`wrk -t2 -c100\` ($BATCH_SIZE purchases per group-commit call) | $BUY_RPS /s | $BUY_P50 / $BUY_P99 ms |
| 4 | sold-out answers, \`wrk -t2 -c100\` | $SO_RPS /s | $SO_P50 / $SO_P99 ms |
| 4b | a bare axum Router served as \`serve\` serves HTTP (\`examples/http_floor.rs\`): \`/health\` / the sold-out request | $FLOOR_H_RPS / $FLOOR_SO_RPS req/s | |
| 5 | one consumer, $DRAINED reservations into MariaDB (CPU per order: consumer $C_US µs, MySQL $C_MYSQL_US µs) | $ORDERS_RPS orders/s | |
| 5c | ceiling: the same rows, bare multi-row INSERTs into a fresh database (best of five shapes; bound as the consumer / text; MySQL $CEIL_MYSQL_US µs per order bound) | $CEIL_RPS (best); $CEIL_PREP / $CEIL_TEXT orders/s | |
| 6 | Redis CPU per purchase: naive deduct / our group commit | $NAIVE_REDIS_US / $BUY_REDIS_US µs | |
| 6b | purchases one Redis core can decide (1 / (6)): naive / ours | $REDIS_NAIVE_CEIL / $REDIS_BUY_CEIL per s | |
| 6c | whole machine's CPU per request: zero-work (0) / \`/health\` (2) / buy (3) | $ZW_MACHINE_US / $HEALTH_MACHINE_US / $BUY_MACHINE µs | |
| 6d | most buys/s here if our server cost nothing: $(nproc) cores / ((0)'s $ZW_MACHINE_US µs + Redis's $BUY_REDIS_US µs) | $BUY_CEIL /s | |
| 7 | peak RSS of \`seckill serve\` (VmHWM) | $RSS_MIB MiB | |
| 8 | \`seckill bench --spawn\` 1000 units / 100k users / 200k requests / 256 conns | $SALE_RPS req/s, sold out in $SALE_SELLOUT s, invariants held: $SALE_PASSED | p99 $SALE_P99 ms |

| ratio | value | goal | met |
|---|---|---|---|
| (3)/(3n) buys vs the naive axum server, median of the rounds | $RH | >= 1.25 | $(ok "$RH" 1.25 ">=") |
| Redis CPU per purchase, (3) / (3n) (\`INFO cpu\`), median of the rounds: $BUY_REDIS_US / $NAIVE_HTTP_REDIS_US µs | $RR | <= 0.33 | $(ok "$RR" 0.33 "<=") |
| the same by \`INFO commandstats\` (EVALSHA usec per purchase / per naive call): $BUY_EV_US / $NAIVE_HTTP_EV_US µs | $RE | <= 0.33 | $(ok "$RE" 0.33 "<=") |
| (3)/(1) buys vs naive deduct, median of the rounds | $R1 | (retired goal 1.5) | |
| (6d)/(1) the most any server could reach here, vs naive | $RC | (bound for the line above) | |
| (0)/(1) a server that does nothing and has no Redis, vs naive | $R0 | | |
| (4)/(2) sold-out vs /health, median of the rounds | $R2 | >= 0.9 | $(ok "$R2" 0.9 ">=") |
| (4b) the same ratio for a bare axum Router doing none of our work | $RF | (for comparison) | |
| (6b) Redis capacity, ours vs naive | $R6 | (none set) | |
| p99 of (3) and (4), ms | $BUY_P99, $SO_P99 | <= 20 | $(ok "$(awk -v a="$BUY_P99" -v b="$SO_P99" 'BEGIN { print (a > b) ? a : b }')" 20 "<=") |
| (5) orders/s | $ORDERS_RPS | >= 50000 | $(ok "$ORDERS_RPS" 50000 ">=") |
| (5)/(5c) one consumer vs its ceiling, same run | $R5 | (how much is left to gain in the consumer) | |
| (7) peak RSS MiB | $RSS_MIB | <= 64 | $(ok "$RSS_MIB" 64 "<=") |
| (2b)/(2) our load generator vs wrk | $RP | >= 1.0 | $(ok "$RP" 1.0 ">=") |
EOF

cat >"$OUT/latest.json" <<EOF
{
  "date": "$DATE",
  "machine": "$MACHINE",
  "commit": "$COMMIT",
  "wrk_secs": $BENCH_SECS,
  "rounds": $ROUNDS,
  "naive_axum_rps": $NAIVE_HTTP_RPS,
  "naive_axum_redis_us_per_purchase": $NAIVE_HTTP_REDIS_US,
  "buys_vs_naive_axum": $RH,
  "redis_us_ours_vs_naive_axum": $RR,
  "evalsha_us_per_purchase": { "ours": $BUY_EV_US, "naive_axum": $NAIVE_HTTP_EV_US, "ratio": $RE },
  "purchases_per_call": $BATCH_SIZE,
  "naive_deduct_rps": $NAIVE_RPS,
  "naive_redis_us_per_purchase": $NAIVE_REDIS_US,
  "buy_redis_us_per_purchase": $BUY_REDIS_US,
  "health_rps": $HEALTH_RPS,
  "zero_work_rps": $ZW_RPS,
  "machine_us_per_request": { "zero_work": $ZW_MACHINE_US, "health": $HEALTH_MACHINE_US, "buy": $BUY_MACHINE },
  "buy_ceiling_free_server_rps": $BUY_CEIL,
  "probe_health_rps": $PROBE_RPS,
  "buy_ok_rps": $BUY_RPS,
  "buy_p50_ms": $BUY_P50,
  "buy_p99_ms": $BUY_P99,
  "sold_out_rps": $SO_RPS,
  "sold_out_p50_ms": $SO_P50,
  "sold_out_p99_ms": $SO_P99,
  "stack_floor_rps": { "health": $FLOOR_H_RPS, "sold_out": $FLOOR_SO_RPS },
  "consumer_orders": $DRAINED,
  "consumer_orders_per_s": $ORDERS_RPS,
  "consumer_ceiling": $(cat "$WORK/consumer.json"),
  "serve_peak_rss_mib": $RSS_MIB,
  "bench_spawn": $(cat "$WORK/sale.json"),
  "ratios": { "buy_over_naive": $R1, "sold_out_over_health": $R2, "stack_floor_sold_out_over_health": $RF, "redis_capacity_over_naive": $R6, "free_server_ceiling_over_naive": $RC, "zero_work_over_naive": $R0, "probe_over_wrk": $RP }
}
EOF

echo
cat "$OUT/latest.md"
echo
echo "bench: written to $OUT/latest.md and $OUT/latest.json"
[ "$SALE_EXIT" -eq 0 ] || { echo "bench: seckill bench --spawn failed (exit $SALE_EXIT)" >&2; exit 1; }

if [ "${BENCH_DURABILITY:-1}" != 0 ]; then
    log "9. what durability costs (scripts/bench/durability.sh, ROUNDS=$ROUNDS)"
    ROUNDS=$ROUNDS bash scripts/bench/durability.sh
fi

if [ "${BENCH_BUCKETS:-1}" != 0 ]; then
    log "10. stock sharding on a three-primary cluster, 1 vs 4 buckets (scripts/bench/buckets.sh, ROUNDS=$ROUNDS)"
    ROUNDS=$ROUNDS bash scripts/bench/buckets.sh
fi
