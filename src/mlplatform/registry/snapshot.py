"""The in-process view of the registry that every resolution reads (no database I/O on the predict path)."""

from __future__ import annotations

import hashlib
import random
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


SPACE = 2**64  # a sticky key hashes to a point in [0, SPACE); each variant owns a slice of it


def point(salt: str, key: str | None) -> int:
    """Where a key falls: the same on every instance and process (Python's own `hash` is salted per process);
    a random point when there is no key."""
    if key is None:
        return random.getrandbits(64)
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True, slots=True)
class RouteVariant:
    name: str
    version: int
    upper: int  # this variant answers the points below `upper` (and at or above the previous one's)


@dataclass(frozen=True, slots=True)
class Route:
    """How a running experiment splits a model's traffic: what `model` (the bare name) resolves to."""

    experiment: str
    type: str
    sticky: str  # request_id | random | header:NAME | field:NAME
    variants: tuple[RouteVariant, ...]
    shadow: RouteVariant | None = None  # answers nothing; `shadow.upper` is the mirrored share of SPACE

    @classmethod
    def build(cls, experiment: str, type_: str, sticky: str, weights: list[tuple[str, int, float]]) -> Route:
        """From (variant, version number, percent) in order; a shadow's second variant is the mirror."""
        if type_ == "shadow":
            (primary, number, _), (name, shadow_number, percent) = weights
            mirror = RouteVariant(name, shadow_number, int(SPACE * min(percent, 100) / 100))
            return cls(experiment, type_, sticky, (RouteVariant(primary, number, SPACE),), mirror)
        total = sum(w for _, _, w in weights) or 1.0
        variants, running = [], 0.0
        for name, number, weight in weights:
            running += weight
            variants.append(RouteVariant(name, number, int(SPACE * min(running / total, 1.0))))
        return cls(experiment, type_, sticky, tuple(variants))

    def pick(self, key: str | None) -> RouteVariant:
        at = point(self.experiment, key)
        for variant in self.variants:
            if at < variant.upper:
                return variant
        return self.variants[-1]

    def mirrored(self, key: str | None) -> bool:
        """Whether this request also goes to the shadow (independently of which variant answers)."""
        return self.shadow is not None and point(self.experiment + "/shadow", key) < self.shadow.upper


@dataclass
class RegistrySnapshot:
    """Models by name, and the running experiments' routes by model name; replaced entry by entry as change
    events arrive, wholly by the periodic poll."""

    models: dict[str, ModelEntry] = field(default_factory=dict)
    loaded_at: float = 0.0
    routes: dict[str, Route] = field(default_factory=dict)

    def resolve(self, ref: ModelRef) -> VersionEntry:
        return resolve(ref, self.models.get(ref.name))
