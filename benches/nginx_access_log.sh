#!/bin/bash
# nginx requests/s (wrk, loopback) with access_log into a trigger file (split = "line") and
# into triggerd's [[syslog]] socket (`access_log syslog:server=unix:…`) vs into a tmpfs file,
# unbuffered and with buffer=64k, in one run; prints req/s and the ratios trigger/tmpfs and
# syslog/tmpfs. A null FUSE filesystem (accepts and discards writes, same fuser options) is
# measured too: what any FUSE file costs nginx on this machine. Checks zero loss: the lines received (trigger: events counted by the
# filesystem; tmpfs: wc -l) must equal nginx's own request counter (stub_status).
#
# Usage (as root): benches/nginx_access_log.sh [SECONDS] [CONNECTIONS]
# Environment: NGINX_WORKERS (default 2), TRIGGERFS_THREADS (FUSE threads, default 2).
# Needs: nginx, wrk, /usr/bin/python3 (to pick a free port).
set -euo pipefail
for tool in nginx wrk /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "nginx_access_log.sh: $tool is missing (apt-get install nginx wrk python3)" >&2; exit 1; }
done

SECS=${1:-10}
CONNS=${2:-32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release -q -p triggerd-fusefs --example triggerfs_mount --manifest-path "$ROOT/Cargo.toml"
cargo build --release -q -p triggerd-benches --bin fuse_write --manifest-path "$ROOT/Cargo.toml"
cargo build --release -q -p triggerd --bin triggerd --bin triggerctl --manifest-path "$ROOT/Cargo.toml"
MOUNT_BIN="$ROOT/target/release/examples/triggerfs_mount"
NULL_BIN="$ROOT/target/release/fuse_write"

WORK=$(mktemp -d)
SHM=$(mktemp -d -p /dev/shm)
chmod 755 "$WORK" "$SHM"
mkdir -p "$WORK/mnt" "$WORK/state" "$WORK/nginx" "$WORK/null"

NGINX_PID=
cleanup() {
    if [[ -n "$NGINX_PID" ]]; then kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    if [[ -n "${FS_PID:-}" ]]; then exec {FS_IN}>&- || true; wait "$FS_PID" 2>/dev/null || true; fi
    if [[ -n "${NULL_PID:-}" ]]; then exec {NULL_IN}>&- || true; wait "$NULL_PID" 2>/dev/null || true; fi
    umount -l "$WORK/mnt" 2>/dev/null || true
    umount -l "$WORK/null" 2>/dev/null || true
    if [[ -n "${TRIGGERD_PID:-}" ]]; then kill -TERM "$TRIGGERD_PID" 2>/dev/null || true; wait "$TRIGGERD_PID" 2>/dev/null || true; fi
    rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

# The trigger filesystem, in a child we talk to over its stdin/stdout.
coproc FS { exec ${TRIGGERFS_WRAP:-} "$MOUNT_BIN" "$WORK/mnt" "$WORK/state" nginx/access:line; }
FS_IN=${FS[1]}
FS_OUT=${FS[0]}
read -r -u "$FS_OUT" ready
[[ "$ready" == ready ]] || { echo "mount failed" >&2; exit 1; }

# The null FUSE baseline, fed through a fifo that we keep open until the end.
mkfifo "$WORK/null.in"
"$NULL_BIN" --serve-null "$WORK/null" <"$WORK/null.in" >"$WORK/null.out" &
NULL_PID=$!
exec {NULL_IN}>"$WORK/null.in"
for _ in $(seq 200); do grep -q ready "$WORK/null.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$WORK/null.out" || { echo "null FUSE mount failed" >&2; exit 1; }

trigger_events() {
    echo stats >&"$FS_IN"
    local line events=0
    while read -r -u "$FS_OUT" line; do
        [[ "$line" == end ]] && break
        [[ "$line" == nginx/access* ]] && events=$(sed -E 's/.*events=([0-9]+).*/\1/' <<<"$line")
    done
    echo "$events"
}

# triggerd with one [[syslog]] rule; its `matched` counter is the lines received (the
# action is cheap and drops what arrives while it runs: the source is what is measured).
cat >"$WORK/triggerd.conf" <<EOF
[daemon]
control = "$WORK/control.sock"
state_dir = "$WORK/triggerd-state"
fs_mount = "$WORK/triggerd-fs"

[[syslog]]
name = "access"
socket = "$WORK/log.sock"
buffer = 16777216
when_full = "block"
max_running = 1
on_busy = "drop"
exec = ["/bin/true"]
EOF
TRIGGERD_LOG=warn "$ROOT/target/release/triggerd" --config "$WORK/triggerd.conf" 2>"$WORK/triggerd.log" &
TRIGGERD_PID=$!
for _ in $(seq 200); do [[ -S "$WORK/log.sock" && -S "$WORK/control.sock" ]] && break; sleep 0.05; done
[[ -S "$WORK/log.sock" ]] || { echo "triggerd did not start:" >&2; cat "$WORK/triggerd.log" >&2; exit 1; }

syslog_events() {
    "$ROOT/target/release/triggerctl" --socket "$WORK/control.sock" status --json \
        | /usr/bin/python3 -c 'import json,sys; print(sum(r["matched"] for r in json.load(sys.stdin)["rules"] if r["name"] == "access"))'
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# run_case NAME ACCESS_LOG_DIRECTIVE -> prints "req/s requests_by_nginx"
run_case() {
    local log=$1 port conf
    port=$(free_port)
    conf="$WORK/nginx/nginx.conf"
    cat >"$conf" <<EOF
daemon off;
worker_processes ${NGINX_WORKERS:-2};
user www-data;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log $log;
    client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi; uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /status { stub_status; }
        location / { return 200 "ok\n"; }
    }
}
EOF
    /usr/sbin/nginx -c "$conf" -e "$WORK/nginx/error.log" &
    NGINX_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
    local rps
    rps=$(wrk -t2 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    # nginx's counter includes this status request, which is logged too.
    local handled
    handled=$(/usr/bin/python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/status').read().decode())" \
        | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+/ {print $3}')
    kill -QUIT "$NGINX_PID"
    wait "$NGINX_PID" || true
    NGINX_PID=
    echo "$rps $handled"
}

printf '%-28s %10s %10s %10s %s\n' "access_log" "req/s" "requests" "lines" "loss"
declare -A RPS
for buffer in "" " buffer=64k"; do
    for target in tmpfs null-fuse trigger syslog; do
        # nginx does not buffer syslog lines (buffer= is for files): one case is enough.
        [[ $target == syslog && -n "$buffer" ]] && continue
        if [[ $target == tmpfs ]]; then
            file="$SHM/access.log"; : >"$file"; chown www-data "$file"
        elif [[ $target == null-fuse ]]; then
            file="$WORK/null/null"
        elif [[ $target == syslog ]]; then
            file="syslog:server=unix:$WORK/log.sock,nohostname,tag=nginx"; before=$(syslog_events)
        else
            file="$WORK/mnt/nginx/access"; before=$(trigger_events)
        fi
        directive="$file combined$buffer"
        read -r rps handled < <(run_case "$directive")
        if [[ $target == tmpfs ]]; then
            lines=$(wc -l <"$file")
        elif [[ $target == null-fuse ]]; then
            lines=$handled # discarded: nothing to count
        elif [[ $target == syslog ]]; then
            # Datagrams still in the socket buffer are read within moments.
            for _ in $(seq 100); do
                lines=$(( $(syslog_events) - before ))
                [[ "$lines" -ge "$handled" ]] && break
                sleep 0.05
            done
        else
            lines=$(( $(trigger_events) - before ))
        fi
        name="$target${buffer:- unbuffered}"
        RPS[$name]=$rps
        printf '%-28s %10s %10s %10s %s\n' "$name" "$rps" "$handled" "$lines" \
            "$([[ "$lines" == "$handled" ]] && echo none || echo "MISMATCH")"
    done
done
awk -v t="${RPS[trigger unbuffered]}" -v f="${RPS[tmpfs unbuffered]}" \
    'BEGIN { printf "ratio trigger/tmpfs unbuffered: %.2f (target >= 0.60)\n", t / f }'
awk -v t="${RPS[syslog unbuffered]}" -v f="${RPS[tmpfs unbuffered]}" \
    'BEGIN { printf "ratio syslog/tmpfs unbuffered: %.2f (target >= 0.80)\n", t / f }'
awk -v t="${RPS[trigger unbuffered]}" -v f="${RPS[null-fuse unbuffered]}" \
    'BEGIN { printf "ratio trigger/null FUSE unbuffered: %.2f\n", t / f }'
awk -v t="${RPS[trigger buffer=64k]}" -v f="${RPS[tmpfs buffer=64k]}" \
    'BEGIN { printf "ratio trigger/tmpfs buffer=64k: %.2f (target >= 0.80)\n", t / f }'
