"""Loaded models: an LRU bounded by size and idle time, artifacts cached on local disk, one load at a time."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from mlplatform import formats
from mlplatform.errors import Unavailable
from mlplatform.formats.base import ModelDescription
from mlplatform.interpreter import freeze_heap
from mlplatform.registry.snapshot import VersionEntry
from mlplatform.serving.features import Signature
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.runtimes import build_runtime
from mlplatform.serving.runtimes.base import CompileReport, Runtime, sample_input, string_columns
from mlplatform.settings import ModelsSettings
from mlplatform.stores.artifacts.base import ArtifactStore

log = structlog.get_logger(__name__)


# A model whose single-row predict takes longer than this runs on the executor, where the deadline applies;
# faster ones run on the event loop (a thread hop would cost more than the prediction).
INLINE_BUDGET_SECONDS = 0.001


@dataclass
class LoadedModel:
    entry: VersionEntry
    runtime: Runtime
    report: CompileReport
    signature: Signature
    loaded_at: float
    last_used: float
    inline: bool = True


class ModelCache:
    """Version id → loaded runtime. Versions are immutable, so an entry never goes stale; it is dropped
    when the LRU is full (`ml.models.cache-size`), when unused for `ml.models.cache-ttl` seconds, or when
    its version is purged from the registry."""

    def __init__(
        self,
        *,
        artifacts: ArtifactStore,
        settings: ModelsSettings,
        metrics: ServingMetrics,
        local_dir: Path,
        clock: Any = time.monotonic,
    ) -> None:
        self.artifacts = artifacts
        self.settings = settings
        self.metrics = metrics
        self.local_dir = local_dir
        self.clock = clock
        self.models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}

    def __len__(self) -> int:
        return len(self.models)

    def peek(self, version_id: str) -> LoadedModel | None:
        """The loaded model when it is in memory (the predict path's fast case), marking it used."""
        found = self.models.get(version_id)
        if found is not None:
            found.last_used = self.clock()
            self.models.move_to_end(version_id)
        return found

    async def get(self, entry: VersionEntry) -> LoadedModel:
        found = self.peek(entry.id)
        if found is not None:
            return found
        pending = self._loading.get(entry.id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[entry.id] = pending
            try:
                loaded = await self._load(entry)
                pending.set_result(loaded)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
                raise
            finally:
                del self._loading[entry.id]
            self._admit(loaded)
            return loaded
        return await asyncio.shield(pending)

    def _admit(self, loaded: LoadedModel) -> None:
        self.models[loaded.entry.id] = loaded
        self.evict()

    def evict(self) -> list[str]:
        """Drop idle models and the least recently used beyond the size limit; returns what was dropped."""
        now = self.clock()
        dropped = [vid for vid, m in self.models.items() if now - m.last_used > self.settings.cache_ttl]
        for vid in dropped:
            del self.models[vid]
        while len(self.models) > self.settings.cache_size:
            vid, _ = self.models.popitem(last=False)
            dropped.append(vid)
        if dropped:
            log.info("models unloaded", versions=dropped)
        return dropped

    def forget(self, keep: set[str], name: str) -> None:
        """Drop loaded versions of `name` that are no longer in the registry."""
        for vid in [vid for vid, m in self.models.items() if m.entry.name == name and vid not in keep]:
            del self.models[vid]

    async def _load(self, entry: VersionEntry) -> LoadedModel:
        started = time.perf_counter()
        path = await self._local_copy(entry.artifact_key, entry.artifact_sha256, entry.description.file_name)
        sample = await self._reference(entry)
        runtime, report = await asyncio.to_thread(self._build, path, entry, sample)
        inline = await asyncio.to_thread(single_row_seconds, runtime) < INLINE_BUDGET_SECONDS
        missing_strings = bool(string_columns(entry.description)) and await asyncio.to_thread(
            runtime.accepts_missing_strings
        )
        took = time.perf_counter() - started
        freeze_heap()
        self.metrics.model_loads.labels(runtime.name).observe(took)
        log.info(
            "model loaded",
            version=entry.id,
            runtime=runtime.name,
            seconds=round(took, 3),
            reason=report.reason,
        )
        now = self.clock()
        return LoadedModel(
            entry=entry,
            runtime=runtime,
            report=report,
            signature=Signature(entry.description.features, entry.name, missing_strings=missing_strings),
            loaded_at=now,
            last_used=now,
            inline=inline,
        )

    def _build(
        self, path: Path, entry: VersionEntry, sample: np.ndarray | None
    ) -> tuple[Runtime, CompileReport]:
        return load_runtime(path, entry.description, sample, allow_pickle=self.settings.allow_pickle)

    def assess(self, path: Path, description: ModelDescription, sample: np.ndarray | None) -> dict[str, Any]:
        """For the registry at upload: build the runtime once; its report is recorded on the version."""
        _, report = load_runtime(path, description, sample, allow_pickle=self.settings.allow_pickle)
        return report.to_dict()

    async def _reference(self, entry: VersionEntry) -> np.ndarray | None:
        if not entry.reference_key:
            return None
        try:
            raw = await self.artifacts.read_bytes(entry.reference_key)
        except Exception as exc:  # the sample only sharpens the compile check; never fail a load for it
            log.warning("reference sample unavailable", version=entry.id, error=str(exc)[:200])
            return None
        sample: np.ndarray = np.load(io.BytesIO(raw), allow_pickle=False)
        return sample

    async def _local_copy(self, key: str, sha256: str, file_name: str) -> Path:
        """The artifact on local disk, named by its digest; downloaded and verified once."""
        target = self.local_dir / f"{sha256}-{file_name}"
        if target.exists():
            return target
        await asyncio.to_thread(self.local_dir.mkdir, parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{id(target)}.part")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                async for chunk in self.artifacts.get(key):
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            if digest.hexdigest() != sha256:
                raise Unavailable(f"artifact {key} does not match its recorded SHA-256: refusing to load it")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target


def load_runtime(
    path: Path, description: ModelDescription, sample: np.ndarray | None, *, allow_pickle: bool
) -> tuple[Runtime, CompileReport]:
    """Load the artifact, pick the engine (compiled when it matches the native model) and warm it up."""
    native = formats.load_model(path, description, allow_pickle=allow_pickle)
    runtime, report = build_runtime(native, description, sample=sample)
    runtime.warm_up()
    return runtime, report


def single_row_seconds(runtime: Runtime, repeats: int = 5) -> float:
    """The best of a few single-row predictions (after warm-up): how long the predict path will block."""
    row = sample_input(runtime.description, runtime.n_features, 1)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        runtime.predict(row)
        best = min(best, time.perf_counter() - started)
    return best
