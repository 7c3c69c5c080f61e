"""The lab itself: the swarm uses its own address pool, and that pool cannot leave the machine."""

from __future__ import annotations

import ipaddress
import socket
import subprocess

from tests.support import lab
from tests.support.lab import CLUSTER_POOL, POOL


def default_route_device() -> str:
    out = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True, check=True).stdout
    fields = out.split()
    assert "dev" in fields, f"no default route: {out!r}"
    return fields[fields.index("dev") + 1]


def reject_rules(chain: str) -> list[str]:
    out = subprocess.run(["iptables", "-S", chain], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "-j REJECT" in line]


def test_swarm_uses_the_lab_pool(docker_client, swarm):
    pools = docker_client.info()["Swarm"]["Cluster"]["DefaultAddrPool"]
    assert pools == [POOL]
    name = swarm.network()

    def allocated():  # the manager allocates the subnet just after the create, and a busy one may lag
        config = (docker_client.networks.get(name).attrs.get("IPAM") or {}).get("Config")
        return config[0]["Subnet"] if config else None

    subnet = ipaddress.ip_network(lab.wait_for("the network's subnet", allocated, 10))
    assert subnet.subnet_of(ipaddress.ip_network(POOL))


def test_the_pool_is_rejected_on_the_default_route_and_nothing_wider(docker_client):
    dev = default_route_device()
    for chain in ("OUTPUT", "DOCKER-USER"):
        rules = reject_rules(chain)
        assert any(f"-d {POOL}" in r and f"-o {dev}" in r for r in rules), f"{chain} has no guard: {rules}"
        # Wider private ranges must stay open: the machine's DNS resolver sits in one. The only
        # other pool rejected is the three-node cluster's, when `make cluster` has run.
        for rule in rules:
            dest = rule.split("-d ", 1)[1].split()[0] if "-d " in rule else "0.0.0.0/0"
            assert any(ipaddress.ip_network(dest).subnet_of(ipaddress.ip_network(pool))
                       for pool in (POOL, CLUSTER_POOL)), f"{chain}: too wide: {rule}"


def test_a_connection_to_an_overlay_address_fails_locally(docker_client):
    # Only after the rule is confirmed present: without it this packet would leave the machine.
    test_the_pool_is_rejected_on_the_default_route_and_nothing_wider(docker_client)
    with socket.socket() as s:
        s.settimeout(3)
        try:
            s.connect(("10.201.0.2", 80))
        except ConnectionRefusedError:
            return  # REJECT answers at once with "port unreachable"
        except OSError as err:
            raise AssertionError(f"expected a local refusal, got {err!r}") from err
        raise AssertionError("a connection to the overlay pool succeeded from the host")
