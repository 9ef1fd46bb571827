#!/usr/bin/env bash
# A local Redis Cluster of three primaries, for trying seckill on a cluster by hand.
#
#   scripts/redis-cluster.sh start [BASE_PORT]   # primaries on BASE_PORT..BASE_PORT+2 (default 7000)
#   scripts/redis-cluster.sh stop  [BASE_PORT]   # stops the three servers this script started
#   scripts/redis-cluster.sh status [BASE_PORT]
#
# Each node runs with --cluster-enabled yes, appendonly yes, appendfsync always (what
# redis.durability: aof_always asks of every primary) and maxmemory-policy noeviction, in its
# own directory under ${SECKILL_CLUSTER_DIR:-/tmp/seckill-cluster}/PORT (AOF, nodes.conf,
# redis.pid, redis.log). Cluster bus ports are PORT+10000. The nodes are joined with
# `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and `start` returns
# once every node says cluster_state:ok. `stop` kills the servers by the PIDs in their
# redis.pid files (only those) and removes their directories. Then:
#
#   SECKILL_REDIS_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002/ seckill doctor
set -euo pipefail

action=${1:-}
base=${2:-7000}
root=${SECKILL_CLUSTER_DIR:-/tmp/seckill-cluster}

usage() {
    echo "usage: $0 start|stop|status [BASE_PORT]   (default BASE_PORT 7000: ports 7000-7002)" >&2
    exit 2
}

case "$base" in
    '' | *[!0-9]*) usage ;;
esac
if [ "$base" -lt 1024 ] || [ "$base" -gt 55530 ]; then
    echo "BASE_PORT must be 1024..55530 (the cluster bus uses PORT+10000)" >&2
    exit 2
fi
ports=("$base" "$((base + 1))" "$((base + 2))")

answers() { redis-cli -p "$1" ping >/dev/null 2>&1; }

start() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
        { echo "redis-server and redis-cli are needed (apt-get install redis-server)" >&2; exit 1; }
    for port in "${ports[@]}"; do
        if answers "$port"; then
            echo "port $port already answers: stop that server or pick another BASE_PORT" >&2
            exit 1
        fi
    done
    for port in "${ports[@]}"; do
        dir="$root/$port"
        mkdir -p "$dir"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --appendonly yes --appendfsync always --save '' --maxmemory-policy noeviction \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 100); do answers "$port" && break; sleep 0.1; done
        answers "$port" || { echo "node $port did not start (see $root/$port/redis.log)" >&2; exit 1; }
    done
    addrs=()
    for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
    if ! redis-cli -p "$base" cluster info | grep -q 'cluster_slots_assigned:16384'; then
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    fi
    for port in "${ports[@]}"; do
        for _ in $(seq 300); do
            redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break
            sleep 0.1
        done
        redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' ||
            { echo "node $port never reached cluster_state:ok" >&2; exit 1; }
    done
    echo "cluster up: redis+cluster://$(IFS=,; echo "${addrs[*]}")/"
}

stop() {
    for port in "${ports[@]}"; do
        pidfile="$root/$port/redis.pid"
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
            echo "stopped node $port (pid $pid)"
        fi
        rm -rf "${root:?}/$port"
    done
    rmdir "$root" 2>/dev/null || true
}

status() {
    for port in "${ports[@]}"; do
        if answers "$port"; then
            echo "$port: $(redis-cli -p "$port" cluster info | grep cluster_state | tr -d '\r')"
        else
            echo "$port: down"
        fi
    done
}

case "$action" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
