"""Alertmanager-format webhook notifications: a bounded queue and a sender per webhook, with retries."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter

from mlplatform.monitoring.alerts.schemas import AlertRead, AlertState
from mlplatform.settings import AlertSettings, WebhookSettings

log = structlog.get_logger(__name__)
RECEIVER = "mlplatform"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
SIGNATURE_HEADER = "X-MLPlatform-Signature"


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def labels(alert: AlertRead, tags: Mapping[str, str]) -> dict[str, str]:
    found = {"alertname": alert.rule, "severity": alert.severity, "kind": alert.kind, **tags}
    if alert.model is not None:
        found["model_id"] = alert.model
    return found


def fingerprint(found: Mapping[str, str]) -> str:
    """16 hex digits identifying the label set, as Alertmanager's fingerprint does."""
    text = "\x00".join(f"{k}\x00{v}" for k, v in sorted(found.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def alertmanager_payload(alert: AlertRead, *, tags: Mapping[str, str], external_url: str) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver sends (version 4) for one alert, firing or resolved."""
    status = "resolved" if alert.state == AlertState.RESOLVED else "firing"
    found = labels(alert, tags)
    annotations = {
        "summary": f"{alert.rule}: {alert.kind} {'resolved' if status == 'resolved' else 'firing'}",
        "description": alert.message,
        "value": f"{alert.value:g}",
        "threshold": f"{alert.threshold:g}",
    }
    group_labels = {"alertname": alert.rule}
    return {
        "version": "4",
        "groupKey": "{}:{alertname=" + orjson.dumps(alert.rule).decode() + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": found,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": found,
                "annotations": annotations,
                "startsAt": _time(alert.first_seen),
                "endsAt": _time(alert.resolved_at) if alert.resolved_at else ZERO_TIME,
                "generatorURL": f"{external_url}/api/ml/alerts/{alert.id}",
                "fingerprint": fingerprint(found),
            }
        ],
    }


class _Sender:
    """One webhook's queue and the task that drains it: a dead receiver delays only its own queue."""

    def __init__(self, webhook: WebhookSettings, queue_size: int) -> None:
        self.webhook = webhook
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.task: asyncio.Task[None] | None = None

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.webhook.headers}
        if self.webhook.secret is not None:
            key = self.webhook.secret.get_secret_value().encode()
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        return headers


class WebhookNotifier:
    """`notify` never waits: it queues the payload for each webhook (dropped and counted when the queue is
    full). Each sender posts with a timeout per attempt, retrying failures (connection errors, timeouts,
    non-2xx answers) after `backoff-seconds`, doubled each time up to `max-backoff-seconds`, at most
    `max-attempts` times; then the notification counts as failed."""

    def __init__(
        self,
        settings: AlertSettings,
        registry: CollectorRegistry,
        *,
        tags: Mapping[str, str],
        external_url: str,
    ) -> None:
        self.settings = settings
        self.tags = dict(tags)
        self.external_url = external_url.rstrip("/")
        self.senders = [_Sender(webhook, settings.queue_size) for webhook in settings.webhooks]
        self.outcomes = Counter(
            "ml_alert_notifications",
            "Alert notifications to webhooks, by outcome: delivered, failed (after every retry), dropped",
            ["outcome"],
            registry=registry,
        )
        self._client: httpx.AsyncClient | None = None

    def notify(self, alert: AlertRead) -> None:
        if not self.senders:
            return
        body = orjson.dumps(alertmanager_payload(alert, tags=self.tags, external_url=self.external_url))
        for sender in self.senders:
            try:
                sender.queue.put_nowait(body)
            except asyncio.QueueFull:
                self.outcomes.labels("dropped").inc()
                log.warning("alert notification dropped: queue full", webhook=_where(sender.webhook.url))

    def start(self) -> None:
        if self._client is not None or not self.senders:
            return
        self._client = httpx.AsyncClient(timeout=self.settings.timeout_seconds, follow_redirects=False)
        for sender in self.senders:
            sender.task = asyncio.create_task(self._drain(sender), name="alert-webhook")

    async def stop(self) -> None:
        """Stop sending; what is still queued is dropped (and counted)."""
        for sender in self.senders:
            if sender.task is not None:
                sender.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender.task
                sender.task = None
            while not sender.queue.empty():
                sender.queue.get_nowait()
                self.outcomes.labels("dropped").inc()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _drain(self, sender: _Sender) -> None:
        while True:
            body = await sender.queue.get()
            delivered = await self._deliver(sender, body)
            self.outcomes.labels("delivered" if delivered else "failed").inc()

    async def _deliver(self, sender: _Sender, body: bytes) -> bool:
        assert self._client is not None
        settings = self.settings
        delay = settings.backoff_seconds
        for attempt in range(1, settings.max_attempts + 1):
            try:
                async with asyncio.timeout(settings.timeout_seconds):
                    response = await self._client.post(
                        sender.webhook.url, content=body, headers=sender.headers(body)
                    )
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
            except (httpx.HTTPError, OSError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"[:200]
            if attempt == settings.max_attempts:
                log.warning(
                    "alert notification failed",
                    webhook=_where(sender.webhook.url),
                    attempts=attempt,
                    error=problem,
                )
                return False
            log.info("alert notification retrying", webhook=_where(sender.webhook.url), error=problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.max_backoff_seconds)
        return False


def _where(url: str) -> str:
    """The URL without query or credentials, for logs (a webhook URL may hold a token)."""
    parts = httpx.URL(url)
    return f"{parts.scheme}://{parts.host}{f':{parts.port}' if parts.port else ''}{parts.path}"
