"""A drift report as a PNG: one panel per feature, reference against current (blocking: use a thread)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplatform.monitoring.schemas import DriftReportRead, FeatureDriftRead

COLUMNS = 3
MAX_PANELS = 60  # drifted and lowest p-value features first; a note says how many are left out
NUMERIC_BINS = 30
MAX_LEVELS = 12  # categorical bars shown; the rest are pooled as "other"
LABEL_CHARS = 14
REFERENCE_COLOR = "#4c72b0"
CURRENT_COLOR = "#dd8452"
DRIFT_COLOR = "#c0392b"


def render(report: DriftReportRead) -> bytes:
    """Matplotlib's object API on the Agg canvas: no pyplot, so no global state shared between threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    features = sorted(report.features, key=_order)[:MAX_PANELS]
    panels = max(1, len(features))
    columns = min(COLUMNS, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.8), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    verdict = "DRIFT in " + ", ".join(report.drifted_features[:8]) if report.drift else "no drift"
    shown = (
        f"  ({len(features)} of {len(report.features)} features shown)"
        if len(features) < len(report.features)
        else ""
    )
    window = f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
    sizes = f"{report.sampled_rows} rows sampled, reference {report.reference_rows} rows"
    figure.suptitle(
        f"{report.version_id}: {verdict}\n{window}, {sizes}, alpha {report.alpha}{shown}",
        fontsize=10,
        color=DRIFT_COLOR if report.drift else "black",
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, feature in zip(axes, features, strict=False):
        _panel(ax, feature)
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    if not features:
        axes[0].text(0.5, 0.5, "no features", ha="center", va="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _order(feature: FeatureDriftRead) -> tuple[bool, float]:
    p = feature.adjusted_p_value
    return (not feature.drift_adjusted, p if p is not None else 2.0)


def _panel(ax: Any, feature: FeatureDriftRead) -> None:
    ax.tick_params(labelsize=7)
    histogram = feature.histogram
    if feature.status != "ok" or histogram is None:
        ax.set_title(f"{feature.feature}: {feature.note or 'insufficient data'}", fontsize=9)
        ax.set_axis_off()
        return
    if histogram.labels is not None:
        _categorical(ax, histogram.labels, histogram.reference, histogram.current)
    else:
        _numeric(ax, histogram.edges or [], histogram.reference, histogram.current)
    ax.set_ylabel("share of rows", fontsize=7)
    ax.legend(fontsize=7, frameon=False)
    marker = "DRIFT  " if feature.drift_adjusted else ""
    p = feature.adjusted_p_value
    distance = f"{feature.distance_name} {feature.distance:.3g}" if feature.distance is not None else ""
    ax.set_title(
        f"{marker}{feature.feature}\np (Holm) {p:.2g}  {distance}" if p is not None else feature.feature,
        fontsize=9,
        color=DRIFT_COLOR if feature.drift_adjusted else "black",
        fontweight="bold" if feature.drift_adjusted else "normal",
    )


def _shares(counts: list[int] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total else array


def _numeric(ax: Any, edges: list[float], reference: list[int], current: list[int]) -> None:
    """The profile's percentile cells regrouped into equal-width bins over the reference's range (a cell goes
    to the bin holding its right edge), and one bin on each side for values beyond it."""
    if not edges:
        return
    low, high = edges[0], edges[-1]
    width = (high - low) / NUMERIC_BINS if high > low else max(abs(low), 1.0) / NUMERIC_BINS
    bounds = low + width * np.arange(NUMERIC_BINS + 1)
    bounds[-1] = high
    # cells: (-inf, e0], (e0, e1], ..., (e_last, inf); the first holds nothing of the reference
    right = np.append(np.asarray(edges, dtype=np.float64), np.inf)
    bins = np.clip(np.searchsorted(bounds, right, side="left"), 0, NUMERIC_BINS + 1)
    bins[-1] = NUMERIC_BINS + 1
    lefts = np.concatenate([[low - width], bounds[:-1], [high]])
    for counts, color, label, fill in (
        (reference, REFERENCE_COLOR, "reference", True),
        (current, CURRENT_COLOR, "current", False),
    ):
        grouped = np.bincount(bins, weights=np.asarray(counts, dtype=np.float64), minlength=NUMERIC_BINS + 2)
        shares = _shares(grouped)
        if fill:
            ax.bar(lefts, shares, width=width, align="edge", color=color, alpha=0.45, label=label)
        else:
            ax.stairs(shares, np.append(lefts, high + width), color=color, linewidth=1.6, label=label)
    ax.axvline(low, color="grey", linewidth=0.6, linestyle=":")
    ax.axvline(high, color="grey", linewidth=0.6, linestyle=":")


def _categorical(ax: Any, labels: list[str], reference: list[int], current: list[int]) -> None:
    ref, cur = _shares(reference), _shares(current)
    order = np.argsort(-np.maximum(ref, cur), kind="stable")
    shown, rest = order[:MAX_LEVELS], order[MAX_LEVELS:]
    names = [_short(labels[i]) for i in shown]
    ref_shown, cur_shown = list(ref[shown]), list(cur[shown])
    if rest.size:
        names.append(f"other ({rest.size})")
        ref_shown.append(float(ref[rest].sum()))
        cur_shown.append(float(cur[rest].sum()))
    x = np.arange(len(names))
    ax.bar(x - 0.2, ref_shown, width=0.4, color=REFERENCE_COLOR, alpha=0.8, label="reference")
    ax.bar(x + 0.2, cur_shown, width=0.4, color=CURRENT_COLOR, alpha=0.9, label="current")
    ax.set_xticks(x, names, rotation=35, ha="right")


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
