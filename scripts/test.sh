#!/usr/bin/env bash
# Runs the whole test suite (library unit tests + the integration tests under tests/)
# against the Redis and MariaDB prepared by scripts/setup.sh. Exits non-zero on failure.
#
# Servers: SECKILL_TEST_MYSQL_URL (no database part) and SECKILL_TEST_REDIS_URL when set, else
# the application's own (SECKILL_DATABASE_URL's server and SECKILL_REDIS_URL, else config.yaml's).
#
# Each integration test creates its own `seckill_test_<random>` database and drops it when
# it ends; databases left behind by an interrupted run are dropped here first.
# Extra arguments are passed to `cargo test` (e.g. `scripts/test.sh catalog`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SECKILL_TEST_MYSQL_URL:-}" ]; then SECKILL_DATABASE_URL=${SECKILL_TEST_MYSQL_URL%/}/seckill_test; fi
if [ -n "${SECKILL_TEST_REDIS_URL:-}" ]; then SECKILL_REDIS_URL=$SECKILL_TEST_REDIS_URL; fi
. scripts/urls.sh
export SECKILL_TEST_MYSQL_URL=$DB_SERVER_URL SECKILL_TEST_REDIS_URL=$REDIS_URL

# --with-nginx: tests/api/nginx.rs puts an nginx of its own in front of two `serve`;
# --with-browser: tests/api/browser.rs drives headless Chromium through chromedriver.
SECKILL_DATABASE_URL=$DB_URL SECKILL_REDIS_URL=$REDIS_URL bash scripts/setup.sh --with-nginx --with-browser
export PATH="$HOME/.cargo/bin:$PATH"

# Test databases older than an hour are leftovers of interrupted runs (a running suite's
# are younger, so parallel runs on the same server are left alone).
stale=$(db_cli -N -B -e "
    SELECT table_schema FROM information_schema.tables
    WHERE table_schema LIKE 'seckill\\_test\\_%'
    GROUP BY table_schema HAVING MIN(create_time) < NOW() - INTERVAL 1 HOUR")
for db in $stale; do
    db_cli -e "DROP DATABASE IF EXISTS \`$db\`"
done

exec cargo test --all-targets "$@"
