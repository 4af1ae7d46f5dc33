"""Experiment use cases: start one (checked), route a model's traffic by it, read results, promote or stop."""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime
from typing import Any

import structlog

from mlplatform.clock import utcnow
from mlplatform.errors import Conflict, InvalidInput, NotFound
from mlplatform.experiments.canary import guard as canary_guard
from mlplatform.experiments.canary import next_move
from mlplatform.experiments.results import ArmInput, results
from mlplatform.experiments.schemas import (
    CanarySpec,
    ExperimentCreate,
    ExperimentRead,
    ExperimentResults,
    ExperimentState,
    Page,
    VariantRead,
)
from mlplatform.experiments.store import ExperimentStore, Tally
from mlplatform.ids import block_ids, new_id
from mlplatform.monitoring.alerts.schemas import AlertState
from mlplatform.monitoring.alerts.service import EVENT_KINDS, AlertService
from mlplatform.monitoring.service import MonitoringService
from mlplatform.registry.refs import check_name
from mlplatform.registry.service import RegistryService
from mlplatform.registry.snapshot import Route, VersionEntry
from mlplatform.serving.service import ServingService

log = structlog.get_logger(__name__)
WEIGHT_TOLERANCE = 1e-6
PROMOTED_ALIAS = "production"
SUPERVISOR = "experiment supervisor"
FIRING = AlertState.FIRING


def _invalid(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def check_shape(request: ExperimentCreate) -> None:
    """What the schema cannot say field by field: 422 naming the field."""
    names: set[str] = set()
    for i, variant in enumerate(request.variants):
        if variant.name in names:
            raise _invalid(f"variants[{i}].name", f"variant {variant.name!r} is named twice")
        names.add(variant.name)
    weights = [v.weight for v in request.variants]
    if request.type == "ab":
        for i, weight in enumerate(weights):
            if weight is None:
                raise _invalid(f"variants[{i}].weight", "every variant of an ab test has a weight (percent)")
        total = sum(w or 0.0 for w in weights)
        if abs(total - 100) > WEIGHT_TOLERANCE:
            raise _invalid("variants", f"the weights add up to {total:g}, not 100")
        return
    if len(request.variants) != 2:
        problem = f"a {request.type} experiment has two variants: the current version, then the new one"
        raise _invalid("variants", problem)
    if request.type == "canary":
        for i, weight in enumerate(weights):
            if weight is not None:
                raise _invalid(f"variants[{i}].weight", "a canary's weights come from canary.steps")
    elif request.canary is not None:
        raise _invalid("canary", "only a canary experiment has steps")
    if request.type == "shadow":
        if weights[0] not in (None, 100):
            raise _invalid("variants[0].weight", "the primary of a shadow experiment answers every request")
        if weights[1] is None:
            raise _invalid("variants[1].weight", "the percent of requests mirrored to the shadow")


def initial_weights(request: ExperimentCreate) -> list[float]:
    if request.type == "canary":
        first = (request.canary.steps if request.canary else [5.0])[0]
        return [100 - first, first]
    if request.type == "shadow":
        return [100.0, float(request.variants[1].weight or 0)]
    return [float(v.weight or 0) for v in request.variants]


def answered_id(request_id: str | None, own_id: str) -> str | None:
    """The answered prediction a shadow's logged prediction pairs with: the shadow logs each of the answer's
    blocks as a block of its own whose request_id is the answer block's first id (`ShadowJob.answered`), so
    its row at position p pairs with that block's p-th id. None for a log entry that is not such a pair."""
    if request_id is None:
        return None
    try:
        position = int(own_id[22:26], 16)  # a shadow block's ids count from 0000
        return block_ids(request_id, position + 1)[-1] if position else request_id
    except ValueError:
        return None


def _agreement(tally: Tally) -> tuple[int, int, float | None]:
    """A shadow's (rows compared, agreed, mean |difference| over numeric rows or None)."""
    mean = tally.difference_sum / tally.numeric if tally.numeric else None
    return tally.compared, tally.agreed, mean


def route_of(experiment: ExperimentRead, numbers: dict[str, int]) -> Route:
    weights = [(v.name, numbers[v.version], v.weight) for v in experiment.variants]
    return Route.build(experiment.id, experiment.type, experiment.sticky, weights)


class ExperimentService:
    def __init__(
        self,
        *,
        store: ExperimentStore,
        registry: RegistryService,
        monitoring: MonitoringService,
        serving: ServingService,
        alerts: AlertService,
    ) -> None:
        self.alerts = alerts
        self.store = store
        self.registry = registry
        self.monitoring = monitoring
        self.serving = serving
        # This process's name in the saved tallies: new at every start, so a restart adds rows, never
        # overwrites the totals an earlier process saved.
        self.instance = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._saved: dict[tuple[str, str], Tally] = {}

    # --- starting ------------------------------------------------------------------------------------------

    async def create(self, request: ExperimentCreate, *, actor: str) -> ExperimentRead:
        check_name(request.model, "model")
        check_shape(request)
        if await self.registry.model_entry(request.model) is None:
            raise _invalid("model", f"no model named {request.model!r}")
        canary = request.canary or (CanarySpec() if request.type == "canary" else None)
        variants: list[VariantRead] = []
        seen: dict[str, int] = {}
        for i, (variant, weight) in enumerate(zip(request.variants, initial_weights(request), strict=True)):
            entry = await self._version(request.model, variant.version, f"variants[{i}].version")
            if entry.id in seen:
                problem = f"{entry.id} is already variant {request.variants[seen[entry.id]].name!r}"
                raise _invalid(f"variants[{i}].version", problem)
            seen[entry.id] = i
            variants.append(VariantRead(name=variant.name, version=entry.id, weight=weight))
        now = utcnow()
        experiment = ExperimentRead(
            id=new_id(),
            name=request.name,
            model=request.model,
            type=request.type,
            state="running",
            variants=variants,
            sticky=request.sticky,
            metric=request.metric,
            min_samples=request.min_samples,
            min_effect=request.min_effect,
            alpha=request.alpha,
            max_duration_seconds=request.max_duration_seconds,
            canary=canary,
            step=0,
            step_started_at=now,
            created_at=now,
            created_by=actor,
        )
        await self.store.create(experiment)
        await self._history(experiment, "experiment_started", actor, variants=self._weights(variants))
        await self.registry.watcher.announce(experiment.model)
        log.info("experiment started", experiment=experiment.id, model=experiment.model, type=experiment.type)
        return experiment

    async def _version(self, model: str, reference: str, field: str) -> VersionEntry:
        """A variant's version: a number or @alias of `model`, or a full reference to one of its versions."""
        if reference.isdecimal():
            reference = f"{model}/{reference}"
        elif reference.startswith("@"):
            reference = model + reference
        try:
            entry = await self.registry.resolve_fresh(reference, field)
        except NotFound as exc:
            raise _invalid(field, exc.message) from None
        if entry.name != model:
            raise _invalid(field, f"{entry.id} is not a version of {model!r}")
        if entry.status == "archived":
            raise _invalid(field, f"{entry.id} is archived")
        return entry

    @staticmethod
    def _weights(variants: list[VariantRead]) -> dict[str, Any]:
        return {v.name: {"version": v.version, "weight": v.weight} for v in variants}

    async def _history(self, experiment: ExperimentRead, action: str, actor: str, **details: Any) -> None:
        await self.registry.record_event(
            experiment.model,
            action,
            actor=actor,
            details={
                "experiment": experiment.id,
                "name": experiment.name,
                "type": experiment.type,
                **details,
            },
        )

    # --- routing (the registry snapshot's source) ----------------------------------------------------------

    async def routes(self, model: str | None) -> dict[str, Route]:
        """The running experiments' routes by model name (every model's, or one's)."""
        found: dict[str, Route] = {}
        for experiment in await self.store.running(model):
            entry = await self.registry.model_entry(experiment.model)
            if entry is None:
                continue
            numbers = {v.id: number for number, v in entry.versions.items()}
            if all(v.version in numbers for v in experiment.variants):
                found[experiment.model] = route_of(experiment, numbers)
        return found

    # --- reading -------------------------------------------------------------------------------------------

    async def get(self, experiment_id: str) -> ExperimentRead:
        return await self.store.get(experiment_id)

    async def list_experiments(
        self, *, model: str | None, state: ExperimentState | None, limit: int, offset: int
    ) -> Page[ExperimentRead]:
        return await self.store.list_experiments(model=model, state=state, limit=limit, offset=offset)

    async def results(self, experiment_id: str) -> ExperimentResults:
        experiment = await self.store.get(experiment_id)
        return results(experiment, await self._arms(experiment))

    async def _arms(self, experiment: ExperimentRead, since: datetime | None = None) -> list[ArmInput]:
        """Each variant's data since the experiment (or `since`) began."""
        tallies = await self.tallies(experiment.id)
        arms: list[ArmInput] = []
        labels: dict[str, Any] = {}  # a shadow's labels are those of the answers it was mirrored from
        for variant in experiment.variants:
            data = await self.monitoring.arm(
                model=experiment.model,
                experiment=experiment.id,
                variant=variant.name,
                version_id=variant.version,
                start=since or experiment.created_at,
                end=experiment.ended_at,
            )
            tally = tallies.get(variant.name, Tally())
            predicted, actual = list(data.labelled.predicted), list(data.labelled.actual)
            if experiment.type == "shadow" and arms:
                answered = (
                    answered_id(request, own)
                    for request, own in zip(data.recent_requests, data.recent_ids, strict=True)
                )
                pairs = [
                    (value, labels[primary])
                    for value, primary in zip(data.recent, answered, strict=True)
                    if primary in labels
                ]
                predicted, actual = [p for p, _ in pairs], [a for _, a in pairs]
            else:
                labels = dict(zip(data.labelled.prediction_ids, data.labelled.actual, strict=True))
            arms.append(
                ArmInput(
                    variant=variant,
                    requests=max(data.predictions, tally.requests) if since is None else data.predictions,
                    errors=tally.errors,
                    latencies=data.latencies,
                    recent=data.recent,
                    predicted=predicted,
                    actual=actual,
                    shadow=_agreement(tally) if experiment.type == "shadow" else None,
                )
            )
        return arms

    def _local_tallies(self) -> dict[tuple[str, str], Tally]:
        return {arm: Tally(*totals) for arm, totals in self.serving.experiment_totals().items()}

    async def save_tallies(self) -> None:
        """Save this process's running totals that changed since the last save, so that every instance's
        results include them."""
        current = self._local_tallies()
        changed = {arm: t for arm, t in current.items() if self._saved.get(arm) != t}
        await self.store.save_tallies(self.instance, changed, at=utcnow())
        self._saved.update(changed)

    async def tallies(self, experiment_id: str) -> dict[str, Tally]:
        """Every instance's totals per variant: the saved ones, with this process's own as they are now."""
        saved = await self.store.tallies(experiment_id)
        for (experiment, variant), tally in self._local_tallies().items():
            if experiment == experiment_id:
                saved[(variant, self.instance)] = tally
        summed: dict[str, Tally] = {}
        for (variant, _), tally in saved.items():
            summed[variant] = summed.get(variant, Tally()) + tally
        return summed

    # --- supervising: canaries step, roll back or finish; every experiment ends at its max duration ------

    async def supervise(self, now: datetime | None = None) -> list[str]:
        """One pass over the running experiments; returns what it did (for the logs and tests). Safe on
        every instance at once: each change is a conditional update that one instance wins."""
        now = now or utcnow()
        done = []
        for experiment in await self.store.running():
            try:
                if (action := await self._supervise(experiment, now)) is not None:
                    done.append(action)
            except Exception:  # one experiment's trouble must not stop the others' supervision
                log.exception("experiment supervision failed", experiment=experiment.id)
        return done

    async def _supervise(self, experiment: ExperimentRead, now: datetime) -> str | None:
        limit = experiment.max_duration_seconds
        if limit is not None and (now - experiment.created_at).total_seconds() >= limit:
            reason = f"reached its max duration ({limit:g} s)"
            await self.stop(experiment.id, actor=SUPERVISOR, reason=reason)
            return f"{experiment.id}: stopped, {reason}"
        if experiment.type != "canary":
            return None
        baseline, canary = await self._arms(experiment)
        why = canary_guard(experiment, baseline, canary) or await self._alerted(experiment)
        if why is not None:
            await self.rollback(experiment, reason=why)
            return f"{experiment.id}: rolled back, {why}"
        step_arms = await self._arms(experiment, since=experiment.step_started_at)
        decision = next_move(experiment, step_arms[1].requests, now)
        if decision.action == "promote":
            await self.promote(experiment.id, variant=canary.variant.name, actor=SUPERVISOR)
        elif decision.action == "step":
            await self._step(experiment, now, decision.reason)
        return None if decision.action == "wait" else f"{experiment.id}: {decision.action}, {decision.reason}"

    async def _alerted(self, experiment: ExperimentRead) -> str | None:
        """An alert on the model that began while the canary ran (and is not our own rollback's)."""
        page = await self.alerts.list_alerts(state=FIRING, model=experiment.model, limit=100, offset=0)
        for alert in page.items:
            if alert.kind not in EVENT_KINDS and alert.first_seen >= experiment.created_at:
                return f"alert {alert.rule} fired on {experiment.model}: {alert.message}"
        return None

    async def _step(self, experiment: ExperimentRead, now: datetime, reason: str) -> None:
        spec = experiment.canary or CanarySpec()
        share = spec.steps[experiment.step + 1]
        baseline, canary = experiment.variants
        weights = [
            baseline.model_copy(update={"weight": 100 - share}),
            canary.model_copy(update={"weight": share}),
        ]
        if await self.store.set_weights(experiment.id, weights, step=experiment.step + 1, at=now):
            await self._history(
                experiment, "canary_step", SUPERVISOR, step=experiment.step + 1, percent=share
            )
            await self.registry.watcher.announce(experiment.model)
            log.info("canary stepped", experiment=experiment.id, percent=share, reason=reason)

    async def _keep_baseline(self, experiment: ExperimentRead, actor: str) -> None:
        """Before a canary ends without promotion: the bare name must not reach the canary afterwards."""
        baseline = experiment.variants[0]
        if (await self.registry.resolve_fresh(experiment.model)).id != baseline.version:
            number = (await self.registry.resolve_fresh(baseline.version)).version
            await self.registry.set_alias(experiment.model, PROMOTED_ALIAS, number, actor=actor)

    async def rollback(self, experiment: ExperimentRead, *, reason: str) -> None:
        """All traffic back to the baseline, the experiment `rolled_back`, an alert and a history entry."""
        baseline, canary = experiment.variants
        weights = [baseline.model_copy(update={"weight": 100.0}), canary.model_copy(update={"weight": 0.0})]
        await self._keep_baseline(experiment, SUPERVISOR)
        ended = await self.store.end(
            experiment.id, "rolled_back", at=utcnow(), by=SUPERVISOR, reason=reason, variants=weights
        )
        if not ended:
            return  # another instance (or a person) ended it first
        await self.registry.watcher.announce(experiment.model)
        await self._history(
            experiment, "canary_rolled_back", SUPERVISOR, reason=reason, version=canary.version
        )
        await self.alerts.raise_event(
            rule="CanaryRolledBack",
            kind="canary_rollback",
            model=experiment.model,
            severity="critical",
            value=float(experiment.step),
            message=f"canary {canary.version} of {experiment.model} rolled back: {reason}",
        )
        log.warning("canary rolled back", experiment=experiment.id, version=canary.version, reason=reason)

    # --- ending --------------------------------------------------------------------------------------------

    async def stop(self, experiment_id: str, *, actor: str, reason: str | None = None) -> ExperimentRead:
        """Traffic goes back to the model's default version; nothing is promoted. A stopped canary keeps its
        baseline: `production` is pointed back at it when the bare name would otherwise reach the canary."""
        experiment = await self.store.get(experiment_id)
        if experiment.type == "canary" and experiment.state == "running":
            await self._keep_baseline(experiment, actor)
        if not await self.store.end(experiment_id, "stopped", at=utcnow(), by=actor, reason=reason):
            raise Conflict(
                f"experiment {experiment_id} is already {experiment.state}", details={"field": "id"}
            )
        await self._history(experiment, "experiment_stopped", actor, reason=reason)
        await self.registry.watcher.announce(experiment.model)
        return await self.store.get(experiment_id)

    async def promote(self, experiment_id: str, *, variant: str | None, actor: str) -> ExperimentRead:
        """Point `production` at the variant's version (default: the recommended winner) and end the
        experiment."""
        experiment = await self.store.get(experiment_id)
        if experiment.state != "running":
            raise Conflict(
                f"experiment {experiment_id} is already {experiment.state}", details={"field": "id"}
            )
        if variant is None:
            found = await self.results(experiment_id)
            if found.recommendation != "winner" or found.winner is None:
                problem = (
                    f"no winner yet ({found.recommendation}: {found.reason}); name the variant to promote"
                )
                raise _invalid("variant", problem)
            variant = found.winner
        chosen = next((v for v in experiment.variants if v.name == variant), None)
        if chosen is None:
            names = ", ".join(v.name for v in experiment.variants)
            raise _invalid("variant", f"no variant {variant!r} (variants: {names})")
        entry = await self.registry.resolve_fresh(chosen.version, "variant")
        await self.registry.set_alias(experiment.model, PROMOTED_ALIAS, entry.version, actor=actor)
        if not await self.store.end(experiment_id, "promoted", at=utcnow(), by=actor, winner=chosen.name):
            raise Conflict(f"experiment {experiment_id} ended meanwhile", details={"field": "id"})
        await self._history(
            experiment, "experiment_promoted", actor, variant=chosen.name, version=chosen.version
        )
        await self.registry.watcher.announce(experiment.model)
        return await self.store.get(experiment_id)
