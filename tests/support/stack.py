"""The production stack with the lab's override, for the end-to-end tests: lab/stack.py (shared with
`make demo`), deployed with the suite's label on everything it creates.

`new_stack(client, workdir)` is a `LabStack` whose services, containers, networks, volumes,
configs and secrets carry `swarmshift.test=<pid>`, so that the suite's leftover cleanup removes
a killed run's stack.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import docker

from lab.stack import (
    IMAGES,
    NAMESPACE,
    OVERRIDE_FILE,
    RELEASES,
    ROOT,
    ROUTER_LABEL,
    STACK_FILE,
    LabStack,
    StackError,
    derived_image,
    labels_override,
    missing_images,
    remove_stack,
    stack_config,
    stacks_labelled,
)
from tests.support import lab

__all__ = ["IMAGES", "NAMESPACE", "OVERRIDE_FILE", "RELEASES", "ROOT", "ROUTER_LABEL", "STACK_FILE", "LabStack",
           "StackError", "derived_image", "labels_override", "missing_images", "remove_stack", "stack_config",
           "stacks_labelled", "new_stack"]


def new_stack(client: docker.DockerClient, workdir: Path, prefix: str = "ssstack") -> LabStack:
    """A LabStack under a fresh name, labelled for the suite's cleanup (not deployed yet)."""
    return LabStack(client, f"{prefix}{uuid.uuid4().hex[:6]}", {lab.LABEL: lab.OWNER}, workdir)

