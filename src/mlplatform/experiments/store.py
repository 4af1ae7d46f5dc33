"""Experiment persistence: the interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from mlplatform.experiments.schemas import ExperimentRead, ExperimentState, Page, VariantRead


@dataclass(frozen=True, slots=True)
class Tally:
    """What server processes counted in memory for one variant: requests answered, requests failed, and for
    a shadow the rows compared with the answer given, those that agreed, and |shadow − answer| over the
    numeric ones."""

    requests: int = 0
    errors: int = 0
    compared: int = 0
    agreed: int = 0
    difference_sum: float = 0.0
    numeric: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.requests + other.requests,
            self.errors + other.errors,
            self.compared + other.compared,
            self.agreed + other.agreed,
            self.difference_sum + other.difference_sum,
            self.numeric + other.numeric,
        )


class ExperimentStore(ABC):
    """Experiments, the truth about which one runs for a model and with what weights.

    Contract: `create` inserts the experiment as given and raises `Conflict` when the model already has a
    running one (the database decides, so two instances racing cannot both start one). Only a running
    experiment changes: `set_weights` and `end` are conditional updates that return False, changing nothing,
    when it no longer runs. `running()` lists every running experiment (the routing table's source).
    Listings are newest first; unknown ids raise `NotFound`.
    """

    @abstractmethod
    async def create(self, experiment: ExperimentRead) -> None: ...

    @abstractmethod
    async def get(self, experiment_id: str) -> ExperimentRead: ...

    @abstractmethod
    async def list_experiments(
        self, *, model: str | None, state: ExperimentState | None, limit: int, offset: int
    ) -> Page[ExperimentRead]: ...

    @abstractmethod
    async def running(self, model: str | None = None) -> list[ExperimentRead]:
        """Every running experiment (or the model's, at most one)."""

    @abstractmethod
    async def set_weights(
        self, experiment_id: str, variants: list[VariantRead], *, step: int, at: datetime
    ) -> bool:
        """A canary's next step: its weights, if the experiment still runs at step `step - 1` (so two
        instances supervising at once move it one step, not two)."""

    @abstractmethod
    async def end(
        self,
        experiment_id: str,
        state: ExperimentState,
        *,
        at: datetime,
        by: str,
        winner: str | None = None,
        reason: str | None = None,
        variants: list[VariantRead] | None = None,
    ) -> bool:
        """running → `state` (promoted, stopped, rolled_back); False when it had already ended."""

    @abstractmethod
    async def save_tallies(
        self, instance: str, tallies: dict[tuple[str, str], Tally], *, at: datetime
    ) -> None:
        """Replace `instance`'s running totals for each (experiment, variant) given; others' are untouched."""

    @abstractmethod
    async def tallies(self, experiment_id: str) -> dict[tuple[str, str], Tally]:
        """Every instance's saved totals for the experiment, keyed by (variant, instance)."""
