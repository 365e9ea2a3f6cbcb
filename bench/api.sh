#!/usr/bin/env bash
# Issue 2's benchmark: login latency (argon2id) and authenticated API throughput of the
# release hub with its embedded Postgres, against the unauthenticated GET /hub/api in the
# same run; then the hub's start time with an initialised data dir. See bench/README.md.
#
#   bench/api.sh
#
# Environment: SECONDS_PER_RUN (5), ROUNDS (3), LOGINS (40), STARTS (5), WRK_THREADS (1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need wrk wrk
need curl curl
build
HUB_PORT=$(free_port)
hub_env
PASSWORD="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

say "creating the user and a token (the CLI starts and stops the embedded Postgres) ..."
cli user add bench --password-stdin <<<"$PASSWORD" >/dev/null
TOKEN=$(cli token create bench --note bench)

echo "== bench/api.sh: labhub API and login =="
machine_line
start_hub
echo "hub: release build, embedded Postgres, http://127.0.0.1:$HUB_PORT, default settings"
echo
"$BENCH" api --url "http://127.0.0.1:$HUB_PORT" --user bench --password "$PASSWORD" --token "$TOKEN" \
    --seconds "${SECONDS_PER_RUN:-5}" --rounds "${ROUNDS:-3}" --logins "${LOGINS:-40}" --threads "${WRK_THREADS:-1}"
stop_hub

echo
echo "== Hub start time (already-initialised data dir; includes starting the embedded Postgres) =="
"$BENCH" startup --health "http://127.0.0.1:$HUB_PORT/hub/health" --runs "${STARTS:-5}" --log "$HUB_LOG" \
    --label "labhub serve" -- "$LABHUB" serve
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
