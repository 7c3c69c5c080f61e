"""Secrets stay out of logs: webhook URLs (their tokens) and credentials in URLs are redacted wherever they appear."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from swarmshift.logs import redact, redact_url
from swarmshift.notify import Notifier, NotifySettings

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecrettokenXXXX"


@pytest.mark.parametrize(("url", "shown"), [
    pytest.param(SLACK, "https://hooks.slack.com/<redacted>", id="slack-token-in-path"),
    pytest.param("https://example.com/hook?token=abc", "https://example.com/<redacted>", id="token-in-query"),
    pytest.param("http://user:pw@prometheus:9090", "http://prometheus:9090/<redacted>", id="credentials"),
    pytest.param("http://receiver:8080/", "http://receiver:8080", id="nothing-to-hide"),
    pytest.param("not a url", "<url redacted>", id="garbage"),
    pytest.param("http://[::1", "<url redacted>", id="unparsable"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_replaces_the_url_inside_a_message():
    assert redact(f"Cannot connect to {SLACK}: refused", SLACK) == (
        "Cannot connect to https://hooks.slack.com/<redacted>: refused")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/services/T000/B000/XXXXsecrettokenXXXX",  # connection refused
    "http://exa mple.com/services/T000/B000/XXXXsecrettokenXXXX",  # aiohttp's InvalidURL quotes the URL
])
def test_a_failed_notification_logs_no_token(url):
    async def main():
        notifier = Notifier([url], retries=1, backoff=0.01, timeout=2)
        await notifier.start()
        notifier.send({"type": "service_scaled"}, "scaled")
        await notifier.close(drain=5)

    with structlog.testing.capture_logs() as logged:
        asyncio.run(main())
    failed = [e for e in logged if e["event"] == "notification_failed"]
    assert len(failed) == 1
    assert "secrettoken" not in repr(logged)


def test_webhook_urls_are_not_in_the_settings_repr():
    assert "secrettoken" not in repr(NotifySettings(webhooks=[SLACK]))
