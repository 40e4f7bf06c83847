#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, the benchmarks and CI.
#
#   .ci/postgres.sh start DIR [PORT]          print the server's DSN on stdout
#   .ci/postgres.sh stop DIR [fast|immediate] stop it by the pid in DIR/data/postmaster.pid
#
# The server comes from the machine's Debian packages (installed with apt-get
# when missing and we are root), listens on 127.0.0.1 only, keeps everything
# in DIR (created if missing; made over to the `postgres` user when we are
# root, since the server refuses to run as root) and trusts local
# connections: it is for tests, never for data. Starting DIR again reuses its
# data (a restart after `stop DIR immediate` is crash recovery). `start`
# returns once the server accepts connections. Everything but the DSN goes to
# stderr. PG_BIN overrides where the server's programs are looked for;
# PG_OPTIONS adds server settings (e.g. "-c fsync=off" for a faster test run).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR [PORT] | stop DIR [fast|immediate]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
command=$1
dir=$2

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
            found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
        fi
    fi
    if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
        echo "postgres.sh: no PostgreSQL server found under /usr/lib/postgresql; install the" \
             "Debian package 'postgresql' or set PG_BIN" >&2
        exit 3
    fi
    echo "$found"
}

# Run a server program as the `postgres` system user when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local port=${1:-}
    local bin
    bin=$(find_bin)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            echo "postgres.sh: there is no 'postgres' system user to run the server as;" \
                 "install the Debian package 'postgresql'" >&2
            exit 3
        fi
        chown postgres: "$dir"
        chmod 700 "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
            --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    if [ -z "$port" ] && [ -f "$dir/port" ]; then
        port=$(cat "$dir/port")
    fi
    [ -n "$port" ] || port=$(free_port)
    # listen_addresses: loopback only. The unix socket lives in DIR, not in /run.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 ${PG_OPTIONS:-}" \
        start >&2 || {
        tail -n 20 "$dir/server.log" >&2
        exit 1
    }
    echo "$port" >"$dir/port"
    # pg_ctl -w waited for the server; pg_isready double-checks the TCP listener.
    for _ in $(seq 1 100); do
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
            echo "postgresql://postgres@127.0.0.1:$port/postgres"
            return
        fi
        sleep 0.1
    done
    echo "postgres.sh: the server in $dir did not accept connections on 127.0.0.1:$port" >&2
    tail -n 20 "$dir/server.log" >&2
    exit 1
}

stop() {
    local mode=${1:-fast}
    local pidfile="$dir/data/postmaster.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(head -n 1 "$pidfile")
    # SIGINT: fast shutdown (roll back, disconnect, checkpoint); SIGQUIT: immediate
    # shutdown, as after a crash (the next start recovers from the WAL).
    local signal=INT
    [ "$mode" = immediate ] && signal=QUIT
    kill -s "$signal" "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "postgres.sh: server $pid did not stop in 30 s; killing it" >&2
    kill -s KILL "$pid" 2>/dev/null || true
}

case "$command" in
    start) start "${3:-}" ;;
    stop) stop "${3:-fast}" ;;
    *) usage ;;
esac
