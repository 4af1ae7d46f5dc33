"""Where training work runs: a Dask cluster, embedded (`jobs.scheduler: local`) or at an address."""

from __future__ import annotations

from mlplatform.stores.jobs.dask import DaskEngine

__all__ = ["DaskEngine"]
