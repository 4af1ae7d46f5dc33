"""`/api/ml/alert-rules`, `/api/ml/alerts` and `/api/ml/monitoring/check`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from starlette.responses import Response

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset
from mlplatform.monitoring.alerts.schemas import (
    AlertRead,
    AlertRuleCreate,
    AlertRuleRead,
    AlertState,
    CheckRunRead,
    Page,
    Severity,
)

router = APIRouter(prefix="/api/ml", tags=["alerts"], route_class=ContractRoute)
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def actor(principal: Principal) -> str:
    return f"{principal.owner} ({principal.key_id})"


@router.post("/alert-rules", status_code=status.HTTP_201_CREATED)
async def add_rule(rule: AlertRuleCreate, platform: PlatformDep, principal: Writer) -> AlertRuleRead:
    return await platform.alerts.add_rule(rule=rule, actor=actor(principal))


@router.get("/alert-rules")
async def list_rules(platform: PlatformDep, _: Reader) -> list[AlertRuleRead]:
    return await platform.alerts.rules()


@router.delete("/alert-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule_id: str, platform: PlatformDep, _: Writer) -> Response:
    await platform.alerts.delete_rule(rule_id=rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alerts")
async def list_alerts(
    platform: PlatformDep,
    _: Reader,
    state: AlertState | None = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    severity: Severity | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AlertRead]:
    return await platform.alerts.list_alerts(
        state=state, model=model, severity=severity, limit=limit, offset=offset
    )


@router.get("/alerts/{alert_id}")
async def get_alert(alert_id: str, platform: PlatformDep, _: Reader) -> AlertRead:
    return await platform.alerts.get(alert_id=alert_id)


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(alert_id: str, platform: PlatformDep, principal: Writer) -> AlertRead:
    return await platform.alerts.acknowledge(alert_id=alert_id, actor=actor(principal))


@router.post("/monitoring/check")
async def run_checks(platform: PlatformDep, _: Writer) -> CheckRunRead:
    """Run every check now, on this instance (the schedule is unchanged)."""
    return await platform.checks.run()
