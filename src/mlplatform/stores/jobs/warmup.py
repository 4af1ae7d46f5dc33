"""A Dask worker plugin that imports the libraries jobs use as soon as a worker joins, so a job's first task
does not wait for the imports (about 1 s for pandas, pyarrow, scikit-learn and XGBoost on a fresh worker).
Workers that join later (a restarted one, a new pod) get it too. A module that fails to import is logged and
left to the job that needs it.

The imports run in `setup`, on the worker's event loop, which they hold for that second: in a thread of their
own they raced the loop's own imports (a worker deserialising a dask.array task while LightGBM imported
dask.array met a partially initialised module and broke)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)


class ImportModules(WorkerPlugin):
    name = "mlplatform-import-modules"

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = tuple(modules)

    def setup(self, worker: Any) -> None:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # the job that needs it will say why
                log.warning("warm-up import of %s failed: %s", module, exc)
