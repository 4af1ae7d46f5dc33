"""Registry persistence: the interface, and what a new version and a listing filter carry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlplatform.formats.base import ModelDescription
from mlplatform.registry.schemas import AliasesAt, HistoryEntry, ModelRead, Page, VersionRead
from mlplatform.registry.snapshot import ModelEntry


@dataclass(frozen=True, slots=True)
class NewVersion:
    name: str
    actor: str
    at: datetime
    description: ModelDescription
    artifact_key: str
    artifact_size: int
    artifact_sha256: str
    reference_key: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    version_description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_id: str | None = None
    training_dataset_id: str | None = None
    training_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class ModelFilter:
    prefix: str | None = None
    stage: str | None = None
    tag: tuple[str, str] | None = None
    framework: str | None = None


class RegistryStore(ABC):
    """Models, versions, aliases and history.

    Contract: `create_version` creates the model when new and gives the version the next number in the same
    transaction that inserts it, so numbers are unique and gap-free under concurrent writers. Every change of
    an alias or status writes a history row (who, when, from, to). Unknown names/versions raise `NotFound`.
    """

    @abstractmethod
    async def create_version(self, new: NewVersion) -> VersionRead: ...

    @abstractmethod
    async def entry(self, name: str) -> ModelEntry | None:
        """One model's aliases and versions, for resolution."""

    @abstractmethod
    async def entries(self) -> dict[str, ModelEntry]: ...

    @abstractmethod
    async def get_model(self, name: str) -> ModelRead: ...

    @abstractmethod
    async def list_models(self, where: ModelFilter, limit: int, offset: int) -> Page[ModelRead]: ...

    @abstractmethod
    async def get_version(self, name: str, version: int) -> VersionRead: ...

    @abstractmethod
    async def list_versions(self, name: str, limit: int, offset: int) -> Page[VersionRead]: ...

    @abstractmethod
    async def update_model(
        self, name: str, *, description: str | None, tags: dict[str, str] | None
    ) -> None: ...

    @abstractmethod
    async def update_version(
        self, name: str, version: int, *, description: str | None, tags: dict[str, str] | None
    ) -> None: ...

    @abstractmethod
    async def set_runtime(self, version_id: str, runtime: dict[str, Any]) -> None: ...

    @abstractmethod
    async def set_alias(self, name: str, alias: str, version: int | None, actor: str, at: datetime) -> None:
        """Point `alias` at `version`, or remove it when `version` is None."""

    @abstractmethod
    async def archive(self, name: str, version: int, actor: str, at: datetime) -> None:
        """Status `archived`; every alias pointing at it is removed."""

    @abstractmethod
    async def purge_version(self, name: str, version: int, actor: str, at: datetime) -> list[str]:
        """Remove the version's row; returns the storage keys it owned."""

    @abstractmethod
    async def purge_model(self, name: str, actor: str, at: datetime) -> list[str]: ...

    @abstractmethod
    async def history(self, name: str, limit: int, offset: int) -> Page[HistoryEntry]: ...

    @abstractmethod
    async def record(self, name: str, action: str, actor: str, at: datetime, details: dict[str, Any]) -> None:
        """An entry in the model's history for a change made elsewhere (an experiment started, a canary
        stepped or rolled back): NotFound when there is no such model."""

    @abstractmethod
    async def aliases_at(self, name: str, at: datetime) -> AliasesAt: ...

    @abstractmethod
    async def storage_keys(self) -> set[str]:
        """Every artifact and reference key a version row owns (for the orphan sweep)."""
