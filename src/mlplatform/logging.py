"""structlog set-up: console or JSON lines, per-logger levels, optional size-rotated file."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

import orjson
import structlog

from mlplatform.settings import LoggingSettings

_LEVELS = {"TRACE": logging.DEBUG, "WARN": logging.WARNING, "OFF": logging.CRITICAL + 10}
# Chatty libraries, unless `logging.level.<name>` says otherwise.
QUIET = {"alembic": "WARNING"}


def _level(name: str) -> int:
    return _LEVELS.get(name, logging.getLevelName(name))  # type: ignore[no-any-return]


def _json_dumps(data: Any, default: Any = None) -> str:
    return orjson.dumps(data, default=default or str).decode()


def configure_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Route structlog and stdlib logging (uvicorn, SQLAlchemy, ...) through one formatter."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    file_problem = None
    if settings.file.name:
        path = Path(settings.file.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    path,
                    maxBytes=settings.file.max_size,
                    backupCount=settings.file.max_history,
                    encoding="utf-8",
                )
            )
        except OSError as exc:  # a read-only volume must not stop the service: stderr still has the logs
            file_problem = f"cannot write logging.file.name {path}: {exc.strerror}"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(_level(settings.level.get("root", "INFO")))
    for name, level in {**QUIET, **settings.level}.items():
        if name != "root":
            logging.getLogger(name).setLevel(_level(level))
    # uvicorn's own loggers go through our formatter; its access log stays as uvicorn left it (off).
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if file_problem:
        structlog.get_logger(__name__).warning(file_problem)
