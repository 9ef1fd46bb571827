#!/usr/bin/env bash
# Stock sharding on a Redis Cluster: one hot product with 1 bucket vs 4 buckets, the same whole
# sale (`seckill bench --url` against a `seckill serve` started here: HTTP buys through the
# funnel, one consumer) on a local cluster of three primaries (scripts/redis-cluster.sh, on spare ports, stopped at the end). For each run:
# buys/s, and each primary's Redis CPU time (INFO CPU used_cpu_user + used_cpu_sys, read before
# and after) per purchase and as a share of the three nodes' total. The point: with 1 bucket
# one primary does the product's work; with 4 buckets it is spread over the primaries (each
# purchase decided in its buyer's bucket, see README "Stock sharding"). Each run also prints
# which primary holds the activity's slot and each bucket's.
# Rounds alternate the two set-ups; each figure is the median of its rounds.
#
#   ROUNDS (3), REQUESTS (50000 purchases per run, stock for every one), USERS (1000 buyers,
#   each may hold REQUESTS/USERS units, so issuing tokens stays a small part of the run),
#   CONCURRENCY (100), SHARD_COUNTS ("1 4": the bucket counts compared), BASE_PORT (a free one from 21000). The nodes run without persistence
#   (CONFIG SET appendonly no; redis.durability: none): the figure is the scripts' CPU, not the
#   disk's. MySQL: the server the application's URL names, in a database of its own.
#   BIN (the binary to run; default target/release/seckill, built here so it is never stale). Writes target/bench/buckets.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-50000}
USERS=${USERS:-1000}
CONCURRENCY=${CONCURRENCY:-100}
SHARD_COUNTS=${SHARD_COUNTS:-1 4}

bash scripts/setup.sh
. scripts/urls.sh
export PATH="$HOME/.cargo/bin:$PATH"
S=${BIN:-$PWD/target/release/seckill}
[ -n "${BIN:-}" ] || cargo build --release --quiet --bin seckill

free() { python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1))==0)"; }
if [ -z "${BASE_PORT:-}" ]; then
    for p in $(seq 21000 7 29000); do
        if free "$p" && free $((p + 1)) && free $((p + 2)) && free $((p + 10000)) && free $((p + 10001)) && free $((p + 10002)); then
            BASE_PORT=$p
            break
        fi
    done
fi
WORK=$(mktemp -d /var/tmp/seckill-bench-buckets.XXXXXX)
export SECKILL_CLUSTER_DIR=$WORK/cluster
SERVE_PID=
cleanup() {
    [ -z "$SERVE_PID" ] || kill "$SERVE_PID" 2>/dev/null || true
    bash scripts/redis-cluster.sh stop "$BASE_PORT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
bash scripts/redis-cluster.sh start "$BASE_PORT" >/dev/null
PORTS=("$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)))
for port in "${PORTS[@]}"; do redis-cli -p "$port" config set appendonly no >/dev/null; done

BENCH_DB=seckill_bench_buckets
BENCH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$WORK/config.yaml" <<EOF
database:
  url: $DB_SERVER_URL/$BENCH_DB
redis:
  url: redis+cluster://127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}/
  key_prefix: bench_buckets
  durability: none
token:
  secret: $BENCH_SECRET
funnel:
  global_rps: 0
  per_user_rps: 0
  max_in_flight: $((CONCURRENCY * 4))
EOF
unset SECKILL_DATABASE_URL SECKILL_REDIS_URL SECKILL_KEY_PREFIX SECKILL_REDIS_DURABILITY SECKILL_TOKEN_SECRET
RUST_LOG=warn "$S" --config "$WORK/config.yaml" migrate >/dev/null
# One `serve` for every run, as in production: each bench run creates its own activity.
SERVE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$S" --config "$WORK/config.yaml" serve --bind "127.0.0.1:$SERVE_PORT" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$SERVE_PORT/health" >/dev/null && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$SERVE_PORT/health" >/dev/null || { cat "$WORK/serve.log"; exit 1; }

cpu() { # port -> Redis CPU seconds so far
    redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {t += $2} END {printf "%.6f", t}'
}
LIMIT=$(( (REQUESTS + USERS - 1) / USERS ))
for round in $(seq "$ROUNDS"); do
    for shards in $SHARD_COUNTS; do
        before=()
        for port in "${PORTS[@]}"; do
            redis-cli -p "$port" config resetstat >/dev/null
            before+=("$(cpu "$port")")
        done
        RUST_LOG=warn "$S" --config "$WORK/config.yaml" bench --url "http://127.0.0.1:$SERVE_PORT" --json --consumers 1 --shards "$shards" \
            --stock "$REQUESTS" --users "$USERS" --limit-per-user "$LIMIT" --requests "$REQUESTS" \
            --concurrency "$CONCURRENCY" >"$WORK/$shards.$round.json"
        after=()
        for port in "${PORTS[@]}"; do after+=("$(cpu "$port")"); done
        python3 - "$WORK/$shards.$round.json" "${before[*]}" "${after[*]}" "${PORTS[*]}" <<'PY'
import json, sys
path, before, after, ports = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
import subprocess
r = json.load(open(path))
r["node_cpu_s"] = {p: float(a) - float(b) for p, b, a in zip(ports, before, after)}
# Where the activity's slot and each bucket's slot live: which primary does which work.
ranges = []
for line in subprocess.run(["redis-cli", "-p", ports[0], "cluster", "nodes"], capture_output=True, text=True).stdout.splitlines():
    f = line.split()
    if "master" not in f[2]:
        continue
    port = f[1].split("@")[0].rsplit(":", 1)[1]
    for part in f[8:]:
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            ranges.append((int(lo), int(hi or lo), port))
def port_of(key):
    slot = int(subprocess.run(["redis-cli", "-p", ports[0], "cluster", "keyslot", key], capture_output=True, text=True).stdout)
    return next(p for lo, hi, p in ranges if lo <= slot <= hi)
a, shards = r["activity_id"], int(path.rsplit("/", 1)[1].split(".")[0])
r["activity_port"] = port_of(f"bench_buckets:{{a:{a}}}:activity")
r["bucket_ports"] = [port_of(f"bench_buckets:{{a:{a}:b:{k}}}:orders") for k in range(shards)] if shards > 1 else []
# Which commands the Redis CPU went to (INFO commandstats, reset before the run), summed over
# the primaries: µs per purchase, the largest first.
stats = {}
for p in ports:
    for line in subprocess.run(["redis-cli", "-p", p, "info", "commandstats"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            kv = dict(x.split("=") for x in fields.strip().split(","))
            calls, usec = stats.get(name[8:], (0, 0.0))
            stats[name[8:]] = (calls + int(kv["calls"]), usec + float(kv["usec"]))
r["commandstats"] = stats
json.dump(r, open(path, "w"))
q = r["outcomes"].get("queued", 0)
top = sorted(stats.items(), key=lambda kv: -kv[1][1])[:6]
print("    commands, µs per purchase (calls): " + ", ".join(f"{n} {u / max(q, 1):.2f} ({c})" for n, (c, u) in top))
cpu = ", ".join(f"{p}: {s:.2f}s" for p, s in r["node_cpu_s"].items())
where = f"activity on {r['activity_port']}" + (f", buckets on {' '.join(r['bucket_ports'])}" if r["bucket_ports"] else "")
print(f"{path.rsplit('/', 1)[1]}: {r['rps']:.0f} req/s, queued {q}, passed {r['passed']}, Redis CPU {cpu}; {where}")
PY
    done
done
db_cli -e "DROP DATABASE IF EXISTS \`$BENCH_DB\`"

mkdir -p target/bench
python3 - "$WORK" "$ROUNDS" >target/bench/buckets.md <<'PY'
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
print("| buckets | buys/s (median) | Redis CPU µs per purchase, each primary (median) | each primary's share of the Redis CPU (median) | rounds (buys/s) |")
print("|---|---|---|---|---|")
for shards in sorted({int(f.split(".")[0]) for f in os.listdir(work) if f.endswith(".json")}):
    runs = [json.load(open(f"{work}/{shards}.{r}.json")) for r in range(1, rounds + 1)]
    rps = [r["rps"] for r in runs]
    # Each run's nodes sorted from the busiest, then the median per rank: which port holds the
    # activity (and which buckets) differs between runs, so a per-port median would mix them.
    def ranked(r, value):
        return sorted((value(r, c) for c in r["node_cpu_s"].values()), reverse=True)
    per_run = [ranked(r, lambda r, c: c * 1e6 / max(r["outcomes"].get("queued", 0), 1)) for r in runs]
    share_run = [ranked(r, lambda r, c: c / max(sum(r["node_cpu_s"].values()), 1e-9)) for r in runs]
    per = [statistics.median(v) for v in zip(*per_run)]
    share = [statistics.median(v) for v in zip(*share_run)]
    per_s = " / ".join(f"{v:.1f}" for v in per)
    share_s = " / ".join(f"{v:.0%}" for v in share)
    print(f"| {shards} | {statistics.median(rps):.0f} | {per_s} | {share_s} | {', '.join(f'{x:.0f}' for x in rps)} |")
PY
cat target/bench/buckets.md
