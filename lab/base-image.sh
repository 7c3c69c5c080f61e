#!/bin/sh
# Builds the lab's Python base image offline (debootstrap minbase + docker import), cached by tag.
set -eu
tag=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "lab: base image $tag present"
  exit 0
fi
here=$(dirname "$0")
mirror=$(sh "$here/mirror.sh")
[ -n "$mirror" ] || { echo "lab: no Debian mirror found in the apt sources" >&2; exit 1; }
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
root=$(mktemp -d /var/tmp/swarmshift-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "lab: debootstrap $suite from the apt mirror into $root"
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Keep the image small: no apt lists, docs or caches are needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "lab: built $tag in $(( $(date +%s) - start )) s"
