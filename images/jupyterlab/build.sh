#!/usr/bin/env bash
# Build labhub's JupyterLab image locally, with no container registry.
#
#   images/jupyterlab/build.sh TAG            e.g. labhub/jupyterlab:1
#   images/jupyterlab/build.sh --recipe-hash  print the recipe hash and exit
#
# A Debian bookworm root filesystem is bootstrapped with mmdebstrap from the
# mirror configured in this machine's apt sources (read at run time), a venv
# with JupyterLab from PyPI is created in /opt/jupyter, a user jovyan
# (1000:100) is added, and the result is `docker import`ed under TAG.
#
# Environment:
#   LABHUB_WITH_R=1          also install R (Debian's r-base-core) and IRkernel
#   LABHUB_DEBIAN_MIRROR=URI use this Debian mirror instead of the apt sources
#   LABHUB_HOST_CA=FILE      CA bundle pip uses inside the chroot
#                            (default /etc/ssl/certs/ca-certificates.crt);
#                            it is deleted before packing
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, HTTP(S)_PROXY,
#   NO_PROXY                 passed through to pip inside the chroot
#
# stdout carries machine-readable lines `##progress <0-100> <message>`;
# other output (tool chatter) goes to stdout/stderr as it comes.
set -euo pipefail

VENV=/opt/jupyter
NB_USER=jovyan
NB_UID=1000
NB_GID=100
SUITE=bookworm
# Top-level requirements; requirements.txt pins the whole closure with ==.
PIP_SPECS=("jupyterlab>=4,<5" "ipykernel>=7,<8")

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"

# Progress goes to fd 3 (a copy of build.sh's stdout, inherited by the
# mmdebstrap hook, whose own stdout mmdebstrap sends to stderr).
progress() {
    if [[ -n "${LABHUB_PROGRESS_FD:-}" ]] && { true >&"$LABHUB_PROGRESS_FD"; } 2>/dev/null; then
        printf '##progress %d %s\n' "$1" "$2" >&"$LABHUB_PROGRESS_FD"
    else
        printf '##progress %d %s\n' "$1" "$2"
    fi
}
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# sha256 over "<sha256>  <relative path>\n" of every regular file of the recipe
# directory (dot files excluded), in byte order of the paths: exactly
#   cd images/jupyterlab && find . -type f ! -name '.*' -printf '%P\n' \
#     | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum
recipe_hash() {
    (cd "$HERE" && find . -type f ! -name '.*' -printf '%P\n' | LC_ALL=C sort \
        | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1)
}

# Print "deb URI SUITE main" lines for bookworm, bookworm-updates and
# bookworm-security, as configured in the machine's apt sources.
mirror_lines() {
    if [[ -n "${LABHUB_DEBIAN_MIRROR:-}" ]]; then
        printf 'deb %s %s main\n' "$LABHUB_DEBIAN_MIRROR" "$SUITE"
        return
    fi
    local f=/etc/apt/sources.list.d/debian.sources out=""
    if [[ -r $f ]]; then
        # deb822: stanzas separated by blank lines; take Types/URIs/Suites.
        out=$(awk -v want="$SUITE" '
            function flush(   i, j, nu, ns, u, s) {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "" && suites != "") {
                    nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
                        if (u[i] != "" && (s[j] == want || s[j] == want "-updates" || s[j] == want "-security"))
                            print "deb " u[i] " " s[j] " main"
                }
                types = uris = suites = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"  { $1 = ""; types = $0 }
            tolower($1) == "uris:"   { $1 = ""; uris = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { flush() }' "$f")
    fi
    if [[ -n $out ]]; then
        printf '%s\n' "$out"
    elif [[ -r /etc/apt/sources.list ]]; then
        # classic: deb [options] URI SUITE COMPONENTS...
        awk -v want="$SUITE" '
            $1 != "deb" { next }
            { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } }
            $(i+1) == want || $(i+1) == want "-updates" || $(i+1) == want "-security" {
                print "deb " $i " " $(i+1) " main" }' /etc/apt/sources.list
    fi
}

# ---------------------------------------------------------------------------
# Customize hook: run by mmdebstrap (as `build.sh __customize ROOT`) once the
# Debian packages are installed; ROOT is the chroot directory, with /proc,
# /sys and /dev mounted and the host's resolv.conf copied in.
customize() {
    local root=$1
    [[ -d $root/etc ]] || die "customize: $root is not a root filesystem"
    local ca_src=${LABHUB_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
    local ca_in=/tmp/host-ca.crt
    local path=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

    # A clean environment for everything run in the chroot: nothing of the
    # host's (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip.conf...) leaks in.
    local -a cenv=(env -i "PATH=$path" HOME=/root LANG=C.UTF-8
        PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120)
    local v
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST \
             HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        [[ -n "${!v:-}" ]] && cenv+=("$v=${!v}")
    done

    progress 45 "creating the venv in $VENV"
    "${cenv[@]}" chroot "$root" python3 -m venv "$VENV"

    progress 50 "installing JupyterLab from PyPI"
    if [[ -r $ca_src ]]; then
        install -m 0644 "$ca_src" "$root$ca_in"
        cenv+=("PIP_CERT=$ca_in")
    else
        printf 'build.sh: no CA bundle at %s; pip uses its own\n' "$ca_src" >&2
    fi
    local -a cons=()
    if [[ -r $HERE/requirements.txt ]]; then
        install -m 0644 "$HERE/requirements.txt" "$root/tmp/labhub-constraints.txt"
        cons=(-c /tmp/labhub-constraints.txt)
    fi
    "${cenv[@]}" chroot "$root" "$VENV/bin/pip" install --no-cache-dir \
        "${cons[@]}" "${PIP_SPECS[@]}"
    rm -f "$root/tmp/labhub-constraints.txt"

    progress 68 "removing the host CA bundle from the chroot"
    if [[ -e $root$ca_in ]]; then
        rm -f "$root$ca_in"
    fi
    [[ ! -e $root$ca_in ]] || die "could not delete $ca_in from the chroot"
    # Belt and braces: no certificate that only this host trusts (a local
    # CA, e.g. /usr/local/share/ca-certificates) may be anywhere in the image.
    # Such certificates are those of the bundle absent from Debian's public
    # set (host's and chroot's /usr/share/ca-certificates); their base64
    # lines are searched for in every file of the root filesystem.
    if [[ -r $ca_src ]]; then
        local pub pat hits
        pub=$(mktemp) pat=$(mktemp)
        cat /usr/share/ca-certificates/*/*.crt \
            "$root"/usr/share/ca-certificates/*/*.crt \
            "$root/etc/ssl/certs/ca-certificates.crt" >"$pub" 2>/dev/null || true
        grep -vxF -f "$pub" "$ca_src" | grep -E '^[A-Za-z0-9+/=]{40,}$' >"$pat" || true
        if [[ -s $pat ]]; then
            hits=$(find "$root" -xdev -type f -print0 \
                   | xargs -0 grep -lF -f "$pat" -- 2>/dev/null || true)
            rm -f "$pub" "$pat"
            [[ -z $hits ]] || die "host-only CA material found in the image: $hits"
            printf 'build.sh: checked: no host-only CA certificate anywhere in the root filesystem\n' >&2
        else
            rm -f "$pub" "$pat"
            printf 'build.sh: the CA bundle holds no host-only certificate\n' >&2
        fi
    fi

    progress 70 "registering kernels"
    "${cenv[@]}" chroot "$root" "$VENV/bin/python" -m ipykernel install \
        --prefix="$VENV" --name python3 --display-name "Python 3 (ipykernel)"
    if [[ "${LABHUB_WITH_R:-0}" == 1 ]]; then
        "${cenv[@]}" chroot "$root" R --quiet --no-save \
            -e "IRkernel::installspec(user = FALSE, prefix = '$VENV')"
    fi
    "${cenv[@]}" chroot "$root" "$VENV/bin/jupyter" kernelspec list

    progress 74 "adding user $NB_USER ($NB_UID:$NB_GID)"
    grep -q "^[^:]*:[^:]*:$NB_GID:" "$root/etc/group" \
        || die "group $NB_GID missing in the chroot"
    chroot "$root" useradd --no-log-init --uid "$NB_UID" --gid "$NB_GID" \
        --create-home --home-dir "/home/$NB_USER" --shell /bin/bash "$NB_USER"
    chown -R "$NB_UID:$NB_GID" "$root/home/$NB_USER"
    # Like /opt/conda in jupyter/docker-stacks: the notebook user may
    # `pip install` into the venv (changes last as long as the container).
    chown -R "$NB_UID:$NB_GID" "$root$VENV"

    progress 77 "cleaning caches"
    rm -rf "$root"/root/.cache "$root"/root/.ipython "$root"/root/.jupyter \
        "$root"/root/.local "$root/home/$NB_USER/.cache" \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb
    # Docker provides these at run time; don't ship the build host's.
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"

    progress 80 "packing the root filesystem"
}

# ---------------------------------------------------------------------------
# The whole build is one function, parsed before it runs: editing this file
# during a build cannot derail the running build.
main() {
    case "${1:-}" in
        --recipe-hash) recipe_hash; exit 0 ;;
        -h|--help|"")
            sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
            [[ -n "${1:-}" ]]; exit ;;
    esac
    [[ $# -eq 1 ]] || die "usage: build.sh TAG (e.g. labhub/jupyterlab:1)"
    TAG=$1
    [[ $TAG =~ ^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$ ]] \
        || die "not a valid image tag: $TAG"

    exec 3>&1
    export LABHUB_PROGRESS_FD=3
    progress 5 "checking tools"
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            printf 'build.sh: mmdebstrap is missing; installing it with apt-get\n' >&2
            if ! apt-get install -y --no-install-recommends mmdebstrap; then
                apt-get update
                apt-get install -y --no-install-recommends mmdebstrap
            fi
            command -v mmdebstrap >/dev/null 2>&1 \
                || die "mmdebstrap is still missing after apt-get install: install the Debian package mmdebstrap and run this again."
        else
            die "mmdebstrap is missing: install the Debian package mmdebstrap (apt-get install mmdebstrap) and run this again."
        fi
    fi
    [[ $EUID -eq 0 ]] || die "run this as root: mmdebstrap's root mode and chroot need it."
    for tool in docker chroot tar sha256sum; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: install it and run this again."
    done
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)."

    mapfile -t MIRRORS < <(mirror_lines | awk '!seen[$0]++')
    [[ ${#MIRRORS[@]} -gt 0 ]] \
        || die "no $SUITE mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; set LABHUB_DEBIAN_MIRROR."
    printf 'build.sh: apt source: %s\n' "${MIRRORS[@]}" >&2

    HASH=$(recipe_hash)
    WITH_R=${LABHUB_WITH_R:-0}
    INCLUDE=python3,python3-venv,ca-certificates,tini
    [[ $WITH_R == 1 ]] && INCLUDE+=,r-base-core,r-cran-irkernel

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/labhub-image.XXXXXXXX")
    TMP_TAG="labhub-build-tmp/jupyterlab:$(basename "$WORK" | tr 'A-Z.' 'a-z-')"
    cleanup() {
        local rc=$?
        rm -rf "$WORK"
        if [[ $rc -ne 0 ]]; then
            docker image rm "$TMP_TAG" >/dev/null 2>&1 || true
            printf 'build.sh: failed (exit %d); %s left unchanged\n' "$rc" "$TAG" >&2
        fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    progress 10 "bootstrapping Debian $SUITE"
    export LABHUB_WITH_R=$WITH_R
    mmdebstrap --variant=minbase --mode=root --format=tar \
        --include="$INCLUDE" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook="\"$SELF\" __customize \"\$1\"" \
        "$SUITE" "$WORK/rootfs.tar" "${MIRRORS[@]}"
    printf 'build.sh: root filesystem tar: %s bytes\n' "$(stat -c %s "$WORK/rootfs.tar")" >&2

    progress 85 "importing into Docker"
    docker import \
        --message "labhub jupyterlab recipe $HASH" \
        --change "USER $NB_UID" \
        --change "WORKDIR /home/$NB_USER" \
        --change "ENV PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV HOME=/home/$NB_USER" \
        --change "ENV SHELL=/bin/bash" \
        --change "ENV LANG=C.UTF-8" \
        --change "EXPOSE 8888" \
        --change 'ENTRYPOINT ["tini", "--"]' \
        --change 'CMD ["jupyter", "lab"]' \
        --change "LABEL org.opencontainers.image.title=\"labhub JupyterLab\"" \
        --change "LABEL org.opencontainers.image.description=\"JupyterLab 4 in a venv at $VENV on Debian $SUITE, user $NB_USER ($NB_UID:$NB_GID)\"" \
        --change "LABEL io.labhub.recipe=jupyterlab" \
        --change "LABEL io.labhub.recipe-hash=$HASH" \
        --change "LABEL io.labhub.with-r=$([[ $WITH_R == 1 ]] && echo true || echo false)" \
        "$WORK/rootfs.tar" "$TMP_TAG" >&2
    rm -f "$WORK/rootfs.tar"

    progress 95 "tagging $TAG"
    OLD_ID=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
    docker tag "$TMP_TAG" "$TAG"
    docker image rm "$TMP_TAG" >/dev/null
    NEW_ID=$(docker image inspect --format '{{.Id}}' "$TAG")
    if [[ -n $OLD_ID && $OLD_ID != "$NEW_ID" ]]; then
        # Refused (and left alone) while a container or another tag uses it.
        docker image rm "$OLD_ID" >/dev/null 2>&1 \
            && printf 'build.sh: removed the previous image %s\n' "$OLD_ID" >&2 || true
    fi
    printf 'build.sh: %s is %s (recipe hash %s)\n' "$TAG" "$NEW_ID" "$HASH" >&2
    progress 100 "done"
}

if [[ "${1:-}" == __customize ]]; then
    customize "$2"
    exit 0
fi
main "$@"
exit
