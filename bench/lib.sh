# Shared by bench/*.sh: building, a private hub (its own data dir, embedded Postgres, hub id,
# Docker network and port), nginx, and cleaning all of it up on exit, failure or Ctrl-C.
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
LABHUB="${BENCH_LABHUB:-$REL/labhub}"  # BENCH_LABHUB: measure another build (a scratch copy); not LABHUB_*: the hub reads those
BENCH="$REL/labhub-bench"
TESTSERVER="$REL/labhub-testserver"

# Everything this run creates lives under WORK (short: the embedded Postgres' socket path
# must stay under ~100 bytes) and is named after HUB_ID.
WORK=$(mktemp -d /tmp/lhb.XXXXXX)
chmod 711 "$WORK"  # the embedded Postgres runs as the postgres user and must reach $WORK/data
HUB_ID="lhbench-$$"
NETWORK="$HUB_ID-net"
DATA="$WORK/data"
HUB_LOG="$WORK/hub.log"
HUB_PID=""
NGINX_PID=""
KEEP_WORK=${KEEP_WORK:-0}

say() { printf '%s\n' "$*" >&2; }
die() { say "$(basename "$0"): $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The machine and its load, printed above every report; warns when others are busy.
machine_line() {
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB  load (1/5/15 min): $load"
    echo "docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?') ($(docker info --format '{{.Driver}}' 2>/dev/null) storage), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3)"
    if awk -v l="${load%% *}" 'BEGIN { exit !(l > 1.5) }'; then
        echo "WARNING: the 1-minute load average is above 1.5: other work is running; figures will be low and noisy."
    fi
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is missing (Debian: apt-get install $2)"
}

# Builds the release binaries the benchmark needs.
build() {
    say "building release binaries (cargo build --release) ..."
    (cd "$ROOT" && cargo build --release --quiet -p labhub -p labhub-bench -p labhub-testkit \
        --bin labhub --bin labhub-bench --bin labhub-testserver) >&2 \
        || die "the release build failed (if another change is in progress, retry later)"
}

# The environment of every labhub command of this run.
hub_env() {
    unset DATABASE_URL LABHUB_CONFIG
    export LABHUB_DATA_DIR="$DATA"
    export LABHUB_BIND="127.0.0.1:$HUB_PORT"
    export LABHUB_SERVERS__BUILD_MISSING_IMAGES_AT_BOOT=false
    export LABHUB_DOCKER__HUB_ID="$HUB_ID"
    export LABHUB_DOCKER__NETWORK="$NETWORK"
    export LABHUB_AUTH__MAX_FAILED_LOGINS_PER_ACCOUNT=1000000
    export LABHUB_AUTH__MAX_FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS=1000000
    export LABHUB_AUTH__MAX_FAILED_ACCOUNTS_PER_ADDRESS=1000000
}

# labhub CLI commands run while the hub is NOT running: each starts and stops the embedded
# Postgres itself.
cli() { "$LABHUB" "$@" 2>>"$HUB_LOG"; }

wait_health() {
    local url="http://127.0.0.1:$HUB_PORT/hub/health" i
    for i in $(seq 1 "${HEALTH_TRIES:-600}"); do
        if curl -fsS --noproxy '*' -o /dev/null "$url" 2>/dev/null; then return 0; fi
        [ -n "$HUB_PID" ] && ! kill -0 "$HUB_PID" 2>/dev/null && { tail -20 "$HUB_LOG" >&2; die "the hub exited; log: $HUB_LOG"; }
        sleep 0.1
    done
    tail -20 "$HUB_LOG" >&2
    die "the hub did not answer $url within 60 s"
}

# Starts the hub in the background (extra arguments go before `serve`, e.g. --log-json).
start_hub() {
    # HUB_WRAPPER: a command to run the hub under (e.g. valgrind), for profiling.
    ${HUB_WRAPPER:-} "$LABHUB" "$@" serve >>"$HUB_LOG" 2>&1 &
    HUB_PID=$!
    wait_health
}

stop_hub() {
    if [ -n "$HUB_PID" ] && kill -0 "$HUB_PID" 2>/dev/null; then
        kill -TERM "$HUB_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 300); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$HUB_PID" 2>/dev/null && kill -KILL "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    HUB_PID=""
}

# Makes sure the tiny test image exists; sets TEST_IMAGE.
test_image() {
    TEST_IMAGE=$("$BENCH" image --testserver "$TESTSERVER") || die "could not build the test image"
}

# The proxy benchmarks' people and catalogue: `bench` (its password in PASSWORD), the admin
# `benchadmin` with a token (ADMIN_TOKEN), and the test image as `bench-test`. Needs TEST_IMAGE.
proxy_fixture() {
    PASSWORD="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cli user add bench --password-stdin <<<"$PASSWORD" >/dev/null
    cli user add benchadmin --admin --password-stdin <<<"$PASSWORD" >/dev/null
    ADMIN_TOKEN=$(cli token create benchadmin --note bench)
    # The whole machine for the upstream, so the paths under test, not a CPU quota, set the pace.
    cli image add bench-test --display-name "Test server" --reference "$TEST_IMAGE" --kind jupyter \
        --cpu 2 --memory 1G >/dev/null
}

# The address and token of a user's running container (sets UP_IP, UP_PORT, UP_TOKEN).
upstream_of() {
    local user=$1 id
    id=$(docker ps -q --filter "label=io.labhub.hub=$HUB_ID" --filter "label=io.labhub.user=$user" | head -1)
    [ -n "$id" ] || die "no running container for $user"
    UP_IP=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$id")
    UP_PORT=$(docker inspect -f '{{index .Config.Labels "io.labhub.port"}}' "$id")
    UP_TOKEN=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id" | sed -n 's/^JUPYTER_TOKEN=//p')
    [ -n "$UP_IP" ] && [ -n "$UP_TOKEN" ] || die "could not read $user's container address and token"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Cleaning up is best effort: something already gone must not turn the exit status into 1.
    set +e
    [ -n "$NGINX_PID" ] && kill -TERM "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    stop_hub
    # A hub killed hard leaves its embedded Postgres running: stop it.
    if [ -f "$DATA/postgres/data/postmaster.pid" ]; then
        setpriv --reuid=postgres --regid=postgres --clear-groups -- \
            "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl" -D "$DATA/postgres/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ -x "$BENCH" ] && "$BENCH" cleanup --hub-id "$HUB_ID" --network "$NETWORK" >/dev/null 2>&1
    if command -v docker >/dev/null; then
        local ids
        ids=$( { docker ps -aq --filter "label=io.labhub.hub=$HUB_ID"; docker ps -aq --filter "name=$HUB_ID-plain"; } | sort -u)
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
        ids=$( { docker volume ls -q --filter "label=io.labhub.hub=$HUB_ID"; docker volume ls -q --filter "name=$HUB_ID-plain"; } | sort -u)
        [ -n "$ids" ] && docker volume rm -f $ids >/dev/null 2>&1
        docker network rm "$NETWORK" >/dev/null 2>&1
    fi
    if [ "$rc" != 0 ] && [ -s "$HUB_LOG" ]; then
        say "last lines of $HUB_LOG:"
        tail -5 "$HUB_LOG" >&2
    fi
    if [ "$KEEP_WORK" = 1 ] || [ "$rc" != 0 ]; then
        say "kept $WORK (hub log: $HUB_LOG)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# CPU time per proxied request: what the processes in $CPU_PIDS spend (user and system), read
# from /proc across a wrk run of $SECONDS_PER_RUN s (64 connections; after 1 s of warm-up).
#   CPU_PIDS="pid…" cpu_per_request NAME URL [wrk options…]
cpu_ticks() {
    local p total_u=0 total_s=0 u s
    for p in "$@"; do
        read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
        total_u=$((total_u + u)) total_s=$((total_s + s))
    done
    echo "$total_u $total_s"
}
cpu_per_request() {
    local name=$1 url=$2 pids u0 s0 u1 s1 n
    shift 2
    read -r -a pids <<<"$CPU_PIDS"
    wrk -t1 -c64 -d1s "$@" "$url" >/dev/null
    read -r u0 s0 < <(cpu_ticks "${pids[@]}")
    n=$(wrk -t1 -c64 -d"${SECONDS_PER_RUN:-5}s" "$@" "$url" | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(cpu_ticks "${pids[@]}")
    local tick_us=$((1000000 / $(getconf CLK_TCK)))
    printf '%-8s %10d %14d %14d\n' "$name" "$n" $(((u1 - u0) * tick_us * 1000 / n)) $(((s1 - s0) * tick_us * 1000 / n))
}
