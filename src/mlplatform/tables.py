"""Every domain's tables on one MetaData, for Alembic and for tests."""

from __future__ import annotations

from mlplatform.auth import tables as auth_tables
from mlplatform.db import Base

metadata = Base.metadata
DOMAIN_TABLES = (auth_tables,)
