#!/bin/sh
# `make cluster` / `make cluster-down`: a real three-node Swarm on this one machine, beside the
# single-node lab and without touching it.
#
# Each node is Debian's dockerd in network, mount, UTS and PID namespaces of its own (started
# with `nsenter --net`, not `ip netns exec`, which remounts /sys and hides the cgroup mounts). In
# its mount namespace /run and /var/lib/docker are its own (start_node), so its data root, exec
# root, pid file and socket are the defaults there; the host reaches the socket at
# /run/swarmshift-cluster/nodeN.sock. The nodes
# sit on a bridge of the lab's own (ssc-br0, 10.210.0.0/24; node N is 10.210.0.1N) and join as
# three managers, so quorum and manager failover can be tested. Namespaces rather than engines in
# privileged containers: no image has to hold an engine, each node is a plain process tree that
# `kill` ends as a dead machine would, and the host reaches every node's address directly.
#
# A registry (Debian's docker-registry) listens on the bridge's host address, 10.210.0.1:5000,
# and every node pulls the lab's images from it by tag; skopeo pushes them from the host engine.
# Nothing is copied into an engine by hand.
#
# Egress: the nodes have no NAT and the host's FORWARD policy (Docker's DROP) keeps their
# traffic on this machine; the cluster's overlay pool (10.202.0.0/16) is REJECTed on the
# default-route interface of the host and of every node (OUTPUT and DOCKER-USER), as the
# single-node lab does for its pool. Only the bridge's own traffic is ACCEPTed in DOCKER-USER.
#
# Idempotent: a healthy cluster (three Ready managers) is kept and only its images are pushed
# again; anything else (a killed run's leftovers) is torn down and built afresh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ROOT=/run/swarmshift-cluster
DATA=/var/lib/swarmshift-cluster
LOGS=/var/log/swarmshift-cluster
BR=ssc-br0
NET=10.210.0
POOL=10.202.0.0/16
REGISTRY=$NET.1:5000
NODES="1 2 3"
# Swarm's dispatcher heartbeat: a node is marked down, and its tasks rescheduled, after about
# three missed heartbeats. The lab's 2 s (Swarm's default is 5 s) cuts each node death in the
# cluster tests from 13-14 s to 4-5 s; bench/cluster_failover.py measures at both.
HEARTBEAT=${CLUSTER_HEARTBEAT:-2s}
IMAGES="${CLUSTER_IMAGES:-swarmshift:lab swarmshift-demo:lab swarmshift-cadvisor:lab swarmshift-traefik:lab}"

node_ip() { echo "$NET.1$1"; }
dk() { n=$1; shift; docker -H "unix://$ROOT/node$n.sock" "$@"; }
host_dev() { ip route show default | awk '{print $5; exit}'; }

need=""
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
command -v skopeo >/dev/null 2>&1 || need="$need skopeo"
command -v nsenter >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
  echo "cluster: installing$need"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null
fi

guard() {  # ACTION (-I or -D): the host's rules for the cluster bridge and pool
  act=$1 dev=$(host_dev)
  for rule in "DOCKER-USER -i $BR -o $BR -j ACCEPT" \
              ${dev:+"OUTPUT -o $dev -d $POOL -j REJECT"} ${dev:+"DOCKER-USER -o $dev -d $POOL -j REJECT"}; do
    # shellcheck disable=SC2086
    if iptables -C $rule 2>/dev/null; then
      [ "$act" = -D ] && iptables -D $rule
    else
      [ "$act" = -I ] && iptables -I $rule
    fi
  done
  return 0
}

down() {
  for n in $NODES; do
    stop_node "$n"
  done
  pid=$(cat "$ROOT/registry.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for n in $NODES; do
    ip netns del "ssc-node$n" 2>/dev/null || true
    ip link del "ssc-veth$n" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  guard -D
  rm -rf "$DATA" "$ROOT"
}

start_node() {  # N: the node's engine, in its namespaces, on its existing data root
  n=$1
  # The node boots: its /run starts empty, as a machine's tmpfs does (stale pid files of a killed
  # engine's containerd would otherwise point at unrelated processes of the new PID namespace).
  rm -rf "$ROOT/node$n"
  mkdir -p "$ROOT/node$n" "$DATA/node$n" /var/lib/docker
  ln -sfn "node$n/docker.sock" "$ROOT/node$n.sock"
  # Mount, UTS and PID namespaces of its own, so that the node looks like a machine of its own
  # to what runs on it: /run is the host's $ROOT/nodeN (its engine's socket is /var/run/docker.sock
  # there, which the host sees as $ROOT/nodeN.sock) and /var/lib/docker its data root, so the
  # stack's global cAdvisor, with its /var/run and /var/lib/docker mounts, reads its own node's
  # engine. The engine is the init of the PID namespace: killing it takes every process of the
  # node with it, containers included (they have network namespaces of their own, not the node's).
  # At nice 10 and the lowest best-effort I/O class, inherited by containerd, the shims and every
  # task: `make test` runs the single-node lab's tests beside the cluster's, and their load and
  # time bounds were measured on a machine the cluster does not share (tests/support/lanes.py).
  nohup nsenter --net="/var/run/netns/ssc-node$n" unshare --mount --uts --pid --fork --propagation private sh -c "
    set -e
    hostname ssc-node$n
    mount --bind $DATA/node$n /var/lib/docker
    mount --bind $ROOT/node$n /run
    mount -t proc proc /proc
    exec nice -n 10 ionice -c 2 -n 7 dockerd --config-file $DATA/node$n.json" >>"$LOGS/node$n.log" 2>&1 &
}

stop_node() {  # N: the node dies as a machine would: its engine, and with it every process of its PID namespace
  n=$1
  pids=$(ip netns pids "ssc-node$n" 2>/dev/null | tr '\n' ' ')
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  i=0
  while [ -n "$(ip netns pids "ssc-node$n" 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  rm -f "$ROOT/node$n/docker.sock" "$ROOT/node$n/docker.pid"
}

wait_node() {  # N
  n=$1 i=0
  until dk "$n" info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 60 ]; then
      tail -n 30 "$LOGS/node$n.log" >&2
      echo "cluster: node$n's dockerd did not answer within 60 s" >&2
      exit 1
    fi
    sleep 1
  done
}

healthy() {
  for n in $NODES; do
    [ -S "$ROOT/node$n.sock" ] || return 1
  done
  ready=$(dk 1 node ls --format '{{.Status}} {{.ManagerStatus}}' 2>/dev/null | grep -c '^Ready \(Leader\|Reachable\)$' || true)
  [ "$ready" = 3 ]
}

case "${1:-up}" in
  down) down; echo "cluster: removed"; exit 0 ;;
  # The cluster tests' node failures: `stop N` kills node N outright, `start N` boots it again.
  stop) stop_node "$2"; echo "cluster: node$2 stopped"; exit 0 ;;
  start) dk "$2" info >/dev/null 2>&1 || { stop_node "$2"; start_node "$2"; }
         wait_node "$2"; echo "cluster: node$2 started"; exit 0 ;;
  up) ;;
  *) echo "usage: cluster.sh [up|down|stop N|start N]" >&2; exit 2 ;;
esac

started=$(date +%s)
if healthy; then
  echo "cluster: three Ready managers already; pushing the images again"
  dk 1 swarm update --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
else
  [ -d "$ROOT" ] || [ -d "$DATA" ] || ip link show "$BR" >/dev/null 2>&1 && { echo "cluster: removing a cluster left behind"; down; }
  mkdir -p "$ROOT" "$DATA" "$LOGS"
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  guard -I
  for n in $NODES; do
    ns=ssc-node$n
    ip netns add "$ns"
    ip link add "ssc-veth$n" type veth peer name eth0 netns "$ns"
    ip link set "ssc-veth$n" master "$BR" up
    ip -n "$ns" addr add "$(node_ip "$n")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$NET.1"
    # The node's own egress guard, before its engine exists (DOCKER-USER follows once it does).
    ip netns exec "$ns" iptables -I OUTPUT -o eth0 -d "$POOL" -j REJECT
    mkdir -p "$ROOT/node$n" "$DATA/node$n"
    cat >"$DATA/node$n.json" <<EOF
{"insecure-registries": ["$REGISTRY"], "log-driver": "json-file", "log-opts": {"max-size": "5m"}}
EOF
    start_node "$n"
  done
  for n in $NODES; do
    wait_node "$n"
    ip netns exec "ssc-node$n" iptables -C DOCKER-USER -o eth0 -d "$POOL" -j REJECT 2>/dev/null ||
      ip netns exec "ssc-node$n" iptables -I DOCKER-USER -o eth0 -d "$POOL" -j REJECT
  done
  dk 1 swarm init --advertise-addr "$(node_ip 1)" --listen-addr "$(node_ip 1):2377" \
    --default-addr-pool "$POOL" --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
  token=$(dk 1 swarm join-token -q manager)
  for n in 2 3; do
    dk "$n" swarm join --advertise-addr "$(node_ip "$n")" --listen-addr "$(node_ip "$n"):2377" \
      --token "$token" "$(node_ip 1):2377" >/dev/null
  done
  i=0
  until healthy; do
    i=$((i + 1))
    [ $i -gt 60 ] && { dk 1 node ls >&2; echo "cluster: three Ready managers did not come within 60 s" >&2; exit 1; }
    sleep 1
  done
fi

# The registry on the bridge's host address, its blobs under the cluster's data root.
if ! curl -fs -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; then
  mkdir -p "$DATA/registry"
  cat >"$ROOT/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $DATA/registry}
  delete: {enabled: true}
http: {addr: $REGISTRY}
EOF
  nohup nice -n 10 docker-registry serve "$ROOT/registry.yml" >"$LOGS/registry.log" 2>&1 &
  echo $! >"$ROOT/registry.pid"
  i=0
  until curl -fs -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 30 ] && { tail -n 20 "$LOGS/registry.log" >&2; echo "cluster: the registry did not answer" >&2; exit 1; }
    sleep 0.5
  done
fi
for image in $IMAGES; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "cluster: no $image on the host engine: run \`make lab\`" >&2; exit 1; }
  skopeo copy -q --dest-tls-verify=false "docker-daemon:$image" "docker://$REGISTRY/$image" >/dev/null
done
echo "cluster: ready in $(( $(date +%s) - started ))s: three managers ($(for n in $NODES; do printf '%s ' "$(node_ip "$n")"; done| sed 's/ $//')), sockets $ROOT/nodeN.sock, registry $REGISTRY"
