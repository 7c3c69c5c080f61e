#!/bin/sh
# Brings up the lab idempotently on Debian as root: packages, dockerd, a single-node swarm,
# the overlay-pool egress guard, the offline base image and the demo app image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
POOL=10.201.0.0/16
LABEL=swarmshift.test

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have dockerd      || need="$need docker.io"
have prometheus   || need="$need prometheus"
have prometheus-alertmanager || need="$need prometheus-alertmanager"
have nginx        || need="$need nginx"
have debootstrap  || need="$need debootstrap"
have iptables     || need="$need iptables"
have curl         || need="$need curl"
if [ -n "$need" ]; then
  echo "lab: installing$need"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null
fi
# Debian starts these as services when it installs them; the lab starts its own on 127.0.0.1.
# Stop only the packages' own instances, through their init scripts (which go by pid file, or
# hand over to systemd): a kill by name would also end every test's and every container's
# nginx and prometheus on this kernel, the lab stack's included, while a run is under way.
for svc in nginx prometheus prometheus-alertmanager; do
  if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done

if ! docker info >/dev/null 2>&1; then
  echo "lab: starting dockerd (log: /var/log/swarmshift-dockerd.log)"
  nohup dockerd >/var/log/swarmshift-dockerd.log 2>&1 &
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
      tail -n 30 /var/log/swarmshift-dockerd.log >&2
      echo "lab: dockerd did not answer within 60 s" >&2
      exit 1
    fi
    sleep 1
  done
fi

if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != "true" ]; then
  echo "lab: docker swarm init (pool $POOL)"
  docker swarm init --advertise-addr 127.0.0.1 --default-addr-pool "$POOL" >/dev/null
fi

# Overlay addresses have no route from the host: without this guard a connection to one
# would leave by the default route. REJECT exactly the lab pool there, nothing wider.
dev=$(ip route show default | awk '{print $5; exit}')
if [ -n "$dev" ]; then
  for chain in OUTPUT DOCKER-USER; do
    iptables -C "$chain" -o "$dev" -d "$POOL" -j REJECT 2>/dev/null ||
      iptables -I "$chain" -o "$dev" -d "$POOL" -j REJECT
  done
fi

# Leftovers of killed sessions: Swarm restarts their services with the engine. The label's value
# is the pid of the pytest run that made them; a run still alive keeps its services.
leftovers=""
for id in $(docker service ls -q --filter "label=$LABEL"); do
  owner=$(docker service inspect --format "{{index .Spec.Labels \"$LABEL\"}}" "$id" 2>/dev/null || true)
  case "$owner" in
    ''|*[!0-9]*) leftovers="$leftovers $id" ;;
    *) grep -qs pytest "/proc/$owner/cmdline" || leftovers="$leftovers $id" ;;
  esac
done
[ -z "$leftovers" ] || { echo "lab: removing leftover test services"; docker service rm $leftovers >/dev/null; }

sh "$here/base-image.sh"
base=${LAB_BASE_IMAGE:-swarmshift-lab/python:bookworm}
log=$(mktemp)
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" -t swarmshift-demo:lab "$here/../stack/demo-app" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
# The blue-green controller's nginx router (Debian's nginx-light, installed from the mirror).
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" -t swarmshift-nginx:lab "$here/nginx" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
echo "lab: ready (engine $(docker version --format '{{.Server.Version}}'), swarm manager, images built)"
