#!/usr/bin/env bash
# Prepares a machine to build, test and demo seckill: the Redis and MariaDB that the
# application's URLs name (SECKILL_REDIS_URL, SECKILL_DATABASE_URL, else config.yaml's; see
# scripts/urls.sh), a login there that sqlx accepts, a Rust toolchain, a C compiler, CA
# certificates and curl.
#
#   scripts/setup.sh                 prepare (idempotent)
#   scripts/setup.sh --with-nginx    also install nginx (Debian's package) when it is missing:
#                                    tests/api/nginx.rs runs its own nginx in front of `serve`
#   scripts/setup.sh --with-browser  also Debian's chromium and chromium-driver when missing,
#                                    for the browser tests (tests/api/browser.rs)
#   scripts/setup.sh --stop          stop the servers that setup.sh started (only those, by PID)
#   (scripts/test.sh passes --with-nginx --with-browser; the flags combine)
#
# Where the servers already answer and the login works it changes nothing. Otherwise, on a
# Debian/Ubuntu machine, it installs redis-server and mariadb-server with apt-get. A server
# that the package started (systemd) is used as it is, on the port the URL names; where none
# runs there (a container, a chroot, another port), setup.sh starts its own as a plain
# background process, with its own datadir and socket, and notes its PID in SETUP_STATE_DIR
# for --stop. It only ever starts servers on this machine (127.0.0.1, localhost, ::1).
#
# The MariaDB login: the URL's user and password (root with an empty password by default)
# over TCP. A fresh MariaDB takes 127.0.0.1 for root@localhost, which logs in by unix socket;
# setup.sh makes the password the account's first method (keeping unix_socket after it for
# the system's own root login), because sqlx is refused when the password comes second.
#
# Environment (all optional):
#   SETUP_WAIT_SECS  (60)                  how long to wait for a started server
#   SETUP_STATE_DIR  (/run/seckill-setup)  PIDs, logs and datadirs' notes of started servers
#   MYSQL_SOCKET     (none)                a MariaDB admin socket to try first
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/urls.sh

SETUP_WAIT_SECS=${SETUP_WAIT_SECS:-60}
STATE_DIR=${SETUP_STATE_DIR:-/run/seckill-setup}

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
# Installs Debian packages, running apt-get update once first; shows apt's output on failure.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself"
    local out
    out=$(mktemp)
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$out" 2>&1 ||
            { tail -n 20 "$out" >&2; rm -f "$out"; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$out" 2>&1 ||
        { tail -n 20 "$out" >&2; rm -f "$out"; die "apt-get install $* failed"; }
    rm -f "$out"
}

# Retries "$@" once a second for SETUP_WAIT_SECS seconds.
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

# True when host $1 is this machine (the only place setup.sh installs or starts anything).
is_local() {
    case $1 in
        localhost | 127.* | ::1) return 0 ;;
        *) return 1 ;;
    esac
}

# The address a server started for host $1 listens on.
bind_address() {
    if [ "$1" = localhost ]; then echo 127.0.0.1; else echo "$1"; fi
}

# True when something accepts TCP connections on host $1, port $2.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Notes that setup.sh started daemon $2 as PID $3, under the name $1 (for --stop).
record_started() {
    as_root mkdir -p "$STATE_DIR"
    echo "$3 $(readlink -f "$2")" | as_root tee "$STATE_DIR/$1.pid" >/dev/null
}

# Stops what record_started noted, checking that each PID still runs the same program.
stop_started() {
    local file pid exe name i stopped=0
    for file in "$STATE_DIR"/*.pid; do
        [ -e "$file" ] || continue
        name=$(basename "$file" .pid)
        read -r pid exe <"$file"
        if [ "$(as_root readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]; then
            log "stopping $name (pid $pid)"
            as_root kill -TERM "$pid"
            for ((i = 0; i < SETUP_WAIT_SECS * 10; i++)); do
                [ -e "/proc/$pid" ] || break
                sleep 0.1
            done
            [ ! -e "/proc/$pid" ] || die "$name (pid $pid) still runs after ${SETUP_WAIT_SECS}s"
            stopped=$((stopped + 1))
        else
            log "$name (pid $pid) no longer runs"
        fi
        as_root rm -f "$file"
    done
    log "stopped $stopped server(s) started by setup.sh; servers it did not start were left alone"
}

# ---------------------------------------------------------------- Redis

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis_cli ping 2>/dev/null)" = "PONG" ]
    else
        # No client yet: speak RESP over bash's /dev/tcp.
        local reply
        { exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT"; } 2>/dev/null || return 1
        if [ -n "$REDIS_PASSWORD" ]; then
            printf 'AUTH %s\r\n' "$REDIS_PASSWORD" >&3
            IFS= read -r -t 2 reply <&3 || reply=
        fi
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || reply=
        exec 3>&- 3<&-
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

setup_redis() {
    local where="redis at $REDIS_HOST:$REDIS_PORT"
    if redis_ping; then
        log "$where answers"
        return
    fi
    is_local "$REDIS_HOST" || die "$where does not answer (setup.sh only starts servers on this machine)"
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    # The package may have started its own service (systemd) on this port.
    if redis_ping; then
        log "$where answers"
        return
    fi
    port_open "$REDIS_HOST" "$REDIS_PORT" &&
        die "something on $REDIS_HOST:$REDIS_PORT accepts connections but does not answer PING as $REDIS_URL says (password?)"
    local name="redis-$REDIS_PORT" daemon
    daemon=$(command -v redis-server)
    as_root mkdir -p "$STATE_DIR"
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT"
    local auth=()
    if [ -n "$REDIS_PASSWORD" ]; then auth=(--requirepass "$REDIS_PASSWORD"); fi
    as_root "$daemon" --daemonize yes --bind "$(bind_address "$REDIS_HOST")" --port "$REDIS_PORT" \
        --save "" --appendonly no --dir "$STATE_DIR" --logfile "$STATE_DIR/$name.log" \
        --pidfile "$STATE_DIR/$name.server-pid" "${auth[@]}"
    wait_for "$where" redis_ping
    record_started "$name" "$daemon" "$(as_root cat "$STATE_DIR/$name.server-pid")"
    log "$where answers (started by setup.sh; scripts/setup.sh --stop stops it)"
}

# ---------------------------------------------------------------- MariaDB

# The account the URL's user gets over TCP, as `SHOW CREATE USER` prints it.
db_account() {
    db_cli -N -B -e 'SHOW CREATE USER CURRENT_USER()' 2>/dev/null
}

# True when the URL's user logs in over TCP the way sqlx does. sqlx is refused (1045) when the
# account's first method is another plugin (Debian's root: unix_socket) and the password
# only comes after it, though the mysql client gets in: hence the check of the order.
db_login_ok() {
    local account
    account=$(db_account) || return 1
    case $account in
        *" IDENTIFIED VIA mysql_native_password"*) return 0 ;;
        *" IDENTIFIED VIA "*) return 1 ;;
        *) return 0 ;;
    esac
}

# Runs the SQL on stdin as root over the unix socket $ADMIN_SOCKET (Debian's root@localhost
# logs in so).
db_admin() {
    as_root mysql --connect-timeout=3 -uroot --protocol=socket -S "$ADMIN_SOCKET"
}

# Sets ADMIN_SOCKET to a local socket of the server listening on DB_PORT, if there is one.
# A server on the default socket that listens on another port is not ours to change.
find_admin_socket() {
    local socket port
    for socket in ${MYSQL_SOCKET:-} /run/mysqld/mysqld.sock /var/run/mysqld/mysqld.sock "$(own_mariadb_socket)"; do
        [ -S "$socket" ] || continue
        port=$(as_root mysql --connect-timeout=3 -uroot --protocol=socket -S "$socket" -N -B \
            -e 'SELECT @@port' 2>/dev/null) || continue
        if [ "$port" = "$DB_PORT" ]; then
            ADMIN_SOCKET=$socket
            return 0
        fi
    done
    return 1
}

own_mariadb_socket() { echo "/run/mysqld/seckill-$DB_PORT.sock"; }

# SQL string literal of $1.
sql_quote() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}

# Gives the URL's user its password as first method on this server, from localhost and
# 127.0.0.1 (a server that resolves names sees 127.0.0.1 as localhost, one with
# skip-name-resolve as 127.0.0.1). root keeps unix_socket as second method on localhost.
fix_db_login() {
    local user password hosts host methods sql=""
    user=$(sql_quote "$DB_USER")
    password=$(sql_quote "$DB_PASSWORD")
    hosts=(localhost 127.0.0.1)
    if [ "$DB_HOST" = ::1 ]; then hosts+=(::1); fi
    for host in "${hosts[@]}"; do
        methods="mysql_native_password USING PASSWORD($password)"
        if [ "$DB_USER" = root ] && [ "$host" = localhost ]; then methods+=" OR unix_socket"; fi
        sql+="CREATE USER IF NOT EXISTS $user@'$host' IDENTIFIED BY $password;
ALTER USER $user@'$host' IDENTIFIED VIA $methods;
GRANT ALL PRIVILEGES ON *.* TO $user@'$host' WITH GRANT OPTION;
"
    done
    log "giving $DB_USER@localhost and $DB_USER@127.0.0.1 the URL's password as first login method"
    db_admin <<<"$sql FLUSH PRIVILEGES;"
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

# Starts a MariaDB of our own on DB_PORT, with its own datadir and socket (never the
# package's: its service may want them).
start_mariadb() {
    local daemon datadir="/var/lib/seckill-mariadb-$DB_PORT" socket name="mariadb-$DB_PORT"
    socket=$(own_mariadb_socket)
    daemon=$(mariadbd_path) || die "mariadbd not found after installing mariadb-server"
    as_root mkdir -p "$(dirname "$socket")" "$datadir" "$STATE_DIR"
    as_root chown mysql:mysql "$(dirname "$socket")" "$datadir"
    if [ ! -d "$datadir/mysql" ]; then
        local installer out
        installer=$(command -v mariadb-install-db || command -v mysql_install_db) ||
            die "mariadb-install-db not found"
        out=$(mktemp "${TMPDIR:-/tmp}/seckill-install-db.XXXXXX")
        log "initialising the MariaDB datadir $datadir"
        # --force: the host name need not resolve (a container may have no /etc/hosts); the
        # installer only wants it for a root@<hostname> account, and the logins this needs
        # are set up below. Debian's own postinst skips the check too.
        if ! as_root "$installer" --user=mysql --datadir="$datadir" --force \
            --auth-root-authentication-method=socket >"$out" 2>&1; then
            tail -n 20 "$out" >&2
            as_root rm -rf "$datadir"
            die "$installer failed (above: the end of its output, all of it in $out)"
        fi
        rm -f "$out"
    fi
    local pidfile="$datadir/seckill-mariadbd.pid" errlog="$datadir/seckill-mariadbd.err"
    log "starting $daemon on $DB_HOST:$DB_PORT (datadir $datadir, socket $socket)"
    as_root start-stop-daemon --start --oknodo --background --pidfile "$pidfile" --exec "$daemon" -- \
        --user=mysql --datadir="$datadir" --socket="$socket" --pid-file="$pidfile" \
        --port="$DB_PORT" --bind-address="$(bind_address "$DB_HOST")" --log-error="$errlog"
    local i
    for ((i = 0; i < SETUP_WAIT_SECS; i++)); do
        find_admin_socket && break
        sleep 1
    done
    if ! find_admin_socket; then
        as_root tail -n 20 "$errlog" >&2 || true
        die "mariadbd did not answer on $socket within ${SETUP_WAIT_SECS}s (above: the end of $errlog)"
    fi
    record_started "$name" "$daemon" "$(as_root cat "$pidfile")"
}

setup_mariadb() {
    local where="mariadb at $DB_HOST:$DB_PORT"
    if command -v mysql >/dev/null 2>&1 && db_login_ok; then
        log "$where accepts $DB_USER"
        return
    fi
    is_local "$DB_HOST" || die "$where does not accept $DB_USER (setup.sh only sets up servers on this machine)"
    if ! mariadbd_path >/dev/null || ! command -v mysql >/dev/null 2>&1; then
        apt_install mariadb-server mariadb-client
    fi
    if ! db_login_ok && ! find_admin_socket; then
        port_open "$DB_HOST" "$DB_PORT" &&
            die "something on $DB_HOST:$DB_PORT accepts connections, but refuses $DB_USER and has no local socket setup.sh can administer it by"
        start_mariadb
    fi
    if ! db_login_ok; then
        find_admin_socket || die "$where refuses $DB_USER and has no local socket to fix that by"
        fix_db_login
    fi
    wait_for "$where ($DB_USER)" db_login_ok
    log "$where accepts $DB_USER"
}

# ---------------------------------------------------------------- Rust and tools

check_tools() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install the Rust toolchain (https://rustup.rs) and put cargo on PATH"
    log "$(cargo --version)"
    local missing=()
    # Rust links through the system C compiler, and mimalloc (the server's allocator) and
    # bench.sh's zero-work server are C: a bare Debian with only rustup has none.
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    # cargo fetches crates over HTTPS; a minimal Debian has no CA certificates.
    [ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    # demo.sh talks to the HTTP API with curl.
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# The nginx binary, where Debian puts it or on PATH.
nginx_path() {
    if [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx; else command -v nginx 2>/dev/null; fi
}

# Installs Debian's nginx when there is none. Only the binary is used (the tests and the demo
# start their own nginx with a prefix of their own), so apt is kept from starting the
# system's nginx on port 80 where no policy says otherwise.
setup_nginx() {
    if [ -n "$(nginx_path)" ]; then
        log "nginx: $("$(nginx_path)" -v 2>&1)"
        return
    fi
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        # Removed whether or not the install works (apt_install exits on failure).
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install nginx
    [ -n "$(nginx_path)" ] || die "nginx did not install"
    log "nginx: $("$(nginx_path)" -v 2>&1)"
}

# The browser tests drive headless Chromium through chromedriver (Debian's packages; nothing
# is downloaded at run time). Installed only where either is missing.
check_browser() {
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    log "$(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
}

WITH_NGINX=0
WITH_BROWSER=0
if [ "${1:-}" = --stop ]; then
    stop_started
    exit 0
fi
for arg in "$@"; do
    case "$arg" in
        --with-nginx) WITH_NGINX=1 ;;
        --with-browser) WITH_BROWSER=1 ;;
        *) die "unknown argument '$arg' (usage: scripts/setup.sh [--with-nginx] [--with-browser] | --stop)" ;;
    esac
done

setup_redis
setup_mariadb
check_tools
if [ "$WITH_NGINX" -eq 1 ]; then setup_nginx; fi
if [ "$WITH_BROWSER" -eq 1 ]; then check_browser; fi
log "ready"
