"""Workers import the training libraries when they join (a plugin the engine registers as it connects): on
a real LocalCluster of worker processes, for the workers there are and one started later; a module that
cannot be imported does not stop the others."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import distributed

from mlplatform.settings import JobsSettings
from mlplatform.stores.jobs import DaskEngine

MODULES = ("xgboost", "no_such_module_for_mlplatform", "lightgbm")


def imported() -> list[str]:
    return [name for name in ("xgboost", "lightgbm") if name in sys.modules]


async def wait_imported(client: Any, workers: int) -> None:
    async with asyncio.timeout(60):
        while True:
            found = await client.run(imported)
            if len(found) == workers and all(v == ["xgboost", "lightgbm"] for v in found.values()):
                return
            await asyncio.sleep(0.2)


async def test_workers_import_the_libraries_when_they_join() -> None:
    dd: Any = distributed
    async with dd.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        asynchronous=True,
    ) as cluster:
        async with dd.Client(cluster, asynchronous=True) as plain:
            assert not any((await plain.run(imported)).values())  # a fresh worker process
        engine = DaskEngine(JobsSettings(scheduler=cluster.scheduler_address), preload=MODULES)
        try:
            client = await engine.client()
            await wait_imported(client, 1)
            cluster.scale(2)  # a worker that joins later
            await client.wait_for_workers(2)
            await wait_imported(client, 2)
        finally:
            await engine.close()
