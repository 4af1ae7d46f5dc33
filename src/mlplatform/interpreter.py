"""Interpreter settings for a serving process: how long threads hold the GIL, and what the cyclic GC scans."""

from __future__ import annotations

import gc
import sys

# Background threads (prediction-log writer, batch executor) may hold the GIL this long before the event
# loop gets it back; Python's default of 5 ms shows up directly in the p99 of single predictions.
SWITCH_INTERVAL_SECONDS = 0.001
# A batch answer allocates thousands of containers; the default of 700 runs a young collection every few
# hundred rows. Older generations keep their defaults.
YOUNG_THRESHOLD = 10_000
_serving = False


def tune_for_serving() -> None:
    """Once per serving process (each uvicorn worker calls the app factory); like the GC's own settings,
    this is process state, so apps built in a test process are left alone."""
    global _serving
    _serving = True
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_heap() -> None:
    """Move every object alive now (imported modules, loaded models) out of the cyclic collector's sight.

    With scikit-learn, SciPy, pandas and the model libraries imported, a full collection walks millions of
    objects: measured at 130-150 ms, a stall every few seconds under load and the whole p99. Frozen objects
    are still freed by reference counting; a full collection then walks only what was allocated since
    (under 1 ms). Called when start-up is done and after each model load (which imports its libraries).
    Only in serving processes: a test process builds and drops hundreds of apps, and freezing would keep
    their uncollected cycles forever.
    """
    if _serving:
        gc.freeze()
