"""The alert store and the check lease store interfaces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta

from mlplatform.monitoring.alerts.schemas import AlertRead, AlertRuleRead, AlertState, Page, Severity


class AlertStore(ABC):
    """Alert rules created through the API, and alerts.

    Contract, for every backend:
    - Rule names are unique: `add_rule` with a taken name raises `Conflict`. `delete_rule` of an unknown id
      raises `NotFound`. `list_rules` is in creation order.
    - An alert is *open* while `firing` or `acknowledged`. At most one alert per (rule, model) is open, even
      with several instances calling `fire` at once: `fire` updates the open one (`last_seen`, `value`,
      `threshold`, `severity`, `message`; the state and `first_seen` stay) or creates one in state
      `firing`, and says which (True: created). `model` None is an alert about the whole instance.
    - `resolve` moves the open alert of (rule, model) to `resolved` with `resolved_at` and returns it;
      None when none is open. A resolved alert is never changed again; the next `fire` opens a new one.
    - `acknowledge` of an unknown id raises `NotFound`, of a resolved alert `Conflict`; acknowledging an
      acknowledged alert changes nothing.
    - `list_alerts` filters exactly on state, model and severity (None: any), newest `last_seen` first;
      times are aware UTC.
    """

    @abstractmethod
    async def add_rule(self, rule: AlertRuleRead) -> None: ...

    @abstractmethod
    async def list_rules(self) -> list[AlertRuleRead]: ...

    @abstractmethod
    async def delete_rule(self, rule_id: str) -> AlertRuleRead: ...

    @abstractmethod
    async def fire(
        self,
        *,
        rule: str,
        kind: str,
        model: str | None,
        severity: str,
        value: float,
        threshold: float,
        message: str,
        at: datetime,
    ) -> tuple[AlertRead, bool]: ...

    @abstractmethod
    async def resolve(self, *, rule: str, model: str | None, at: datetime) -> AlertRead | None: ...

    @abstractmethod
    async def open_alerts(self) -> list[AlertRead]:
        """Every firing or acknowledged alert."""

    @abstractmethod
    async def acknowledge(self, alert_id: str, *, actor: str, at: datetime) -> AlertRead: ...

    @abstractmethod
    async def get(self, alert_id: str) -> AlertRead: ...

    @abstractmethod
    async def list_alerts(
        self,
        *,
        state: AlertState | None,
        model: str | None,
        limit: int,
        offset: int,
        severity: Severity | None = None,
    ) -> Page[AlertRead]: ...


class CheckLeaseStore(ABC):
    """Who runs a scheduled check, shared by every instance on the database.

    Contract, for every backend:
    - `claim` succeeds (True) for exactly one caller among any number of concurrent ones, and only when the
      check is due (`now` ≥ its due time; a check never claimed is due) and nobody holds it (no holder, or
      the holder's `hold` has passed: a crashed holder is replaced). On success the check is due again at
      `now + every` and held by `holder` until `now + hold`.
    - `release` frees the check only if `holder` still holds it (a holder whose lease expired and was taken
      over releases nothing); the due time stays.
    """

    @abstractmethod
    async def claim(
        self, name: str, *, holder: str, now: datetime, every: timedelta, hold: timedelta
    ) -> bool: ...

    @abstractmethod
    async def release(self, name: str, *, holder: str) -> None: ...
