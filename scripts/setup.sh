#!/usr/bin/env bash
# Prepares a machine to build, test and demo seckill: Redis and MariaDB on 127.0.0.1,
# root@127.0.0.1 with an empty password over TCP, and a Rust toolchain.
#
# Idempotent. Where Redis and MariaDB already answer it only checks them and changes
# nothing. On a bare Debian/Ubuntu machine it installs redis-server and mariadb-server
# with apt-get and starts them as plain background processes (no systemd, no docker).
#
# Environment (all optional):
#   REDIS_PORT      (6379)                   port Redis answers on
#   MYSQL_PORT      (3306)                   port MariaDB answers on
#   MYSQL_DATADIR   (/var/lib/mysql)         datadir used when MariaDB has to be started
#   MYSQL_SOCKET    (/run/mysqld/mysqld.sock) its unix socket
#   SETUP_WAIT_SECS (60)                     how long to wait for a started server
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
MYSQL_PORT=${MYSQL_PORT:-3306}
MYSQL_DATADIR=${MYSQL_DATADIR:-/var/lib/mysql}
MYSQL_SOCKET=${MYSQL_SOCKET:-/run/mysqld/mysqld.sock}
SETUP_WAIT_SECS=${SETUP_WAIT_SECS:-60}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root (directly, or through sudo when available).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
# Installs Debian packages, running apt-get update once first.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Retries "$@" once a second for SETUP_WAIT_SECS seconds; fails with the last attempt's status.
wait_for() {
    local what=$1
    shift
    local i
    for ((i = 0; i < SETUP_WAIT_SECS; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    die "$what did not answer within ${SETUP_WAIT_SECS}s"
}

# ---------------------------------------------------------------- Redis

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        # No client: speak RESP over bash's /dev/tcp.
        local reply
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || reply=
        exec 3>&- 3<&-
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

setup_redis() {
    if redis_ping; then
        log "redis on 127.0.0.1:$REDIS_PORT answers"
        return
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    # A package install may have started it already.
    if ! redis_ping; then
        log "starting redis-server on 127.0.0.1:$REDIS_PORT"
        as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
            --save "" --appendonly no --logfile "/tmp/seckill-redis-$REDIS_PORT.log" \
            --pidfile "/tmp/seckill-redis-$REDIS_PORT.pid"
    fi
    wait_for "redis on 127.0.0.1:$REDIS_PORT" redis_ping
    log "redis on 127.0.0.1:$REDIS_PORT answers"
}

# ---------------------------------------------------------------- MariaDB

mysql_tcp() {
    mysql --connect-timeout=3 -uroot -h127.0.0.1 -P"$MYSQL_PORT" "$@"
}

mysql_tcp_ok() {
    mysql_tcp -e 'select 1' >/dev/null 2>&1
}

# Root over the unix socket (Debian's root@localhost authenticates via unix_socket).
mysql_socket() {
    as_root mysql --connect-timeout=3 -uroot --protocol=socket -S "$MYSQL_SOCKET" "$@"
}

mariadbd_path() {
    local candidate
    for candidate in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

start_mariadb() {
    local daemon
    daemon=$(mariadbd_path) || die "mariadbd not found after installing mariadb-server"
    as_root mkdir -p "$(dirname "$MYSQL_SOCKET")" "$MYSQL_DATADIR"
    as_root chown mysql:mysql "$(dirname "$MYSQL_SOCKET")" "$MYSQL_DATADIR"
    if [ ! -d "$MYSQL_DATADIR/mysql" ]; then
        local installer
        installer=$(command -v mariadb-install-db || command -v mysql_install_db) ||
            die "mariadb-install-db not found"
        log "initialising the MariaDB datadir $MYSQL_DATADIR"
        as_root "$installer" --user=mysql --datadir="$MYSQL_DATADIR" \
            --auth-root-authentication-method=socket >/dev/null
    fi
    log "starting $daemon on 127.0.0.1:$MYSQL_PORT"
    as_root start-stop-daemon --start --oknodo --background \
        --pidfile "$MYSQL_DATADIR/seckill-mariadbd.pid" --exec "$daemon" -- \
        --user=mysql --datadir="$MYSQL_DATADIR" --socket="$MYSQL_SOCKET" \
        --pid-file="$MYSQL_DATADIR/seckill-mariadbd.pid" \
        --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
        --log-error="$MYSQL_DATADIR/seckill-mariadbd.err"
}

setup_mariadb() {
    if command -v mysql >/dev/null 2>&1 && mysql_tcp_ok; then
        log "mariadb on 127.0.0.1:$MYSQL_PORT accepts root without a password"
        return
    fi
    if ! mariadbd_path >/dev/null || ! command -v mysql >/dev/null 2>&1; then
        apt_install mariadb-server mariadb-client
    fi
    if ! mysql_tcp_ok && ! mysql_socket -e 'select 1' >/dev/null 2>&1; then
        start_mariadb
        wait_for "mariadb on $MYSQL_SOCKET" mysql_socket -e 'select 1'
    fi
    if ! mysql_tcp_ok; then
        log "granting root@127.0.0.1 access without a password"
        mysql_socket <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    fi
    if ! mysql_tcp_ok; then
        # 127.0.0.1 resolved to 'localhost' (no skip-name-resolve): open that account too,
        # keeping unix_socket so the system's root login still works.
        log "allowing root@localhost without a password"
        mysql_socket <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
FLUSH PRIVILEGES;
SQL
    fi
    wait_for "mariadb on 127.0.0.1:$MYSQL_PORT (root, empty password)" mysql_tcp_ok
    log "mariadb on 127.0.0.1:$MYSQL_PORT accepts root without a password"
}

# ---------------------------------------------------------------- Rust

check_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install the Rust toolchain (https://rustup.rs) and put cargo on PATH"
    log "$(cargo --version)"
    # Rust links through the system C compiler, and mimalloc (the server's allocator) and
    # bench.sh's zero-work server are C: a bare Debian with only rustup has none.
    if ! command -v cc >/dev/null 2>&1; then
        apt_install gcc libc6-dev
    fi
}

setup_redis
setup_mariadb
check_rust
log "ready"
