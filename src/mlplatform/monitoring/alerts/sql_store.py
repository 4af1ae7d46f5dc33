"""The alert store and the check lease store on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import Conflict, NotFound
from mlplatform.ids import new_id
from mlplatform.monitoring.alerts.schemas import (
    AlertRead,
    AlertRuleRead,
    AlertState,
    Page,
    RuleSource,
    Severity,
)
from mlplatform.monitoring.alerts.store import AlertStore, CheckLeaseStore
from mlplatform.monitoring.alerts.tables import AlertRow, AlertRuleRow, CheckLeaseRow

RULES: Table = AlertRuleRow.__table__  # type: ignore[assignment]
ALERTS: Table = AlertRow.__table__  # type: ignore[assignment]
LEASES: Table = CheckLeaseRow.__table__  # type: ignore[assignment]
RESOLVED = AlertState.RESOLVED.value
FIRE_ATTEMPTS = 5  # a concurrent first `fire` of the same (rule, model) loses the insert, then updates


def _utc(at: datetime) -> datetime:
    """SQLite stores and compares times as naive UTC text."""
    return as_utc(at).astimezone(UTC)


def _maybe(at: datetime | None) -> datetime | None:
    return None if at is None else as_utc(at)


def _alert(row: Any) -> AlertRead:
    return AlertRead(
        id=row.id,
        rule=row.rule,
        kind=row.kind,
        model=row.model or None,
        severity=row.severity,
        state=AlertState(row.state),
        value=row.value,
        threshold=row.threshold,
        message=row.message,
        first_seen=as_utc(row.first_seen),
        last_seen=as_utc(row.last_seen),
        resolved_at=_maybe(row.resolved_at),
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=_maybe(row.acknowledged_at),
    )


def _rule(row: Any) -> AlertRuleRead:
    return AlertRuleRead(
        id=row.id,
        name=row.name,
        kind=row.kind,
        threshold=row.threshold,
        window=row.window,
        severity=row.severity,
        model=row.model,
        source=RuleSource.API,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


def _not_found(alert_id: str) -> NotFound:
    return NotFound(f"no alert with id {alert_id[:80]!r}", details={"field": "id"})


class SqlAlertStore(AlertStore):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add_rule(self, rule: AlertRuleRead) -> None:
        values = rule.model_dump(exclude={"source"})
        values["created_at"] = _utc(rule.created_at or datetime.now(UTC))
        try:
            async with self.database.engine.begin() as conn:
                await conn.execute(insert(RULES).values(**values))
        except IntegrityError:
            problem = f"an alert rule named {rule.name!r} exists"
            raise Conflict(problem, details={"field": "name", "problem": problem}) from None

    async def list_rules(self) -> list[AlertRuleRead]:
        query = select(RULES).order_by(RULES.c.created_at, RULES.c.id)
        async with self.database.engine.connect() as conn:
            return [_rule(row) for row in await conn.execute(query)]

    async def delete_rule(self, rule_id: str) -> AlertRuleRead:
        async with self.database.engine.begin() as conn:
            row = (await conn.execute(delete(RULES).where(RULES.c.id == rule_id).returning(RULES))).first()
        if row is None:
            raise NotFound(f"no alert rule with id {rule_id[:80]!r}", details={"field": "id"})
        return _rule(row)

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
    ) -> tuple[AlertRead, bool]:
        at = _utc(at)
        changes = {
            "severity": severity,
            "value": value,
            "threshold": threshold,
            "message": message[:500],
            "last_seen": at,
        }
        is_open = and_(ALERTS.c.rule == rule, ALERTS.c.model == (model or ""), ALERTS.c.state != RESOLVED)
        for _ in range(FIRE_ATTEMPTS):
            async with self.database.engine.begin() as conn:
                updated = (
                    await conn.execute(update(ALERTS).where(is_open).values(**changes).returning(ALERTS))
                ).first()
            if updated is not None:
                return _alert(updated), False
            row = {
                "id": new_id(),
                "rule": rule,
                "kind": kind,
                "model": model or "",
                "state": AlertState.FIRING.value,
                "first_seen": at,
                **changes,
            }
            try:
                async with self.database.engine.begin() as conn:
                    created = (await conn.execute(insert(ALERTS).values(**row).returning(ALERTS))).one()
                return _alert(created), True
            except IntegrityError:  # another instance opened it meanwhile: update that one
                continue
        raise Conflict(f"alert {rule!r} for {model!r} is being written concurrently; try again")

    async def resolve(self, *, rule: str, model: str | None, at: datetime) -> AlertRead | None:
        is_open = and_(ALERTS.c.rule == rule, ALERTS.c.model == (model or ""), ALERTS.c.state != RESOLVED)
        statement = (
            update(ALERTS).where(is_open).values(state=RESOLVED, resolved_at=_utc(at)).returning(ALERTS)
        )
        async with self.database.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _alert(row)

    async def open_alerts(self) -> list[AlertRead]:
        query = select(ALERTS).where(ALERTS.c.state != RESOLVED).order_by(ALERTS.c.first_seen, ALERTS.c.id)
        async with self.database.engine.connect() as conn:
            return [_alert(row) for row in await conn.execute(query)]

    async def acknowledge(self, alert_id: str, *, actor: str, at: datetime) -> AlertRead:
        statement = (
            update(ALERTS)
            .where(ALERTS.c.id == alert_id, ALERTS.c.state == AlertState.FIRING.value)
            .values(
                state=AlertState.ACKNOWLEDGED.value, acknowledged_by=actor[:128], acknowledged_at=_utc(at)
            )
            .returning(ALERTS)
        )
        async with self.database.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is not None:
            return _alert(row)
        found = await self.get(alert_id)
        if found.state == AlertState.RESOLVED:
            problem = "the alert is resolved"
            raise Conflict(problem, details={"field": "state", "problem": problem})
        return found

    async def get(self, alert_id: str) -> AlertRead:
        async with self.database.engine.connect() as conn:
            row = (await conn.execute(select(ALERTS).where(ALERTS.c.id == alert_id))).first()
        if row is None:
            raise _not_found(alert_id)
        return _alert(row)

    async def list_alerts(
        self,
        *,
        state: AlertState | None,
        model: str | None,
        limit: int,
        offset: int,
        severity: Severity | None = None,
    ) -> Page[AlertRead]:
        where = []
        if severity is not None:
            where.append(ALERTS.c.severity == severity)
        if state is not None:
            where.append(ALERTS.c.state == state.value)
        if model is not None:
            where.append(ALERTS.c.model == model)
        total_query = select(func.count()).select_from(ALERTS).where(*where)
        query = (
            select(ALERTS)
            .where(*where)
            .order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.database.engine.connect() as conn:
            total = int(await conn.scalar(total_query) or 0)
            items = [_alert(row) for row in await conn.execute(query)]
        return Page(items=items, total=total, limit=limit, offset=offset)


class SqlCheckLeaseStore(CheckLeaseStore):
    """One row per check: a conditional UPDATE claims it, so the database decides who runs."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = (postgresql.insert if database.backend == "postgresql" else sqlite.insert)(LEASES)

    async def claim(
        self, name: str, *, holder: str, now: datetime, every: timedelta, hold: timedelta
    ) -> bool:
        now = _utc(now)
        create = self._insert.values(name=name, due_at=now, holder=None, held_until=None)
        claim = (
            update(LEASES)
            .where(
                LEASES.c.name == name,
                LEASES.c.due_at <= now,
                or_(LEASES.c.held_until.is_(None), LEASES.c.held_until <= now),
            )
            .values(due_at=now + every, holder=holder, held_until=now + hold)
        )
        async with self.database.engine.begin() as conn:
            await conn.execute(create.on_conflict_do_nothing(index_elements=["name"]))
        async with self.database.engine.begin() as conn:
            result: CursorResult[Any] = await conn.execute(claim)
            return result.rowcount == 1

    async def release(self, name: str, *, holder: str) -> None:
        statement = (
            update(LEASES)
            .where(LEASES.c.name == name, LEASES.c.holder == holder)
            .values(holder=None, held_until=None)
        )
        async with self.database.engine.begin() as conn:
            await conn.execute(statement)
