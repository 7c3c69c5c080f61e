#!/bin/sh
# Builds the real Traefik and cAdvisor from their released Go modules (lab/traefik, lab/cadvisor:
# modules of the lab's own that pin the upstream version) and wraps each in an image on the lab
# base: swarmshift-traefik:lab, swarmshift-cadvisor:lab.
#
# Only the go command and the Go module proxy are used. A binary is built once per version and
# per go.mod/go.sum/main.go, and kept outside the repo in $SWARMSHIFT_GO_CACHE; the module and
# build caches are Go's own (GOMODCACHE, GOCACHE). Timings of cold builds go to
# $SWARMSHIFT_GO_CACHE/build-times.tsv (bench/lab_builds.py reports them).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
base=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
cache=${SWARMSHIFT_GO_CACHE:-/var/cache/swarmshift/go}
mkdir -p "$cache"
command -v go >/dev/null 2>&1 || { echo "lab: the go command is needed to build Traefik and cAdvisor" >&2; exit 1; }

# build NAME MODULE-DIR UPSTREAM-MODULE PACKAGE VERSION-VARIABLE
build() {
  name=$1 dir=$here/$2 upstream=$3 pkg=$4 var=$5
  version=$(cd "$dir" && go list -m -f '{{.Version}}' "$upstream")
  key=$(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go 2>/dev/null | sha256sum | cut -c1-12)
  bin="$cache/$name-$version-$key"
  if [ ! -x "$bin" ]; then
    echo "lab: building $name $version from the Go module proxy (cold: several minutes)"
    start=$(date +%s)
    mods_before=$(du -sk "$(go env GOMODCACHE)" 2>/dev/null | cut -f1 || echo 0)
    gocache_before=$(du -sk "$(go env GOCACHE)" 2>/dev/null | cut -f1 || echo 0)
    log=$(mktemp)
    (cd "$dir" && go mod download >"$log" 2>&1 &&
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $var=$version" -o "$bin.tmp" "$pkg" >>"$log" 2>&1) || {
      cat "$log" >&2; rm -f "$log" "$bin.tmp"; echo "lab: building $name failed" >&2; exit 1; }
    rm -f "$log"
    mv "$bin.tmp" "$bin"
    mods_after=$(du -sk "$(go env GOMODCACHE)" | cut -f1)
    gocache_after=$(du -sk "$(go env GOCACHE)" | cut -f1)
    # name, version, seconds, module cache growth MiB, build cache growth MiB, binary MiB, when
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "$(( $(date +%s) - start ))" \
      "$(( (mods_after - mods_before) / 1024 ))" "$(( (gocache_after - gocache_before) / 1024 ))" \
      "$(( $(stat -c %s "$bin") / 1048576 ))" "$(date -u +%FT%TZ)" \
      >>"$cache/build-times.tsv"
  fi
  image="swarmshift-$name:lab"
  if [ "$(docker image inspect --format '{{index .Config.Labels "swarmshift.binary"}}' "$image" 2>/dev/null)" != "$(basename "$bin")" ]; then
    ctx=$(mktemp -d)
    cp "$bin" "$ctx/$name"
    cp "$dir/Dockerfile" "$ctx/"
    log=$(mktemp)
    DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" --label "swarmshift.binary=$(basename "$bin")" \
      -t "$image" "$ctx" >"$log" 2>&1 || { cat "$log" >&2; rm -rf "$ctx" "$log"; exit 1; }
    rm -rf "$ctx" "$log"
  fi
  echo "lab: $image holds $name $version"
}

build traefik traefik github.com/traefik/traefik/v3 github.com/traefik/traefik/v3/cmd/traefik \
  github.com/traefik/traefik/v3/pkg/version.Version
build cadvisor cadvisor github.com/google/cadvisor . github.com/google/cadvisor/lib/version.Version
