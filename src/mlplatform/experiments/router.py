"""`/api/ml/experiments`: start an A/B test, canary or shadow; read its results; promote or stop it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.openapi import errors
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset
from mlplatform.experiments.schemas import (
    ExperimentCreate,
    ExperimentRead,
    ExperimentResults,
    ExperimentState,
    Page,
    PromoteRequest,
)

router = APIRouter(prefix="/api/ml/experiments", tags=["experiments"], route_class=ContractRoute)
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def actor(principal: Principal) -> str:
    return f"{principal.owner} ({principal.key_id})"


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(409))
async def create_experiment(
    body: ExperimentCreate, platform: PlatformDep, principal: Writer
) -> ExperimentRead:
    return await platform.experiments.create(body, actor=actor(principal))


@router.get("")
async def list_experiments(
    platform: PlatformDep,
    _: Reader,
    model: Annotated[str | None, Query(max_length=128)] = None,
    state: ExperimentState | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ExperimentRead]:
    return await platform.experiments.list_experiments(model=model, state=state, limit=limit, offset=offset)


@router.get("/{experiment_id}")
async def get_experiment(experiment_id: str, platform: PlatformDep, _: Reader) -> ExperimentRead:
    return await platform.experiments.get(experiment_id)


@router.get("/{experiment_id}/results")
async def experiment_results(experiment_id: str, platform: PlatformDep, _: Reader) -> ExperimentResults:
    """Per variant: requests, errors, latency percentiles, predictions and label metrics with intervals;
    each variant against the first with an always-valid test; a recommendation."""
    return await platform.experiments.results(experiment_id)


@router.post("/{experiment_id}/promote", responses=errors(409))
async def promote_experiment(
    experiment_id: str, body: PromoteRequest, platform: PlatformDep, principal: Writer
) -> ExperimentRead:
    """Point `production` at the variant's version (default: the recommended winner); the experiment ends."""
    return await platform.experiments.promote(experiment_id, variant=body.variant, actor=actor(principal))


@router.post("/{experiment_id}/stop", responses=errors(409))
async def stop_experiment(experiment_id: str, platform: PlatformDep, principal: Writer) -> ExperimentRead:
    """End the experiment; traffic goes back to the model's default version."""
    return await platform.experiments.stop(experiment_id, actor=actor(principal))
