"""The in-process view of the registry that every resolution reads (no database I/O on the predict path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlplatform.errors import NotFound
from mlplatform.formats.base import ModelDescription
from mlplatform.registry.refs import ModelRef


@dataclass(frozen=True, slots=True)
class VersionEntry:
    id: str
    name: str
    version: int
    status: str
    created_at: datetime
    description: ModelDescription
    artifact_key: str
    artifact_sha256: str
    reference_key: str | None
    runtime: dict[str, Any]
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    versions: dict[int, VersionEntry]
    aliases: dict[str, int]

    def default_version(self) -> int | None:
        """`production`, else the newest ready version."""
        if "production" in self.aliases:
            return self.aliases["production"]
        ready = [number for number, entry in self.versions.items() if entry.status == "ready"]
        return max(ready) if ready else None

    def aliases_of(self, version: int) -> list[str]:
        return sorted(alias for alias, number in self.aliases.items() if number == version)


def resolve(ref: ModelRef, entry: ModelEntry | None) -> VersionEntry:
    """The one resolution rule, for the snapshot and for the database alike."""
    if entry is None:
        raise NotFound(f"no model named {ref.name!r}", details={"field": "model", "model": str(ref)})
    if ref.alias is not None:
        number = entry.aliases.get(ref.alias)
        if number is None:
            known = ", ".join(sorted(entry.aliases)) or "none"
            raise NotFound(
                f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {known})",
                details={"field": "model", "model": str(ref)},
            )
    elif ref.version is not None:
        number = ref.version
    else:
        default = entry.default_version()
        if default is None:
            raise NotFound(f"model {ref.name!r} has no ready version", details={"field": "model"})
        number = default
    found = entry.versions.get(number)
    if found is None or (ref.stamp is not None and not found.id.endswith(f"-{ref.stamp}")):
        raise NotFound(f"model {ref} does not exist", details={"field": "model", "model": str(ref)})
    return found


@dataclass
class RegistrySnapshot:
    """Models by name; replaced entry by entry as change events arrive, wholly by the periodic poll."""

    models: dict[str, ModelEntry] = field(default_factory=dict)
    loaded_at: float = 0.0

    def resolve(self, ref: ModelRef) -> VersionEntry:
        return resolve(ref, self.models.get(ref.name))
