"""The Swarm labels that both daemons read: the blue-green lock that the autoscaler honours."""

from __future__ import annotations

# The autoscaler leaves alone every service that carries this label. The blue-green controller
# sets it to the deploy id while a deploy runs (both colors), and to "idle" on the color that
# takes no traffic.
BLUEGREEN_LOCK_LABEL = "swarmshift.bluegreen.lock"
