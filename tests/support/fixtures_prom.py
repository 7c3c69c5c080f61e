"""Placeholder: Prometheus, Alertmanager and cAdvisor stand-in fixtures (being written)."""
