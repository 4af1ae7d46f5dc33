"""`/api/ml/training-jobs`: submit a training job, follow it, cancel it; a model's training history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset
from mlplatform.training.schemas import JobState, Page, TrainingJobCreate, TrainingJobRead, TrainingTrialRead

router = APIRouter(tags=["training"], route_class=ContractRoute)
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def actor(principal: Principal) -> str:
    return f"{principal.owner} ({principal.key_id})"


@router.post("/api/ml/training-jobs", status_code=status.HTTP_202_ACCEPTED)
async def submit_job(body: TrainingJobCreate, platform: PlatformDep, principal: Writer) -> TrainingJobRead:
    return await platform.training.submit(body, actor=actor(principal))


@router.get("/api/ml/training-jobs")
async def list_jobs(
    platform: PlatformDep,
    _: Reader,
    model: Annotated[str | None, Query(max_length=128)] = None,
    state: JobState | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TrainingJobRead]:
    return await platform.training.list_jobs(model=model, state=state, limit=limit, offset=offset)


@router.get("/api/ml/training-jobs/{job_id}")
async def get_job(job_id: str, platform: PlatformDep, _: Reader) -> TrainingJobRead:
    return await platform.training.get(job_id)


@router.get("/api/ml/training-jobs/{job_id}/trials")
async def list_trials(
    job_id: str, platform: PlatformDep, _: Reader, limit: Limit = 500, offset: Offset = 0
) -> Page[TrainingTrialRead]:
    """The trials of the job's hyperparameter search by number, the best one marked (none for other jobs)."""
    trials = await platform.training.trials(job_id)
    return Page(items=trials[offset : offset + limit], total=len(trials), limit=limit, offset=offset)


@router.post("/api/ml/training-jobs/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_job(job_id: str, platform: PlatformDep, principal: Writer) -> TrainingJobRead:
    return await platform.training.cancel(job_id, actor=actor(principal))


@router.get("/api/ml/models/{name}/training-history")
async def training_history(
    name: str, platform: PlatformDep, _: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[TrainingJobRead]:
    """Every job for the model, newest first: parameters, dataset, metrics and resulting version."""
    return await platform.training.list_jobs(model=name, state=None, limit=limit, offset=offset)
