#!/usr/bin/env bash
# Runs the whole test suite (library unit tests + the integration tests under tests/)
# against the local Redis and MariaDB prepared by scripts/setup.sh. Exits non-zero on failure.
#
# Each integration test creates its own `seckill_test_<random>` database and drops it when
# it ends; databases left behind by an interrupted run are dropped here first.
# Extra arguments are passed to `cargo test` (e.g. `scripts/test.sh catalog`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# Test databases older than an hour are leftovers of interrupted runs (a running suite's
# are younger, so parallel runs on the same server are left alone).
stale=$(mysql -uroot -h127.0.0.1 -N -B -e "
    SELECT table_schema FROM information_schema.tables
    WHERE table_schema LIKE 'seckill\\_test\\_%'
    GROUP BY table_schema HAVING MIN(create_time) < NOW() - INTERVAL 1 HOUR")
for db in $stale; do
    mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`"
done

exec cargo test --all-targets "$@"
