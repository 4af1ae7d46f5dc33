"""Alert rules created through the API, alerts (one row per firing of a rule for a model), check leases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mlplatform.db import Base

# At most one open (firing or acknowledged) alert per rule and model: the dedup key, enforced here.
_OPEN = text("state <> 'resolved'")


class AlertRuleRow(Base):
    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float)
    window: Mapped[str] = mapped_column(String(8))
    severity: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(128))


class AlertRow(Base):
    """`model` is '' for an alert about the whole instance (it is part of the unique key, and NULLs would
    not collide on PostgreSQL)."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(500))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("uq_alerts_open", "rule", "model", unique=True, postgresql_where=_OPEN, sqlite_where=_OPEN),
        Index("ix_alerts_state_last_seen", "state", "last_seen"),
    )


class CheckLeaseRow(Base):
    """When a scheduled check is next due, and who runs it now: one row per check, shared by instances."""

    __tablename__ = "check_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    holder: Mapped[str | None] = mapped_column(String(64))
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
