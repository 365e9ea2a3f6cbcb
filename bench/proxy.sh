#!/usr/bin/env bash
# Issue 4's benchmark: one upstream (the tiny test server, started as a user's server by a
# real release hub through its API), measured in ONE run directly, through labhub's proxy
# with the owner's session cookie and with the cookie of a visitor the server is shared with
# (the share index on the hot path; target: within 10% of the owner), and through nginx as a
# reverse proxy (keep-alive upstream);
# 1 KiB and 1 MiB responses at 1 and 64 connections (wrk), WebSocket round trips and
# messages/s over 50 connections; then the hub's resident memory with 200 open WebSockets,
# and an in-process hub (labhub::app::build) with 1,000 routes. See bench/README.md.
#
#   bench/proxy.sh
#
# Environment: SECONDS_PER_RUN (5), ROUNDS (3), WRK_THREADS (1), WS_SECONDS (5),
#   SIZES (1024,1048576), CONCURRENCY (1,64), MEM_HUB= (empty: skip the 1,000-route hub),
#   NGINX_WORKERS (auto), PROFILE=1 (also record a perf profile of the hub serving
#   1 KiB at 64 connections; written to $WORK, which is then kept).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
MEM_HUB=${MEM_HUB-1}  # MEM_HUB= (empty) skips the in-process hub with 1,000 routes

need wrk wrk
need nginx nginx-light
need docker docker.io
need curl curl
build
test_image
HUB_PORT=$(free_port)
NGINX_PORT=$(free_port)
hub_env

say "preparing users, a token and the catalogue ..."
proxy_fixture
# A second member, with whom bench's server is shared: the "visitor" path beside the owner's.
cli user add benchvisitor --password-stdin <<<"$PASSWORD" >/dev/null

echo "== bench/proxy.sh: direct vs labhub vs nginx =="
machine_line
start_hub
HUB="http://127.0.0.1:$HUB_PORT"
say "starting bench's server through the API ..."
code=$(curl -sS --noproxy '*' -o "$WORK/start.json" -w '%{http_code}' -X POST \
    -H "Authorization: token $ADMIN_TOKEN" -d '{"image": "bench-test"}' "$HUB/hub/api/users/bench/server")
[ "$code" = 201 ] || die "starting the server answered $code: $(cat "$WORK/start.json")"
upstream_of bench
COOKIE=$("$BENCH" login --url "$HUB" --user bench --password "$PASSWORD")
code=$(curl -sS --noproxy '*' -o "$WORK/share.json" -w '%{http_code}' -X POST \
    -H "Authorization: token $ADMIN_TOKEN" -d '{"user": "benchvisitor"}' "$HUB/hub/api/shares/bench/")
[ "$code" = 200 ] || die "sharing the server answered $code: $(cat "$WORK/share.json")"
VISITOR_COOKIE=$("$BENCH" login --url "$HUB" --user benchvisitor --password "$PASSWORD")

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
# A hand-made reverse proxy for one Jupyter server, as JupyterHub's docs configure one:
# HTTP/1.1 keep-alive to the upstream, WebSocket upgrades, no response buffering.
worker_processes ${NGINX_WORKERS:-auto};
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
    # '' (not 'close') for plain requests, so the upstream keepalive pool is really used.
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream jupyter { server $UP_IP:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://jupyter;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Authorization "token $UP_TOKEN";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }
    }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done

echo "upstream: labhub-testserver in its container at $UP_IP:$UP_PORT (2 CPUs), started through the hub's API"
echo "labhub:   release hub at $HUB (default settings), session cookie of the server's owner"
echo "nginx:    127.0.0.1:$NGINX_PORT, worker_processes ${NGINX_WORKERS:-auto}, keepalive 64, proxy_buffering off, access_log off"
echo

if [ "${PROFILE:-0}" = 1 ]; then
    KEEP_WORK=1
    say "profiling the hub (perf record -F 999 -g) under wrk -c64, 1 KiB ..."
    perf record -e cpu-clock -F 999 -g -p "$HUB_PID" -o "$WORK/perf.data" -- sleep 8 >/dev/null 2>&1 &
    PERF_PID=$!
    wrk -t1 -c64 -d8s -H "Cookie: $COOKIE" "$HUB/user/bench/download?bytes=1024" >/dev/null
    wait "$PERF_PID" || true
    # Written whole, then cut: `perf report | head` would fail the run under pipefail.
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio >"$WORK/perf-full.txt" 2>/dev/null || true
    head -80 "$WORK/perf-full.txt" >"$WORK/perf.txt"
    say "perf profile: $WORK/perf.txt"
fi

"$BENCH" proxy --direct "http://$UP_IP:$UP_PORT/user/bench/" --upstream-token "$UP_TOKEN" \
    --labhub "$HUB/user/bench/" --cookie "$COOKIE" --nginx "http://127.0.0.1:$NGINX_PORT/user/bench/" \
    --visitor-cookie "$VISITOR_COOKIE" \
    --seconds "${SECONDS_PER_RUN:-5}" --rounds "${ROUNDS:-3}" --threads "${WRK_THREADS:-1}" \
    --sizes "${SIZES:-1024,1048576}" --concurrency "${CONCURRENCY:-1,64}" \
    --ws-seconds "${WS_SECONDS:-5}" --hub-pid "$HUB_PID" --user bench \
    ${MEM_HUB:+--data-dir "$DATA" --endpoint "$UP_IP:$UP_PORT" --admin-token "$ADMIN_TOKEN"}

echo
echo "== CPU per proxied request (1 KiB, 64 connections, ${SECONDS_PER_RUN:-5} s; utime/stime of the proxy's own processes) =="
printf '%-8s %10s %14s %14s\n' "proxy" "requests" "user ns/req" "system ns/req"
CPU_PIDS="$HUB_PID" cpu_per_request labhub "$HUB/user/bench/download?bytes=1024" -H "Cookie: $COOKIE"
CPU_PIDS="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')" cpu_per_request nginx "http://127.0.0.1:$NGINX_PORT/user/bench/download?bytes=1024"
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
