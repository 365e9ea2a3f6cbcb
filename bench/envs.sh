#!/usr/bin/env bash
# Issue 17's benchmark: building an environment through the hub (POST /hub/api/environments,
# its log followed to the end) against a plain `docker build` of the same steps, in the same
# run: a cold build, a rebuild with an unchanged recipe (target: under 2 s), and a rebuild
# after one changed pin in requirements.txt; and the same files uploaded (a tar.gz body, no
# git) a second time, which should reuse the image like an unchanged commit. See bench/README.md.
#
#   bench/envs.sh
#
# Environment: BASE_IMAGE (labhub/jupyterlab:1), PIP_CERT (the CA bundle pip trusts while it
#   downloads; default /etc/ssl/certs/ca-certificates.crt when present).
#
# The hub runs as a debug build: a build's time is the engine's, pip's and apt's, not the hub's;
# with isolate_host off, which costs a build nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need docker docker.io
need curl curl
need git git
BASE_IMAGE=${BASE_IMAGE:-labhub/jupyterlab:1}
PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || die "$BASE_IMAGE is absent: build it (images/jupyterlab/build.sh)"
say "building the hub (cargo build -p labhub) ..."
(cd "$ROOT" && cargo build --quiet -p labhub --bin labhub) >&2 || die "the build failed"
LABHUB="$ROOT/target/debug/labhub"
HUB_PORT=$(free_port)
hub_env
[ -r "$PIP_CERT" ] && export LABHUB_ENVIRONMENTS__PIP_CERT="$PIP_CERT"
# No firewall rules to leave behind without the release labhub-bench (they cost a build nothing).
export LABHUB_DOCKER__ISOLATE_HOST=false

# Bases of this run's own, so the first builds are cold for the hub and for docker alike; one
# each, so the engine's cache never offers one side's layers to the other (the same step on
# the same parent would be found in either chain, and the next step's cache then missed).
BASE="$HUB_ID-base:1"
PLAIN_BASE="$HUB_ID-base:plain"
printf 'FROM %s\nLABEL bench.run=%s\n' "$BASE_IMAGE" "$HUB_ID" | docker build -q -t "$BASE" - >/dev/null
printf 'FROM %s\nLABEL bench.run=%s-plain\n' "$BASE_IMAGE" "$HUB_ID" | docker build -q -t "$PLAIN_BASE" - >/dev/null
cleanup_envs() {
    docker image ls -q --filter "label=io.labhub.hub=$HUB_ID" | xargs -r docker image rm -f >/dev/null 2>&1 || true
    docker image rm -f "$HUB_ID-plain:1" "$BASE" "$PLAIN_BASE" >/dev/null 2>&1 || true
}
trap 'cleanup_envs; cleanup' EXIT

# The recipe: a pinned package, a Debian package, a postBuild.
REPO="$WORK/repo"
mkdir -p "$REPO"
git -C "$REPO" init -q --initial-branch=main
printf 'tabulate==0.9.0\n' >"$REPO/requirements.txt"
printf 'jq\n' >"$REPO/apt.txt"
printf '#!/bin/sh\nset -e\necho built > /srv/repo/built.txt\n' >"$REPO/postBuild"
chmod +x "$REPO/postBuild"
commit() { git -C "$REPO" -c user.name=bench -c user.email=bench@example.org commit -qam "$1"; }
git -C "$REPO" add -A
commit "recipe"

# The same steps for plain docker build, as the hub writes them.
PLAIN="$WORK/plain"
mkdir -p "$PLAIN/ctx/repo"
plain_context() {
    cp "$REPO/requirements.txt" "$PLAIN/ctx/requirements.txt"
    cp "$PLAIN/ctx/requirements.txt" "$PLAIN/ctx/repo/"
    cp "$REPO/apt.txt" "$REPO/postBuild" "$PLAIN/ctx/repo/"
    cp "$REPO/postBuild" "$PLAIN/ctx/postBuild"
    if [ -r "$PIP_CERT" ]; then cp "$PIP_CERT" "$PLAIN/ctx/pip-ca.pem"; else : >"$PLAIN/ctx/pip-ca.pem"; fi
}
cat >"$PLAIN/ctx/Dockerfile" <<DOCKERFILE
FROM $PLAIN_BASE AS wheels
USER root
COPY requirements.txt /tmp/labhub/requirements.txt
COPY pip-ca.pem /tmp/labhub/pip-ca.pem
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONFIG_FILE=/dev/null PIP_CERT=/tmp/labhub/pip-ca.pem python3 -m pip wheel -r /tmp/labhub/requirements.txt -w /tmp/labhub/wheels

FROM $PLAIN_BASE
USER root
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jq && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /tmp/labhub
COPY --from=wheels --chown=1000 /tmp/labhub /tmp/labhub
USER 1000
RUN python3 -m pip install --no-index --no-cache-dir --find-links /tmp/labhub/wheels -r /tmp/labhub/requirements.txt
USER root
RUN rm -rf /tmp/labhub
COPY --chown=1000 repo /srv/repo
COPY --chown=1000 postBuild /opt/labhub/postBuild
USER 1000
WORKDIR /srv/repo
RUN chmod +x /opt/labhub/postBuild && /opt/labhub/postBuild
USER 1000
WORKDIR /home/jovyan
LABEL bench.build=plain
DOCKERFILE

cli user add benchadmin --admin --password-stdin <<<"bench-$$-password" >/dev/null
ADMIN_TOKEN=$(cli token create benchadmin --note bench)
cli image add bench-base --display-name "Bench base" --reference "$BASE" --kind jupyter --cpu 2 --memory 2G >/dev/null
start_hub
API="http://127.0.0.1:$HUB_PORT/hub/api"
api() { curl -fsS --noproxy '*' -H "Authorization: token $ADMIN_TOKEN" "$@"; }

# Follows a build's log to its end; fails when the build failed.
follow() {
    api -N "http://127.0.0.1:$HUB_PORT$1" >"$WORK/log" || die "the log of $1 broke off"
    if grep -q '"failed":true' "$WORK/log"; then tail -5 "$WORK/log" >&2; die "a build failed"; fi
}
hub_cold() {
    local url
    url=$(api -X POST -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench\", \"source\": \"$REPO\", \"ref\": \"main\", \"base\": \"bench-base\"}" \
        "$API/environments" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_url"])')
    follow "$url"
}
hub_rebuild() {
    local url
    url=$(api -X POST -d '{}' "$API/environments/bench/builds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_url"])')
    follow "$url"
}
# The repository's files as a tar.gz body (no git), for the environment `bench-upload`.
upload() {
    tar czf "$WORK/files.tar.gz" -C "$REPO" --exclude=.git .
    api -X POST -H 'Content-Type: application/gzip' --data-binary @"$WORK/files.tar.gz" "$1" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_url"])'
}
hub_upload_first() { follow "$(upload "$API/environments?name=bench-upload&base=bench-base")"; }
hub_upload_same() { follow "$(upload "$API/environments/bench-upload/builds")"; }
plain() {
    DOCKER_BUILDKIT=0 docker build "$@" --network "$NETWORK" -q -t "$HUB_ID-plain:1" "$PLAIN/ctx" >/dev/null
}
plain_cold() { plain --no-cache; }
plain_rebuild() { plain; }
timed() {
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

echo "== bench/envs.sh: environment builds through the hub vs plain docker build of the same steps =="
machine_line
echo "recipe: requirements.txt (1 pin), apt.txt (jq), postBuild; base $BASE_IMAGE (a fresh copy of this run's)"
echo
plain_context
declare -A t
t[hub_cold]=$(timed hub_cold)
t[plain_cold]=$(timed plain_cold)
t[hub_same]=$(timed hub_rebuild)
t[plain_same]=$(timed plain_rebuild)
# Its first build finds every layer in the engine's cache (the same steps as `bench`'s).
t[upload_first]=$(timed hub_upload_first)
t[upload_same]=$(timed hub_upload_same)
printf 'tabulate==0.8.10\n' >"$REPO/requirements.txt"
commit "one changed pin"
plain_context
t[hub_pin]=$(timed hub_rebuild)
t[plain_pin]=$(timed plain_rebuild)
ratio() { echo "scale=2; $1 / $2" | bc -l; }
printf '%-34s %10s %10s %8s\n' "build" "hub s" "docker s" "ratio"
for k in cold same pin; do
    case $k in cold) what="cold" ;; same) what="unchanged recipe (target < 2 s)" ;; pin) what="one changed pin" ;; esac
    printf '%-34s %10.2f %10.2f %7sx\n' "$what" "${t[hub_$k]}" "${t[plain_$k]}" "$(ratio "${t[hub_$k]}" "${t[plain_$k]}")"
done
printf '%-34s %10.2f\n' "upload, first (engine cache warm)" "${t[upload_first]}"
printf '%-34s %10.2f %10.2f %7sx\n' "unchanged upload (same files)" "${t[upload_same]}" "${t[plain_same]}" \
    "$(ratio "${t[upload_same]}" "${t[plain_same]}")"
echo
if awk -v t="${t[hub_same]}" 'BEGIN { exit !(t < 2) }'; then verdict=met; else verdict="NOT met"; fi
echo "target: a rebuild with an unchanged recipe under 2 s: ${t[hub_same]} s [$verdict]"
if awk -v t="${t[upload_same]}" 'BEGIN { exit !(t < 2) }'; then verdict=met; else verdict="NOT met"; fi
echo "the same for an unchanged upload: ${t[upload_same]} s [$verdict]"
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
