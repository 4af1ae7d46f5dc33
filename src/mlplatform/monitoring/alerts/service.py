"""Alert rules (defaults, configuration, API), their evaluation after each check run, and alerts."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry, Counter

from mlplatform.clock import utcnow
from mlplatform.errors import Conflict, InvalidInput
from mlplatform.ids import new_id
from mlplatform.monitoring.alerts.notify import WebhookNotifier
from mlplatform.monitoring.alerts.rules import RULE_KINDS, CheckRun
from mlplatform.monitoring.alerts.schemas import (
    AlertRead,
    AlertRuleCreate,
    AlertRuleRead,
    AlertState,
    Page,
    RuleSource,
    Severity,
)
from mlplatform.monitoring.alerts.store import AlertStore
from mlplatform.settings import MonitoringSettings

log = structlog.get_logger(__name__)
DEFAULT_ACCURACY_RULE = "ModelAccuracyDegraded"
DEFAULT_DRIFT_RULE = "ModelDriftDetected"
EVENT_KINDS = frozenset({"canary_rollback"})  # alerts raised by an event (`raise_event`), not by a rule


def configured_rules(settings: MonitoringSettings) -> list[AlertRuleRead]:
    """The default rules (accuracy below `accuracy-threshold` over `check-window`; drift detected over it,
    while `drift-detection` and `alert-on-drift` are on) and `alerts.rules`.

    Raises ValueError naming the key of an unknown kind or a repeated name."""
    rules = [
        AlertRuleRead(
            id=f"default:{DEFAULT_ACCURACY_RULE}",
            name=DEFAULT_ACCURACY_RULE,
            kind="accuracy_below",
            threshold=settings.accuracy_threshold,
            window=settings.check_window,
            severity="warning",
            model=None,
            source=RuleSource.DEFAULT,
            created_at=None,
            created_by=None,
        )
    ]
    if settings.drift_detection and settings.alert_on_drift:
        rules.append(
            AlertRuleRead(
                id=f"default:{DEFAULT_DRIFT_RULE}",
                name=DEFAULT_DRIFT_RULE,
                kind="drift_detected",
                threshold=1,
                window=settings.check_window,
                severity="warning",
                model=None,
                source=RuleSource.DEFAULT,
                created_at=None,
                created_by=None,
            )
        )
    for index, rule in enumerate(settings.alerts.rules):
        key = f"ml.monitoring.alerts.rules[{index}]"
        if rule.kind not in RULE_KINDS:
            raise ValueError(f"{key}.kind: {rule.kind!r} is not one of {sorted(RULE_KINDS)}")
        if rule.name in {r.name for r in rules}:
            raise ValueError(f"{key}.name: {rule.name!r} is used by another rule")
        rules.append(
            AlertRuleRead(
                id=f"config:{rule.name}",
                **rule.model_dump(),
                source=RuleSource.CONFIG,
                created_at=None,
                created_by=None,
            )
        )
    return rules


class AlertService:
    def __init__(
        self,
        *,
        store: AlertStore,
        settings: MonitoringSettings,
        notifier: WebhookNotifier,
        registry: CollectorRegistry,
    ) -> None:
        self.store = store
        self.fixed_rules = configured_rules(settings)
        self.notifier = notifier
        self.started_total = Counter(
            "ml_alerts",
            "Alerts that started firing, by model and severity",
            ["model_id", "severity"],
            registry=registry,
        )

    # --- rules -------------------------------------------------------------------------------------------

    async def rules(self) -> list[AlertRuleRead]:
        return [*self.fixed_rules, *await self.store.list_rules()]

    async def add_rule(self, *, rule: AlertRuleCreate, actor: str) -> AlertRuleRead:
        if rule.kind not in RULE_KINDS:
            problem = f"not one of {sorted(RULE_KINDS)}"
            raise InvalidInput(f"kind: {problem}", details=[{"field": "kind", "problem": problem}])
        if rule.name in {r.name for r in self.fixed_rules}:
            problem = f"an alert rule named {rule.name!r} is defined in configuration"
            raise Conflict(problem, details={"field": "name", "problem": problem})
        created = AlertRuleRead(
            id=new_id(), **rule.model_dump(), source=RuleSource.API, created_at=utcnow(), created_by=actor
        )
        await self.store.add_rule(created)
        return created

    async def delete_rule(self, *, rule_id: str) -> None:
        if rule_id in {r.id for r in self.fixed_rules}:
            problem = "this rule comes from configuration: change ml.monitoring settings instead"
            raise Conflict(problem, details={"field": "id", "problem": problem})
        await self.store.delete_rule(rule_id)  # its open alerts resolve at the next check

    # --- alerts ------------------------------------------------------------------------------------------

    async def list_alerts(
        self,
        *,
        state: AlertState | None,
        model: str | None,
        limit: int,
        offset: int,
        severity: Severity | None = None,
    ) -> Page[AlertRead]:
        return await self.store.list_alerts(
            state=state, model=model, severity=severity, limit=limit, offset=offset
        )

    async def open_alerts(self) -> list[AlertRead]:
        """Every firing or acknowledged alert."""
        return await self.store.open_alerts()

    async def get(self, *, alert_id: str) -> AlertRead:
        return await self.store.get(alert_id)

    async def acknowledge(self, *, alert_id: str, actor: str) -> AlertRead:
        return await self.store.acknowledge(alert_id, actor=actor, at=utcnow())

    async def raise_event(
        self, *, rule: str, kind: str, model: str, severity: Severity, value: float, message: str
    ) -> AlertRead:
        """An alert about something that happened (a canary rolled back), not a measured rule: it stays
        firing until acknowledged, and is sent to the webhooks like any other."""
        alert, new = await self.store.fire(
            rule=rule,
            kind=kind,
            model=model,
            severity=severity,
            value=value,
            threshold=0.0,
            message=message,
            at=utcnow(),
        )
        if new:
            self.started_total.labels(model, severity).inc()
            log.warning("alert firing", rule=rule, model=model, message=message)
            self.notifier.notify(alert)
        return alert

    async def evaluate(self, run: CheckRun) -> tuple[int, int]:
        """Fire or resolve every (rule, model) the run measured; resolve open alerts whose rule is gone or
        whose model has no deployed version any more. Returns (started, resolved)."""
        started = resolved = 0
        live: set[tuple[str, str | None]] = set()
        for rule in run.rules:
            kind = RULE_KINDS.get(rule.kind)
            if kind is None:  # a kind this build does not know (a rule made by a newer one)
                continue
            for model in run.targets(rule):
                live.add((rule.name, model))
                value = run.value(kind.measure, model, rule.window)
                if value is None:  # no data in the window: leave the alert as it is
                    continue
                if kind.fires(value, rule.threshold):
                    message = kind.message.format(
                        model=model, value=value, threshold=rule.threshold, window=rule.window
                    )
                    alert, new = await self.store.fire(
                        rule=rule.name,
                        kind=rule.kind,
                        model=model,
                        severity=rule.severity,
                        value=value,
                        threshold=rule.threshold,
                        message=message,
                        at=run.now,
                    )
                    if new:
                        started += 1
                        self.started_total.labels(model or "", rule.severity).inc()
                        log.warning("alert firing", rule=rule.name, model=model, value=value)
                        self.notifier.notify(alert)
                elif await self._resolve(rule.name, model, run):
                    resolved += 1
        for alert in await self.store.open_alerts():
            if alert.kind in EVENT_KINDS:  # events are ended by acknowledging them, not by a check
                continue
            if (alert.rule, alert.model) not in live and await self._resolve(alert.rule, alert.model, run):
                resolved += 1
        return started, resolved

    async def _resolve(self, rule: str, model: str | None, run: CheckRun) -> bool:
        alert = await self.store.resolve(rule=rule, model=model, at=run.now)
        if alert is None:
            return False
        log.info("alert resolved", rule=rule, model=model)
        self.notifier.notify(alert)
        return True
