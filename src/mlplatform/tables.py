"""Every domain's tables on one MetaData, for Alembic and for tests."""

from __future__ import annotations

from mlplatform.auth import tables as auth_tables
from mlplatform.datasets import tables as dataset_tables
from mlplatform.db import Base
from mlplatform.experiments import tables as experiment_tables
from mlplatform.monitoring import tables as monitoring_tables
from mlplatform.monitoring.alerts import tables as alert_tables
from mlplatform.registry import tables as registry_tables
from mlplatform.serving import tables as serving_tables
from mlplatform.training import tables as training_tables

metadata = Base.metadata
DOMAIN_TABLES = (
    auth_tables,
    registry_tables,
    serving_tables,
    dataset_tables,
    monitoring_tables,
    alert_tables,
    training_tables,
    experiment_tables,
)
