#!/usr/bin/env bash
# Issue 21's benchmark: two `labhub serve` processes on one Postgres (A owns the embedded
# cluster; B reaches it by its socket), measured in ONE run:
#   - propagation from A to B (labhub-bench replicas): a start answered 201 (ready) by A to
#     the first 200 through B (target p99 < 100 ms), a stop to B's first 503, a token revoked
#     on A to B's first refusal (target < 1 s);
#   - proxy throughput through nginx (1 KiB, wrk -c64) to one hub (A) vs round robin over two
#     replicas (B and C, both on the same database), the same nginx, the same server (target:
#     at least 0.9×; on two cores replicas cannot add capacity, but they must not cost it).
#
#   bench/replicas.sh
#   REPLICA_THREADS=1 TWO_KEEPALIVE=128 WRK_ROUNDS=15 bench/replicas.sh   # replicas sharing
#                                         # two cores, as the README says to run them
#
# Environment: ROUNDS (20 propagation rounds), WRK_ROUNDS (3), SECONDS_PER_RUN (5),
#   TWO_KEEPALIVE (64: the idle upstream connections nginx keeps for the two replicas),
#   REPLICA_THREADS (unset: B and C run as many runtime and HTTP threads as A, one per core;
#   set, each runs that many: LABHUB_WORKER_THREADS), REPLICA_PIN (set: B runs on core 0
#   only, C on core 1, by taskset).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need wrk wrk
need nginx nginx-light
need docker docker.io
need curl curl
build
test_image
HUB_PORT=$(free_port)
B_PORT=$(free_port)
C_PORT=$(free_port)
ONE_PORT=$(free_port)
TWO_PORT=$(free_port)
REPLICA_PIDS=()
hub_env

# B and C are this script's own; lib.sh's cleanup knows A and nginx.
stop_replicas() {
    local rc=$? pid
    for pid in "${REPLICA_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    (exit "$rc")
    cleanup
}
trap stop_replicas EXIT

say "preparing users, a token and the catalogue ..."
proxy_fixture

echo "== bench/replicas.sh: hubs on one Postgres =="
machine_line
start_hub
A="http://127.0.0.1:$HUB_PORT"
B="http://127.0.0.1:$B_PORT"
C="http://127.0.0.1:$C_PORT"

# A replica on PORT reaching A's embedded cluster by its socket.
start_replica() {
    local port=$1 cpu=$2 log="$WORK/hub-$1.log" pid
    (
        [ -n "${REPLICA_THREADS:-}" ] && export LABHUB_WORKER_THREADS="$REPLICA_THREADS"
        pin=()
        [ -n "${REPLICA_PIN:-}" ] && pin=(taskset -c "$cpu")
        DATABASE_URL="postgres://postgres@localhost/labhub?host=$DATA/postgres/run" LABHUB_BIND="127.0.0.1:$port" \
            exec "${pin[@]}" "$LABHUB" serve >>"$log" 2>&1
    ) &
    pid=$!
    REPLICA_PIDS+=("$pid")
    for _ in $(seq 1 600); do
        curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$port/hub/health" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "the replica on $port exited; log: $log"; }
        sleep 0.1
    done
    die "the replica on $port did not answer; log: $log"
}
start_replica "$B_PORT" 0
start_replica "$C_PORT" 1
echo "hubs: A $A (embedded Postgres), replicas B $B and C $C (the same database through its socket; runtime and HTTP threads: ${REPLICA_THREADS:-one per core, as A}${REPLICA_PIN:+, pinned to cores 0 and 1}), release builds"
echo

"$BENCH" replicas --a "$A" --b "$B" --admin-token "$ADMIN_TOKEN" --rounds "${ROUNDS:-20}"

say "starting bench's server through A ..."
code=$(curl -sS --noproxy '*' -o "$WORK/start.json" -w '%{http_code}' -X POST \
    -H "Authorization: token $ADMIN_TOKEN" -d '{"image": "bench-test"}' "$A/hub/api/users/bench/server")
[ "$code" = 201 ] || die "starting the server answered $code: $(cat "$WORK/start.json")"
COOKIE=$("$BENCH" login --url "$A" --user bench --password "$PASSWORD")

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream one { server 127.0.0.1:$HUB_PORT; keepalive 64; }
    upstream two { server 127.0.0.1:$B_PORT; server 127.0.0.1:$C_PORT; keepalive ${TWO_KEEPALIVE:-64}; }
    server {
        listen 127.0.0.1:$ONE_PORT;
        location / {
            proxy_pass http://one;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_buffering off;
        }
    }
    server {
        listen 127.0.0.1:$TWO_PORT;
        location / {
            proxy_pass http://two;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_buffering off;
        }
    }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$TWO_PORT/" && break; sleep 0.1; done

# Requests per second of one wrk run (1 KiB, 64 connections) through one of nginx's ports;
# the TCP connections opened meanwhile on this machine (wrk's 64, and nginx's to the hubs when
# its idle cache of upstream connections cannot hold them) are kept in $WORK/opens-<port>.
rps() {
    local before after out
    before=$(nstat -az TcpActiveOpens | awk '/TcpActiveOpens/ {print $2}')
    out=$(wrk -t1 -c64 -d"${SECONDS_PER_RUN:-5}s" -H "Cookie: $COOKIE" "http://127.0.0.1:$1/user/bench/download?bytes=1024")
    after=$(nstat -az TcpActiveOpens | awk '/TcpActiveOpens/ {print $2}')
    echo "$((after - before))" >>"$WORK/opens-$1"
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}
echo
echo "== proxy throughput through nginx (worker_processes 1, keepalive 64): 1 KiB, wrk -t1 -c64, ${SECONDS_PER_RUN:-5} s, alternating =="
ONE=() TWO=()
for _ in $(seq 1 "${WRK_ROUNDS:-3}"); do
    ONE+=("$(rps "$ONE_PORT")")
    TWO+=("$(rps "$TWO_PORT")")
done
printf '%-28s %s\n' "one hub (A)" "${ONE[*]} req/s; TCP connections opened per run: $(tr '\n' ' ' <"$WORK/opens-$ONE_PORT")"
printf '%-28s %s\n' "two replicas (B, C)" "${TWO[*]} req/s; TCP connections opened per run: $(tr '\n' ' ' <"$WORK/opens-$TWO_PORT")"
echo "(nginx's upstream block: keepalive 64 for one hub, ${TWO_KEEPALIVE:-64} for two; TWO_KEEPALIVE sets it)"
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
m1=$(median "${ONE[@]}")
m2=$(median "${TWO[@]}")
ratio=$(awk -v a="$m2" -v b="$m1" 'BEGIN { printf "%.2f", a / b }')
echo "medians: one $m1, two $m2 req/s; two / one = $ratio"
if awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }'; then
    echo "  [met]     two replicas behind nginx at least 0.9x one hub: $ratio"
else
    echo "  [NOT met] two replicas behind nginx at least 0.9x one hub: $ratio"
fi
echo
# Where the difference goes: the hubs' CPU per request (A's process alone, then A's and B's
# together) and nginx's, through the same two ports. Equal figures mean the replicas cost no
# more work per request and the difference is two processes sharing the same cores.
echo "== CPU per proxied request through nginx (1 KiB, 64 connections, ${SECONDS_PER_RUN:-5} s; utime/stime) =="
printf '%-8s %10s %14s %14s\n' "hubs" "requests" "user ns/req" "system ns/req"
NGINX_WORKERS_PIDS="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
for port in "$ONE_PORT" "$TWO_PORT"; do
    if [ "$port" = "$ONE_PORT" ]; then hubs="$HUB_PID" name="A"; else hubs="${REPLICA_PIDS[*]}" name="B+C"; fi
    CPU_PIDS="$hubs" cpu_per_request "$name" "http://127.0.0.1:$port/user/bench/download?bytes=1024" -H "Cookie: $COOKIE"
    CPU_PIDS="$NGINX_WORKERS_PIDS" cpu_per_request "nginx" "http://127.0.0.1:$port/user/bench/download?bytes=1024" \
        -H "Cookie: $COOKIE"
done
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
