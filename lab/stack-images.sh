#!/bin/sh
# Builds the images the lab's stack needs besides swarmshift:lab, the demo app, the nginx router
# and the Go-built Traefik and cAdvisor (lab/go-images.sh): Prometheus and Alertmanager from
# Debian's packages.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
base=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
build() {  # TAG CONTEXT [BUILD-ARG...]
  tag=$1 context=$2
  shift 2
  DOCKER_BUILDKIT=0 docker build -q "$@" -t "$tag" "$context" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
}
build swarmshift-prometheus:lab "$here/prometheus" --build-arg BASE_IMAGE="$base"
build swarmshift-alertmanager:lab "$here/alertmanager" --build-arg BASE_IMAGE="$base"
echo "lab: built the lab stack's images (swarmshift-prometheus:lab, swarmshift-alertmanager:lab)"
