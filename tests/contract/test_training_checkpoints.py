"""Training checkpoints on every storage backend: the latest kept, found again, all deleted at the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training.checkpoints import WorkerCheckpoints, checkpoints_for, delete_checkpoints


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The storage settings a job's spec carries, for the folder or the SeaweedFS bucket of this test."""
    if request.param == "file":
        return {"url": request.getfixturevalue("file_url")}
    credentials = request.getfixturevalue("s3_credentials")
    return {
        "url": request.getfixturevalue("s3_url"),
        "access_key_id": credentials["access-key-id"],
        "secret_access_key": credentials["secret-access-key"],
    }


def keys(storage: dict[str, Any], prefix: str) -> list[str]:
    async def listed() -> list[str]:
        store = create_artifact_store(StorageSettings.model_validate(storage))
        try:
            return [info.key for info in await store.list(prefix)]
        finally:
            await store.close()

    return asyncio.run(listed())


def test_a_run_keeps_only_its_latest_checkpoint_and_the_next_run_finds_it(storage: dict[str, Any]) -> None:
    first = WorkerCheckpoints(storage, "job1", every=10, extension="ubj")
    try:
        assert first.latest() is None
        assert [first.due(n, 30) for n in (9, 10, 20, 30)] == [False, True, True, False]
        first.save(10, b"ten")
        first.save(20, b"twenty")
    finally:
        first.close()
    assert keys(storage, "checkpoints/job1/") == ["checkpoints/job1/round-20.ubj"]
    resumed = WorkerCheckpoints(storage, "job1", every=10, extension="ubj")
    try:
        assert resumed.latest() == (20, b"twenty")
        resumed.save(30, b"thirty")  # the checkpoint it resumed from is replaced too
    finally:
        resumed.close()
    assert keys(storage, "checkpoints/job1/") == ["checkpoints/job1/round-30.ubj"]


def test_trials_keep_theirs_apart_and_the_job_end_deletes_them_all(storage: dict[str, Any]) -> None:
    for job_id, rounds in (("job2", 40), ("job2/trial-1", 70), ("other", 10)):
        with checkpoints_for({"storage": storage, "job_id": job_id, "checkpoint_every": 10}, "txt") as saved:
            assert saved is not None
            saved.save(rounds, f"{job_id}".encode())
    with checkpoints_for({"storage": storage, "job_id": "job2", "checkpoint_every": 10}, "txt") as saved:
        assert saved is not None and saved.latest() == (40, b"job2")  # not the trial's round 70
    with checkpoints_for({"storage": storage, "job_id": "job2", "checkpoint_every": 0}, "txt") as saved:
        assert saved is None

    async def delete() -> int:
        store = create_artifact_store(StorageSettings.model_validate(storage))
        try:
            return await delete_checkpoints(store, "job2")
        finally:
            await store.close()

    assert asyncio.run(delete()) == 2
    assert keys(storage, "checkpoints/") == ["checkpoints/other/round-10.txt"]
