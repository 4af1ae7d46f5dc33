"""In-process model runtimes, one per library behind one interface, and the native-or-compiled choice."""

from mlplatform.serving.runtimes.base import CompileReport, RawPrediction, Runtime
from mlplatform.serving.runtimes.build import DEFAULT_TOLERANCE, build_runtime, native_runtime

__all__ = [
    "DEFAULT_TOLERANCE",
    "CompileReport",
    "RawPrediction",
    "Runtime",
    "build_runtime",
    "native_runtime",
]
