#!/usr/bin/env bash
# Where a proxied request's CPU goes inside the hub: the release hub runs under
# `valgrind --tool=callgrind` (instruction counts: repeatable, whatever else the machine
# does); the script counts instructions per request for
#   A) GET /hub/api (unauthenticated: the router and middleware alone) and
#   B) GET /user/bench/download?bytes=1024 through the proxy with a session cookie,
# and breaks them down by component (self cost) and by step (inclusive cost). Kernel time (sockets) is
# not counted by callgrind; see bench/README.md for the perf view of that.
#
#   bench/profile-proxy.sh
#
# Environment: PROFILE_SECONDS (15) of wrk per phase. Output files are kept in $WORK.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need wrk wrk
need valgrind valgrind
need curl curl
build
test_image
HUB_PORT=$(free_port)
hub_env
KEEP_WORK=1
proxy_fixture

echo "== bench/profile-proxy.sh: instructions per request inside the hub (callgrind) =="
machine_line
HUB_WRAPPER="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$WORK/callgrind.out" \
    HEALTH_TRIES=3000 start_hub
HUB="http://127.0.0.1:$HUB_PORT"
say "starting bench's server (slow under valgrind) ..."
curl -sS --noproxy '*' -o /dev/null -X POST -H "Authorization: token $ADMIN_TOKEN" \
    -d '{"image": "bench-test"}' "$HUB/hub/api/users/bench/server"
for _ in $(seq 1 600); do
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' -H "Authorization: token $ADMIN_TOKEN" "$HUB/user/bench/api")
    [ "$code" = 200 ] && break
    sleep 0.5
done
[ "$code" = 200 ] || die "bench's server did not come up"
COOKIE=$("$BENCH" login --url "$HUB" --user bench --password "$PASSWORD")

# Runs wrk against a URL with instrumentation on; prints the request count.
phase() {
    local name=$1 url=$2
    shift 2
    # Warm the paths (caches, pools) before counting.
    wrk -t1 -c4 -d3s "$@" "$url" >/dev/null
    callgrind_control -i on "$HUB_PID" >/dev/null 2>&1
    callgrind_control -z "$HUB_PID" >/dev/null 2>&1
    local out
    out=$(wrk -t1 -c4 -d"${PROFILE_SECONDS:-15}s" "$@" "$url")
    callgrind_control -d "$name" "$HUB_PID" >/dev/null 2>&1
    callgrind_control -i off "$HUB_PID" >/dev/null 2>&1
    echo "$out" | awk '/requests in/ {print $1}'
}
N_API=$(phase api "$HUB/hub/api")
N_PROXY=$(phase proxy "$HUB/user/bench/download?bytes=1024" -H "Cookie: $COOKIE")
stop_hub

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
# Dumps are numbered in order: .1 is phase A, .2 phase B.
F_API="$WORK/callgrind.out.1"
F_PROXY="$WORK/callgrind.out.2"
I_API=$(total "$F_API")
I_PROXY=$(total "$F_PROXY")
echo
printf '%-58s %10s %14s\n' "phase" "requests" "instr/request"
printf '%-58s %10s %14s\n' "A) GET /hub/api, no auth (router + middleware)" "$N_API" "$((I_API / N_API))"
printf '%-58s %10s %14s\n' "B) GET /user/bench/download?bytes=1024, cookie (proxied)" "$N_PROXY" "$((I_PROXY / N_PROXY))"
echo
allocs() { callgrind_annotate --auto=no --tree=caller --threshold=100 "$1" 2>/dev/null \
    | awk '/< .*__rust_alloc \(/ { s=$0; sub(/.*\(/, "", s); sub(/x\).*/, "", s); gsub(",", "", s); n+=s } END { print n+0 }'; }
echo "heap allocations per request: A) $(( $(allocs "$F_API") / N_API ))   B) $(( $(allocs "$F_PROXY") / N_PROXY ))"
echo
for f in "B:$F_PROXY:$N_PROXY" "A:$F_API:$N_API"; do
    IFS=: read -r name file n <<<"$f"
    echo "Phase $name by component (self instructions; the allocator and memcpy serve all components):"
    callgrind_annotate --auto=no --threshold=100 "$file" >"$file.txt" 2>/dev/null
    python3 "$ROOT/bench/lib/callgrind_groups.py" "$file.txt" "$n"
    echo
done
echo "Inclusive cost of selected steps of B (instructions per request, everything they call):"
callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$F_PROXY" >"$F_PROXY.incl.txt" 2>/dev/null
for step in \
    "tracing_subscriber::fmt::Subscriber<N,E,F,W> as tracing_core::subscriber::Subscriber>::new_span|request span (fields formatted by the fmt layer; proxied requests: debug level only)" \
    "as metrics::recorder::Recorder>::register_counter|metrics: requests counter (labels allocated, registry lookup)" \
    "as metrics::recorder::Recorder>::register_histogram|metrics: latency histogram" \
    "labhub_web::cookies::cookie_in|session cookie lookup" \
    "labhub_auth::tokens::sha256|SHA-256 (session cookie; a server token a page sends back)" \
    "labhub_proxy::path::parse_user_path|path parsing" \
    "labhub_proxy::route::RouteTable::resolve|route lookup" \
    "httparse::Request::parse|request head parsing (fast lane)" \
    "labhub_proxy::lane::write_request|request head rewrite (fast lane)" \
    "httparse::Response::parse|response head parsing (fast lane)" \
    "labhub_proxy::lane::rewrite_response_head|response head rewrite, parsing included (fast lane)"; do
    IFS='|' read -r pat label <<<"$step"
    c=$({ grep -F "$pat" "$F_PROXY.incl.txt" || true; } | awk '{ c=$1; gsub(",", "", c); c += 0; if (c > m) m = c } END { print m+0 }')
    printf '  %-78s %8d\n' "$label" "$((c / N_PROXY))"
done
echo
echo "callgrind files: $F_API $F_PROXY (open with callgrind_annotate or kcachegrind)"
