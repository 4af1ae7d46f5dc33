"""Boosting checkpoints in storage, `checkpoints/{job}/round-{n}.{ubj|txt}`: only the latest is kept.

The worker writes them while it trains (`WorkerCheckpoints`, reading the storage settings from the job's
spec) and reads the latest when a run resumes; the service deletes the folder when the job ends, whatever
the end, so a finished job leaves no checkpoint behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.stores.artifacts.base import ArtifactStore

T = TypeVar("T")
_ROUND = re.compile(r"round-(\d+)\.(ubj|txt)")


def folder(job_id: str) -> str:
    return f"checkpoints/{job_id}/"


def round_of(key: str) -> int | None:
    """The round a checkpoint key holds, None for anything else in the folder."""
    found = _ROUND.fullmatch(key.rpartition("/")[2])
    return int(found.group(1)) if found else None


async def delete_checkpoints(store: ArtifactStore, job_id: str) -> int:
    """Remove every checkpoint of the job; the number removed."""
    found = await store.list(folder(job_id))
    for info in found:
        await store.delete(info.key)
    return len(found)


class WorkerCheckpoints:
    """A job's checkpoints as a training callback on a Dask worker sees them: blocking calls, each run on a
    private event loop (the worker's task thread has none), the store opened once per run."""

    def __init__(self, storage: dict[str, Any], job_id: str, every: int, extension: str) -> None:
        self.job_id = job_id
        self.every = every
        self.extension = extension
        self._loop = asyncio.new_event_loop()
        self._store = create_artifact_store(StorageSettings.model_validate(storage))
        self._saved: str | None = None

    def _call(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)

    def latest(self) -> tuple[int, bytes] | None:
        """The newest checkpoint (its round and bytes), None when there is none."""
        mine = folder(self.job_id)
        rounds = {
            number: info.key
            for info in self._call(self._store.list(mine))
            if info.key.rpartition("/")[0] + "/" == mine and (number := round_of(info.key)) is not None
        }  # a search's trials keep theirs in folders below the job's: not this run's
        if not rounds:
            return None
        newest = max(rounds)
        self._saved = rounds[newest]
        return newest, bytes(self._call(self._store.read_bytes(rounds[newest])))

    def due(self, rounds: int, total: int) -> bool:
        """After the last round the model itself is saved: no checkpoint needed."""
        return rounds % self.every == 0 and rounds < total

    def save(self, rounds: int, data: bytes) -> None:
        """Write round `rounds`, then remove the one before (a crash between leaves two; the newest wins)."""
        key = f"{folder(self.job_id)}round-{rounds}.{self.extension}"
        self._call(self._store.put(key, data))
        if self._saved is not None and self._saved != key:
            self._call(self._store.delete(self._saved))
        self._saved = key

    def close(self) -> None:
        try:
            self._call(self._store.close())
        finally:
            self._loop.close()


@contextlib.contextmanager
def checkpoints_for(spec: dict[str, Any], extension: str) -> Iterator[WorkerCheckpoints | None]:
    """The job's checkpoints when its spec asks for them (`checkpoint_every` rounds > 0), else None."""
    every = int(spec.get("checkpoint_every") or 0)
    if every <= 0:
        yield None
        return
    checkpoints = WorkerCheckpoints(spec["storage"], spec["job_id"], every, extension)
    try:
        yield checkpoints
    finally:
        checkpoints.close()


def resume_point(
    checkpoints: WorkerCheckpoints | None, total: int, load: Callable[[bytes], T]
) -> tuple[int, T | None]:
    """Where a boosting run starts: (rounds already done, the model to continue) from the job's newest
    checkpoint, or (0, None) when there is none (or it already holds every round)."""
    if checkpoints is None or (saved := checkpoints.latest()) is None or saved[0] >= total:
        return 0, None
    return saved[0], load(saved[1])
