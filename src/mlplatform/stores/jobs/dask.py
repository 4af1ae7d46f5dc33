"""The Dask engine: an embedded `LocalCluster` on 127.0.0.1, or a client of an existing scheduler.

dask.distributed is imported on first use only: an instance that never trains never pays for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from mlplatform.settings import JobsSettings

log = structlog.get_logger(__name__)
# A task pinned to a worker that died (xgboost.dask pins each rank's training task) would otherwise wait for
# that worker forever: the scheduler fails it after this long, and the job runs again from its checkpoint. A
# worker the nanny restarts joins well within it. An existing cluster's scheduler needs the same setting
# (`distributed.scheduler.no-workers-timeout`, see the README).
NO_WORKERS_TIMEOUT = "20s"


class DaskEngine:
    """One asynchronous Dask client per app, connected on first use and closed with the app."""

    def __init__(self, settings: JobsSettings, preload: Sequence[str] = ()) -> None:
        self.settings = settings
        self.preload = tuple(preload)  # modules every worker imports when it joins (see warmup.py)
        self._client: Any = None
        self._cluster: Any = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether a client is connected (nothing is started for asking)."""
        return self._client is not None

    @property
    def embedded(self) -> bool:
        return self.settings.scheduler == "local"

    async def client(self) -> Any:
        """The connected `distributed.Client` (starting the embedded cluster the first time)."""
        async with self._lock:
            if self._client is None:
                import dask
                import distributed

                dd: Any = distributed  # untyped library
                if self.embedded:
                    with dask.config.set({"distributed.scheduler.no-workers-timeout": NO_WORKERS_TIMEOUT}):
                        self._cluster = await self._local_cluster(dd)
                    self._client = await dd.Client(self._cluster, asynchronous=True)
                else:
                    self._client = await dd.Client(self.settings.scheduler, asynchronous=True)
                log.info("dask connected", scheduler=self._client.scheduler.address)
                if self.preload:
                    await self._warm_up(self._client)
            return self._client

    async def _local_cluster(self, dd: Any) -> Any:
        return await dd.LocalCluster(
            n_workers=self.settings.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the scheduler's HTTP routes (health, metrics) still listen: on a free loopback port
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            asynchronous=True,
        )

    async def _warm_up(self, client: Any) -> None:
        from mlplatform.stores.jobs.warmup import ImportModules

        try:
            await client.register_plugin(ImportModules(self.preload))
        except Exception as exc:  # an optimisation: jobs import what they need themselves
            log.warning("dask worker warm-up not registered", error=f"{type(exc).__name__}: {exc}")

    async def ping(self) -> None:
        """Health: the scheduler answers (nothing to check before the first job connected us)."""
        if self._client is not None:
            info = await asyncio.wait_for(self._client.scheduler.identity(n_workers=-1), timeout=2)
            if not info.get("workers"):
                raise RuntimeError("the Dask scheduler has no workers")

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                await self._client.close()
                self._client = None
            if self._cluster is not None:
                await self._cluster.close()
                self._cluster = None
