"""`create_app(settings)`: the one place that builds and wires an instance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from mlplatform import __version__, db
from mlplatform.api import actuator
from mlplatform.api.errors import install_error_handlers
from mlplatform.api.middleware import add_middleware
from mlplatform.auth import router as auth_router
from mlplatform.auth.ratelimit import RateLimiter
from mlplatform.auth.service import AuthService
from mlplatform.auth.store import SqlApiKeyStore
from mlplatform.config import load_settings, redact_url
from mlplatform.health import HealthService, Lifecycle
from mlplatform.logging import configure_logging
from mlplatform.metrics import Metrics
from mlplatform.platform import Platform
from mlplatform.settings import Settings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.stores.cache import create_cache

log = structlog.get_logger(__name__)


def build_platform(settings: Settings) -> Platform:
    """Create every backend client; nothing connects until first use."""
    metrics = Metrics(
        application=settings.management.tags.application,
        environment=settings.management.tags.environment,
    )
    database = db.Database(settings.database)
    cache = create_cache(settings.cache)
    artifacts = create_artifact_store(settings.storage)
    lifecycle = Lifecycle()
    health = HealthService(
        checks={"db": database.ping, "cache": cache.ping, "storage": artifacts.ping},
        descriptions={
            "db": database.backend,
            "cache": redact_url(settings.cache.url),
            "storage": redact_url(settings.storage.url),
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
    return Platform(
        settings=settings,
        database=database,
        cache=cache,
        artifacts=artifacts,
        metrics=metrics,
        health=health,
        lifecycle=lifecycle,
        auth=auth,
    )


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


async def start_up(platform: Platform) -> None:
    """Start-up work, retried until it succeeds (the database may come up after us)."""
    delay = 0.5
    while True:
        try:
            await prepare_schema(platform)
            await platform.auth.start()
            break
        except Exception as exc:  # keep trying; readiness reports why meanwhile
            platform.lifecycle.startup_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("start-up waiting", reason=platform.lifecycle.startup_error, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    platform.lifecycle.startup_error = None
    platform.lifecycle.started = True
    log.info("started", profile=platform.settings.profile, version=__version__)


def create_app(settings: Settings) -> FastAPI:
    platform = build_platform(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.security.api_keys.enabled:
            log.warning("API KEYS ARE DISABLED: every endpoint is open to anyone who can reach this server")
        starting = asyncio.create_task(start_up(platform))
        try:
            yield
        finally:
            platform.lifecycle.draining = True
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await platform.auth.stop()
            await platform.auth.limiter.close()
            await platform.cache.close()
            await platform.artifacts.close()
            await platform.database.dispose()
            log.info("stopped")

    app = FastAPI(
        title="mlplatform",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    install_error_handlers(app)
    compression = settings.server.compression
    add_middleware(
        app,
        metrics=platform.metrics,
        max_body_size=settings.server.max_body_size,
        max_inflated_size=settings.security.limits.max_decompressed_size,
        gzip_min_size=compression.min_response_size if compression.enabled else None,
    )
    app.include_router(actuator.router)
    app.include_router(auth_router.router)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory: settings from files and environment, logging configured."""
    settings = load_settings()
    configure_logging(settings.logging)
    return create_app(settings)
