"""mlplatform: one service for the whole life of a model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlplatform")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
