"""structlog set-up: console or JSON lines, per-logger levels, optional size-rotated file."""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
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


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that several processes may write (`server.workers` > 1, each its own handler).

    Each record is written under an exclusive lock on `<file>.lock`. Whoever finds the file full rotates it;
    the others see the name now points at another file and reopen it before writing, instead of writing on
    into the rotated one (as the stock handler does: its files overgrow and its history drops records)."""

    def __init__(self, filename: Path, *, max_bytes: int, backup_count: int) -> None:
        self._lock_file = open(f"{os.path.abspath(filename)}.lock", "ab")  # noqa: SIM115 - kept while it lives
        try:
            super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        except BaseException:
            self._lock_file.close()
            raise

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                self._follow_rotation()
                super().emit(record)
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        except Exception:
            self.handleError(record)

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # the stdlib hook, named as it is
        # A record larger than max-size alone would otherwise rotate an empty file, pushing history out.
        if self.stream is not None and self.stream.seek(0, os.SEEK_END) == 0:
            return False
        return bool(super().shouldRollover(record))

    def _follow_rotation(self) -> None:
        if self.stream is None:
            return
        try:
            named = os.stat(self.baseFilename)
        except FileNotFoundError:
            named = None
        opened = os.fstat(self.stream.fileno())
        if named is None or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            self.stream.close()
            self.stream = self._open()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._lock_file.close()


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
                SharedRotatingFileHandler(
                    path, max_bytes=settings.file.max_size, backup_count=settings.file.max_history
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
