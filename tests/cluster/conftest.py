"""Fixtures of the cluster tests: the three-node cluster, its labelled services, and the lab's host-side daemons."""

from __future__ import annotations

import pytest

from tests.support import cluster as lab_cluster
from tests.support import lab

_error: str | None = None


@pytest.fixture(scope="session")
def cluster():
    """The cluster (failing loudly when it is not up), after removing labelled leftovers of killed runs."""
    global _error
    if _error:
        pytest.fail(_error, pytrace=False)
    try:
        with lab_cluster.turn():  # not while the other lane's cluster test has a node down
            c = lab_cluster.connect()
            removed = lab.remove_leftovers(c.client(1))
    except lab_cluster.ClusterUnavailable as err:
        _error = str(err)
        pytest.fail(_error, pytrace=False)
    if removed:
        print(f"\ncluster: removed leftovers of killed runs: {', '.join(removed)}")
    yield c
    with lab_cluster.turn():  # the other lane's cluster test may be killing a node right now
        c.heal()
    c.close()


@pytest.fixture(autouse=True)
def cluster_turn(cluster):
    """The cluster's lock, held for the whole test: `make test` runs cluster tests in two lanes, and they kill its nodes."""
    with lab_cluster.turn():
        yield


@pytest.fixture
def cswarm(cluster, cluster_turn, request):
    """Labelled services and networks on the cluster, removed after the test (by whichever node answers)."""
    s = lab.LabSwarm(cluster.client(1), prefix=request.node.name[:12].replace("_", "").lower())
    yield s
    cluster.heal()
    s.client = cluster.client(1)
    s.close()
