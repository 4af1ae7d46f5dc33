"""Drift persistence: the interface (references per version, reports of checks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlplatform.monitoring.schemas import DriftReportRead, DriftReportSummary, ReferenceSource


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A version's reference sample as its profile (`ReferenceProfile.to_dict()`, JSON-safe)."""

    version_id: str
    model: str
    version: int
    source: ReferenceSource
    dataset_id: str | None
    rows: int
    source_rows: int
    profile: dict[str, Any]
    created_at: datetime
    created_by: str


class DriftStore(ABC):
    """Reference profiles (one per version id) and drift reports.

    Contract, for every backend:
    - `put_reference` stores the reference of its version id, replacing any earlier one, in one transaction;
      concurrent puts of one version leave one of them whole. `get_reference` returns it as stored (the
      profile's JSON round-trips exactly) or None.
    - `add_report` inserts the report exactly as given (the service chose its id and times). `get_report`
      returns it whole, features and histograms included; an unknown id, or a report of another model,
      raises `NotFound`.
    - Listings and `latest_report` order newest first: `created_at`, then `id`, descending. `total` counts
      every match. `version` filters by version number, `version_id` by a version's full id; None matches
      every version.
    - Times are aware UTC datetimes.
    """

    @abstractmethod
    async def put_reference(self, reference: StoredReference) -> None: ...

    @abstractmethod
    async def get_reference(self, version_id: str) -> StoredReference | None: ...

    @abstractmethod
    async def add_report(self, report: DriftReportRead) -> None: ...

    @abstractmethod
    async def get_report(self, *, model: str, report_id: str) -> DriftReportRead: ...

    @abstractmethod
    async def list_reports(
        self, *, model: str, version: int | None, limit: int, offset: int
    ) -> tuple[list[DriftReportSummary], int]:
        """One page of the model's reports (without their per-feature results) and the total."""

    @abstractmethod
    async def latest_report(self, *, model: str, version_id: str | None) -> DriftReportRead | None:
        """The newest report of the model, or of one of its versions."""

    @abstractmethod
    async def latest_summaries(self, models: Sequence[str]) -> dict[str, DriftReportSummary]:
        """The newest report of each model, without its per-feature results, by name; models with none
        are left out. One query, whatever the number of models."""
