"""Incoming Alertmanager webhooks (payload version 4), validated into plain data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmshift.config import problems_from
from swarmshift.http import HTTPProblem


class Alert(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, the ones we act on are checked.
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: str = ""  # noqa: N815 - Alertmanager's field names
    endsAt: str = ""  # noqa: N815
    fingerprint: str = ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def identity(self) -> str:
        """Alertmanager's fingerprint, or a stable stand-in built from the labels."""
        return self.fingerprint or ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    alerts: list[Alert] = Field(min_length=1)


def parse(body: Any) -> Notification:
    """The notification, or HTTPProblem 400 listing every problem with its key path."""
    try:
        return Notification.model_validate(body)
    except ValidationError as err:
        raise HTTPProblem(400, "not an Alertmanager v4 webhook payload", problems=problems_from(err, body, "body")) from err
