#!/usr/bin/env bash
# Build the real control-plane binaries the cluster tests and the simulator run
# (etcd, kube-apiserver, kube-controller-manager) from Go modules.
#
# Why from source: no reachable package registry ships kube-apiserver, and Debian's etcd is
# too old for current API servers (see docs/envtest.md). The Go module proxy is reachable, so
# we generate a throwaway wrapper module outside the repository and `go build` the commands.
#
# Output: ${KUBEOS_ENVTEST_DIR:-$HOME/.cache/kubeos/envtest/<k8s-version>}/{etcd,kube-apiserver,
# kube-controller-manager} plus versions.txt. A no-op when those binaries already exist.
# Go module and build caches live under ${KUBEOS_GO_CACHE:-$HOME/.cache/kubeos/go}, never in
# the repository. Set KUBEOS_GOTOOLCHAIN (e.g. go1.27.3) only if a release needs a newer Go.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=envtest-versions.env
. "$HERE/envtest-versions.env"
if [ -n "${KUBEOS_K8S_VERSION:-}" ]; then KUBEOS_K8S_CANDIDATES="$KUBEOS_K8S_VERSION"; fi
if [ -n "${KUBEOS_ETCD_VERSION:-}" ]; then KUBEOS_ETCD_CANDIDATES="$KUBEOS_ETCD_VERSION"; fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/kubeos"
GO_CACHE_ROOT="${KUBEOS_GO_CACHE:-$CACHE_ROOT/go}"
export GOMODCACHE="$GO_CACHE_ROOT/mod"
export GOCACHE="$GO_CACHE_ROOT/build"
export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export CGO_ENABLED=0
export GOWORK=off
if [ -n "${KUBEOS_GOTOOLCHAIN:-}" ]; then export GOTOOLCHAIN="$KUBEOS_GOTOOLCHAIN"; fi

log() { printf '[envtest-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if ! command -v go >/dev/null; then
    log "go is not installed; install Go >= 1.24 and rerun (make setup)"
    exit 1
fi

have_all() {
    local dir="$1"
    [ -x "$dir/etcd" ] && [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kube-controller-manager" ]
}

# A no-op when any candidate's output directory (or the explicit one) is already complete.
if [ -n "${KUBEOS_ENVTEST_DIR:-}" ]; then
    if have_all "$KUBEOS_ENVTEST_DIR"; then
        log "binaries already present in $KUBEOS_ENVTEST_DIR"
        exit 0
    fi
else
    for v in $KUBEOS_K8S_CANDIDATES; do
        if have_all "$CACHE_ROOT/envtest/$v"; then
            log "binaries already present in $CACHE_ROOT/envtest/$v"
            exit 0
        fi
    done
fi

WORK_ROOT="$CACHE_ROOT/envtest-work"
mkdir -p "$WORK_ROOT" "$GOMODCACHE" "$GOCACHE"
START=$(date +%s)

# build_etcd VERSION OUTDIR: the etcd server's main package is the root of its server module.
build_etcd() {
    local ver="$1" out="$2" mod="$WORK_ROOT/etcd-$1"
    rm -rf "$mod" && mkdir -p "$mod"
    cat >"$mod/go.mod" <<GOMOD
module kubeos.local/envtest/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ver
GOMOD
    cat >"$mod/tools.go" <<'GOSRC'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GOSRC
    (cd "$mod" && go mod tidy && go build -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

# build_kube VERSION OUTDIR: k8s.io/kubernetes pins its ~30 staging modules at v0.0.0 and
# replaces them with ./staging paths that are not in the module zip, so the wrapper replaces
# each one with its published v0.<minor>.<patch> tag, read from the downloaded go.mod.
build_kube() {
    local ver="$1" out="$2" mod="$WORK_ROOT/kube-$1"
    local staging="v0.${ver#v1.}"
    local minor="${ver#v1.}"
    minor="${minor%%.*}"
    rm -rf "$mod" && mkdir -p "$mod"
    local upstream_gomod
    upstream_gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$ver" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    if [ ! -f "$upstream_gomod" ]; then
        log "could not download k8s.io/kubernetes@$ver"
        return 1
    fi
    {
        echo "module kubeos.local/envtest/kube"
        echo
        # The same go directive as upstream, so the same language rules apply.
        grep -m1 '^go ' "$upstream_gomod"
        grep '^godebug' "$upstream_gomod" || true
        echo
        echo "require k8s.io/kubernetes $ver"
        echo
        grep -oE '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/src/k8s\.io/[^ ]+' "$upstream_gomod" |
            awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >"$mod/go.mod"
    cat >"$mod/tools.go" <<'GOSRC'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GOSRC
    # The same version stamps the upstream release build sets, so /version is truthful.
    local pkg="k8s.io/component-base/version" cpkg="k8s.io/client-go/pkg/version"
    local ld="-s -w"
    for p in "$pkg" "$cpkg"; do
        ld+=" -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    (cd "$mod" && go mod tidy &&
        go build -ldflags="$ld" -o "$out/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
}

built_kube=""
for v in $KUBEOS_K8S_CANDIDATES; do
    out="${KUBEOS_ENVTEST_DIR:-$CACHE_ROOT/envtest/$v}"
    mkdir -p "$out"
    log "building kube-apiserver and kube-controller-manager $v into $out"
    if build_kube "$v" "$out"; then
        built_kube="$v"
        break
    fi
    log "kubernetes $v failed to build; trying the next candidate"
    rmdir "$out" 2>/dev/null || true # only if empty: never delete binaries someone put there
done
if [ -z "$built_kube" ]; then
    log "no kubernetes candidate built ($KUBEOS_K8S_CANDIDATES)"
    exit 1
fi
log "kubernetes $built_kube built after $(($(date +%s) - START))s"

built_etcd=""
for v in $KUBEOS_ETCD_CANDIDATES; do
    log "building etcd $v into $out"
    if build_etcd "$v" "$out"; then
        built_etcd="$v"
        break
    fi
    log "etcd $v failed to build; trying the next candidate"
done
if [ -z "$built_etcd" ]; then
    log "no etcd candidate built ($KUBEOS_ETCD_CANDIDATES)"
    exit 1
fi

printf 'kubernetes=%s\netcd=%s\ngo=%s\nbuild_seconds=%s\n' \
    "$built_kube" "$built_etcd" "$(go env GOVERSION)" "$(($(date +%s) - START))" >"$out/versions.txt"
log "done in $(($(date +%s) - START))s: $(tr '\n' ' ' <"$out/versions.txt")"
