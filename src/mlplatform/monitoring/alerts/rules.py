"""Rule kinds: which measurement each kind reads and when it fires. A table, so a kind is one entry.

A rule kind reads one measurement that a check step records per (model, window) (`CheckRun.record`): a new
kind is one entry of `RULE_KINDS` and, for a new measurement, one step in `app.build_checks`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mlplatform.monitoring.alerts.schemas import AlertRuleRead

Key = tuple[str, str | None, str]  # (measure, model or None for the whole instance, window)


@dataclass(frozen=True)
class RuleKind:
    measure: str  # the measurement a check step records, e.g. "accuracy"
    fires: Callable[[float, float], bool]  # (value, threshold) → firing
    message: str  # format string: value, threshold, window, model
    per_model: bool = True  # False: one alert for the whole instance (model None)


RULE_KINDS: dict[str, RuleKind] = {
    "drift_detected": RuleKind(
        "drift",
        operator.ge,
        "{model}: the inputs of the last {window} drifted from the version's reference sample"
        " (see its latest drift report)",
    ),
    "accuracy_below": RuleKind(
        "accuracy", operator.lt, "{model}: accuracy {value:.3f} is below {threshold:g} over the last {window}"
    ),
    "latency_p95_above": RuleKind(
        "latency_p95_ms",
        operator.gt,
        "{model}: p95 latency {value:.1f} ms is above {threshold:g} ms over the last {window}",
    ),
    "error_rate_above": RuleKind(
        "error_rate",
        operator.gt,
        "{model}: error rate {value:.3f} is above {threshold:g} since the previous check (this instance)",
    ),
    "log_drops": RuleKind(
        "log_drops",
        operator.gt,
        "{value:.0f} prediction log records dropped since the previous check (this instance)",
        per_model=False,
    ),
}


@dataclass
class CheckRun:
    """One run of the checks: the models checked, the rules in force, and what the steps measured.

    Steps ask `wanted(measure)` which (model, window) pairs some rule needs, and `record` what they found;
    a measurement left unrecorded (no data) leaves the alerts that read it as they are."""

    models: list[str]
    rules: list[AlertRuleRead]
    now: datetime
    values: dict[Key, float] = field(default_factory=dict)

    def targets(self, rule: AlertRuleRead) -> list[str | None]:
        kind = RULE_KINDS.get(rule.kind)
        if kind is None:
            return []
        if not kind.per_model:
            return [None]
        if rule.model is not None:
            return [rule.model] if rule.model in self.models else []
        return list(self.models)

    def wanted(self, measure: str) -> set[tuple[str | None, str]]:
        return {
            (model, rule.window)
            for rule in self.rules
            if (kind := RULE_KINDS.get(rule.kind)) is not None and kind.measure == measure
            for model in self.targets(rule)
        }

    def record(self, measure: str, model: str | None, window: str, value: float) -> None:
        self.values[(measure, model, window)] = value

    def value(self, measure: str, model: str | None, window: str) -> float | None:
        return self.values.get((measure, model, window))
