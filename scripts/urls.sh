# shellcheck shell=bash
# Sourced by the scripts in this directory (not run): the MySQL and Redis servers they talk to
# are the ones the application uses, and nothing else names a host or a port.
#
#   SECKILL_DATABASE_URL  (config.yaml's database.url)   mysql://[user[:password]@]host[:port]/db
#   SECKILL_REDIS_URL     (config.yaml's redis.url)      redis://[[user]:password@]host[:port][/n]
#
# After sourcing (from the repository root): DB_URL, DB_USER, DB_PASSWORD, DB_HOST, DB_PORT,
# DB_NAME, DB_SERVER_URL (DB_URL without the database), REDIS_URL, REDIS_HOST, REDIS_PORT,
# REDIS_PASSWORD, REDIS_DB, and the clients `db_cli` and `redis_cli` aimed at those servers.

# The `url:` of top-level section $1 in config.yaml (empty when the file or the field is absent).
config_url() {
    [ -f config.yaml ] || return 0
    awk -v section="$1:" '
        /^[^ #]/ { inside = ($1 == section) }
        inside && $1 == "url:" { print $2; exit }' config.yaml
}

# Decodes %XX escapes (URLs carry special characters of passwords that way).
url_decode() {
    local s=${1//+/ }
    printf '%b' "${s//%/\\x}"
}

# Splits URL $1 (default port $2) into URL_USER, URL_PASSWORD, URL_HOST, URL_PORT, URL_PATH.
split_url() {
    local rest=${1#*://} auth="" hostport
    hostport=${rest%%/*}
    if [ "$hostport" = "$rest" ]; then URL_PATH=""; else URL_PATH=${rest#*/}; fi
    URL_PATH=${URL_PATH%%\?*}
    if [[ $hostport == *@* ]]; then
        auth=${hostport%@*}
        hostport=${hostport##*@}
    fi
    URL_USER=$(url_decode "${auth%%:*}")
    URL_PASSWORD=""
    if [[ $auth == *:* ]]; then URL_PASSWORD=$(url_decode "${auth#*:}"); fi
    if [[ $hostport == \[* ]]; then # [ipv6]:port
        URL_HOST=${hostport%%]*}
        URL_HOST=${URL_HOST#[}
        hostport=${hostport#*]}
        URL_PORT=${hostport#:}
    elif [[ $hostport == *:* ]]; then
        URL_HOST=${hostport%%:*}
        URL_PORT=${hostport##*:}
    else
        URL_HOST=$hostport
        URL_PORT=""
    fi
    URL_PORT=${URL_PORT:-$2}
}

# The built-in defaults of src/config.rs, for a checkout without config.yaml.
DB_URL=${SECKILL_DATABASE_URL:-$(config_url database)}
DB_URL=${DB_URL:-mysql://root@127.0.0.1:3306/seckill}
REDIS_URL=${SECKILL_REDIS_URL:-$(config_url redis)}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}

# The protocols' own default ports, for URLs that leave the port out.
split_url "$DB_URL" 3306
DB_USER=${URL_USER:-root} DB_PASSWORD=$URL_PASSWORD DB_HOST=$URL_HOST DB_PORT=$URL_PORT DB_NAME=$URL_PATH
DB_SERVER_URL=${DB_URL%%\?*}
DB_SERVER_URL=${DB_SERVER_URL%/"$DB_NAME"}
split_url "$REDIS_URL" 6379
REDIS_HOST=$URL_HOST REDIS_PORT=$URL_PORT REDIS_PASSWORD=$URL_PASSWORD REDIS_DB=${URL_PATH:-0}

# `mysql` against the application's server over TCP (as sqlx connects; the client would take
# "localhost" for its unix socket), as the URL's user; the password travels in the environment.
db_cli() {
    MYSQL_PWD=$DB_PASSWORD mysql --connect-timeout=3 --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" "$@"
}

# `redis-cli` against the application's Redis.
redis_cli() {
    if [ -n "$REDIS_PASSWORD" ]; then
        REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" "$@"
    else
        redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_DB" "$@"
    fi
}
