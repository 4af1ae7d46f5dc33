"""What this build is: version, git commit, Python and library versions (for /actuator/info and doctor)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlplatform import __version__

LIBRARIES = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "aiosqlite",
    "redis",
    "obstore",
    "numpy",
    "pandas",
    "scikit-learn",
    "xgboost-cpu",
    "lightgbm",
    "onnxruntime",
    "skl2onnx",
    "skops",
    "dask",
    "tensorflow-cpu",
)


def library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@functools.cache
def git_commit() -> str:
    """GIT_COMMIT when the image build set it, else asked of git once, else "unknown"."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        )
        return result.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_info() -> dict[str, object]:
    return {
        "version": __version__,
        "git": {"commit": git_commit()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "libraries": library_versions(),
    }
