"""The routers: one module per proxy behind one interface (`base.Router`), picked by `factory.build`."""

from bluegreen.routers.base import Router, RouterError, poll_until
from bluegreen.routers.factory import build

__all__ = ["Router", "RouterError", "build", "poll_until"]
