#!/usr/bin/env bash
# Issue 18's benchmark: a 1 GiB home restored from a tar and downloaded as a tar through the
# hub's API (`PUT`/`GET /hub/api/users/{name}/home/archive`), against `tar` of the same files
# in a plain container with a volume of its own, in the same run; and the hub's resident
# memory while it streams (sampled every 50 ms from /proc). See bench/README.md.
#
#   bench/archive.sh
#
# Environment: SIZE_MIB (1024), FILES (64), ROUNDS (3), TAR_IMAGE (labhub/jupyterlab:1: any
#   local image with tar; the baseline runs it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need docker docker.io
need curl curl
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-64}
ROUNDS=${ROUNDS:-3}
TAR_IMAGE=${TAR_IMAGE:-labhub/jupyterlab:1}
docker image inspect "$TAR_IMAGE" >/dev/null 2>&1 \
    || die "$TAR_IMAGE is absent: build it (images/jupyterlab/build.sh) or set TAR_IMAGE to a local image with tar"
build
HUB_PORT=$(free_port)
hub_env

say "writing $SIZE_MIB MiB of incompressible files in $FILES files ..."
mkdir -p "$WORK/src"
per=$((SIZE_MIB / FILES))
for i in $(seq 1 "$FILES"); do
    head -c "$((per * 1024 * 1024))" /dev/urandom >"$WORK/src/part-$i.bin"
done
chown -R 1000:100 "$WORK/src"
tar -cf "$WORK/home.tar" -C "$WORK/src" .
rm -rf "$WORK/src"
BYTES=$(stat -c %s "$WORK/home.tar")

cli user add bench --password-stdin <<<"bench-$$-password" >/dev/null
TOKEN=$(cli token create bench --note bench)
start_hub
URL="http://127.0.0.1:$HUB_PORT/hub/api/users/bench/home/archive"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$HUB_PID/status"; }

# Runs a command while sampling the hub's RSS; prints "seconds peak_rss_growth_kib".
measured() {
    local base peak=0 start end sampler
    base=$(rss_kib)
    ( while :; do rss_kib; sleep 0.05; done ) >"$WORK/rss" 2>/dev/null &
    sampler=$!
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$WORK/rss" | tail -1)
    echo "$(echo "$end - $start" | bc -l) $(( ${peak:-$base} - base ))"
}

hub_put() { curl -fsS --noproxy '*' -H "Authorization: token $TOKEN" -T "$WORK/home.tar" -X PUT "$URL"; }
hub_get() { curl -fsS --noproxy '*' -H "Authorization: token $TOKEN" -o /dev/null "$URL"; }
hub_get_gz() { curl -fsS --noproxy '*' -H "Authorization: token $TOKEN" -o /dev/null "$URL?format=tar.gz"; }
PLAIN="$HUB_ID-plain"
# The baseline is tar inside one container, from a file and into a pipe it drains itself: no
# attach stream in between (the docker CLI's own stdout copy runs at a tenth of the disk's
# speed, which would flatter the hub), and not `-f /dev/null`, which GNU tar skips reading for.
plain_put() {
    docker run --rm --network none --user 1000:100 -v "$PLAIN:/x" -v "$WORK/home.tar:/in.tar:ro" \
        --entrypoint tar "$TAR_IMAGE" -xf /in.tar -C /x
}
plain_get() {
    docker run --rm --network none -v "$PLAIN:/x:ro" --entrypoint sh "$TAR_IMAGE" \
        -c 'tar -cf - -C /x . | cat >/dev/null'
}
# The volume starts owned by the image's user, as the hub's seeded homes do.
docker volume create "$PLAIN" >/dev/null
docker run --rm --network none --user 0:0 -v "$PLAIN:/x" --entrypoint chown "$TAR_IMAGE" 1000:100 /x

echo "== bench/archive.sh: a $((BYTES / 1048576)) MiB home through the hub vs tar in a plain container =="
machine_line
echo "hub: release build, embedded Postgres; baseline: docker run $TAR_IMAGE tar, a volume of its own"
echo
printf '%-28s %10s %10s %12s\n' "round / path" "seconds" "MiB/s" "hub RSS +MiB"
mibs() { echo "scale=1; $BYTES / 1048576 / $1" | bc -l; }
declare -A best
for r in $(seq 1 "$ROUNDS"); do
    for what in plain_put hub_put plain_get hub_get hub_get_gz; do
        read -r secs grow < <(measured "$what")
        rate=$(mibs "$secs")
        printf '%-28s %10.2f %10s %12s\n' "$r $what" "$secs" "$rate" \
            "$([ "${what#hub}" != "$what" ] && echo "$((grow / 1024))" || echo -)"
        prev=${best[$what]:-0}
        if awk -v a="$rate" -v b="$prev" 'BEGIN { exit !(a > b) }'; then best[$what]=$rate; fi
        if [ "${what#hub}" != "$what" ]; then
            prevg=${best[$what-rss]:-0}
            (( grow / 1024 > prevg )) && best[$what-rss]=$((grow / 1024))
        fi
    done
done
echo
ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo "best of $ROUNDS rounds:"
echo "  restore: hub ${best[hub_put]} MiB/s vs plain tar ${best[plain_put]} MiB/s = $(ratio "${best[hub_put]}" "${best[plain_put]}")x (target >= 0.9x)"
echo "  archive: hub ${best[hub_get]} MiB/s vs plain tar ${best[plain_get]} MiB/s = $(ratio "${best[hub_get]}" "${best[plain_get]}")x (target >= 0.9x)"
echo "  archive as tar.gz (fastest level): ${best[hub_get_gz]} MiB/s (incompressible data: the worst case)"
echo "  hub RSS growth while streaming, worst round: restore ${best[hub_put-rss]:-0} MiB, archive ${best[hub_get-rss]:-0} MiB, tar.gz ${best[hub_get_gz-rss]:-0} MiB (target < 32 MiB)"
echo
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
