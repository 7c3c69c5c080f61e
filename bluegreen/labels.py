"""Every label name the blue-green controller reads or writes, the state keys included.

An app is two Swarm services labelled `swarmshift.bluegreen.app=<app>` and
`swarmshift.bluegreen.color=blue|green`. The operator owns the routing labels (port, rule,
health path, preview rule, strategy); the controller owns the `swarmshift.bluegreen.state.*`
labels and the autoscaler lock `swarmshift.bluegreen.lock`.
"""

from __future__ import annotations

from swarmshift.labels import BLUEGREEN_LOCK_LABEL

PREFIX = "swarmshift.bluegreen"
APP_LABEL = f"{PREFIX}.app"
COLOR_LABEL = f"{PREFIX}.color"
PORT_LABEL = f"{PREFIX}.port"
RULE_LABEL = f"{PREFIX}.rule"
HEALTH_PATH_LABEL = f"{PREFIX}.health.path"
PREVIEW_RULE_LABEL = f"{PREFIX}.preview.rule"
STRATEGY_LABEL = f"{PREFIX}.strategy"
# Docker's own: the stack a service was deployed in. It scopes the app label (see bluegreen.apps).
STACK_LABEL = "com.docker.stack.namespace"
# The autoscaler leaves alone every service that carries this label. Its value is the deploy id
# while a deploy runs (both colors), and IDLE_LOCK on the color that takes no traffic.
LOCK_LABEL = BLUEGREEN_LOCK_LABEL
IDLE_LOCK = "idle"

OPERATOR_LABELS = (APP_LABEL, COLOR_LABEL, PORT_LABEL, RULE_LABEL, HEALTH_PATH_LABEL, PREVIEW_RULE_LABEL,
                   STRATEGY_LABEL)

# --- The state, written by the controller on both colors (see bluegreen.state) ----------------

STATE_PREFIX = f"{PREFIX}.state."
K_GENERATION = f"{STATE_PREFIX}generation"
K_ACTIVE = f"{STATE_PREFIX}active"
K_PHASE = f"{STATE_PREFIX}phase"
K_SINCE = f"{STATE_PREFIX}since"
K_RESULT = f"{STATE_PREFIX}result"
K_RETIRE_AT = f"{STATE_PREFIX}retire_at"
DEPLOY_PREFIX = f"{STATE_PREFIX}deploy."
K_DEPLOY_ID = f"{DEPLOY_PREFIX}id"
K_DEPLOY_KIND = f"{DEPLOY_PREFIX}kind"
K_DEPLOY_SOURCE = f"{DEPLOY_PREFIX}source"
K_DEPLOY_IMAGE = f"{DEPLOY_PREFIX}image"
K_DEPLOY_PREVIOUS = f"{DEPLOY_PREFIX}previous_image"
K_DEPLOY_STARTED = f"{DEPLOY_PREFIX}started"
K_DEPLOY_STEPS = f"{DEPLOY_PREFIX}steps"
K_DEPLOY_STEP = f"{DEPLOY_PREFIX}step"
K_DEPLOY_FAILURES = f"{DEPLOY_PREFIX}failures"
K_DEPLOY_REASON = f"{DEPLOY_PREFIX}reason"
K_DEPLOY_FORCE = f"{DEPLOY_PREFIX}force"
K_DEPLOY_CANARY = f"{DEPLOY_PREFIX}canary"  # "true" when the deploy's first step is a canary; absent otherwise
# The deploy's webhook gates done (bluegreen.webhook_gates): `name:passed` (or `name:failed`, a
# post-rollout hold given up), so that a restarted controller never sends one of them again.
K_DEPLOY_WEBHOOKS = f"{DEPLOY_PREFIX}webhooks"
K_DEPLOY_POST_ROLLOUT = f"{DEPLOY_PREFIX}post_rollout"  # "true": the post-rollout webhooks are due
K_DEPLOY_BY = f"{DEPLOY_PREFIX}requested_by"  # who asked: the request's `by`, `alert:<name>`
K_DEPLOY_PHASES = f"{DEPLOY_PREFIX}phases"  # seconds spent in each phase so far: Preparing=1.2,Waiting=3.4
# The app's last releases (bluegreen.state.History): compact JSON, bounded. One of STATE_KEYS, so
# an entry travels in the very write of the final phase it records; a damaged value never breaks
# the app (it is logged once and reset), unlike the other state labels.
K_HISTORY = f"{STATE_PREFIX}history"
STATE_KEYS = (
    K_GENERATION, K_ACTIVE, K_PHASE, K_SINCE, K_RESULT, K_RETIRE_AT, K_DEPLOY_ID, K_DEPLOY_KIND,
    K_DEPLOY_SOURCE, K_DEPLOY_IMAGE, K_DEPLOY_PREVIOUS, K_DEPLOY_STARTED, K_DEPLOY_STEPS, K_DEPLOY_STEP,
    K_DEPLOY_FAILURES, K_DEPLOY_REASON, K_DEPLOY_FORCE, K_DEPLOY_CANARY, K_DEPLOY_WEBHOOKS,
    K_DEPLOY_POST_ROLLOUT, K_DEPLOY_BY, K_DEPLOY_PHASES, K_HISTORY,
)


# The alerts that rolled the app back (swarmshift.alerts' seen-list), on both colors. Not one of
# STATE_KEYS: every state write sets those (removing the absent ones), and this list must outlive
# the deploys that follow, so that a re-sent alert never rolls back a later one.
K_ALERTS = f"{STATE_PREFIX}alerts"


def known_label(key: str) -> bool:
    """Whether `key` is a blue-green label this controller knows."""
    return key in OPERATOR_LABELS or key in (LOCK_LABEL, K_ALERTS) or key in STATE_KEYS


def problem(service: str, label: str, message: str, value: str | None = None) -> str:
    """One problem line about a service's label, as `check` and the logs print it."""
    got = f" (got {value!r})" if value is not None else ""
    return f"{service}: {label}: {message}{got}"
