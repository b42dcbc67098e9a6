"""Strata's own events forwarded to a webhook (``observe.alerts``): grouped into one POST per interval,
deduplicated by kind and subject within the window, retried with backoff, tiered, never blocking the emitter.

The events come from the real ``EventStore`` over SQLite, the POSTs go to a real HTTP receiver, and the
forwarder's clock is the test's, so nothing sleeps: each ``step()`` is one pass of the ``alert-forward`` loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from strata.errors import ConfigError
from strata.observe.alerts import AlertForwarder, resolve_headers
from strata.observe.config import AlertSettings
from strata.observe.events import EventStore
from strata.observe.metrics import Metrics
from strata.store.db import open_database
from tests.receivers import WebhookReceiver


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def setup(tmp_path: Path, receiver: WebhookReceiver, **cfg: object) -> tuple[EventStore, AlertForwarder, Clock]:
    metrics = Metrics()
    events = EventStore(open_database(f"sqlite:///{tmp_path / 'strata.db'}"), metrics)
    clock = Clock()
    settings = AlertSettings.model_validate({"webhook_url": receiver.url + "/hook", **cfg})
    forwarder = AlertForwarder(settings, metrics, {"Authorization": "Bearer hook-token"}, clock=clock)
    events.forward = forwarder.offer
    return events, forwarder, clock


def forwarded(forwarder: AlertForwarder, tier: str, outcome: str) -> float:
    text = forwarder.metrics.render().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "strata_alerts_forwarded_total" and s.labels == {"tier": tier, "outcome": outcome}:
                return s.value
    raise AssertionError(f"no strata_alerts_forwarded_total{{tier={tier},outcome={outcome}}}")


async def test_events_of_one_interval_go_in_one_post_with_their_tiers(tmp_path: Path,
                                                                       receiver: WebhookReceiver) -> None:
    events, forwarder, _ = setup(tmp_path, receiver, tiers={"canary_rollback": "page"})
    events.emit("canary_rollback", "chat", "canary chat-b rolled back: error rate")
    events.emit("budget_alert", "team-a", "team-a reached 80% of its monthly budget")
    events.emit("canary_step", "chat", "canary chat-b to 25%")  # dashboard tier: not sent to a webhook
    assert receiver.posts == []  # emitting only queued them

    await forwarder.step()
    [body] = receiver.bodies("/hook")
    assert body["source"] == "strata"
    assert [(a["kind"], a["subject"], a["tier"]) for a in body["alerts"]] == [
        ("canary_rollback", "chat", "page"), ("budget_alert", "team-a", "ticket")]
    assert body["alerts"][0]["message"] == "canary chat-b rolled back: error rate"
    assert receiver.headers[0]["Authorization"] == "Bearer hook-token"
    assert forwarded(forwarder, "page", "sent") == 1
    assert forwarded(forwarder, "ticket", "sent") == 1
    await forwarder.step()
    assert len(receiver.posts) == 1  # nothing new, nothing sent
    await forwarder.close()


async def test_same_kind_and_subject_within_the_window_is_sent_once(tmp_path: Path,
                                                                    receiver: WebhookReceiver) -> None:
    events, forwarder, clock = setup(tmp_path, receiver, dedup_window=300)
    for _ in range(3):
        events.emit("auth_lockout", "10.0.0.7", "20 failed authentications")
    events.emit("auth_lockout", "10.0.0.8", "20 failed authentications")
    await forwarder.step()
    clock.now = 120
    events.emit("auth_lockout", "10.0.0.7", "20 failed authentications")
    await forwarder.step()
    subjects = [a["subject"] for b in receiver.bodies("/hook") for a in b["alerts"]]
    assert subjects == ["10.0.0.7", "10.0.0.8"]
    assert forwarded(forwarder, "ticket", "deduplicated") == 3

    clock.now = 301  # the window after the first one has passed: the same lockout is news again
    events.emit("auth_lockout", "10.0.0.7", "20 failed authentications")
    await forwarder.step()
    assert [a["subject"] for a in receiver.bodies("/hook")[-1]["alerts"]] == ["10.0.0.7"]
    await forwarder.close()


async def test_a_failing_receiver_is_retried_with_backoff_then_given_up(tmp_path: Path,
                                                                        receiver: WebhookReceiver) -> None:
    events, forwarder, clock = setup(tmp_path, receiver, retry_backoff=1.0, max_retries=2)
    receiver.fail_next = 2
    events.emit("budget_exceeded", "team-a", "team-a's budget refused a request")
    await forwarder.step()  # try 1 fails at t=0; next at t=1
    clock.now = 0.5
    await forwarder.step()
    assert len(receiver.posts) == 1  # still backing off
    clock.now = 1.0
    await forwarder.step()  # try 2 fails; next at t=3
    clock.now = 3.0
    await forwarder.step()  # try 3 succeeds
    assert len(receiver.posts) == 3
    assert receiver.posts[-1][1]["alerts"][0]["tier"] == "page"
    assert forwarded(forwarder, "page", "sent") == 1

    receiver.fail_next = 10
    events.emit("budget_exceeded", "team-b", "team-b's budget refused a request")
    for clock.now in (10, 11, 13, 17):
        await forwarder.step()
    assert len(receiver.posts) == 6  # one try and two retries, then it gave up
    assert forwarded(forwarder, "page", "failed") == 1
    await forwarder.close()


async def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path, receiver: WebhookReceiver) -> None:
    events, forwarder, _ = setup(tmp_path, receiver, max_pending=2)
    for i in range(5):
        events.emit("cost_anomaly", f"team-{i}", "cost up 40% week over week")  # returns; stored in the table
    assert len(events.list(kind="cost_anomaly")) == 5
    await forwarder.step()
    assert len(receiver.bodies("/hook")[0]["alerts"]) == 2
    assert forwarded(forwarder, "ticket", "dropped") == 3
    await forwarder.close()


def test_header_references_resolve_and_a_missing_one_names_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AlertSettings(webhook_url="http://127.0.0.1:9/hook",
                        headers={"Authorization": "env:STRATA_TEST_ALERT_TOKEN", "X-Team": "ops"})
    monkeypatch.setenv("STRATA_TEST_ALERT_TOKEN", "Bearer from-env")
    assert resolve_headers(cfg, stored=lambda name: "unused") == {"Authorization": "Bearer from-env", "X-Team": "ops"}
    stored = AlertSettings(headers={"Authorization": "secret:alert-token"})
    assert resolve_headers(stored, stored=lambda name: f"value of {name}") == {"Authorization": "value of alert-token"}
    monkeypatch.delenv("STRATA_TEST_ALERT_TOKEN")
    with pytest.raises(ConfigError, match="alerts.headers.Authorization: environment variable STRATA_TEST_ALERT_TOKEN"):
        resolve_headers(cfg, stored=lambda name: "unused")
