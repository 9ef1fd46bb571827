#!/usr/bin/env bash
# Writes the buy requests that scripts/bench/buy.lua sends, one file per wrk thread, so that
# wrk's start-up only reads a file. wrk runs each thread's `init` on its main thread before
# starting that thread, while the threads already started send requests and count them; a
# slow `init` (formatting hundreds of thousands of requests in Lua took about 1.7 s per
# thread) hands the first thread a head start that the rate wrk reports includes.
#
#   scripts/bench/buy_requests.sh TOKENS PRODUCT THREADS HOST:PORT OUT
#
# TOKENS is `seckill token ... --out` output (`user,token` per line). Request k (from 0) of
# the file goes to thread k % THREADS, into OUT.<thread>, each request followed by a \001 byte.
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 TOKENS PRODUCT THREADS HOST:PORT OUT" >&2; exit 2; }
tokens=$1 product=$2 threads=$3 host=$4 out=$5
for t in $(seq 0 $((threads - 1))); do : >"$out.$t"; done
awk -v product="$product" -v threads="$threads" -v host="$host" -v out="$out" '
    {
        comma = index($0, ",")
        body = sprintf("{\"product_id\":%s,\"user_id\":\"%s\",\"quantity\":1,\"token\":\"%s\"}",
            product, substr($0, 1, comma - 1), substr($0, comma + 1))
        printf "POST /api/v1/buy HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s\001",
            host, length(body), body > (out "." ((NR - 1) % threads))
    }' "$tokens"
