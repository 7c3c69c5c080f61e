"""swarmshift: autoscaling and blue-green deployments for Docker Swarm."""

__version__ = "0.1.0"

# The one label every swarmshift key lives under; services opt in with labels below it.
LABEL_PREFIX = "swarmshift."
