"""The Dask engine: an embedded `LocalCluster` on 127.0.0.1, or a client of an existing scheduler.

dask.distributed is imported on first use only: an instance that never trains never pays for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from mlplatform.settings import JobsSettings

log = structlog.get_logger(__name__)


class DaskEngine:
    """One asynchronous Dask client per app, connected on first use and closed with the app."""

    def __init__(self, settings: JobsSettings) -> None:
        self.settings = settings
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
                import distributed

                dd: Any = distributed  # untyped library
                if self.embedded:
                    self._cluster = await dd.LocalCluster(
                        n_workers=self.settings.workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        # the scheduler's HTTP routes (health, metrics) still listen: on a free loopback port
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                        asynchronous=True,
                    )
                    self._client = await dd.Client(self._cluster, asynchronous=True)
                else:
                    self._client = await dd.Client(self.settings.scheduler, asynchronous=True)
                log.info("dask connected", scheduler=self._client.scheduler.address)
            return self._client

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
