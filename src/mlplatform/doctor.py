"""`mlplatform doctor`: does every ML library import and every backend answer? If not, what to do."""

from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass

from mlplatform import db
from mlplatform.config import redact_url
from mlplatform.settings import Settings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.stores.cache import create_cache

# (import name, pip name, required)
ML_LIBRARIES = (
    ("sklearn", "scikit-learn", True),
    ("xgboost", "xgboost-cpu", True),
    ("lightgbm", "lightgbm", True),
    ("onnxruntime", "onnxruntime", True),
    ("skl2onnx", "skl2onnx", True),
    ("onnxmltools", "onnxmltools", True),
    ("skops", "skops", True),
    ("pandas", "pandas", True),
    ("pyarrow", "pyarrow", True),
    ("scipy", "scipy", True),
    ("distributed", "dask[distributed]", True),
    ("tensorflow", "mlplatform[tensorflow]", False),
)


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True


def check_libraries() -> list[Finding]:
    findings = []
    for module, package, required in ML_LIBRARIES:
        started = time.perf_counter()
        try:
            loaded = importlib.import_module(module)
            took = (time.perf_counter() - started) * 1000
            version = getattr(loaded, "__version__", "?")
            findings.append(Finding(module, True, f"{version} (import {took:.0f} ms)", required=required))
        except Exception as exc:  # an import can fail in many ways (missing .so, ABI): report them all
            hint = f"pip install '{package}'" + ("" if required else " (optional)")
            findings.append(Finding(module, False, f"{type(exc).__name__}: {exc}"[:200], hint, required))
    return findings


async def check_backends(settings: Settings) -> list[Finding]:
    database = db.Database(settings.database)
    cache = create_cache(settings.cache)
    artifacts = create_artifact_store(settings.storage)
    hints = {
        "database": "check database.url (or DB_HOST/DB_NAME/DB_USER/DB_PASSWORD in the prod profile) "
        "and that PostgreSQL accepts connections from this host",
        "cache": "check cache.url (or REDIS_HOST/REDIS_PORT/REDIS_PASSWORD); the service still serves "
        "without it, from local caches",
        "storage": "check storage.url (or ML_MODELS_BUCKET/S3_ENDPOINT/AWS_REGION) and the AWS credentials; "
        "the bucket must exist",
    }
    targets = {
        "database": (database.ping, redact_url(str(database.url.render_as_string(hide_password=True)))),
        "cache": (cache.ping, redact_url(settings.cache.url)),
        "storage": (artifacts.ping, redact_url(settings.storage.url)),
    }
    findings = []
    try:
        for name, (ping, where) in targets.items():
            started = time.perf_counter()
            try:
                await asyncio.wait_for(ping(), timeout=5)
                took = (time.perf_counter() - started) * 1000
                findings.append(Finding(name, True, f"{where} answered in {took:.1f} ms"))
            except Exception as exc:  # report, never crash: this is the tool people run when things fail
                findings.append(
                    Finding(name, False, f"{where}: {type(exc).__name__}: {exc}"[:300], hints[name])
                )
        if findings[0].ok:
            findings.append(await asyncio.to_thread(_check_schema, settings))
    finally:
        await cache.close()
        await artifacts.close()
        await database.dispose()
    return findings


def _check_schema(settings: Settings) -> Finding:
    current, head = db.current_revision(settings.database), db.head_revision()
    if current == head:
        return Finding("schema", True, f"at head ({head})")
    if settings.embedded:
        return Finding("schema", True, f"at {current}; `mlplatform serve` migrates it to {head} on start")
    return Finding("schema", False, f"at {current}, this build needs {head}", "run `mlplatform db upgrade`")
