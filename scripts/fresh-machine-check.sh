#!/usr/bin/env bash
# Proves that the README's two commands work on a bare Debian machine: runs them, exactly as
# the README's first code block writes them, in a minimal Debian chroot that has nothing but
# the Rust toolchain added, in both orders (demo first on one fresh copy, tests first on a
# second), and prints each command's exit code and wall time. Exits non-zero if any fails.
#
#   sudo scripts/fresh-machine-check.sh
#
# Too slow for every CI run (two cold builds): run it by hand before resolving any issue that
# touches scripts/ or the set-up.
#
# How:
# * `debootstrap --variant=minbase` of FRESH_SUITE (bookworm) from the mirror this machine's
#   apt sources name. The finished root is cached as a tarball in FRESH_CACHE_DIR
#   (/var/cache/seckill-fresh-machine), so a rerun skips debootstrap; every run unpacks a
#   pristine copy. The chroot gets what an installed system has and minbase leaves out:
#   /etc/hosts (localhost) and a host name.
# * Each copy runs in its own network, mount, PID, UTS and IPC namespaces: nothing else answers
#   on any port there, and whatever it starts dies with it. slirp4netns gives it outbound
#   access (for apt and crates.io) and no way to the host's loopback. Where this machine
#   reaches the registries through a proxy with its own CA (certificates in
#   /usr/local/share/ca-certificates), those certificates are copied into the chroot's
#   /usr/local/share/ca-certificates, where the chroot's own ca-certificates package, once
#   setup.sh installs it, adds them to its bundle; the check says so when it does.
# * The Rust toolchain is this machine's, bind-mounted read-only: RUSTUP_HOME at /root/.rustup
#   and CARGO_HOME/bin at /root/.cargo/bin. Crates are downloaded afresh into the chroot's own
#   /root/.cargo/registry (nothing of this machine's cargo cache is shared). cargo is not put
#   on PATH: the scripts must find it as on a machine where rustup was just installed.
# * The source is `git archive HEAD` (uncommitted changes are not part of the check).
# * After the two commands, `scripts/setup.sh --stop` runs too, and the check reports whether
#   anything still answers on the database and Redis ports.
# Everything started is stopped and everything mounted is removed on exit (also on ctrl-c);
# FRESH_KEEP=1 keeps the chroots and logs under FRESH_WORK_DIR for inspection.
#
# Needs root; installs debootstrap and slirp4netns with apt-get when missing.
set -euo pipefail
# One brace group: bash reads all of it before running any, so editing this file (say, in
# another checkout step) while a long check runs cannot change what the check runs.
{
cd "$(dirname "$0")/.."
REPO=$PWD

SUITE=${FRESH_SUITE:-bookworm}
CACHE_DIR=${FRESH_CACHE_DIR:-/var/cache/seckill-fresh-machine}
WORK_PARENT=${FRESH_WORK_DIR:-/var/tmp}

log() { printf 'fresh: %s\n' "$*" >&2; }
die() { printf 'fresh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and namespaces need it): sudo $0"

# The README's commands: the lines of its first ```sh block, without their comments.
mapfile -t COMMANDS < <(awk '
    /^```sh$/ && !seen { inside = 1; seen = 1; next }
    inside && /^```$/ { exit }
    inside { sub(/[[:space:]]*#.*$/, ""); if ($0 != "") print }' README.md)
[ ${#COMMANDS[@]} -eq 2 ] || die "expected two commands in README.md's first sh block, found ${#COMMANDS[@]}"

# ---------------------------------------------------------------- host tools

missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian mirror this machine's apt sources use for SUITE.
host_mirror() {
    local files=()
    shopt -s nullglob
    files=(/etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    if [ ${#files[@]} -gt 0 ]; then
        awk -v suite="$SUITE" 'BEGIN { RS = "" }
            {
                uri = ""; has_suite = 0; binary = 0
                n = split($0, lines, "\n")
                for (i = 1; i <= n; i++) {
                    m = split(lines[i], f, /[ \t]+/)
                    if (f[1] == "Types:") for (j = 2; j <= m; j++) if (f[j] == "deb") binary = 1
                    if (f[1] == "URIs:") uri = f[2]
                    if (f[1] == "Suites:") for (j = 2; j <= m; j++) if (f[j] == suite) has_suite = 1
                }
                if (binary && has_suite && uri != "") { print uri; exit }
            }' "${files[@]}"
    fi
    if [ -f /etc/apt/sources.list ]; then
        awk -v suite="$SUITE" '$1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' /etc/apt/sources.list
    fi
}
MIRROR=${FRESH_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "no '$SUITE' mirror in this machine's apt sources; set FRESH_MIRROR"

ARCH=$(dpkg --print-architecture)
TARBALL="$CACHE_DIR/$SUITE-minbase-$ARCH-$(printf '%s' "$MIRROR" | md5sum | cut -c1-8).tar"

RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
if [ ! -x "$CARGO_BIN/cargo" ] || [ ! -d "$RUSTUP_DIR/toolchains" ]; then
    die "no rustup toolchain at $RUSTUP_DIR with cargo in $CARGO_BIN"
fi

WORK=$(mktemp -d "$WORK_PARENT/seckill-fresh.XXXXXX")
PIDS=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # The chroots' mounts live in their own mount namespaces, gone with their processes;
    # never delete while one is still visible here (it could be the toolchain).
    if grep -q " $WORK" /proc/self/mountinfo; then
        log "mounts under $WORK are still present; left it in place"
    elif [ -n "${FRESH_KEEP:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the pristine root

if [ ! -s "$TARBALL" ]; then
    log "debootstrap --variant=minbase $SUITE from $MIRROR (cached afterwards in $TARBALL)"
    mkdir -p "$CACHE_DIR"
    if ! debootstrap --variant=minbase "$SUITE" "$WORK/debootstrap" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (above: the end of its log)"
    fi
    tar -C "$WORK/debootstrap" --numeric-owner -cpf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$WORK/debootstrap"
else
    log "using the cached $SUITE root $TARBALL"
fi

LOCAL_CAS=()
shopt -s nullglob
LOCAL_CAS=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob

# Unpacks a pristine root into $1 with the project's source.
prepare_root() {
    local root=$1
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xpf "$TARBALL"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tfresh-machine\n' >"$root/etc/hosts"
    echo fresh-machine >"$root/etc/hostname"
    echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf" # slirp4netns's DNS forwarder
    if [ ${#LOCAL_CAS[@]} -gt 0 ]; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp "${LOCAL_CAS[@]}" "$root/usr/local/share/ca-certificates/"
    fi
    mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin" "$root/root/seckill"
    git -C "$REPO" archive --format=tar HEAD | tar -C "$root/root/seckill" -xf -
}

# Runs inside the new namespaces (still on this machine's file system): mounts what the
# chroot needs, waits for the network, then runs each command in the chroot. Its argument
# list: root, results file, log prefix, commands.
cat >"$WORK/inside.sh" <<'INSIDE'
set -euo pipefail
root=$1 results=$2 logs=$3 rustup=$4 cargo_bin=$5
shift 5
mount --make-rprivate /
hostname fresh-machine
for _ in $(seq 100); do ip link show tap0 >/dev/null 2>&1 && break; sleep 0.1; done
ip link show tap0 >/dev/null 2>&1 || { echo "fresh: no network in the namespace" >&2; exit 1; }
ip link set lo up
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount --bind "$rustup" "$root/root/.rustup"
mount -o remount,bind,ro "$root/root/.rustup"
mount --bind "$cargo_bin" "$root/root/.cargo/bin"
mount -o remount,bind,ro "$root/root/.cargo/bin"
env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [ -n "${!name:-}" ]; then env+=("$name=${!name}"); fi
done
i=0
for cmd in "$@"; do
    i=$((i + 1))
    printf '\n===== %s: $ %s\n' "$logs" "$cmd"
    start=$(date +%s.%N)
    set +e
    chroot "$root" /usr/bin/env -i "${env[@]}" bash -c "cd /root/seckill && $cmd" </dev/null 2>&1 |
        tee "$logs.$i.log"
    rc=${PIPESTATUS[0]}
    set -e
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\n' "$cmd" "$rc" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')" >>"$results"
done
# What still answers on the application's ports after `setup.sh --stop`.
chroot "$root" /usr/bin/env -i "${env[@]}" bash -c '
    cd /root/seckill && . scripts/urls.sh
    for p in "$DB_HOST:$DB_PORT" "$REDIS_HOST:$REDIS_PORT"; do
        if (exec 3<>"/dev/tcp/${p%:*}/${p##*:}") 2>/dev/null; then echo "$p open"; else echo "$p closed"; fi
    done' >"$logs.ports" 2>&1 || true
INSIDE

# Runs the commands "$@" in order on a fresh copy named $1.
run_copy() {
    local name=$1
    shift
    local root="$WORK/$name" netns_pid slirp_pid rc=0
    log "$name: unpacking a pristine root and $(git -C "$REPO" rev-parse --short HEAD) into $root"
    prepare_root "$root"
    : >"$WORK/$name.results"
    unshare --net --mount --uts --ipc --pid --fork --kill-child \
        bash "$WORK/inside.sh" "$root" "$WORK/$name.results" "$WORK/$name" "$RUSTUP_DIR" "$CARGO_BIN" "$@" &
    netns_pid=$!
    PIDS+=("$netns_pid")
    # unshare itself enters the new network namespace before it forks the commands.
    for _ in $(seq 100); do
        [ "$(readlink "/proc/$netns_pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] && break
        sleep 0.05
    done
    slirp4netns --configure --mtu=65520 --disable-host-loopback "$netns_pid" tap0 >"$WORK/$name.slirp.log" 2>&1 &
    slirp_pid=$!
    PIDS+=("$slirp_pid")
    wait "$netns_pid" || rc=$?
    kill "$slirp_pid" 2>/dev/null || true
    wait "$slirp_pid" 2>/dev/null || true
    rm -rf "$root" # its mounts went with its namespace
    return "$rc"
}

log "commands (README.md): ${COMMANDS[*]}"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    log "note: uncommitted changes are not part of the check (it copies git archive HEAD)"
fi
if [ ${#LOCAL_CAS[@]} -gt 0 ]; then
    log "this machine trusts local CAs (${LOCAL_CAS[*]##*/}), as for a proxy with its own CA: copied into the chroots' /usr/local/share/ca-certificates"
fi

STOP="scripts/setup.sh --stop"
failed=0
run_copy demo-first "${COMMANDS[0]}" "${COMMANDS[1]}" "$STOP" || failed=1
run_copy tests-first "${COMMANDS[1]}" "${COMMANDS[0]}" "$STOP" || failed=1

echo
echo "fresh-machine check: $SUITE minbase from $MIRROR, commit $(git -C "$REPO" rev-parse --short HEAD)"
for name in demo-first tests-first; do
    n=0
    while IFS=$'\t' read -r cmd rc secs; do
        n=$((n + 1))
        printf '  %-12s %-24s exit %-3s %5ss\n' "$name" "$cmd" "$rc" "$secs"
        [ "$rc" = 0 ] || failed=1
    done <"$WORK/$name.results"
    [ "$n" -eq 3 ] || { printf '  %-12s ran %d of 3 commands\n' "$name" "$n"; failed=1; }
    if [ -s "$WORK/$name.ports" ]; then
        printf '  %-12s after --stop: %s\n' "$name" "$(tr '\n' ' ' <"$WORK/$name.ports")"
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "fresh-machine check: FAILED (logs: $WORK, kept)"
    FRESH_KEEP=1
    exit 1
fi
echo "fresh-machine check: passed"
exit 0
}
