#!/usr/bin/env bash
# Redis's instructions per purchase (callgrind: deterministic, so it compares script versions
# on a noisy shared machine where CPU time cannot), the naive deduct script's per call first:
#   scripts/bench/script_instr.sh [LAYOUT:SCRIPT ...]   (default current:lua/reserve.lua)
# LAYOUT is current, numeric, plainnum, counts, blacklist, two, bucket or token (see script_instr.py). Each figure is the marginal cost between
# a run of N1 (2000) and one of N2 (6000) purchases, each on a fresh redis-server of its own
# (keeping nothing on disk, hz 1): that leaves out what does not grow with the purchases
# (the first calls, a bought hash's first 512 fields kept as a listpack). BATCH (30).
# Needs valgrind (callgrind_control) and python3; stops its servers by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${N1:-2000} N2=${N2:-6000} BATCH=${BATCH:-30}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Instructions Redis spent on N purchases of layout $1, script $2.
instructions() {
    local port dir vpid total
    port=$(free_port); dir=$(mktemp -d)
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" redis-server --port "$port" \
        --bind 127.0.0.1 --save '' --appendonly no --hz 1 --dynamic-hz no --dir "$dir" >"$dir/vg.log" 2>&1 &
    vpid=$!
    for _ in $(seq 150); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
    python3 scripts/bench/script_instr.py "$port" "$1" "$2" "$3" "$BATCH" "$vpid"
    total=$(grep -h '^summary:\|^totals:' "$dir"/cg.out.* | head -1 | awk '{ print $2 }')
    kill "$vpid"; wait "$vpid" 2>/dev/null || true
    rm -rf "$dir"
    echo "$total"
}
marginal() {
    local a b
    a=$(instructions "$1" "$2" "$N1"); b=$(instructions "$1" "$2" "$N2")
    echo $(( (b - a) / (N2 - N1) ))
}
naive=$(marginal naive scripts/bench/naive_deduct.lua)
echo "naive deduct, per call: $naive instructions"
for spec in "${@:-current:lua/reserve.lua}"; do
    per=$(marginal "${spec%%:*}" "${spec#*:}")
    echo "$spec, batch $BATCH, per purchase: $per instructions; naive/this $(awk -v a="$naive" -v b="$per" 'BEGIN { printf "%.2f", a / b }')"
done
