"""Scheduled checks and alerts through HTTP: the accuracy rule on real feedback, dedup, acknowledge,
resolve, the counter, rules made through the API, webhooks to real local receivers (one down, one
flaky), and one scheduled run per interval across two instances on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlplatform.app import create_app
from mlplatform.clock import utcnow
from mlplatform.monitoring.alerts.rules import CheckRun
from mlplatform.monitoring.alerts.schemas import AlertRuleRead, RuleSource
from mlplatform.monitoring.checks import CounterStep, InstanceCounters
from tests.api.conftest import AppFactory, settings_for, two_instances
from tests.api.test_monitoring_api import batch, logged, registered, send
from tests.services import free_port

NO_SCHEDULE = {"monitoring": {"enabled": False}}  # checks run only when a test asks


async def check(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/api/ml/monitoring/check")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def alerts(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/ml/alerts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def sample(client: httpx.AsyncClient, name: str, labels: dict[str, str]) -> float | None:
    text = (await client.get("/actuator/prometheus")).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    return None


async def key_for(client: httpx.AsyncClient, role: str) -> str:
    created = await client.post("/api/admin/api-keys", json={"name": role, "role": role, "owner": "ops"})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


async def test_accuracy_alert_fires_on_feedback_dedups_is_acknowledged_and_resolves(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend, ml=NO_SCHEDULE)
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    answers = (await batch(client, "clf", ref.X[:20]))["predictions"]
    await logged(client, "clf", 20)
    quiet = await check(client)
    assert quiet["models"] == ["clf"] and quiet["started"] == 0 and set(quiet["steps"].values()) == {"ok"}

    wrong = [{"prediction_id": a["prediction_id"], "actual": 1 - a["prediction"]} for a in answers]
    assert (await send(client, wrong)).json()["accepted"] == 20
    first = await check(client)
    assert (first["started"], first["firing"]) == (1, 1)
    [alert] = await alerts(client, state="firing", model="clf")
    assert alert["rule"] == "ModelAccuracyDegraded" and alert["kind"] == "accuracy_below"
    assert (alert["value"], alert["threshold"], alert["severity"]) == (0.0, 0.8, "warning")
    assert "below 0.8" in alert["message"]
    accuracy = {"model_id": "clf"}
    assert await sample(client, "ml_model_accuracy", accuracy) == 0.0

    second = await check(client)
    assert (second["started"], second["firing"]) == (0, 1)
    [same] = await alerts(client, model="clf")
    assert same["id"] == alert["id"] and same["first_seen"] == alert["first_seen"]
    assert same["last_seen"] > alert["last_seen"]
    fired = {"model_id": "clf", "severity": "warning"}
    assert await sample(client, "ml_alerts_total", fired) == 1.0

    viewer = {"X-API-Key": await key_for(client, "viewer")}
    refused = await client.post(f"/api/ml/alerts/{alert['id']}/acknowledge", headers=viewer)
    assert refused.status_code == 403
    assert (await client.get("/api/ml/alerts", headers=viewer)).status_code == 200
    acked = await client.post(f"/api/ml/alerts/{alert['id']}/acknowledge")
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged" and acked.json()["acknowledged_by"].startswith("bootstrap")
    assert acked.json()["acknowledged_at"] is not None
    await check(client)  # still below the threshold: still the one acknowledged alert
    assert [a["state"] for a in await alerts(client, model="clf")] == ["acknowledged"]

    right = [{"prediction_id": a["prediction_id"], "actual": a["prediction"]} for a in answers]
    await send(client, right)
    cleared = await check(client)
    assert (cleared["resolved"], cleared["firing"]) == (1, 0)
    [resolved] = await alerts(client, model="clf")
    assert resolved["state"] == "resolved" and resolved["resolved_at"] is not None
    assert await sample(client, "ml_model_accuracy", accuracy) == 1.0
    assert await sample(client, "ml_alerts_total", fired) == 1.0
    gone = await client.post(f"/api/ml/alerts/{alert['id']}/acknowledge")
    assert gone.status_code == 409
    assert (await client.post("/api/ml/alerts/0123/acknowledge")).status_code == 404


async def test_rules_through_the_api_and_a_latency_rule_with_a_tiny_threshold(
    make_app: AppFactory, tmp_path: Path
) -> None:
    rules = [{"name": "drops", "kind": "log_drops", "severity": "critical"}]
    client, _ = await make_app(ml={"monitoring": {"enabled": False, "alerts": {"rules": rules}}})
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    await batch(client, "clf", ref.X[:5])
    await batch(client, "clf", ref.X[5:10])
    await logged(client, "clf", 10)

    body = {"name": "slow", "kind": "latency_p95_above", "threshold": 0.0001, "window": "1h", "model": "clf"}
    created = await client.post("/api/ml/alert-rules", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api" and created.json()["severity"] == "warning"
    assert (await client.post("/api/ml/alert-rules", json=body)).status_code == 409
    bad = await client.post("/api/ml/alert-rules", json={**body, "name": "x", "kind": "vibes"})
    assert bad.status_code == 422
    taken = await client.post("/api/ml/alert-rules", json={**body, "name": "drops"})
    assert taken.status_code == 409
    viewer = {"X-API-Key": await key_for(client, "viewer")}
    assert (await client.post("/api/ml/alert-rules", json=body, headers=viewer)).status_code == 403
    listed = (await client.get("/api/ml/alert-rules", headers=viewer)).json()
    assert [(r["name"], r["source"]) for r in listed] == [
        ("ModelAccuracyDegraded", "default"),
        ("ModelDriftDetected", "default"),
        ("drops", "config"),
        ("slow", "api"),
    ]
    assert (await client.delete("/api/ml/alert-rules/config:drops")).status_code == 409

    run = await check(client)
    assert run["started"] == 1  # no drops, no labels: only the latency rule fires
    [slow] = await alerts(client, state="firing")
    assert (slow["rule"], slow["model"], slow["kind"]) == ("slow", "clf", "latency_p95_above")
    assert slow["value"] > 0.0001 and "p95 latency" in slow["message"]

    assert (await client.delete(f"/api/ml/alert-rules/{created.json()['id']}")).status_code == 204
    assert (await check(client))["resolved"] == 1  # its rule is gone
    assert await alerts(client, state="firing") == []
    page = (await client.get("/api/ml/alerts", params={"limit": 1, "offset": 0})).json()
    assert page["total"] == 1 and page["items"][0]["state"] == "resolved"


async def test_error_rate_and_log_drops_count_this_instances_counters_since_its_previous_check() -> None:
    readings = {"errors": {"clf": 0.0}, "predictions": {"clf": 0.0}, "drops": 0.0}
    step = CounterStep(
        InstanceCounters(
            predictions=lambda: dict(readings["predictions"]),  # type: ignore[call-overload]
            errors=lambda: dict(readings["errors"]),  # type: ignore[call-overload]
            log_drops=lambda: float(readings["drops"]),  # type: ignore[arg-type]
        )
    )

    def rule(kind: str) -> AlertRuleRead:
        return AlertRuleRead(
            id=kind, name=kind, kind=kind, source=RuleSource.API, created_at=None, created_by=None
        )

    async def measured() -> CheckRun:
        run = CheckRun(models=["clf"], rules=[rule("error_rate_above"), rule("log_drops")], now=utcnow())
        await step(run)
        return run

    readings.update(errors={"clf": 3.0}, predictions={"clf": 9.0}, drops=4.0)
    run = await measured()
    assert run.value("error_rate", "clf", "1h") == 0.25 and run.value("log_drops", None, "1h") == 4.0
    readings.update(predictions={"clf": 19.0})
    run = await measured()
    assert run.value("error_rate", "clf", "1h") == 0.0 and run.value("log_drops", None, "1h") == 0.0


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1: records each request and answers the next status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    attempts: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.attempts += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append((headers, orjson.loads(body)))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


async def wait_for(condition: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_webhooks_get_alertmanager_payloads_retried_and_a_dead_one_blocks_nothing(
    make_app: AppFactory, tmp_path: Path
) -> None:
    async with receiving(Receiver()) as good, receiving(Receiver(statuses=[500, 500])) as flaky:
        dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
        webhooks = [
            {"url": good.url, "secret": "s3cret", "headers": {"X-Team": "ml"}},
            {"url": dead},
            {"url": flaky.url},
        ]
        sender = {"webhooks": webhooks, "backoff-seconds": 0.05, "max-attempts": 4, "timeout-seconds": 2}
        client, platform = await make_app(ml={"monitoring": {"enabled": False, "alerts": sender}})
        ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
        await batch(client, "clf", ref.X[:5])
        await logged(client, "clf", 5)
        rule = {"name": "slow", "kind": "latency_p95_above", "threshold": 0.0001, "severity": "critical"}
        created = (await client.post("/api/ml/alert-rules", json=rule)).json()

        began = time.monotonic()
        assert (await check(client))["started"] == 1
        assert time.monotonic() - began < 5  # delivery happens behind the check
        await batch(client, "clf", ref.X[5:10])  # predictions keep being served meanwhile
        await wait_for(lambda: len(good.received) == 1 and len(flaky.received) == 1)
        assert flaky.attempts == 3  # 500, 500, then delivered

        headers, payload = good.received[0]
        [alert] = await alerts(client, state="firing")
        assert payload["version"] == "4" and payload["status"] == "firing"
        assert payload["receiver"] == "mlplatform" and payload["groupKey"] == '{}:{alertname="slow"}'
        [sent] = payload["alerts"]
        assert sent["status"] == "firing" and sent["endsAt"] == "0001-01-01T00:00:00Z"
        assert sent["labels"] == {
            "alertname": "slow",
            "model_id": "clf",
            "severity": "critical",
            "kind": "latency_p95_above",
            "application": "mlplatform",
            "environment": "development",
        }
        assert sent["annotations"]["summary"] and "p95 latency" in sent["annotations"]["description"]
        assert sent["startsAt"].endswith("Z") and sent["generatorURL"].endswith(
            f"/api/ml/alerts/{alert['id']}"
        )
        assert len(sent["fingerprint"]) == 16
        assert headers["x-team"] == "ml" and headers["content-type"] == "application/json"
        body = orjson.dumps(payload)
        signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-mlplatform-signature"], signature)

        assert (await client.delete(f"/api/ml/alert-rules/{created['id']}")).status_code == 204
        assert (await check(client))["resolved"] == 1
        await wait_for(lambda: len(good.received) == 2 and len(flaky.received) == 2)
        resolved = good.received[1][1]
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["status"] == "resolved"
        assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        assert resolved["alerts"][0]["fingerprint"] == sent["fingerprint"]

        outcome = "ml_alert_notifications_total"
        await wait_for(lambda: platform.alerts.notifier.senders[1].queue.empty())
        await wait_for_sample(client, outcome, {"outcome": "failed"}, 2.0)
        assert await sample(client, outcome, {"outcome": "delivered"}) == 4.0
        assert await sample(client, outcome, {"outcome": "dropped"}) in (None, 0.0)


async def wait_for_sample(client: httpx.AsyncClient, name: str, labels: dict[str, str], value: float) -> None:
    async with asyncio.timeout(10):
        while await sample(client, name, labels) != value:
            await asyncio.sleep(0.05)


async def test_a_full_queue_drops_and_counts(make_app: AppFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    sender = {"webhooks": [{"url": dead}], "queue-size": 1, "backoff-seconds": 5, "max-attempts": 2}
    client, platform = await make_app(ml={"monitoring": {"enabled": False, "alerts": sender}})
    notifier = platform.alerts.notifier
    for rule in ("a", "b", "c"):
        opened, _ = await platform.alerts.store.fire(
            rule=rule,
            kind="log_drops",
            model=None,
            severity="info",
            value=1,
            threshold=0,
            message="m",
            at=utcnow(),
        )
        notifier.notify(opened)
    # the first is being retried (5 s backoff), the second waits in the queue (if the first was taken
    # already), the third has no room
    async with asyncio.timeout(10):
        while (await sample(client, "ml_alert_notifications_total", {"outcome": "dropped"}) or 0) < 1:
            await asyncio.sleep(0.05)


async def test_two_instances_run_one_scheduled_check_per_interval(
    postgres_url: str, redis_url: str, make_app: AppFactory
) -> None:
    schedule = {"monitoring": {"check-interval": 1}}
    (_, first), (_, second) = await two_instances(make_app, postgres_url, redis_url, ml=schedule)
    runs: list[tuple[str, float]] = []

    def counting(name: str) -> Any:
        async def step(run: CheckRun) -> None:
            runs.append((name, time.monotonic()))

        return step

    first.checks.add_step("count", counting("first"))
    second.checks.add_step("count", counting("second"))
    began = time.monotonic()
    await asyncio.sleep(4.2)
    elapsed = time.monotonic() - began
    assert 3 <= len(runs) <= int(elapsed) + 1, runs  # one per interval, not one per instance
    times = sorted(at for _, at in runs)
    assert all(later - earlier > 0.8 for earlier, later in zip(times, times[1:], strict=False)), runs
    assert first.checks.runs + second.checks.runs >= len(runs)  # plus runs before the step was added


async def test_no_scheduled_check_when_monitoring_is_disabled(make_app: AppFactory) -> None:
    client, platform = await make_app(ml={"monitoring": {"enabled": False, "check-interval": 1}})
    await asyncio.sleep(1.5)
    assert platform.checks.runs == 0
    assert (await check(client))["models"] == []  # on demand it still runs
    assert platform.checks.runs == 1


@pytest.mark.parametrize("setting", [{"kind": "vibes"}, {"name": "ModelAccuracyDegraded"}])
def test_a_bad_configured_rule_stops_start_up_naming_the_key(tmp_path: Path, setting: dict[str, str]) -> None:
    rule = {"name": "r", "kind": "log_drops", **setting}
    settings = settings_for(tmp_path, ml={"monitoring": {"alerts": {"rules": [rule]}}})
    with pytest.raises(ValueError, match=r"ml\.monitoring\.alerts\.rules\[0\]"):
        create_app(settings)
