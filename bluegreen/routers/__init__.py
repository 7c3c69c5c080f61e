"""The routers: one module per proxy behind one interface (`base.Router`), picked by `factory.build`."""

from bluegreen.routers.base import Router, RouterError, poll_until
from bluegreen.routers.factory import app_problems, build, directory

__all__ = ["Router", "RouterError", "app_problems", "build", "directory", "poll_until"]
