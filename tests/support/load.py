"""Bounded load for lab tests: lab/load.py's generators (shared with `make demo`), with the suite's label.

`HostLoad` and `LoadResult` are lab.load's own. `OverlayLoad` labels its load container with the
suite's `swarmshift.test=<pid>` unless told otherwise, so that a killed run's container is
removed by the next run's leftover cleanup.
"""

from __future__ import annotations

from lab.load import HostLoad, LoadResult
from lab.load import OverlayLoad as _OverlayLoad
from tests.support.lab import LABEL, OWNER

__all__ = ["HostLoad", "LoadResult", "OverlayLoad"]


class OverlayLoad(_OverlayLoad):
    """lab.load.OverlayLoad, labelled for the suite's cleanup by default."""

    def __init__(self, client, network: str, service: str, path: str, *, labels: dict[str, str] | None = None,
                 **kwargs) -> None:
        super().__init__(client, network, service, path, labels={LABEL: OWNER} if labels is None else labels,
                         **kwargs)
