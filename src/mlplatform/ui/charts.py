"""Small charts drawn on the server as inline SVG (no script needed to read them)."""

from __future__ import annotations

from markupsafe import Markup, escape

from mlplatform.monitoring.schemas import ProfileHistogram


def _label(value: float) -> str:
    return f"{value:.4g}"


def histogram_cells(histogram: ProfileHistogram) -> list[str]:
    """A name for each count: a category, or the numeric interval the cell covers."""
    if histogram.labels is not None:
        return list(histogram.labels)
    edges = histogram.edges or []
    if not edges:
        return ["all"] * len(histogram.counts)
    cells = [f"≤ {_label(edges[0])}"]
    cells += [f"{_label(a)} – {_label(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    cells.append(f"> {_label(edges[-1])}")
    return cells[: len(histogram.counts)]


def spans(histogram: ProfileHistogram) -> list[float]:
    """How wide each cell is drawn. Numeric cells are as wide as the interval they cover (the profile's edges
    are quantiles, so equal-width bars of near-equal counts would draw every feature flat); the two open ends
    get the mean inner width. Categories are equally wide."""
    edges = histogram.edges or []
    if histogram.labels is not None or len(edges) < 2:
        return [1.0] * len(histogram.counts)
    inner = [max(b - a, 0.0) for a, b in zip(edges, edges[1:], strict=False)]
    mean = sum(inner) / len(inner) or 1.0
    widths = [mean, *(w or mean / 100 for w in inner), mean]
    return widths[: len(histogram.counts)]


def histogram(histogram: ProfileHistogram, name: str, width: int = 220, height: int = 48) -> Markup:
    """Bars whose areas are the counts: height is count per unit of width (a density for numeric cells)."""
    counts = histogram.counts
    if not counts:
        return Markup('<span class="muted">no values</span>')
    cells = histogram_cells(histogram)
    widths = spans(histogram)
    densities = [count / w for count, w in zip(counts, widths, strict=True)]
    top = max(densities) or 1.0
    scale = width / sum(widths)
    described = ", ".join(f"{cell}: {count}" for cell, count in zip(cells, counts, strict=False))
    parts = [
        f'<svg class="histogram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>Histogram of {escape(name)}: {escape(described)}</title>'
    ]
    x = 0.0
    for count, w, density in zip(counts, widths, densities, strict=True):
        h = 0.0 if count == 0 else max(1.0, (height - 2) * density / top)
        parts.append(
            f'<rect class="bar" x="{x:.2f}" y="{height - h:.2f}" width="{max(w * scale - 0.6, 0.4):.2f}" '
            f'height="{h:.2f}"/>'
        )
        x += w * scale
    parts.append("</svg>")
    return Markup("".join(parts))
