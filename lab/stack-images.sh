#!/bin/sh
# Builds the images the lab variant of the stack (stack/lab/) needs besides swarmshift:lab, the
# demo app and the nginx router: Prometheus and Alertmanager from Debian's packages, and the
# cAdvisor stand-in. Run after lab/swarmshift-image.sh (the stand-in builds on swarmshift:lab).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
base=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
log=$(mktemp)
ctx=$(mktemp -d)
trap 'rm -rf "$log" "$ctx"' EXIT
build() {  # TAG CONTEXT [BUILD-ARG...]
  tag=$1 context=$2
  shift 2
  DOCKER_BUILDKIT=0 docker build -q "$@" -t "$tag" "$context" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
}
build swarmshift-prometheus:lab "$here/prometheus" --build-arg BASE_IMAGE="$base"
build swarmshift-alertmanager:lab "$here/alertmanager" --build-arg BASE_IMAGE="$base"
cp "$here/cadvisor/Dockerfile" "$here/../tests/support/cadvisor.py" "$ctx/"
build swarmshift-cadvisor:lab "$ctx" --build-arg SWARMSHIFT_IMAGE=swarmshift:lab
echo "lab: built the lab stack's images (swarmshift-prometheus:lab, swarmshift-alertmanager:lab, swarmshift-cadvisor:lab)"
