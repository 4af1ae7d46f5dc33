"""The objects one app instance is made of, built once by `create_app` and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.auth.service import AuthService
from mlplatform.backups.scheduler import BackupScheduler
from mlplatform.datasets.service import DatasetService
from mlplatform.db import Database
from mlplatform.experiments.service import ExperimentService
from mlplatform.experiments.supervisor import ExperimentSupervisor
from mlplatform.health import HealthService, Lifecycle
from mlplatform.metrics import Metrics
from mlplatform.monitoring.alerts.service import AlertService
from mlplatform.monitoring.checks import CheckScheduler, MonitoringChecks
from mlplatform.monitoring.service import MonitoringService
from mlplatform.registry.service import RegistryService
from mlplatform.serving.service import ServingService
from mlplatform.serving.stats import ServingStatsService
from mlplatform.settings import Settings
from mlplatform.stores.artifacts.base import ArtifactStore
from mlplatform.stores.cache.base import Cache
from mlplatform.training.service import TrainingService
from mlplatform.ui.sessions import SessionStore


@dataclass
class Platform:
    settings: Settings
    database: Database
    cache: Cache
    artifacts: ArtifactStore
    metrics: Metrics
    health: HealthService
    lifecycle: Lifecycle
    auth: AuthService
    registry: RegistryService
    serving: ServingService
    datasets: DatasetService
    monitoring: MonitoringService
    alerts: AlertService
    checks: MonitoringChecks
    check_scheduler: CheckScheduler
    backups: BackupScheduler
    training: TrainingService
    experiments: ExperimentService
    supervisor: ExperimentSupervisor
    sessions: SessionStore  # the web console's sign-in sessions, in the cache
    serving_stats: ServingStatsService  # each process's serving counts per minute, saved and read back
