#!/bin/sh
# Builds the swarmshift image on the lab's offline base: wheels are built on the host (which
# reaches the package registries) and installed in the image with --no-index.
set -eu
pip=${1:?usage: swarmshift-image.sh PATH-TO-PIP}
cd "$(dirname "$0")/.."
base=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
rm -rf .wheels
"$pip" wheel -q --disable-pip-version-check --wheel-dir .wheels . 2>&1 | grep -v '^WARNING: Location' || true
"$pip" download -q --disable-pip-version-check -d .wheels "setuptools>=77" wheel 2>&1 | grep -v '^WARNING: Location' || true
ls .wheels/swarmshift-*.whl >/dev/null
log=$(mktemp)
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" \
  --build-arg PIP_ARGS="--no-index --find-links /src/.wheels" -t swarmshift:lab . >"$log" 2>&1 || {
  cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
echo "lab: built swarmshift:lab ($(docker image inspect swarmshift:lab --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
