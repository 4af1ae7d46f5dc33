"""`create_app(settings)`: the one place that builds and wires an instance."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI

from mlplatform import __version__, db
from mlplatform.api import actuator, inference_v2, predict
from mlplatform.api.edge import EdgeApp
from mlplatform.api.openapi import document_contract
from mlplatform.auth import router as auth_router
from mlplatform.auth.firstrun import first_admin_key_notice, server_url
from mlplatform.auth.ratelimit import RateLimiter
from mlplatform.auth.service import AuthService
from mlplatform.auth.store import SqlApiKeyStore
from mlplatform.backups.scheduler import BackupScheduler
from mlplatform.backups.service import BackupService
from mlplatform.clock import utcnow
from mlplatform.config import load_settings, redact_url
from mlplatform.datasets import router as datasets_router
from mlplatform.datasets.service import DatasetService
from mlplatform.datasets.sql_store import SqlDatasetStore
from mlplatform.experiments import router as experiments_router
from mlplatform.experiments.service import ExperimentService
from mlplatform.experiments.sql_store import SqlExperimentStore
from mlplatform.experiments.supervisor import ExperimentSupervisor
from mlplatform.health import HealthService, Lifecycle
from mlplatform.interpreter import freeze_heap, tune_for_serving
from mlplatform.logging import configure_logging
from mlplatform.metrics import Metrics
from mlplatform.monitoring import router as monitoring_router
from mlplatform.monitoring.alerts import router as alerts_router
from mlplatform.monitoring.alerts.notify import WebhookNotifier
from mlplatform.monitoring.alerts.service import AlertService
from mlplatform.monitoring.alerts.sql_store import SqlAlertStore, SqlCheckLeaseStore
from mlplatform.monitoring.checks import (
    AccuracyStep,
    CheckScheduler,
    CounterStep,
    DriftStep,
    InstanceCounters,
    LatencyStep,
    MonitoringChecks,
    counter_totals,
    deployed_models,
)
from mlplatform.monitoring.service import MonitoringService
from mlplatform.monitoring.sql_store import SqlDriftStore
from mlplatform.platform import Platform
from mlplatform.registry import router as registry_router
from mlplatform.registry.events import RegistryWatcher
from mlplatform.registry.service import RegistryService
from mlplatform.registry.sql_store import SqlRegistryStore
from mlplatform.serving.logs import PredictionLogWriter
from mlplatform.serving.metrics import ServingMetrics, register_models
from mlplatform.serving.model_cache import ModelCache
from mlplatform.serving.prediction_cache import PredictionCache
from mlplatform.serving.service import ServingService
from mlplatform.serving.stats import ServingStatsService
from mlplatform.serving.stats_store import SqlServingStatsStore
from mlplatform.settings import Settings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.stores.cache import create_cache
from mlplatform.stores.cache.base import Cache
from mlplatform.stores.jobs import DaskEngine
from mlplatform.stores.predictions import PredictionLogStore, create_prediction_log_store
from mlplatform.training import router as training_router
from mlplatform.training.algorithms import TRAINING_MODULES
from mlplatform.training.metrics import TrainingMetrics
from mlplatform.training.service import TrainingService
from mlplatform.training.sql_store import SqlTrainingJobStore
from mlplatform.ui import experiments as ui_experiments
from mlplatform.ui import job as ui_job
from mlplatform.ui import keys as ui_keys
from mlplatform.ui import monitoring as ui_monitoring
from mlplatform.ui import router as ui_router
from mlplatform.ui import serving as ui_serving
from mlplatform.ui import uploads as ui_uploads
from mlplatform.ui.console import build_console
from mlplatform.ui.sessions import SessionStore

log = structlog.get_logger(__name__)
SLOW_SHUTDOWN_STEP_SECONDS = 1.0  # a close that takes longer is logged: each should take milliseconds


def build_platform(settings: Settings) -> Platform:
    """Create every backend client; nothing connects until first use."""
    metrics = Metrics(
        application=settings.management.tags.application,
        environment=settings.management.tags.environment,
    )
    database = db.Database(settings.database)
    cache = create_cache(settings.cache)
    artifacts = create_artifact_store(settings.storage)
    # Workers count each other only through serve's shared folder (an app built without one is on its own).
    shared = metrics.multiprocess if settings.server.workers > 1 else None
    lifecycle = Lifecycle(workers=settings.server.workers if shared else 1, folder=shared)
    engine = DaskEngine(settings.jobs, preload=TRAINING_MODULES)
    health = HealthService(
        checks={"db": database.ping, "cache": cache.ping, "storage": artifacts.ping, "jobs": engine.ping},
        descriptions={
            "db": database.backend,
            "cache": redact_url(settings.cache.url),
            "storage": redact_url(settings.storage.url),
            "jobs": "embedded LocalCluster" if engine.embedded else settings.jobs.scheduler,
        },
        lifecycle=lifecycle,
        metrics=metrics,
        readiness_components=list(settings.management.health.readiness_include),
        timeout=settings.management.health.timeout_ms / 1000,
    )
    auth = AuthService(
        store=SqlApiKeyStore(database),
        settings=settings.security,
        cache=cache,
        limiter=RateLimiter(settings.cache),
    )
    watcher = RegistryWatcher(
        store=SqlRegistryStore(database),
        cache=cache,
        refresh_seconds=settings.ml.models.registry_refresh_seconds,
    )
    serving_metrics = ServingMetrics(metrics)
    models = ModelCache(
        artifacts=artifacts,
        settings=settings.ml.models,
        metrics=serving_metrics,
        local_dir=Path(settings.ml.models.local_cache_dir),
    )
    registry = RegistryService(
        store=watcher.store,
        artifacts=artifacts,
        watcher=watcher,
        settings=settings.ml.models,
        assess=models.assess,
    )
    prediction_logs = create_prediction_log_store(database)
    serving = build_serving(
        settings, logs=prediction_logs, registry=registry, cache=cache, models=models, metrics=serving_metrics
    )
    datasets = DatasetService(
        store=SqlDatasetStore(database), artifacts=artifacts, limits=settings.security.limits
    )
    monitoring = MonitoringService(
        store=prediction_logs,
        registry=registry,
        metrics=metrics,
        drift=SqlDriftStore(database),
        datasets=datasets,
    )
    # Registration checks and keeps a version's reference sample through monitoring (which imports registry).
    registry.prepare_reference = monitoring.prepare_reference
    alerts = AlertService(
        store=SqlAlertStore(database),
        settings=settings.ml.monitoring,
        notifier=WebhookNotifier(
            settings.ml.monitoring.alerts,
            metrics.registry,
            tags=metrics.tags,
            external_url=settings.ml.monitoring.alerts.external_url or server_url(settings.server),
        ),
        registry=metrics.registry,
    )
    training = TrainingService(
        store=SqlTrainingJobStore(database),
        datasets=datasets,
        registry=registry,
        engine=engine,
        storage=settings.storage,
        metrics=TrainingMetrics(metrics),
    )
    checks = build_checks(settings, monitoring=monitoring, alerts=alerts, serving=serving, metrics=metrics)
    experiments = ExperimentService(
        store=SqlExperimentStore(database),
        registry=registry,
        monitoring=monitoring,
        serving=serving,
        alerts=alerts,
    )
    registry.watcher.routes = experiments.routes  # running experiments split traffic in the snapshot
    return Platform(
        settings=settings,
        database=database,
        cache=cache,
        artifacts=artifacts,
        metrics=metrics,
        health=health,
        lifecycle=lifecycle,
        auth=auth,
        registry=registry,
        serving=serving,
        datasets=datasets,
        monitoring=monitoring,
        alerts=alerts,
        checks=checks,
        check_scheduler=CheckScheduler(
            checks=checks, leases=SqlCheckLeaseStore(database), settings=settings.ml.monitoring
        ),
        backups=BackupScheduler(
            service=BackupService(
                database=settings.database,
                storage=settings.storage,
                settings=settings.backup,
                artifacts=artifacts,
            ),
            leases=SqlCheckLeaseStore(database),
            settings=settings.backup,
            registry=metrics.registry,
        ),
        training=training,
        experiments=experiments,
        supervisor=ExperimentSupervisor(experiments, interval=settings.ml.experiments.supervise_seconds),
        sessions=SessionStore(cache, settings.ui),
        serving_stats=ServingStatsService(
            store=SqlServingStatsStore(database),
            metrics=serving_metrics,
            logs=prediction_logs,
            registry=registry,
            settings=settings.ml.serving.stats,
        ),
    )


def build_checks(
    settings: Settings,
    *,
    monitoring: MonitoringService,
    alerts: AlertService,
    serving: ServingService,
    metrics: Metrics,
) -> MonitoringChecks:
    """The scheduled checks' steps, in order."""
    window = settings.ml.monitoring.check_window
    drift = [("drift", DriftStep(monitoring, window))] if settings.ml.monitoring.drift_detection else []
    counters = InstanceCounters(
        predictions=lambda: counter_totals(serving.metrics.predictions),
        errors=lambda: counter_totals(serving.metrics.errors),
        log_drops=lambda: counter_totals(serving.logs.dropped).get("", 0.0),
    )
    return MonitoringChecks(
        alerts=alerts,
        models=lambda: deployed_models(monitoring.registry),
        steps=[
            ("accuracy", AccuracyStep(monitoring, window)),
            *drift,
            ("latency", LatencyStep(monitoring.store)),
            ("counters", CounterStep(counters)),
        ],
        registry=metrics.registry,
    )


def build_serving(
    settings: Settings,
    *,
    logs: PredictionLogStore,
    registry: RegistryService,
    cache: Cache,
    models: ModelCache,
    metrics: ServingMetrics,
) -> ServingService:
    writer = PredictionLogWriter(logs, metrics.registry, queue_size=settings.ml.predictions.log_queue_size)
    serving = ServingService(
        registry=registry,
        models=models,
        predictions=PredictionCache(cache, settings.ml.predictions, metrics),
        logs=writer,
        settings=settings.ml.predictions,
        metrics=metrics,
    )

    def deployed() -> dict[str, float]:
        now = utcnow()
        ages = {}
        for name, entry in registry.watcher.snapshot.models.items():
            default = entry.default_version()
            if default is not None:
                ages[name] = (now - entry.versions[default].created_at).total_seconds() / 86400
        return ages

    register_models(metrics.base, lambda: len(models), deployed)
    metrics.base.sampled(
        "ml_prediction_log_queue_depth",
        "Prediction log records waiting to be written",
        lambda: {(): writer.depth},
        mode="livesum",
    )

    async def forget_removed(name: str) -> None:
        entry = registry.watcher.snapshot.models.get(name)
        models.forget({v.id for v in entry.versions.values()} if entry else set(), name)

    registry.watcher.listeners.append(forget_removed)
    return serving


async def prepare_schema(platform: Platform) -> None:
    """Embedded default: migrate. Elsewhere: refuse to serve a schema that is not at head."""
    settings = platform.settings.database
    if platform.settings.embedded:
        await asyncio.to_thread(db.upgrade, settings)
        return
    current = await asyncio.to_thread(db.current_revision, settings)
    head = db.head_revision()
    if current != head:
        raise RuntimeError(
            f"database schema is at {current}, this build needs {head}: run `mlplatform db upgrade`"
        )


async def preload(platform: Platform) -> None:
    """Load and warm `ml.models.preload` before readiness turns UP."""
    for reference in platform.settings.ml.models.preload:
        entry = platform.registry.resolve(reference, "ml.models.preload")
        await platform.serving.loaded(entry)
        log.info("preloaded", model=reference, version=entry.id)


async def hand_over_first_admin_key(platform: Platform) -> None:
    """Development profile only: a fresh database gets an admin key, shown once on the console."""
    if not platform.settings.development:
        return
    created = await platform.auth.ensure_first_admin_key()
    if created is not None:  # printed, never logged: log files and collectors must not hold the key
        notice = first_admin_key_notice(created.key, server_url(platform.settings.server))
        print(notice, file=sys.stderr, flush=True)


async def start_up(platform: Platform) -> None:
    """Start-up work, retried until it succeeds (the database may come up after us)."""
    delay = 0.5
    while True:
        try:
            await prepare_schema(platform)
            await platform.auth.start()
            await hand_over_first_admin_key(platform)
            await platform.registry.watcher.start()
            platform.serving.logs.start()
            await preload(platform)
            break
        except Exception as exc:  # keep trying; readiness reports why meanwhile
            platform.lifecycle.startup_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("start-up waiting", reason=platform.lifecycle.startup_error, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    platform.lifecycle.startup_error = None
    freeze_heap()
    platform.lifecycle.mark_started()
    log.info("started", profile=platform.settings.profile, version=__version__)
    platform.alerts.notifier.start()
    platform.check_scheduler.start()
    platform.backups.start()
    platform.training.start()
    platform.supervisor.start()
    platform.serving_stats.start()
    min_age = timedelta(seconds=platform.settings.ml.models.orphan_min_age_seconds)
    try:
        await platform.registry.sweep_orphans(min_age=min_age)
        await platform.datasets.sweep_orphans(min_age=min_age)
    except Exception as exc:  # storage may be down at start: the next start sweeps again
        log.warning("orphan sweep skipped", error=f"{type(exc).__name__}: {exc}"[:200])


def create_app(settings: Settings) -> FastAPI:
    platform = build_platform(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.security.api_keys.enabled:
            log.warning("API KEYS ARE DISABLED: every endpoint is open to anyone who can reach this server")
        starting = asyncio.create_task(start_up(platform))
        watching = asyncio.create_task(
            platform.health.watch(settings.management.health.refresh_seconds), name="health-watch"
        )
        sampler = (
            asyncio.create_task(platform.metrics.run_sampler()) if platform.metrics.multiprocess else None
        )
        try:
            yield
        finally:
            platform.lifecycle.draining = True
            platform.lifecycle.unmark()
            for task in (starting, watching, sampler):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("training jobs", platform.training.stop),
                ("experiment supervisor", platform.supervisor.stop),
                ("serving stats", platform.serving_stats.stop),
                ("monitoring checks", platform.check_scheduler.stop),
                ("scheduled backups", platform.backups.stop),
                ("alert notifications", platform.alerts.notifier.stop),
                ("prediction logs", platform.serving.logs.stop),
                ("serving", platform.serving.close),
                ("registry watcher", platform.registry.watcher.stop),
                ("API keys", platform.auth.stop),
                ("rate limiter", platform.auth.limiter.close),
                ("cache", platform.cache.close),
                ("artifacts", platform.artifacts.close),
                ("database", platform.database.dispose),
            ]
            for name, step in steps:
                began = time.monotonic()
                await step()
                if (seconds := time.monotonic() - began) > SLOW_SHUTDOWN_STEP_SECONDS:
                    log.warning("slow shutdown step", step=name, seconds=round(seconds, 2))
            log.info("stopped")

    app = EdgeApp(
        title="mlplatform",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.ui = build_console()
    app.serve(platform)
    # The predict paths first: routes are matched in order, on every request.
    app.include_router(predict.router)
    app.include_router(inference_v2.health)
    app.include_router(inference_v2.router)
    app.include_router(registry_router.router)
    app.include_router(datasets_router.router)
    app.include_router(training_router.router)
    app.include_router(experiments_router.router)
    app.include_router(monitoring_router.router)
    app.include_router(alerts_router.router)
    app.include_router(auth_router.router)
    app.include_router(actuator.router)
    app.include_router(
        ui_router.router
    )  # the web console: its own sessions, left out of the OpenAPI document
    app.include_router(ui_experiments.router)
    app.include_router(ui_keys.router)
    app.include_router(ui_job.router)
    app.include_router(ui_uploads.router)
    app.include_router(ui_serving.router)  # the console's serving pages
    app.include_router(ui_monitoring.router)  # the console's monitoring and alerts pages
    document_contract(app)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: settings from files and environment, logging configured."""
    settings = load_settings()
    configure_logging(settings.logging)
    tune_for_serving()
    return create_app(settings)
