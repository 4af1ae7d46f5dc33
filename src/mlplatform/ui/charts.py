"""Small charts drawn on the server as inline SVG (no script needed to read them)."""

from __future__ import annotations

from markupsafe import Markup, escape

from mlplatform.monitoring.schemas import ProfileHistogram


def _label(value: float) -> str:
    return f"{value:.4g}"


DISPLAY_BINS = 24


def display_bins(histogram: ProfileHistogram, bins: int = DISPLAY_BINS) -> tuple[list[float], list[str]]:
    """What to draw: categories as they are; numeric cells re-binned into `bins` equal-width bins over the
    edges' range, each cell's count spread evenly over the part of it a bin covers (the profile's cells are
    quantiles, of very unequal widths, so drawn as they are every feature would look flat)."""
    if histogram.labels is not None:
        return [float(c) for c in histogram.counts], list(histogram.labels)
    edges = histogram.edges or []
    counts = histogram.counts
    if len(edges) < 2 or edges[-1] <= edges[0]:
        return [float(sum(counts))], ["all"]
    low, high = edges[0], edges[-1]
    step = (high - low) / bins
    shown = [0.0] * bins
    shown[0] += counts[0]  # (-inf, e0]
    shown[-1] += counts[-1] if len(counts) == len(edges) + 1 else 0  # (e_last, inf)
    for i, count in enumerate(counts[1 : len(edges)], start=1):
        a, b = edges[i - 1], edges[i]
        if count == 0:
            continue
        if b <= a:
            shown[min(int((a - low) / step), bins - 1)] += count
            continue
        first, last = int((a - low) / step), min(int((b - low) / step), bins - 1)
        for k in range(first, last + 1):
            overlap = min(b, low + (k + 1) * step) - max(a, low + k * step)
            shown[k] += count * max(overlap, 0.0) / (b - a)
    labels = [f"{_label(low + k * step)} – {_label(low + (k + 1) * step)}" for k in range(bins)]
    return shown, labels


def histogram(histogram: ProfileHistogram, name: str, width: int = 220, height: int = 48) -> Markup:
    if not histogram.counts or not sum(histogram.counts):
        return Markup('<span class="muted">no values</span>')
    counts, cells = display_bins(histogram)
    top = max(counts) or 1.0
    bar = width / len(counts)
    described = ", ".join(f"{cell}: {count:.0f}" for cell, count in zip(cells, counts, strict=True))
    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>Histogram of {escape(name)}: {escape(described)}</title>'
    ]
    for i, count in enumerate(counts):
        h = 0.0 if count <= 0 else max(1.0, (height - 2) * count / top)
        parts.append(
            f'<rect class="bar" x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" '
            f'width="{max(bar - 1, 1):.1f}" height="{h:.1f}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
