"""The hypothesis settings every fuzz test shares: at least 1,000 examples, no per-example deadline."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

EXAMPLES = 1000

# No deadline: the machine is shared and noisy, and a slow example is not a failure. Function-
# scoped fixtures are fine here: the tests that use them build what they need per example.
fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
