#!/usr/bin/env bash
# Issues 11-13's benchmark: the release hub's front door under 2,000 connections that never
# finish a request head and a burst of 300 wrong passwords at once, against the same hub
# idle in the same run: its resident memory, how soon it closes the slow sockets (against
# its configured head timeout), and the latency of /hub/health and of a proxied GET
# meanwhile. See bench/README.md.
#
#   bench/frontdoor.sh
#
# Environment: IDLE (2000), BURST (300), HEAD_TIMEOUT (the hub's default, 20s; seconds),
#   BASELINE_SECONDS (5).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need docker docker.io
need curl curl
IDLE=${IDLE:-2000}
BURST=${BURST:-300}
HEAD_TIMEOUT=${HEAD_TIMEOUT:-20}

# Both sides hold IDLE sockets (the hub also one per proxied connection upstream): raise the
# soft open-file limit to the hard one for this script, the hub and the load generator.
need_fds=$((2 * IDLE + 2 * BURST + 1024))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    die "the open-file limit is $(ulimit -n) (hard $(ulimit -Hn)); IDLE=$IDLE needs about $need_fds"
fi

build
test_image
HUB_PORT=$(free_port)
hub_env
# The sign-in budgets stay as lib.sh sets them (very high), so every wrong password of the
# burst reaches the password hashing: what bounds the hub's memory is the hashing cap alone.
export LABHUB_HTTP__REQUEST_HEAD_TIMEOUT="${HEAD_TIMEOUT}s"

say "preparing users, a token and the catalogue ..."
proxy_fixture

echo "== bench/frontdoor.sh: the front door under slow sockets and a sign-in burst =="
machine_line
start_hub
HUB="http://127.0.0.1:$HUB_PORT"
say "starting bench's server through the API ..."
code=$(curl -sS --noproxy '*' -o "$WORK/start.json" -w '%{http_code}' -X POST \
    -H "Authorization: token $ADMIN_TOKEN" -d '{"image": "bench-test"}' "$HUB/hub/api/users/bench/server")
[ "$code" = 201 ] || die "starting the server answered $code: $(cat "$WORK/start.json")"
COOKIE=$("$BENCH" login --url "$HUB" --user bench --password "$PASSWORD")
echo "hub: release build at $HUB, default settings but the sign-in budgets (unlimited: every guess is hashed)"
echo "     and request_head_timeout = ${HEAD_TIMEOUT}s; $(nproc) cores, so $(nproc) hashes at once; open-file limit $(ulimit -n)"
echo

"$BENCH" frontdoor --addr "127.0.0.1:$HUB_PORT" --hub-pid "$HUB_PID" --cookie "$COOKIE" \
    --proxied "/user/bench/download?bytes=1024" --user bench --head-timeout "$HEAD_TIMEOUT" \
    --idle "$IDLE" --burst "$BURST" --baseline-seconds "${BASELINE_SECONDS:-5}"
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
