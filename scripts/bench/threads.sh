#!/usr/bin/env bash
# Choosing the default `http.threads` (issue 20): successful buys per second of `seckill serve`
# run with each of THREAD_COUNTS HTTP threads (default "0 1 2"; 0 = none of its own: the
# runtime's workers serve HTTP, the default), against
# examples/naive_server.rs, all driven by the same wrk buy script (scripts/bench/buy.lua, which
# builds each request: a fresh user with a valid token), in alternated rounds (naive, then
# each thread count), ROUNDS (5) rounds of BENCH_SECS (6) s each. Per round and server: buys/s,
# the ratio to the naive server of the same round, p99, purchases per group-commit call, and
# Redis CPU per purchase (`INFO cpu`, server-wide: other clients of the same Redis count too).
# Prints the medians at the end. An entry `T+NAME` of THREAD_COUNTS is a variant of its own:
# T threads, with FUNNEL_NAME's line(s) added under `funnel:`, ENV_NAME's NAME=value
# words in serve's environment and BIN_NAME's binary instead of this tree's seckill (e.g. a
# copy of an older build, to compare two versions), e.g. THREAD_COUNTS="1 1+big"
# FUNNEL_big="batch_max: 256", or THREAD_COUNTS="1 1+old" BIN_old=/tmp/seckill.old.
# Per round each server's own CPU (utime+stime of the process) and context switches (voluntary
# and involuntary, summed over its threads) are divided by the answers wrk got: the per-request
# cost of the server, which the shared machine's noise moves less than its throughput. So is
# wrk's own CPU (the client is the same for every server, but what it costs per answer need
# not be), the hard and soft interrupt time per answer (the loopback's packet work, which the
# kernel charges to no process), and the share of the machine left idle during the run: together with the Redis
# figure they say what bounds the ratio on this machine (a server whose answers cost the whole
# machine less is faster only while the machine is kept busy).
# NUMERIC_IDS_BELOW (16777216) is `redis.numeric_user_ids_below`: the numbered buyers' totals
# live in the products' totals arrays (0: in the bought hashes, a fresh config's default).
# CONNECTIONS (100) is wrk's -c. BUY_USERS (1000000) tokens are issued: a round sends each
# server fresh users only while it makes fewer requests than that (a round that re-sends users,
# who are answered limit_exceeded, is flagged with a warning: its figures are too low).
# REDIS_CPU=N (percent of one core, e.g. 10) runs the sale on a redis-server of its own, held to
# N % of a core by a cgroup's CPU quota (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`; needs
# root): Redis is then the bottleneck, as it is for one hot product behind many `serve`
# instances, and buys/s measure each design's ceiling on one Redis core (1 / Redis CPU per
# purchase), which the 2-core box cannot reach otherwise. The quota is enforced every 10 ms, so
# a call it cuts short resumes with caches the others have cooled: expect Redis's CPU per
# purchase to come out higher than unthrottled, the more so the longer the calls.
# Own database and key prefix (BENCH_DB=seckill_threads, BENCH_PREFIX=bthreads), servers on
# BENCH_PORT (18180) and up; everything is removed afterwards, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH_DB=${BENCH_DB:-seckill_threads}
BENCH_PREFIX=${BENCH_PREFIX:-bthreads}
BENCH_PORT=${BENCH_PORT:-18180}
BENCH_SECS=${BENCH_SECS:-6}
ROUNDS=${ROUNDS:-5}
THREAD_COUNTS=${THREAD_COUNTS:-"0 1 2"}
REDIS_CPU=${REDIS_CPU:-}
CONNECTIONS=${CONNECTIONS:-100}
NUMERIC_IDS_BELOW=${NUMERIC_IDS_BELOW:-16777216}
case "$BENCH_DB" in *bench* | *threads*) ;; *) echo "threads: refusing database '$BENCH_DB'" >&2; exit 1 ;; esac
. scripts/urls.sh
cargo build --release --quiet --bin seckill --example naive_server
S=$PWD/target/release/seckill
WORK=$(mktemp -d)
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
unset SECKILL_DATABASE_URL SECKILL_KEY_PREFIX SECKILL_HTTP_BIND SECKILL_REDIS_URL SECKILL_TOKEN_SECRET \
    SECKILL_REDIS_DURABILITY SECKILL_HTTP_THREADS
# Config for thread count $1 on port $2; funnel lines $3 (a variant's, see THREAD_COUNTS).
config() {
    cat <<CFG
database:
  url: $DB_SERVER_URL/$BENCH_DB
redis:
  url: $REDIS_URL
  key_prefix: $BENCH_PREFIX
  durability: none
  numeric_user_ids_below: $NUMERIC_IDS_BELOW
http:
  bind: 127.0.0.1:$2
  threads: $1
token:
  secret: $SECRET
funnel:
  global_rps: 0
  per_user_rps: 0
${3:+  $3}
CFG
}
sk() { RUST_LOG=warn "$S" --config "$WORK/config.yaml" "$@"; }
unlink_keys() {
    redis_cli --scan --pattern "$1" | while mapfile -t -n 1000 batch && [ ${#batch[@]} -gt 0 ]; do
        redis_cli unlink "${batch[@]}" </dev/null >/dev/null
    done
}
PIDS=()
CGROUP=""
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    [ -n "$REDIS_CPU" ] || unlink_keys "$BENCH_PREFIX:*"
    if [ -n "${REDIS_PID:-}" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    [ -z "$CGROUP" ] || rmdir "$CGROUP" 2>/dev/null || true
    db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# Redis of its own, held to REDIS_CPU % of one core (see the header).
if [ -n "$REDIS_CPU" ]; then
    case "$REDIS_CPU" in *[!0-9]* | 0 | 0?*) echo "threads: REDIS_CPU must be a whole percent (1-100)" >&2; exit 2 ;; esac
    [ "$REDIS_CPU" -le 100 ] || { echo "threads: REDIS_CPU must be at most 100" >&2; exit 2; }
    OWN_REDIS_PORT=$((BENCH_PORT + 90))
    mkdir -p "$WORK/redis"
    redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly no \
        --daemonize no --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!
    # A 10 ms period keeps the throttled Redis's pauses short (the default is 100 ms).
    period=10000; quota=$((period * REDIS_CPU / 100))
    if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        CGROUP=/sys/fs/cgroup/seckill-threads-$$
        mkdir "$CGROUP" && echo "$quota $period" >"$CGROUP/cpu.max" && echo "$REDIS_PID" >"$CGROUP/cgroup.procs"
    elif [ -w /sys/fs/cgroup/cpu ]; then
        CGROUP=/sys/fs/cgroup/cpu/seckill-threads-$$
        mkdir "$CGROUP" && echo "$period" >"$CGROUP/cpu.cfs_period_us" && echo "$quota" >"$CGROUP/cpu.cfs_quota_us" \
            && echo "$REDIS_PID" >"$CGROUP/tasks"
    else
        echo "threads: REDIS_CPU needs a writable cgroup cpu controller (root)" >&2; exit 2
    fi
    for _ in $(seq 100); do redis-cli -p "$OWN_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    REDIS_URL=redis://127.0.0.1:$OWN_REDIS_PORT
    redis_cli() { redis-cli -p "$OWN_REDIS_PORT" "$@"; }
    echo "threads: Redis of its own on port $OWN_REDIS_PORT, held to $REDIS_CPU % of one core" >&2
fi
config 0 "$BENCH_PORT" >"$WORK/config.yaml"
unlink_keys "$BENCH_PREFIX:*"
db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"
sk migrate >/dev/null
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { for _ in $(seq 100); do listening "$1" && return 0; sleep 0.1; done; echo "threads: nothing on port $1" >&2; exit 1; }
redis_cpu_us() {
    redis_cli info cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { printf "%.0f", s * 1e6 }'
}
# Buy answers with code ok so far at the server on port $1 (its own counter).
oks() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '
        /^seckill_requests_total\{/ && index($0, "route=\"/api/v1/buy\"") && index($0, "code=\"ok\"") { n += $NF }
        END { printf "%d", n }'
}
# "count sum" of the server on port $1's group-commit batch sizes so far.
batches() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '
        /^seckill_group_commit_batch_size_count/ { c += $NF } /^seckill_group_commit_batch_size_sum/ { s += $NF }
        END { printf "%d %d", c, s }'
}
# "cpu_us switches" of process $1 so far: utime+stime in µs, context switches of its threads.
proc_cost() {
    local ticks switches
    ticks=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
    switches=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }')
    echo "$(( ticks * 1000000 / $(getconf CLK_TCK) )) $switches"
}
# "µs per answer, switches per answer" from two proc_cost readings ($1, $2) and the answers $3.
per_answer() {
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { split(a, x, " "); split(b, y, " "); if (n + 0 == 0) n = 1
        printf "%.2f %.3f", (y[1] - x[1]) / n, (y[2] - x[2]) / n }'
}
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) ; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }
p99() { to_ms "$(awk '$1 == "99%" { print $2; exit }' "$1")"; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
total() { awk '/requests in/ { print $1 }' "$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "0"; else printf "%.2f", a / b }'; }

# One product per round and server: every request a fresh user, stock never running out.
# Every round sends fresh users only while the file holds more requests than a round can make.
USERS=${BUY_USERS:-1000000}
start=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ); end=$(date -u -d '+2 hour' +%Y-%m-%dT%H:%M:%SZ)
A=$(sk activity create --name "threads.sh $(date -u +%FT%TZ)" --start "$start" --end "$end")
declare -A PRODUCT
for r in $(seq "$ROUNDS"); do
    for t in $THREAD_COUNTS; do
        PRODUCT[$r.$t]=$(sk product add --activity "$A" --name "p $r $t" --price 1 --stock 5000000 --limit-per-user 1)
    done
done
sleep 0.05
sk hot "$A" >/dev/null
sk token "$A" --range "1-$USERS" --out "$WORK/tokens.csv" >&2
sk start "$A" >/dev/null
port=$BENCH_PORT
declare -A PORT SERVE_PID
for t in $THREAD_COUNTS; do
    port=$((port + 1)); PORT[$t]=$port
    variant=${t#*+}; [ "$variant" = "$t" ] && variant=""
    funnel_var="FUNNEL_$variant"; env_var="ENV_$variant"; bin_var="BIN_$variant"
    config "${t%%+*}" "$port" "${variant:+${!funnel_var:-}}" >"$WORK/config.$t.yaml"
    bin=$S; [ -n "$variant" ] && [ -n "${!bin_var:-}" ] && bin=${!bin_var}
    [ -x "$bin" ] || { echo "threads: $bin is not an executable" >&2; exit 2; }
    # shellcheck disable=SC2086 # ENV_<variant> is a list of NAME=value words
    env ${variant:+${!env_var:-}} RUST_LOG=warn "$bin" --config "$WORK/config.$t.yaml" serve >"$WORK/serve.$t.log" 2>&1 &
    PIDS+=($!); SERVE_PID[$t]=$!
    wait_for "$port"
done
NAIVE_PORT=$((port + 1))
REDIS_URL="$REDIS_URL" KEY_PREFIX="$BENCH_PREFIX:naive" target/release/examples/naive_server "127.0.0.1:$NAIVE_PORT" 2>"$WORK/naive.log" &
PIDS+=($!); NAIVE_PID=$!
wait_for "$NAIVE_PORT"
# wrk's own CPU (user + system seconds) goes into $3.cpu, the machine's idle and total
# jiffies over the run into $3.idle.
wrk_buys() {
    scripts/bench/buy_requests.sh "$WORK/tokens.csv" "$2" 2 "${1#http://}" "$WORK/requests"
    local idle0
    idle0=$(machine_idle)
    REQUESTS="$WORK/requests" /usr/bin/time -f "%U %S" -o "$3.cpu" \
        wrk -t2 -c"$CONNECTIONS" -d"${BENCH_SECS}s" --latency -s scripts/bench/buy.lua "$1" >"$3"
    echo "$idle0 $(machine_idle)" >"$3.idle"
    local sent
    sent=$(total "$3")
    if [ "${sent:-0}" -gt "$USERS" ]; then
        echo "threads: WARNING: $sent requests to $1 re-sent users past the $USERS tokens (answered limit_exceeded): this round's figures are too low; raise BUY_USERS" >&2
    fi
}
# "idle total interrupts" jiffies of the whole machine so far (idle and iowait; all states;
# hard and soft interrupts, which the kernel accounts to no process: the loopback's packet
# processing is mostly softirq).
machine_idle() { awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $7 + $8 }' /proc/stat; }
# "wrk µs per answer, idle share of the machine, interrupt µs per answer" of the run whose wrk
# output is $1 (jiffies are 1/USER_HZ s).
machine() {
    awk -v n="$(total "$1")" -v hz="$(getconf CLK_TCK)" '
        FILENAME ~ /cpu$/ { cpu = $1 + $2 }
        FILENAME ~ /idle$/ { idle = $4 - $1; all = $5 - $2; irq = $6 - $3 }
        END { if (n + 0 == 0) n = 1; if (all + 0 == 0) all = 1
              printf "%.2f %.2f %.2f", cpu * 1e6 / n, idle / all, irq * 1e6 / hz / n }' "$1.cpu" "$1.idle"
}

declare -A RATIO US P99 BATCH CPU_RATIO SERVE_US SWITCHES WRK_US IDLE IRQ
NAIVE=(); NAIVE_US=(); NAIVE_SW=(); NAIVE_WRK=(); NAIVE_IDLE=(); NAIVE_IRQ=()
for r in $(seq "$ROUNDS"); do
    redis_cli set "$BENCH_PREFIX:naive:stock:1" 100000000 >/dev/null
    c0=$(redis_cpu_us); p0=$(proc_cost "$NAIVE_PID")
    wrk_buys "http://127.0.0.1:$NAIVE_PORT" 1 "$WORK/naive.$r.txt"
    c1=$(redis_cpu_us); p1=$(proc_cost "$NAIVE_PID")
    unlink_keys "$BENCH_PREFIX:naive:*"
    n=$(rps "$WORK/naive.$r.txt"); NAIVE+=("$n"); naive_us=$(div $((c1 - c0)) "$(total "$WORK/naive.$r.txt")")
    read -r own sw <<<"$(per_answer "$p0" "$p1" "$(total "$WORK/naive.$r.txt")")"; NAIVE_US+=("$own"); NAIVE_SW+=("$sw")
    read -r wrk_us idle irq <<<"$(machine "$WORK/naive.$r.txt")"; NAIVE_WRK+=("$wrk_us"); NAIVE_IDLE+=("$idle"); NAIVE_IRQ+=("$irq")
    line="round $r: naive $(printf %.0f "$n")/s (redis $(div $((c1 - c0)) "$(total "$WORK/naive.$r.txt")") us, p99 $(p99 "$WORK/naive.$r.txt") ms, own $own us and $sw switches per answer, wrk $wrk_us us and interrupts $irq us per answer, machine $idle idle)"
    for t in $THREAD_COUNTS; do
        before=$(oks "${PORT[$t]}"); read -r bc0 bs0 <<<"$(batches "${PORT[$t]}")"; c0=$(redis_cpu_us)
        p0=$(proc_cost "${SERVE_PID[$t]}")
        wrk_buys "http://127.0.0.1:${PORT[$t]}" "${PRODUCT[$r.$t]}" "$WORK/ours.$r.$t.txt"
        p1=$(proc_cost "${SERVE_PID[$t]}"); c1=$(redis_cpu_us); read -r bc1 bs1 <<<"$(batches "${PORT[$t]}")"
        BATCH[$r.$t]=$(div $((bs1 - bs0)) $((bc1 - bc0)))
        ok=$(( $(oks "${PORT[$t]}") - before )); tot=$(total "$WORK/ours.$r.$t.txt"); [ "$ok" -le "$tot" ] || ok=$tot
        b=$(awk -v r="$(rps "$WORK/ours.$r.$t.txt")" -v ok="$ok" -v n="$tot" 'BEGIN { printf "%.0f", r * ok / n }')
        RATIO[$r.$t]=$(div "$b" "$n"); US[$r.$t]=$(div $((c1 - c0)) "$ok"); P99[$r.$t]=$(p99 "$WORK/ours.$r.$t.txt")
        CPU_RATIO[$r.$t]=$(div "${US[$r.$t]}" "$naive_us")
        read -r SERVE_US[$r.$t] SWITCHES[$r.$t] <<<"$(per_answer "$p0" "$p1" "$tot")"
        read -r WRK_US[$r.$t] IDLE[$r.$t] IRQ[$r.$t] <<<"$(machine "$WORK/ours.$r.$t.txt")"
        line+="; threads $t: $b/s = ${RATIO[$r.$t]} x naive (redis ${US[$r.$t]} us, p99 ${P99[$r.$t]} ms, ${BATCH[$r.$t]} per call, own ${SERVE_US[$r.$t]} us and ${SWITCHES[$r.$t]} switches per answer, wrk ${WRK_US[$r.$t]} us and interrupts ${IRQ[$r.$t]} us per answer, machine ${IDLE[$r.$t]} idle)"
    done
    echo "$line"
done
echo
echo "$ROUNDS rounds of ${BENCH_SECS}s, $(nproc) cores, $(uptime | sed 's/.*load average/load average/'):"
echo "naive: median $(printf %.0f "$(median "${NAIVE[@]}")")/s (rounds ${NAIVE[*]}); own CPU per answer median $(median "${NAIVE_US[@]}") us (rounds ${NAIVE_US[*]}); switches per answer median $(median "${NAIVE_SW[@]}") (rounds ${NAIVE_SW[*]}); wrk CPU per answer median $(median "${NAIVE_WRK[@]}") us; interrupts per answer median $(median "${NAIVE_IRQ[@]}") us (rounds ${NAIVE_IRQ[*]}); machine idle median $(median "${NAIVE_IDLE[@]}") (rounds ${NAIVE_IDLE[*]})"
for t in $THREAD_COUNTS; do
    rs=(); us=(); ps=(); bs=(); cs=(); ss=(); ws=(); wk=(); id=(); iq=()
    for r in $(seq "$ROUNDS"); do
        rs+=("${RATIO[$r.$t]}"); us+=("${US[$r.$t]}"); ps+=("${P99[$r.$t]}"); bs+=("${BATCH[$r.$t]}"); cs+=("${CPU_RATIO[$r.$t]}")
        ss+=("${SERVE_US[$r.$t]}"); ws+=("${SWITCHES[$r.$t]}"); wk+=("${WRK_US[$r.$t]}"); id+=("${IDLE[$r.$t]}"); iq+=("${IRQ[$r.$t]}")
    done
    echo "threads $t: ratio to naive median $(median "${rs[@]}") (rounds ${rs[*]}); redis us per purchase median $(median "${us[@]}"); p99 median $(median "${ps[@]}") ms; purchases per call median $(median "${bs[@]}"); Redis CPU per purchase / naive's per call median $(median "${cs[@]}") (rounds ${cs[*]}); own CPU per answer median $(median "${ss[@]}") us (rounds ${ss[*]}); switches per answer median $(median "${ws[@]}") (rounds ${ws[*]}); wrk CPU per answer median $(median "${wk[@]}") us; interrupts per answer median $(median "${iq[@]}") us (rounds ${iq[*]}); machine idle median $(median "${id[@]}") (rounds ${id[*]})"
done
