#!/usr/bin/env bash
# Issue 21's Swarm benchmark: spawn-to-ready of a server as a Swarm service through the hub's
# API ([docker] mode = "swarm") and the hub's own overhead of a start (its labhub::timing
# events, as bench/spawn.sh measures it; target under 50 ms); baselines in the same run: a
# plain container start of the same image (engine API and `docker run -d`, from bench/spawn.sh's
# measuring half) and a plain `docker service create` of the same image to "answers HTTP";
# and the image copy to a second node against `docker save | docker load` of the same id.
# See bench/README.md.
#
#   bench/swarm.sh
#
# The engine is put in a single-node swarm (advertising 127.0.0.1) for the run when it is in
# none, and leaves it again at the end (with the rules labhub put on docker_gwbridge, and that
# bridge if the run made it); an engine already in a swarm is left in it.
#
# Environment: RUNS (5), ROUNDS (3), CONCURRENT (5), DOCKER_CLI=false (skip the `docker run` rows).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need docker docker.io
need nsenter util-linux
need nft nftables

MADE_SWARM=0
GATEWAY_EXISTED=1
swarm_cleanup() {
    local rc=$?
    set +e
    docker service ls -q --filter "label=io.labhub.hub=$HUB_ID" | xargs -r docker service rm >/dev/null 2>&1
    docker service ls -q --filter "name=$HUB_ID-svc" | xargs -r docker service rm >/dev/null 2>&1
    stop_hub
    for _ in $(seq 1 50); do docker network rm "$HUB_ID-ov" >/dev/null 2>&1 && break; sleep 0.2; done
    if [ "$MADE_SWARM" = 1 ]; then
        docker swarm leave --force >/dev/null 2>&1
        iptables -D INPUT -i docker_gwbridge -m conntrack --ctstate NEW -m comment \
            --comment "labhub: user servers may not open connections to the host" -j REJECT 2>/dev/null
        iptables -D DOCKER-USER -i docker_gwbridge -m comment --comment "labhub: user servers" \
            -j LABHUB-docker_gwbridge 2>/dev/null
        iptables -F LABHUB-docker_gwbridge 2>/dev/null && iptables -X LABHUB-docker_gwbridge 2>/dev/null
        [ "$GATEWAY_EXISTED" = 0 ] && docker network rm docker_gwbridge >/dev/null 2>&1
    fi
    (exit "$rc")
    cleanup
}
trap swarm_cleanup EXIT

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GATEWAY_EXISTED=0
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    MADE_SWARM=1
fi

build
test_image
HUB_PORT=$(free_port)
hub_env
export LABHUB_DOCKER__MODE=swarm
export LABHUB_DOCKER__SWARM_NETWORK="$HUB_ID-ov"
export LABHUB_DOCKER__SWARM_SUBNET="${SWARM_SUBNET:-10.222.0.0/16}"
# The plain container runs join a bridge of their own (the hub makes none in Swarm mode).
docker network create "$NETWORK" >/dev/null

say "preparing the admin, its token and the catalogue ..."
cli user add benchadmin --admin --password-stdin <<<"bench-admin-$$-password" >/dev/null
TOKEN=$(cli token create benchadmin --note bench)
# A service reserves what its quota gives (reservations = limits): half a core each, so the
# CONCURRENT servers of a round all fit on a two-core node (at 2 cores each, Swarm would place
# one and leave the others pending for want of resources).
cli image add bench-test --display-name "Test server" --reference "$TEST_IMAGE" --kind jupyter \
    --cpu 0.5 --memory 512M >/dev/null

echo "== bench/swarm.sh: starting servers as Swarm services =="
machine_line
echo "engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), single-node swarm"
export LABHUB_LOG="info,sqlx=warn,hyper=warn,bollard=warn,labhub::timing=debug"
start_hub --log-json
echo "hub: release build, embedded Postgres, [docker] mode = \"swarm\", test image $TEST_IMAGE"
echo
"$BENCH" spawn --url "http://127.0.0.1:$HUB_PORT" --token "$TOKEN" --log "$HUB_LOG" --hub-id "$HUB_ID" \
    --network "$NETWORK" --test-image bench-test --jupyter-image "" \
    --runs "${RUNS:-5}" --jupyter-runs 0 --rounds "${ROUNDS:-3}" \
    --concurrent "${CONCURRENT:-5}" --docker-cli "${DOCKER_CLI:-true}"

# A plain service of the same image on the same overlay, to "answers HTTP" at its
# docker_gwbridge address: what Swarm itself costs, without the hub.
echo
echo "== plain docker service create (same image, overlay, restart none, dnsrr) to HTTP answer =="
times=()
for i in $(seq 1 "${RUNS:-5}"); do
    name="$HUB_ID-svc$i"
    t0=$(date +%s%N)
    docker service create -d -q --name "$name" --network "$HUB_ID-ov" --restart-condition none \
        --endpoint-mode dnsrr --user 1000:100 -e JUPYTER_TOKEN=plain "$TEST_IMAGE" \
        jupyter lab --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 --ServerApp.base_url=/ >/dev/null 2>&1
    ip=""
    for _ in $(seq 1 3000); do
        cid=$(docker ps -q --no-trunc --filter "label=com.docker.swarm.service.name=$name" | head -1)
        if [ -n "$cid" ]; then
            ip=$(docker network inspect docker_gwbridge -f "{{range \$k, \$v := .Containers}}{{if eq \$k \"$cid\"}}{{\$v.IPv4Address}}{{end}}{{end}}" | cut -d/ -f1)
            if [ -n "$ip" ] && [ "$(curl -s --noproxy '*' -o /dev/null -m 1 -w '%{http_code}' "http://$ip:8888/api")" != 000 ]; then
                break
            fi
        fi
        sleep 0.01
    done
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
    docker service rm "$name" >/dev/null
    for _ in $(seq 1 500); do
        [ -z "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$name")" ] && break
        sleep 0.02
    done
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "runs: $(echo $sorted | tr ' ' ',') ms; median $(printf '%s\n' $sorted | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms"

# An image reaching a second node (swarm_images = "copy"): labhub's copy against a plain
# `docker save | docker load` of the same id into the same node, in the same run. The node is
# a second dockerd in a network namespace of its own (not joined: the copy is engine to engine).
echo
echo "== an image copied to a second node (a second dockerd in a network namespace) =="
"$BENCH" image-copy --testserver "$TESTSERVER" --runs "${RUNS:-5}"
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
