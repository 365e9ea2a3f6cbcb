#!/usr/bin/env bash
# Issue 3's benchmark: spawn-to-ready through the hub's API for the tiny test image and the
# real JupyterLab image, the hub's own overhead of a start (its labhub::timing debug events),
# 20 concurrent starts; baseline in the same run: plain container runs of the same image,
# command and network (engine API and `docker run -d`). See bench/README.md.
#
#   bench/spawn.sh
#
# Environment: RUNS (5), JUPYTER_RUNS (3), ROUNDS (3), CONCURRENT (20),
#   SKIP_JUPYTER=1 (no JupyterLab rows), BUILD_JUPYTER=1 (build labhub/jupyterlab:1 if absent;
#   takes many minutes), DOCKER_CLI=false (skip the `docker run` rows).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need docker docker.io
build
test_image
HUB_PORT=$(free_port)
hub_env
JUPYTER_REF=labhub/jupyterlab:1
JUPYTER_NAME=bench-jupyter
if [ "${SKIP_JUPYTER:-0}" = 1 ]; then
    JUPYTER_NAME=""
elif ! docker image inspect "$JUPYTER_REF" >/dev/null 2>&1; then
    if [ "${BUILD_JUPYTER:-0}" = 1 ]; then
        "$ROOT/images/jupyterlab/build.sh" "$JUPYTER_REF" >&2 || die "building $JUPYTER_REF failed"
    else
        say "$JUPYTER_REF is absent: skipping JupyterLab (BUILD_JUPYTER=1 builds it first)"
        JUPYTER_NAME=""
    fi
fi

say "preparing the admin, its token and the catalogue ..."
cli user add benchadmin --admin --password-stdin <<<"bench-admin-$$-password" >/dev/null
TOKEN=$(cli token create benchadmin --note bench)
# Both entries get 2 CPUs (the whole machine), like the plain runs, which have no limit.
cli image add bench-test --display-name "Test server" --reference "$TEST_IMAGE" --kind jupyter \
    --cpu 2 --memory 512M >/dev/null
if [ -n "$JUPYTER_NAME" ]; then
    cli image add "$JUPYTER_NAME" --display-name "JupyterLab" --reference "$JUPYTER_REF" --kind jupyter \
        --cpu 2 --memory 2G >/dev/null
fi

echo "== bench/spawn.sh: starting servers =="
machine_line
export LABHUB_LOG="info,sqlx=warn,hyper=warn,bollard=warn,labhub::timing=debug"
start_hub --log-json
echo "hub: release build, embedded Postgres, default settings (readiness polled every 250 ms),"
echo "     test image $TEST_IMAGE${JUPYTER_NAME:+, $JUPYTER_REF}"
echo
"$BENCH" spawn --url "http://127.0.0.1:$HUB_PORT" --token "$TOKEN" --log "$HUB_LOG" --hub-id "$HUB_ID" \
    --network "$NETWORK" --test-image bench-test --jupyter-image "$JUPYTER_NAME" \
    --runs "${RUNS:-5}" --jupyter-runs "${JUPYTER_RUNS:-3}" --rounds "${ROUNDS:-3}" \
    --concurrent "${CONCURRENT:-20}" --docker-cli "${DOCKER_CLI:-true}"
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
